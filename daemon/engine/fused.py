# SPDX-License-Identifier: Apache-2.0
"""The decode step on Triton kernels: six launches per layer, weights read once.

``FusedDecode.decode`` has the same contract as ``EngineModel.decode`` (so ``graphs`` captures
either) and computes the same function: the embedding into a float32 residual stream; per layer,
norm + q/k/v projection + rotary embedding + cache write in one kernel, split-K attention (two),
the output projection added into the residual stream, norm + gate/up projection + activation,
and the down projection added likewise; then norm + the vocabulary product. ``decode(..., pick=)``
also picks the greedy tokens in that last product and feeds them back in one more small kernel
(``step_ends``), where ``graphs.decode_and_pick`` runs six torch kernels after the eager step.

The stacked weights it needs (q/k/v, gate/up) come from ``weights.layer_weights``, which keeps
one copy of every weight.

Supported: what ``weights.kernel_support`` accepts, with a power-of-two head_dim of at least 32.
``fused_support`` says why not otherwise, and the engine keeps its eager decode step.
"""

from __future__ import annotations

import torch

from . import kernels as K
from .decode_attention import attention
from .model import EngineModel
from .pdl import PDL_LATE, PDL_OFF, pdl_mode
from .step_ends import PICK_EMPTY, Pick, embed, feedback
from .weights import bias_of, kernel_support, layer_weights, norm_of


def fused_support(em: EngineModel) -> str | None:
    """None when the fused decode step can run this model, else the reason it cannot."""
    d = em.shape.head_dim
    if d < 32 or d & (d - 1):
        return f"head_dim {d} is not a power of two >= 32"
    return kernel_support(em)


class FusedDecode:
    def __init__(self, em: EngineModel) -> None:
        reason = fused_support(em)
        if reason is not None:
            raise ValueError(f"fused decode cannot run this model: {reason}")
        self.em = em
        self.bigcode = em.arch == "gpt_bigcode"
        self.norm_kind = K.NORM_LAYER if self.bigcode else K.NORM_RMS
        # Programmatic dependent launch, released late: measured 0.92 -> 0.86 ms/token (qwen2.5
        # 0.5b), 1.87 -> 1.78 (qwen 1.5b), 1.68 -> 1.61 (deepseek 1.3b); slower for gpt_bigcode
        # (starcoder 1b 1.56 -> 1.70, early release 1.85), which launches serially.
        # docs/performance.md, run 13.
        prefer = PDL_OFF if self.bigcode else PDL_LATE
        self.pdl = pdl_mode(em.device, prefer)
        # Launch modes of single kernels ("embed", "qkv", "attention", "o", "up", "down", "head",
        # "feedback") where they differ from ``pdl``. One kernel at a time launched the other
        # way (bench/step_parts.py's flip_*, run 35, batch 2, 1024 keys): for qwen 0.5b every
        # per-layer kernel loses 28-59 µs a step launched serially (the vocabulary product 1);
        # for starcoder each gains 5-7 µs serially, but attention, launched with PDL, saves 8
        # (1376.4 -> 1368.7 µs, rounds within 2.3). So gpt_bigcode's attention launches with
        # PDL. Each kernel's preference goes through ``pdl_mode`` as the step's does, so a forced
        # mode (``LSPILOT_PDL``, ``set_pdl_mode``) or a GPU without PDL launches them all alike.
        prefer_by_op = {"attention": PDL_LATE} if self.bigcode else {}
        modes = {op: pdl_mode(em.device, p) for op, p in prefer_by_op.items()}
        self.pdl_by_op: dict[str, int] = {op: m for op, m in modes.items() if m != self.pdl}
        # Tile choices per product ("qkv", "o", "up", "down", "head"): ``Tiles.make`` keywords
        # that replace ``Tiles.choose``'s heuristic (bench/step_sweep.py, the tests).
        self.tile_kw: dict[str, dict] = {}
        self.layers = layer_weights(em)
        body = em.body
        self.wte = (body.wte if self.bigcode else body.embed_tokens).weight
        self.wpe = body.wpe.weight if self.bigcode else None  # learned positions (gpt_bigcode)
        self.final = norm_of(em.final_norm)
        self.head = em.lm_head.weight
        self.head_bias = bias_of(em.lm_head)

    def pick_for(self, inputs: torch.Tensor, next_ids: torch.Tensor, trash: int) -> Pick:
        """The greedy choice's state for a step whose inputs are ``inputs`` [3, rows, 1]."""
        return Pick(inputs, next_ids, trash)

    def _pdl(self, op: str) -> int:
        return self.pdl_by_op.get(op, self.pdl)

    def _tiles(self, op: str, B: int, N: int, K_in: int) -> K.Tiles | None:
        kw = self.tile_kw.get(op)
        return None if kw is None else K.Tiles.make(B, N, K_in, **kw)

    def decode(self, ids, pos, wpos, key_pos, pick: Pick | None = None):
        """ids, pos, wpos: [B, 1]; key_pos: [L] -> logits [B, V] float32 (as EngineModel).
        Row b is slot b. ``pick``: also the step's greedy ids into ``pick.next_ids[:B]``, fed
        back into the inputs (ids, pos, wpos are then the first B rows of ``pick.inputs``)."""
        B = ids.shape[0]
        return self._forward(
            ids.reshape(-1), pos.reshape(-1), wpos.reshape(-1), self.em._arange[:B],
            key_pos.shape[0], pick,
        )  # fmt: skip

    def _forward(self, ids, pos, wpos, slots, n_keys: int, pick: Pick | None = None):
        """Rows of (token, position, write position, slot): ids, pos, wpos, slots: [R]; each
        row attends its slot at positions 0..pos, and writes only its newest key there (at pos;
        padding rows write the trash row), one row per slot, as ``attention`` requires.
        -> logits [R, V] float32."""
        em, cache, sh = self.em, self.em.kv, self.em.shape
        # The residual stream in float32: the output and down projections add into it in place.
        pdl = self._pdl
        x = embed(ids, pos, self.wte, self.wpe, pdl=pdl("embed"))  # [R, E]
        cos, sin = (None, None) if self.bigcode else (em.cos, em.sin)
        mlp_act = K.ACT_GELU_TANH if self.bigcode else K.ACT_SILU_MUL
        R = ids.shape[0]
        E, n_qkv = x.shape[1], (sh.n_heads + 2 * sh.n_kv_heads) * sh.head_dim
        t_qkv = self._tiles("qkv", R, n_qkv, E)
        t_o = self._tiles("o", R, E, sh.n_heads * sh.head_dim)
        for i, lw in enumerate(self.layers):
            k_cache, v_cache = cache.k[i], cache.v[i]  # [N, Hkv, M + 1, D]
            n_mid = lw.w_down.shape[1]
            q = K.qkv_rope(
                x, lw.w_qkv, lw.b_qkv,
                n_heads=sh.n_heads, n_kv=sh.n_kv_heads, head_dim=sh.head_dim,
                k_cache=k_cache, v_cache=v_cache, pos=pos, wpos=wpos, slots=slots,
                cos=cos, sin=sin,
                norm=self.norm_kind, norm_w=lw.ln1[0], norm_b=lw.ln1[1], eps=lw.ln1[2],
                tiles=t_qkv, pdl=pdl("qkv"),
            )  # fmt: skip  # q: [R, H, D]
            attn = attention(
                q, k_cache, v_cache, pos, slots, n_keys, em.scaling, pdl=pdl("attention")
            )
            K.linear(attn, lw.w_o, lw.b_o, accumulate=x, tiles=t_o, pdl=pdl("o"))
            h = K.linear(
                x, lw.w_up, lw.b_up,
                norm=self.norm_kind, norm_w=lw.ln2[0], norm_b=lw.ln2[1], eps=lw.ln2[2],
                act=mlp_act, tiles=self._tiles("up", R, n_mid, E), pdl=pdl("up"),
            )  # fmt: skip  # [R, I]
            K.linear(h, lw.w_down, lw.b_down, accumulate=x,
                     tiles=self._tiles("down", R, E, n_mid), pdl=pdl("down"))  # fmt: skip
        w, b, eps = self.final
        logits = K.linear(
            x, self.head, self.head_bias,
            norm=self.norm_kind, norm_w=w, norm_b=b, eps=eps, out_dtype=torch.float32,
            tiles=self._tiles("head", R, self.head.shape[0], E), pdl=pdl("head"), pick=pick,
        )  # fmt: skip
        if pick is not None:
            try:
                feedback(pick, R, pdl=pdl("feedback"))
            except Exception:
                # The product's offers are in; the next step's pick must not see them.
                pick.best.fill_(PICK_EMPTY)
                raise
        return logits

# SPDX-License-Identifier: Apache-2.0
"""The decode step on Triton kernels: six launches per layer, weights read once.

``FusedDecode.decode`` has the same contract as ``EngineModel.decode`` (so ``graphs`` captures
either) and computes the same function: per layer, norm + q/k/v projection + rotary embedding +
cache write in one kernel, split-K attention (two), the output projection added into the float32
residual stream, norm + gate/up projection + activation, and the down projection added likewise.

The stacked weights it needs (q/k/v, gate/up) are built once; the HF modules' own parameters are
then re-pointed at slices of them, so the model keeps one copy of every weight and the eager
prefill path, which calls those modules, reads the same memory.

Supported: llama-style decoders with SiLU MLPs and no per-head q/k norm (llama, qwen2, mistral),
and gpt_bigcode with the tanh GELU. ``fused_support`` says why not otherwise, and the engine
keeps its eager decode step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import kernels as K
from .model import LLAMA_LIKE, EngineModel


@dataclass
class _Layer:
    w_qkv: torch.Tensor  # [(H + 2 Hkv) D, E]
    b_qkv: torch.Tensor | None
    w_o: torch.Tensor  # [E, H D]
    b_o: torch.Tensor | None
    w_up: torch.Tensor  # [2 I, E] gate rows then up rows (llama), or [I, E] (gpt_bigcode)
    b_up: torch.Tensor | None
    w_down: torch.Tensor  # [E, I]
    b_down: torch.Tensor | None
    ln1: tuple[torch.Tensor, torch.Tensor | None, float]  # weight, bias, eps
    ln2: tuple[torch.Tensor, torch.Tensor | None, float]


def fused_support(em: EngineModel) -> str | None:
    """None when the fused decode step can run this model, else the reason it cannot."""
    cfg = em.model.config
    sh = em.shape
    d = sh.head_dim
    if d < 32 or d & (d - 1):
        return f"head_dim {d} is not a power of two >= 32"
    if em.arch == "gpt_bigcode":
        if cfg.activation_function not in ("gelu_pytorch_tanh", "gelu_new"):
            return f"activation {cfg.activation_function!r}"
        return None
    if em.arch not in LLAMA_LIKE:
        return f"architecture {em.arch!r}"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act!r}"
    if hasattr(em.layers[0].self_attn, "q_norm"):
        return "per-head q/k norm (qwen3)"
    return None


def _stack(*linears) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One weight (and bias) for several Linears, whose parameters become views of it."""
    w = torch.cat([m.weight.detach() for m in linears])
    has_bias = [m.bias is not None for m in linears]
    b = torch.cat([m.bias.detach() for m in linears]) if all(has_bias) else None
    if any(has_bias) and b is None:
        raise ValueError("some stacked projections have a bias and some do not")
    row = 0
    for m in linears:
        n = m.weight.shape[0]
        m.weight.data = w[row : row + n]
        if b is not None:
            m.bias.data = b[row : row + n]
        row += n
    return w, b


def _norm(mod) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    eps = getattr(mod, "variance_epsilon", None) or getattr(mod, "eps", 1e-6)
    return mod.weight, getattr(mod, "bias", None), float(eps)


def _bias(mod) -> torch.Tensor | None:
    return getattr(mod, "bias", None)


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
        prefer = K.PDL_OFF if self.bigcode else K.PDL_LATE
        self.pdl = K.pdl_mode(em.device, prefer)
        # Tile choices per product ("qkv", "o", "up", "down", "head"): ``Tiles.make`` keywords
        # that replace ``Tiles.choose``'s heuristic (bench/step_sweep.py, the tests).
        self.tile_kw: dict[str, dict] = {}
        with torch.no_grad():
            self.layers = [self._layer(layer) for layer in em.layers]
        self.final = _norm(em.final_norm)
        self.head = em.lm_head.weight
        self.head_bias = _bias(em.lm_head)

    def _layer(self, layer) -> _Layer:
        if self.bigcode:
            a, m = layer.attn, layer.mlp
            return _Layer(
                a.c_attn.weight, _bias(a.c_attn), a.c_proj.weight, _bias(a.c_proj),
                m.c_fc.weight, _bias(m.c_fc), m.c_proj.weight, _bias(m.c_proj),
                _norm(layer.ln_1), _norm(layer.ln_2),
            )  # fmt: skip
        a, m = layer.self_attn, layer.mlp
        w_qkv, b_qkv = _stack(a.q_proj, a.k_proj, a.v_proj)
        w_up, b_up = _stack(m.gate_proj, m.up_proj)
        return _Layer(
            w_qkv, b_qkv, a.o_proj.weight, _bias(a.o_proj),
            w_up, b_up, m.down_proj.weight, _bias(m.down_proj),
            _norm(layer.input_layernorm), _norm(layer.post_attention_layernorm),
        )  # fmt: skip

    def _tiles(self, op: str, B: int, N: int, K_in: int) -> K.Tiles | None:
        kw = self.tile_kw.get(op)
        return None if kw is None else K.Tiles.make(B, N, K_in, **kw)

    def decode(self, ids, pos, wpos, key_pos):
        """ids, pos, wpos: [B, 1]; key_pos: [L] -> logits [B, V] float32 (as EngineModel).
        Row b is slot b."""
        B = ids.shape[0]
        return self._forward(
            ids.reshape(-1), pos.reshape(-1), wpos.reshape(-1), self.em._arange[:B],
            key_pos.shape[0],
        )  # fmt: skip

    def _forward(self, ids, pos, wpos, slots, n_keys: int):
        """Rows of (token, position, write position, slot): ids, pos, wpos, slots: [R]; each
        row attends its slot at positions 0..pos. -> logits [R, V] float32."""
        em, cache, sh = self.em, self.em.cache, self.em.shape
        # The residual stream in float32: the output and down projections add into it in place.
        x = em._embed(ids[:, None], pos[:, None])[:, 0].float()  # [R, E]
        cos, sin = (None, None) if self.bigcode else (em.cos, em.sin)
        mlp_act = K.ACT_GELU_TANH if self.bigcode else K.ACT_SILU_MUL
        pdl, R = self.pdl, ids.shape[0]
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
                tiles=t_qkv, pdl=pdl,
            )  # fmt: skip  # q: [R, H, D]
            attn = K.attention(q, k_cache, v_cache, pos, slots, n_keys, em.scaling, pdl=pdl)
            K.linear(attn, lw.w_o, lw.b_o, accumulate=x, tiles=t_o, pdl=pdl)
            h = K.linear(
                x, lw.w_up, lw.b_up,
                norm=self.norm_kind, norm_w=lw.ln2[0], norm_b=lw.ln2[1], eps=lw.ln2[2],
                act=mlp_act, tiles=self._tiles("up", R, n_mid, E), pdl=pdl,
            )  # fmt: skip  # [R, I]
            K.linear(h, lw.w_down, lw.b_down, accumulate=x,
                     tiles=self._tiles("down", R, E, n_mid), pdl=pdl)  # fmt: skip
        w, b, eps = self.final
        return K.linear(
            x, self.head, self.head_bias,
            norm=self.norm_kind, norm_w=w, norm_b=b, eps=eps, out_dtype=torch.float32,
            tiles=self._tiles("head", R, self.head.shape[0], E), pdl=pdl,
        )  # fmt: skip

# SPDX-License-Identifier: Apache-2.0
"""The model side of the engine: a KV cache we own, and a forward pass over the HF model's modules.

Why not call the transformers model's own ``forward``? Its cache and mask APIs changed between
the 5.x releases we run (the GPU machine has 5.17, development 5.24: ``past_key_values`` became
``cache``), and its mask building does host-side checks that break CUDA-graph capture. The
per-layer modules (projections, norms, MLPs, rotary tables) are stable, so we call those and own
only what the engine needs to control: where keys and values live (one preallocated tensor for
every slot) and the attention over them. Weights are shared with the loaded model, never copied;
``torch.ao.quantization.quantize_dynamic`` on the model still applies, since we call its Linear
modules.

Supported: llama-style decoders (llama, qwen2, qwen3, mistral without sliding window) and
gpt_bigcode (StarCoder). Anything else raises ``UnsupportedModel`` so the daemon can fall back to
the plain transformers backend.

Shapes: B = rows (sequences) in a step, S = tokens per row, L = cache positions attended,
N = slots, M = max_len, H / Hkv = query / key-value heads, G = H // Hkv, D = head_dim.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

log = logging.getLogger(__name__)


class UnsupportedModel(ValueError):
    """The engine has no forward pass for this architecture."""


LLAMA_LIKE = frozenset({"llama", "qwen2", "qwen3", "mistral"})
SUPPORTED = LLAMA_LIKE | {"gpt_bigcode"}


@dataclass(frozen=True)
class ModelShape:
    arch: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int


class KVCache:
    """Keys and values of every slot, allocated once.

    k, v: [layers, N, Hkv, M + 1, D]. Position M is a trash row: padding rows of a batched step
    write there, so a step never disturbs the cached prefix of an idle slot.
    """

    def __init__(
        self, shape: ModelShape, slots: int, max_len: int, device: torch.device, dtype
    ) -> None:
        size = (shape.n_layers, slots, shape.n_kv_heads, max_len + 1, shape.head_dim)
        self.k = torch.zeros(size, device=device, dtype=dtype)
        self.v = torch.zeros(size, device=device, dtype=dtype)
        self.slots = slots
        self.max_len = max_len
        self.trash = max_len
        self.heads = torch.arange(shape.n_kv_heads, device=device)

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    def copy_prefix(self, src: int, dst: int, n: int) -> None:
        """Copy the first ``n`` positions of slot ``src`` into slot ``dst`` (all layers)."""
        self.k[:, dst, :, :n].copy_(self.k[:, src, :, :n])
        self.v[:, dst, :, :n].copy_(self.v[:, src, :, :n])

    def write(self, layer: int, wslot, wpos, k, v) -> None:
        # wslot, wpos: [B, S]; k, v: [B, Hkv, S, D]
        idx = (wslot[:, :, None], wpos[:, :, None], self.heads[None, None, :])
        # The index order (slot, pos, head) needs the cache seen as [N, M + 1, Hkv, D].
        self.k[layer].transpose(1, 2).index_put_(idx, k.transpose(1, 2))
        self.v[layer].transpose(1, 2).index_put_(idx, v.transpose(1, 2))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def triton_part(what: str, want: bool | None, load, em: EngineModel):
    """A Triton-built part of the engine, or None where it cannot run and was not demanded.

    ``load()`` imports the part (Triton may be missing) and returns (build, support): its
    constructor and the check that says why this model cannot use it (None: it can). ``want``
    True raises ``UnsupportedModel`` with the reason; None logs it and returns None."""
    try:
        build, support = load()
    except ImportError as exc:  # no Triton on this machine
        reason = f"needs Triton: {exc}"
    else:
        reason = support(em)
        if reason is None:
            return build()
    if want:
        raise UnsupportedModel(f"{what}: {reason}")
    log.info("%s off: %s", what, reason)
    return None


class EngineModel:
    """``prefill`` and ``decode`` steps over a loaded HF causal LM, with a KV cache we own."""

    def __init__(
        self,
        model,
        max_len: int,
        compile: bool = False,
        compile_prefill: bool = False,
        fused: bool | None = None,
        fused_max_batch: int | None = None,
    ) -> None:
        cfg = model.config
        arch = getattr(cfg, "model_type", "")
        if arch not in SUPPORTED:
            raise UnsupportedModel(f"engine supports {sorted(SUPPORTED)}, not {arch!r}")
        if arch in LLAMA_LIKE and getattr(cfg, "use_sliding_window", False):
            raise UnsupportedModel("sliding-window attention is not supported by the engine")
        self.model = model
        self.arch = arch
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.max_len = max_len
        self.lm_head = model.get_output_embeddings()
        if arch == "gpt_bigcode":
            body = model.transformer
            self.layers = list(body.h)
            a = self.layers[0].attn
            n_heads, n_kv, head_dim = a.num_heads, a.kv_heads, a.head_dim
            self.scaling = a.scaling
            self.final_norm = body.ln_f
            n_pos = cfg.max_position_embeddings
            if max_len > n_pos:
                raise UnsupportedModel(f"max_len {max_len} exceeds the model's {n_pos} positions")
        else:
            body = model.model
            self.layers = list(body.layers)
            a = self.layers[0].self_attn
            head_dim = a.head_dim
            n_heads = cfg.num_attention_heads
            n_kv = cfg.num_key_value_heads
            self.scaling = a.scaling
            self.final_norm = body.norm
            # cos/sin for every position once, from the model's own rotary module, so rope
            # scaling variants come out exactly as transformers computes them.
            with torch.no_grad():
                pos = torch.arange(max_len + 1, device=self.device)[None]
                probe = torch.zeros(1, device=self.device, dtype=self.dtype)
                cos, sin = body.rotary_emb(probe, pos)
            self.cos, self.sin = cos[0], sin[0]  # [M + 1, D]
        self.body = body
        # On CUDA, keep prefill attention off the cuDNN backend, which builds a plan per new
        # shape; prompt lengths rarely repeat. Suspected (not yet re-measured) cause of ~90 ms
        # extra first-token time on unrepeated lengths (docs/performance.md). Memory-efficient
        # attention takes any length and a mask with no per-shape setup; flash attention serves
        # the maskless causal prefill of a prompt from position 0.
        self._prefill_backends = (
            [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
            if self.device.type == "cuda"
            else [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]
        )
        self.shape = ModelShape(arch, len(self.layers), n_heads, n_kv, head_dim, cfg.vocab_size)
        self.cache: KVCache | None = None
        # Each layer's weights stacked for the engine's kernels (``weights.layer_weights``): made
        # by whichever of the fused step and the packed prefill is built first.
        self._layer_weights: list | None = None
        # The steps the scheduler calls. torch.compile fuses the dozens of small elementwise
        # kernels per layer (norms, rope, masking, activations) that otherwise dominate a decode
        # step on the GPU, even inside a CUDA graph: each kernel costs a few microseconds.
        self.prefill_step = self.prefill
        self.fused = self._fused_decode(fused)
        # Batches above this many rows take the eager step. None: where the fused step was
        # measured slower (docs/performance.md, run 11): gpt_bigcode above 8 rows (at 32 and 64
        # rows 2.83 and 4.36 ms against 2.46 and 2.71 eager); never for the llama-like models
        # (at 64 rows 2.3-6.5 ms against 4.1-7.5). The choice is made per captured graph (the
        # batch is static there), so it costs nothing per step.
        if fused_max_batch is None:
            fused_max_batch = 8 if arch == "gpt_bigcode" else 1 << 30
        self.fused_max_batch = fused_max_batch
        self._eager_decode = (
            torch.compile(self.decode, dynamic=True, fullgraph=True) if compile else self.decode
        )
        self.decode_step = self._eager_decode if self.fused is None else self._decode_either
        if compile_prefill:  # prefill is compute-bound at large chunks; compiling it is optional
            self.prefill_step = torch.compile(self.prefill, dynamic=True, fullgraph=True)

    def _fused_decode(self, fused: bool | None):
        """The Triton decode step (``fused``), or None for the eager one.

        None (auto): on CUDA when Triton imports and the architecture is supported. True: always
        (on the CPU only under ``TRITON_INTERPRET=1``, which the tests use); unsupported raises.
        """
        if fused is False or (fused is None and self.device.type != "cuda"):
            return None

        def load():
            from .fused import FusedDecode, fused_support

            return lambda: FusedDecode(self), fused_support

        return triton_part("fused decode", fused, load, self)

    @property
    def kv(self) -> KVCache:
        """The cache ``allocate`` made; every step runs after it."""
        if self.cache is None:
            raise RuntimeError("no KV cache yet: allocate() comes first")
        return self.cache

    def allocate(self, slots: int) -> KVCache:
        self.cache = KVCache(self.shape, slots, self.max_len, self.device, self.dtype)
        # Made here, not lazily: a tensor first made inside a CUDA-graph capture would live in
        # the graph's private pool.
        self._arange = torch.arange(slots, device=self.device)
        self._key_pos_all = torch.arange(self.max_len + 1, device=self.device)
        return self.cache

    # -- one layer's pieces -------------------------------------------------------------------

    def _embed(self, ids, pos):
        # ids, pos: [B, S] -> x: [B, S, E]
        if self.arch == "gpt_bigcode":
            return self.body.wte(ids) + self.body.wpe(pos)
        return self.body.embed_tokens(ids)

    def _rope(self, pos):
        # pos: [B, S] -> cos, sin: [B, 1, S, D], gathered once per step for all layers
        if self.arch == "gpt_bigcode":
            return None
        return self.cos[pos][:, None], self.sin[pos][:, None]

    def _qkv(self, layer, h, rope):
        # h: [B, S, E] -> q: [B, H, S, D], k, v: [B, Hkv, S, D]
        B, S, _ = h.shape
        sh = self.shape
        if self.arch == "gpt_bigcode":
            attn = layer.attn
            qkv = attn.c_attn(h)
            if attn.multi_query:
                q, k, v = qkv.split((attn.embed_dim, attn.kv_dim, attn.kv_dim), dim=-1)
                q = q.view(B, S, sh.n_heads, sh.head_dim)
                k = k.view(B, S, 1, sh.head_dim)
                v = v.view(B, S, 1, sh.head_dim)
            else:
                q, k, v = qkv.view(B, S, sh.n_heads, 3 * sh.head_dim).split(sh.head_dim, dim=-1)
            return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        attn = layer.self_attn
        q = attn.q_proj(h).view(B, S, sh.n_heads, sh.head_dim)
        k = attn.k_proj(h).view(B, S, sh.n_kv_heads, sh.head_dim)
        v = attn.v_proj(h).view(B, S, sh.n_kv_heads, sh.head_dim)
        if hasattr(attn, "q_norm"):  # qwen3
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        cos, sin = rope
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        return q, k, v

    def _attend_decode(self, q, kc, vc, mask):
        # q: [B, H, 1, D]; kc, vc: [B, Hkv, L, D] (views of the cache, no copy); mask: [B, L]
        # Grouped heads become the rows of one batched product, so each cached key is read once
        # for all G query heads that share it.
        B, H, _, D = q.shape
        Hkv = kc.shape[1]
        qg = q.reshape(B, Hkv, H // Hkv, D)  # [B, Hkv, G, D]
        scores = torch.matmul(qg, kc.transpose(-1, -2)).float() * self.scaling  # [B, Hkv, G, L]
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(vc.dtype)
        out = torch.matmul(probs, vc)  # [B, Hkv, G, D]
        return out.reshape(B, 1, H * D)

    def _attend_prefill(self, q, kc, vc, mask):
        # q: [B, H, S, D]; kc, vc: [B, Hkv, L, D]; mask: [B, S, L]
        B, H, S, D = q.shape
        Hkv, L = kc.shape[1], kc.shape[2]
        G = H // Hkv
        if G > 1:
            kc = kc[:, :, None].expand(B, Hkv, G, L, D).reshape(B, H, L, D)
            vc = vc[:, :, None].expand(B, Hkv, G, L, D).reshape(B, H, L, D)
        # No mask: causal over the chunk itself, the fused kernel stock transformers uses too.
        # Rows are right-padded, so a real token never sees a padding one.
        out = F.scaled_dot_product_attention(
            q,
            kc,
            vc,
            attn_mask=None if mask is None else mask[:, None],
            is_causal=mask is None,
            scale=self.scaling,
        )  # [B, H, S, D]
        return out.transpose(1, 2).reshape(B, S, H * D)

    def layer_parts(self, layer):
        """A decoder layer's (first norm, second norm, output projection, MLP) modules."""
        if self.arch == "gpt_bigcode":
            return layer.ln_1, layer.ln_2, layer.attn.c_proj, layer.mlp
        ln1, ln2 = layer.input_layernorm, layer.post_attention_layernorm
        return ln1, ln2, layer.self_attn.o_proj, layer.mlp

    def _block(self, i, layer, x, rope, wpos, rows, L, mask, decode):
        cache = self.cache
        ln1, ln2, o_proj, mlp = self.layer_parts(layer)
        q, k, v = self._qkv(layer, ln1(x), rope)
        if decode:  # rows is a count: slots 0..rows-1, a plain view of the cache
            wslot = self._arange[:rows, None].expand_as(wpos)
            cache.write(i, wslot, wpos, k, v)
            kc, vc = cache.k[i, :rows, :, :L], cache.v[i, :rows, :, :L]
        elif mask is None:  # prefill from position 0: the chunk attends only to itself
            cache.write(i, rows[:, None].expand_as(wpos), wpos, k, v)
            kc, vc = k, v
        else:  # prefill after cached tokens: rows are arbitrary slots, gathered
            cache.write(i, rows[:, None].expand_as(wpos), wpos, k, v)
            kc, vc = cache.k[i, rows, :, :L], cache.v[i, rows, :, :L]
        attn = (
            self._attend_decode(q, kc, vc, mask)
            if decode
            else self._attend_prefill(q, kc, vc, mask)
        )
        x = x + o_proj(attn)
        return x + mlp(ln2(x))

    # -- the two kinds of step ----------------------------------------------------------------

    def decode(self, ids, pos, wpos, key_pos):
        """One token for slots 0..B-1. ids, pos, wpos: [B, 1]; key_pos: [L] -> logits [B, V].

        Sizes come from tensor shapes, not int arguments, so torch.compile treats B and L as
        dynamic and compiles once for every bucket.
        """
        n_rows, L = ids.shape[0], key_pos.shape[0]
        x = self._embed(ids, pos)
        mask = key_pos[None, :] <= pos  # [B, L]
        rope = self._rope(pos)
        for i, layer in enumerate(self.layers):
            x = self._block(i, layer, x, rope, wpos, n_rows, L, mask, decode=True)
        return self.lm_head(self.final_norm(x[:, 0])).float()

    def prefill(self, ids, pos, wpos, slots, key_pos, last, from_zero: bool = False):
        """A chunk of prompt for arbitrary slots.

        ids, pos, wpos: [B, S]; slots: [B]; key_pos: [L]; last: [B] index of each row's last
        real token; from_zero: every row's chunk starts at position 0.
        Returns logits [B, V] (float32) at those positions only: the vocabulary projection of
        every prompt position would cost more than the rest of a short chunk.
        """
        x = self._embed(ids, pos)
        L = key_pos.shape[0]
        # from_zero: every row starts at position 0, so nothing cached is attended.
        mask = None if from_zero else key_pos[None, None, :] <= pos[:, :, None]  # [B, S, L]
        rope = self._rope(pos)
        with sdpa_kernel(self._prefill_backends):
            for i, layer in enumerate(self.layers):
                x = self._block(i, layer, x, rope, wpos, slots, L, mask, decode=False)
        h = x[torch.arange(x.shape[0], device=x.device), last]  # [B, E]
        return self.lm_head(self.final_norm(h)).float()

    def fused_for(self, rows: int) -> bool:
        """Whether a decode step of this many rows takes the fused step."""
        return self.fused is not None and rows <= self.fused_max_batch

    def _decode_either(self, ids, pos, wpos, key_pos):
        if not self.fused_for(ids.shape[0]):
            return self._eager_decode(ids, pos, wpos, key_pos)
        return self.fused.decode(ids, pos, wpos, key_pos)

    def key_pos(self, L: int):
        """Cache positions 0..L-1, the argument that sets how far a step attends."""
        return self._key_pos_all[:L]

# SPDX-License-Identifier: Apache-2.0
"""Triton kernels for the packed prefill's elementwise work: one pass each instead of several.

At thousands of tokens a step, the HF modules' elementwise work is memory traffic: RMSNorm is
six kernels over the [T, E] stream, rotary embedding eight over q and k plus copies for the
cache write, SiLU(gate) * up three passes over a [T, 2I] tensor (160 MB at 8192 tokens of
qwen 0.5b). These do each in one pass:

- ``rms_norm``: ``w * (x * rsqrt(mean(x^2) + eps)).to(dtype)``, HF's RMSNorm with its roundings;
- ``silu_mul``: ``silu(gate).to(dtype) * up`` over a gate/up-stacked product [T, 2I], HF's
  roundings too;
- ``qkv_scatter``: a stacked q/k/v product [T, (H + 2 Hkv) D] -> q [T, H, D] rotated, and k
  (rotated) and v written straight into the KV cache at each token's slot and position. The
  rotation is computed in float32 and rounded once, as the decode kernel does, where HF's
  ``q * cos + rotate_half(q) * sin`` rounds three times in bf16: the same function, not the same
  bits (float32, where rounding is exact enough, is what the tests compare).

Each runs in Triton's interpreter on the CPU too (the unit tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .kernels import rope_store


@triton.jit
def _rms_norm_kernel(x_ptr, w_ptr, y_ptr, E, eps, BLOCK_E: tl.constexpr):
    row = tl.program_id(0)
    re = tl.arange(0, BLOCK_E)
    ok = re < E
    x = tl.load(x_ptr + row * E + re, mask=ok, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / E + eps)
    w = tl.load(w_ptr + re, mask=ok, other=0.0).to(tl.float32)
    y = (x * rstd).to(y_ptr.dtype.element_ty).to(tl.float32) * w
    tl.store(y_ptr + row * E + re, y.to(y_ptr.dtype.element_ty), mask=ok)


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """x: [T, E] -> [T, E] in x's dtype."""
    T, E = x.shape
    y = torch.empty_like(x)
    _rms_norm_kernel[(T,)](x, w, y, E, eps, BLOCK_E=triton.next_power_of_2(E), num_warps=4)
    return y


@triton.jit
def _silu_mul_kernel(h_ptr, y_ptr, I_, BLOCK: tl.constexpr):
    row, blk = tl.program_id(0), tl.program_id(1)
    ri = blk * BLOCK + tl.arange(0, BLOCK)
    ok = ri < I_
    dt = y_ptr.dtype.element_ty
    g = tl.load(h_ptr + row * 2 * I_ + ri, mask=ok, other=0.0).to(tl.float32)
    u = tl.load(h_ptr + row * 2 * I_ + I_ + ri, mask=ok, other=0.0).to(tl.float32)
    a = (g / (1.0 + tl.exp(-g))).to(dt).to(tl.float32)
    tl.store(y_ptr + row * I_ + ri, (a * u).to(dt), mask=ok)


def silu_mul(h: torch.Tensor) -> torch.Tensor:
    """h: [T, 2I], gate columns then up columns -> [T, I]."""
    T, two_i = h.shape
    n = two_i // 2
    y = torch.empty(T, n, device=h.device, dtype=h.dtype)
    block = 1024
    _silu_mul_kernel[(T, triton.cdiv(n, block))](h, y, n, BLOCK=block, num_warps=4)
    return y


@triton.jit
def _qkv_scatter_kernel(
    qkv_ptr, cos_ptr, sin_ptr, pos_ptr, wpos_ptr, slot_ptr, q_ptr, k_ptr, v_ptr,
    T, n_heads, n_kv, s_slot, s_head, s_pos,
    ROPE: tl.constexpr, D: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    # Program (token block, head t): head t of q (t < H), k (t < H + Hkv) or v, both halves of
    # each token's head, so rope rotates them together (``kernels.rope_store``).
    blk, t = tl.program_id(0), tl.program_id(1)
    HALF: tl.constexpr = D // 2
    rt = blk * BLOCK_T + tl.arange(0, BLOCK_T)
    rj = tl.arange(0, HALF)
    ok = (rt < T)[:, None]
    width = (n_heads + 2 * n_kv) * D
    src = qkv_ptr + rt[:, None] * width + t * D + rj[None, :]
    a1 = tl.load(src, mask=ok, other=0.0).to(tl.float32)
    a2 = tl.load(src + HALF, mask=ok, other=0.0).to(tl.float32)
    rope_store(
        a1, a2, t, rt, rt < T, rj, pos_ptr, wpos_ptr, slot_ptr, cos_ptr, sin_ptr,
        q_ptr, k_ptr, v_ptr, n_heads, n_kv, s_slot, s_head, s_pos, ROPE, D,
    )  # fmt: skip


def qkv_scatter(
    qkv: torch.Tensor,
    *,
    n_heads: int,
    n_kv: int,
    head_dim: int,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    pos: torch.Tensor,
    wpos: torch.Tensor,
    slots: torch.Tensor,
    cos: torch.Tensor | None = None,
    sin: torch.Tensor | None = None,
) -> torch.Tensor:
    """qkv: [T, (H + 2 Hkv) D] -> q: [T, H, D]; k, v of token i into slot ``slots[i]`` at
    ``wpos[i]`` of one layer's cache [slots, Hkv, M + 1, D]. pos, wpos, slots: [T] int64; cos,
    sin: [M + 1, D] (None: no rotary embedding, as in gpt_bigcode)."""
    T = qkv.shape[0]
    D = head_dim
    qkv = qkv.contiguous()
    pos, wpos, slots = pos.contiguous(), wpos.contiguous(), slots.contiguous()
    q = torch.empty(T, n_heads, D, device=qkv.device, dtype=qkv.dtype)
    rope = cos is not None
    s_slot, s_head, s_pos, _ = k_cache.stride()
    block_t = 16
    _qkv_scatter_kernel[(triton.cdiv(T, block_t), n_heads + 2 * n_kv)](
        qkv, cos if rope else qkv, sin if rope else qkv, pos, wpos, slots, q, k_cache, v_cache,
        T, n_heads, n_kv, s_slot, s_head, s_pos,
        ROPE=rope, D=D, BLOCK_T=block_t, num_warps=4,
    )  # fmt: skip
    return q

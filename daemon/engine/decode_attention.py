# SPDX-License-Identifier: Apache-2.0
"""Split-K ("flash-decoding") attention of one new query per row over its cached keys.

A program per (row, KV head, split of the keys): the grouped query heads of one KV head share
each key load, and a small second kernel merges the splits by their log-sum-exp. Merging inside
the last split to finish measured slower (docs/performance.md, run 19): one program then merges
every head in turn; so did merging in the output product's input loader (run 25), where every
output tile re-reads all the splits. ``softmax_fold`` is shared with the prefill's chunk attention.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .pdl import after_previous, pdl_args, release_next
from .tile_math import dot


@triton.jit
def softmax_fold(scores, v, m_i, l_i, acc, BASE2: tl.constexpr):
    # One step of online softmax: a block of (masked) scores [R, L] and its values [L, D] folded
    # into the running row max, sum and output -> (m_i, l_i, acc). ``BASE2``: the scores are
    # already scaled by log2(e) and exponentiate in base 2 (the chunk attention's form).
    m_new = tl.maximum(m_i, tl.max(scores, axis=1))
    if BASE2:
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(scores - m_new[:, None])
    else:
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(scores - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + dot(p.to(v.dtype), v)
    return m_new, l_i, acc


@triton.jit
def _attn_split_kernel(
    q_ptr, k_ptr, v_ptr, pos_ptr, slot_ptr, o_ptr, lse_ptr,
    scale, n_heads, s_slot, s_head, s_pos,
    SPLIT: tl.constexpr, G: tl.constexpr, D: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_L: tl.constexpr, PDL: tl.constexpr, PRELOAD: tl.constexpr,
):  # fmt: skip
    # q: [B, H, D]; k, v: one layer of the cache; row b attends slot slot[b] at positions
    # 0..pos[b], the newest of which the previous kernel (q/k/v) has just written.
    # o: [B, H, S, D] float32 partial outputs, lse: [B, H, S] their log-sum-exp.
    b, hk, s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n_splits = tl.num_programs(2)
    rg = tl.arange(0, BLOCK_G)
    rd = tl.arange(0, D)
    rl = tl.arange(0, BLOCK_L)
    g_ok = rg < G
    head = hk * G + rg
    # Positions and slots come from a kernel before the previous one (the step's inputs), so
    # they, and the first tile of keys and values (all but the newest written steps ago), load
    # before the wait and overlap the previous kernel's end.
    newest = tl.load(pos_ptr + b)
    n_keys = newest + 1
    start = s * SPLIT
    end = tl.minimum(start + SPLIT, n_keys)
    kv = tl.load(slot_ptr + b) * s_slot + hk * s_head
    ll = start + rl
    l_ok = ll < end
    offs = kv + ll[:, None] * s_pos + rd[None, :]
    if PRELOAD:
        k = tl.load(k_ptr + offs, mask=l_ok[:, None], other=0.0)  # [BLOCK_L, D]
        v = tl.load(v_ptr + offs, mask=l_ok[:, None], other=0.0)
    after_previous(PDL)
    q_offs = (b * n_heads + head[:, None]) * D + rd[None, :]
    q = tl.load(q_ptr + q_offs, mask=g_ok[:, None], other=0.0)
    if PRELOAD:
        # The newest key and value, as the previous kernel wrote them (.cg: from L2, past any
        # line the early load left in this multiprocessor's L1), in the one split holding them.
        new = kv + newest * s_pos + rd
        at = rd * 0 + newest  # a [D] block: the interpreter refuses a scalar-derived mask
        here = (at >= start) & (at < start + BLOCK_L)
        is_new = (ll == newest)[:, None]
        k_new = tl.load(k_ptr + new, mask=here, other=0.0, cache_modifier=".cg")
        v_new = tl.load(v_ptr + new, mask=here, other=0.0, cache_modifier=".cg")
        k = tl.where(is_new, k_new[None, :], k)
        v = tl.where(is_new, v_new[None, :], v)
    else:
        k = tl.load(k_ptr + offs, mask=l_ok[:, None], other=0.0)
        v = tl.load(v_ptr + offs, mask=l_ok[:, None], other=0.0)
    m_i = tl.full([BLOCK_G], -1e30, tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, D], tl.float32)
    scores = tl.where(l_ok[None, :], dot(q, tl.trans(k)) * scale, float("-inf"))
    m_i, l_i, acc = softmax_fold(scores, v, m_i, l_i, acc, False)
    # The rest at a fixed trip count (masked past ``end``): splits past the row's length load
    # nothing.
    for l0 in range(BLOCK_L, SPLIT, BLOCK_L):
        ll = start + l0 + rl
        l_ok = ll < end
        offs = kv + ll[:, None] * s_pos + rd[None, :]
        k = tl.load(k_ptr + offs, mask=l_ok[:, None], other=0.0)
        scores = dot(q, tl.trans(k)) * scale  # [BLOCK_G, BLOCK_L]
        scores = tl.where(l_ok[None, :], scores, float("-inf"))
        v = tl.load(v_ptr + offs, mask=l_ok[:, None], other=0.0)
        m_i, l_i, acc = softmax_fold(scores, v, m_i, l_i, acc, False)
    release_next(PDL)
    lse = tl.where(l_i > 0, m_i + tl.log(l_i), float("-inf"))
    out = acc / tl.maximum(l_i, 1e-30)[:, None]
    row = (b * n_heads + head) * n_splits + s
    tl.store(o_ptr + row[:, None] * D + rd[None, :], out, mask=g_ok[:, None])
    tl.store(lse_ptr + row, lse, mask=g_ok)


@triton.jit
def _attn_merge_kernel(
    o_ptr, lse_ptr, out_ptr, n_splits, D: tl.constexpr, BLOCK_S: tl.constexpr, PDL: tl.constexpr
):
    # o: [B * H, S, D], lse: [B * H, S] -> out: [B * H, D] in the model's dtype
    r = tl.program_id(0)
    after_previous(PDL)
    rs = tl.arange(0, BLOCK_S)
    rd = tl.arange(0, D)
    s_ok = rs < n_splits
    lse = tl.load(lse_ptr + r * n_splits + rs, mask=s_ok, other=float("-inf"))
    w = tl.exp(lse - tl.max(lse, axis=0))
    w = w / tl.sum(w, axis=0)
    o = tl.load(
        o_ptr + (r * n_splits + rs[:, None]) * D + rd[None, :], mask=s_ok[:, None], other=0.0
    )
    out = tl.sum(o * w[:, None], axis=0)
    release_next(PDL)
    tl.store(out_ptr + r * D + rd, out.to(out_ptr.dtype.element_ty))


def split_len_for(n_keys: int, rows: int, n_kv: int) -> int:
    """Keys per split: enough splits to give the GPU ~128 programs, at least 64 keys each."""
    want = max(1, 128 // max(1, rows * n_kv))
    length = max(64, triton.next_power_of_2(triton.cdiv(n_keys, want)))
    return length


def attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    pos: torch.Tensor,
    slots: torch.Tensor,
    n_keys: int,
    scale: float,
    pdl: int | None = None,
    block_l: int = 64,
    num_warps: int | None = None,
    preload: bool = True,
) -> torch.Tensor:
    """q: [B, H, D]; row b attends slot ``slots[b]`` at positions 0..pos[b] (< n_keys) -> [B,
    H * D]. Of those keys the kernel just before may have written only the newest, pos[b] (the
    decode step's q/k/v kernel): the first keys load before waiting for it, and that one after.
    Rows must not share a slot. ``block_l`` (keys a loop step), ``num_warps``, ``preload`` (the
    first keys and values loaded before the wait): the benchmark's variants."""
    B, H, D = q.shape
    if num_warps is None:
        # 8 warps at head_dim 64: qwen 0.5b's step 0.800 -> 0.794 ms; at 128 no change
        # (starcoder 1.387 -> 1.389), 32 keys a step slower for both (docs/performance.md,
        # run 21). Other head sizes were not measured: they keep 4.
        num_warps = 8 if D == 64 else 4
    Hkv = k_cache.shape[1]
    G = H // Hkv
    pos, slots = pos.contiguous(), slots.contiguous()
    split = split_len_for(n_keys, B, Hkv)
    S = triton.cdiv(n_keys, split)
    part = torch.empty(B, H, S, D, device=q.device, dtype=torch.float32)
    lse = torch.empty(B, H, S, device=q.device, dtype=torch.float32)
    s_slot, s_head, s_pos, _ = k_cache.stride()
    _attn_split_kernel[(B, Hkv, S)](
        q, k_cache, v_cache, pos, slots, part, lse,
        scale, H, s_slot, s_head, s_pos,
        SPLIT=split, G=G, D=D, BLOCK_G=max(16, triton.next_power_of_2(G)), BLOCK_L=block_l,
        PRELOAD=preload, num_warps=num_warps, num_stages=2, **pdl_args(q, pdl),
    )  # fmt: skip
    out = torch.empty(B, H * D, device=q.device, dtype=q.dtype)
    _attn_merge_kernel[(B * H,)](
        part, lse, out, S, D=D, BLOCK_S=max(2, triton.next_power_of_2(S)), num_warps=1,
        **pdl_args(q, pdl),
    )  # fmt: skip
    return out

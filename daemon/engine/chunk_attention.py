# SPDX-License-Identifier: Apache-2.0
"""Causal attention of packed prompt chunks over the KV cache (a Triton kernel).

A prefill step packs the chunks of several sequences into one run of T tokens (``packed``):
each chunk is a slice of consecutive positions of one slot, its keys and values already written
to the cache. The kernel runs one program per (block of up to ``BLOCK_M`` queries of one chunk,
query head): flash attention over the slot's keys 0..(the block's last position), with the
causal mask inside the block. Everything it needs about the blocks comes from a small table in
device memory, so one launch shape serves any mix of chunk lengths and cached prefixes: the
property that lets a whole prefill step be captured in a CUDA graph per token bucket.

Block table rows: (first packed row, queries in the block, slot, position of its first query);
a row with 0 queries is padding and does nothing.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .decode_attention import softmax_fold
from .tile_math import dot

BLOCK_M = 64  # queries per program; also the packing granule of the block table


LOG2E = 1.4426950408889634  # scores in base 2: exp2 is the hardware's, exp one multiply more


@triton.jit
def _attend_keys(
    q, q_pos, m_i, l_i, acc, k_ptr, v_ptr, kv, l0, end, s_pos, scale,
    D: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
):  # fmt: skip
    # One online-softmax step over keys l0..l0+BLOCK_N of one slot and KV head. Unmasked, every
    # key is below every query's position (and ``end``), which saves the mask's work on all the
    # tiles but the block's diagonal ones.
    rn = tl.arange(0, BLOCK_N)
    rd = tl.arange(0, D)
    ll = l0 + rn
    offs = kv + ll[:, None] * s_pos + rd[None, :]
    if MASKED:
        l_ok = ll < end
        k = tl.load(k_ptr + offs, mask=l_ok[:, None], other=0.0)  # [BLOCK_N, D]
        scores = dot(q, tl.trans(k)) * scale  # [BLOCK_M, BLOCK_N]
        seen = l_ok[None, :] & (ll[None, :] <= q_pos[:, None])
        scores = tl.where(seen, scores, float("-inf"))
        v = tl.load(v_ptr + offs, mask=l_ok[:, None], other=0.0)
    else:
        k = tl.load(k_ptr + offs)
        scores = dot(q, tl.trans(k)) * scale
        v = tl.load(v_ptr + offs)
    return softmax_fold(scores, v, m_i, l_i, acc, True)


@triton.jit
def _attend_up_to(
    q, q_pos, k_ptr, v_ptr, kv, visible, end, s_pos, scale,
    D: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, INTERPRET: tl.constexpr,
):  # fmt: skip
    # Softmax attention of q [ROWS, D] (query positions q_pos [ROWS]) over keys 0..end-1 of one
    # slot and KV head, causally masked -> [ROWS, D] float32. Keys 0..visible-1 are seen by
    # every query: whole tiles of them go unmasked, the rest (the diagonal) masked.
    m_i = tl.full([ROWS], -1e30, tl.float32)
    l_i = tl.zeros([ROWS], tl.float32)
    acc = tl.zeros([ROWS, D], tl.float32)
    open_end = visible // BLOCK_N * BLOCK_N
    # The same steps either way: the interpreter cannot run a for loop to a bound loaded from
    # memory, and the compiler pipelines a for loop's loads where it would not a while loop's.
    if INTERPRET:
        l0 = 0
        while l0 < end:
            m_i, l_i, acc = _attend_keys(
                q, q_pos, m_i, l_i, acc, k_ptr, v_ptr, kv, l0, end, s_pos, scale, D, BLOCK_N,
                l0 >= open_end,
            )  # fmt: skip
            l0 += BLOCK_N
    else:
        for l0 in range(0, open_end, BLOCK_N):
            m_i, l_i, acc = _attend_keys(
                q, q_pos, m_i, l_i, acc, k_ptr, v_ptr, kv, l0, end, s_pos, scale, D, BLOCK_N,
                False,
            )  # fmt: skip
        for l0 in range(open_end, end, BLOCK_N):
            m_i, l_i, acc = _attend_keys(
                q, q_pos, m_i, l_i, acc, k_ptr, v_ptr, kv, l0, end, s_pos, scale, D, BLOCK_N,
                True,
            )  # fmt: skip
    return acc / tl.maximum(l_i, 1e-30)[:, None]


@triton.jit
def _chunk_attn_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, meta_ptr,
    scale, n_heads, G, s_slot, s_head, s_pos,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, INTERPRET: tl.constexpr,
    MASK_ALL: tl.constexpr,
):  # fmt: skip
    # q, o: [T, H, D]; k, v: one layer of the cache, [slots, Hkv, M + 1, D]; meta: [NB, 4].
    blk, h = tl.program_id(0), tl.program_id(1)
    first = tl.load(meta_ptr + blk * 4)
    n = tl.load(meta_ptr + blk * 4 + 1)
    slot = tl.load(meta_ptr + blk * 4 + 2)
    p0 = tl.load(meta_ptr + blk * 4 + 3)
    rm = tl.arange(0, BLOCK_M)
    rd = tl.arange(0, D)
    m_ok = rm < n
    q_pos = p0 + rm
    q_offs = ((first + rm)[:, None] * n_heads + h) * D + rd[None, :]
    q = tl.load(q_ptr + q_offs, mask=m_ok[:, None], other=0.0)
    kv = slot * s_slot + (h // G) * s_head
    end = p0 + n  # keys 0..end-1: the cached prefix and this chunk up to the block's last query
    visible = p0  # keys before the block's first query, which need no mask
    if MASK_ALL:
        visible = 0
    out = _attend_up_to(
        q, q_pos, k_ptr, v_ptr, kv, visible, end, s_pos, scale, D, BLOCK_M, BLOCK_N, INTERPRET
    )  # fmt: skip
    tl.store(o_ptr + q_offs, out.to(o_ptr.dtype.element_ty), mask=m_ok[:, None])


def chunk_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: torch.Tensor,
    scale: float,
    *,
    block_m: int = BLOCK_M,
    block_n: int | None = None,
    num_warps: int = 4,
    num_stages: int = 3,
    mask_all: bool = False,
) -> torch.Tensor:
    """q: [T, H, D] packed queries; k_cache, v_cache: one layer, [slots, Hkv, M + 1, D];
    meta: [NB, 4] int64 block table (module docstring) built with the same ``block_m``
    -> [T, H * D] (zeros where no block covers a row: the packing's padding). The tile
    arguments, and ``mask_all`` (every key tile masked, the kernel's form before run 41), are
    for the benchmark. (A KV head's query heads in one program, each key
    tile loaded once for all of them, measured slower: 191 against 186 us for qwen 0.5b's 8192
    token burst, 639 against 614 cold; docs/performance.md, run 28.)"""
    T, H, D = q.shape
    Hkv = k_cache.shape[1]
    # Measured best on an H200 (bench/attention_ab.py --sweep, run 42): 64 keys a step, 4 warps,
    # 3 stages, at head size 64 and 128 (before the diagonal-only mask, 32 at 128).
    block_n = block_n or 64
    q = q.contiguous()
    out = torch.zeros(T, H, D, device=q.device, dtype=q.dtype)
    s_slot, s_head, s_pos, _ = k_cache.stride()
    interpret = triton.knobs.runtime.interpret
    _chunk_attn_kernel[(meta.shape[0], H)](
        q, k_cache, v_cache, out, meta,
        scale * LOG2E, H, H // Hkv, s_slot, s_head, s_pos,
        D=D, BLOCK_M=block_m, BLOCK_N=block_n, INTERPRET=interpret, MASK_ALL=mask_all,
        num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    return out.view(T, H * D)


def block_table(
    chunks: list[tuple[int, int, int]],
    n_blocks: int,
    block_m: int = BLOCK_M,
    *,
    heavy_first: bool = True,
) -> list[int]:
    """Rows of the block table for chunks of (slot, first position, length), packed one after
    another from row 0, padded with empty blocks to ``n_blocks``; flattened. ``heavy_first``:
    the blocks that see the most keys first, so the longest programs do not start last (run 42:
    2-4% faster on a step of many chunks; off, the chunks' order, for the benchmark)."""
    blocks: list[tuple[int, int, int, int]] = []
    first = 0
    for slot, start, n in chunks:
        for b0 in range(0, n, block_m):
            blocks.append((first + b0, min(block_m, n - b0), slot, start + b0))
        first += n
    if len(blocks) > n_blocks:
        raise ValueError(f"{len(blocks)} blocks for a table of {n_blocks}")
    if heavy_first:
        blocks.sort(key=lambda b: b[3] + b[1], reverse=True)  # keys seen: position + queries
    return [v for b in blocks for v in b] + [0, 0, 0, 0] * (n_blocks - len(blocks))


def blocks_for(tokens: int, chunks: int, block_m: int = BLOCK_M) -> int:
    """Blocks a table needs for ``tokens`` packed tokens in at most ``chunks`` chunks: each
    chunk's last block may be partial."""
    return -(-tokens // block_m) + chunks

# SPDX-License-Identifier: Apache-2.0
"""Triton kernels for the fused decode step's products: six launches per layer instead of ~60.

A decode step at small batch reads every weight once and does almost no arithmetic, so its time
is bytes plus launches. HF's modules spend ~60 small kernels per layer (a norm is seven, rope
eight); each costs microseconds even inside a CUDA graph. These kernels fold the small work into
the matrix products that have to run anyway:

- ``linear``: ``y = epilogue(norm(x) @ W.T + bias)``. The norm (RMS or LayerNorm) is computed
  by every program from the whole input row, which is tiny at decode time (E <= a few thousand
  values); the epilogue applies GELU, or SiLU(gate) * up for a gate/up-stacked weight, or, with
  ``accumulate``, adds the product atomically into the float32 residual stream (split over K, so
  a narrow output still runs enough programs).
- ``qkv_rope``: the same product for the stacked q/k/v weight, then rotary embedding, then q to
  a buffer and k, v straight into the KV cache at each row's write position.

The step's other pieces: ``decode_attention`` (split-K attention over the cache), ``step_ends``
(the embedding, and the greedy pick that ``linear(..., pick=)`` runs in its epilogue), ``pdl``
(how the kernels launch, and the waits that make early launches safe).

Products use ``tl.dot`` on tiles of at least 16 rows (a decode batch below that is masked, which
costs nothing that matters here: the weights, not the rows, are the bytes), or multiply-and-sum
on the CUDA cores where that measured faster (``Tiles.choose``). Every kernel also
runs in Triton's interpreter (``TRITON_INTERPRET=1``) on the CPU in float32, which is how the
unit tests check them against the eager forward.

Shapes: B = rows, K = input features, N = output features, E = hidden, H / Hkv = query / KV
heads, G = H // Hkv, D = head_dim, M = cache positions per slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .pdl import after_previous, pdl_args, release_next
from .step_ends import Pick, pick_args, pick_offer
from .tile_math import dot

NORM_NONE, NORM_RMS, NORM_LAYER = 0, 1, 2
ACT_NONE, ACT_GELU_TANH, ACT_SILU_MUL = 0, 1, 2


@triton.jit
def _row_stats(
    x_ptr, rm, m_ok, K: tl.constexpr, eps, NORM: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_KS: tl.constexpr,
):  # fmt: skip
    # x: [B, K] -> per-row (mean, rstd) in float32; mean is 0 for RMS norm; without a norm
    # nothing is read (and _load_x uses neither). The loop is unrolled so all loads of the
    # (small) rows are in flight at once.
    s1 = tl.zeros([BLOCK_M], tl.float32)
    s2 = tl.zeros([BLOCK_M], tl.float32)
    if NORM != 0:
        rk = tl.arange(0, BLOCK_KS)
        for k0 in tl.static_range(0, K, BLOCK_KS):
            kk = k0 + rk
            x = tl.load(
                x_ptr + rm[:, None] * K + kk[None, :],
                mask=m_ok[:, None] & (kk[None, :] < K),
                other=0.0,
            ).to(tl.float32)
            s1 += tl.sum(x, axis=1)
            s2 += tl.sum(x * x, axis=1)
    if NORM == 2:
        mean = s1 / K
        var = tl.maximum(s2 / K - mean * mean, 0.0)
    else:
        mean = s1 * 0.0
        var = s2 / K
    return mean, 1.0 / tl.sqrt(var + eps)


@triton.jit
def _load_x(
    x_ptr, w_ptr, nw_ptr, nb_ptr, rm, m_ok, kk, K: tl.constexpr, mean, rstd, NORM: tl.constexpr
):
    # One [BLOCK_M, BLOCK_K] tile of norm(x), in the weights' dtype.
    w_dtype = w_ptr.dtype.element_ty
    k_ok = kk < K
    x = tl.load(
        x_ptr + rm[:, None] * K + kk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0
    )
    if NORM != 0:
        xf = (x.to(tl.float32) - mean[:, None]) * rstd[:, None]
        nw = tl.load(nw_ptr + kk, mask=k_ok, other=0.0).to(tl.float32)
        if NORM == 1:  # HF's RMSNorm rounds to the model dtype before the weight multiply
            xf = xf.to(w_dtype).to(tl.float32) * nw[None, :]
        else:  # LayerNorm: weight and bias in float32, one rounding
            xf = xf * nw[None, :]
            xf += tl.load(nb_ptr + kk, mask=k_ok, other=0.0).to(tl.float32)[None, :]
        x = xf
    return x.to(w_dtype)


@triton.jit
def _load_w(w_ptr, rows, row_ok, kk, K: tl.constexpr, DOT: tl.constexpr):
    # Weight rows ``rows`` [BN] at columns kk: [BK, BN] for a tensor-core product, else [BN, BK].
    k_ok = kk < K
    if DOT:
        w = tl.load(
            w_ptr + rows[None, :] * K + kk[:, None], mask=row_ok[None, :] & k_ok[:, None], other=0.0
        )
    else:
        w = tl.load(
            w_ptr + rows[:, None] * K + kk[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0
        )
    return w


@triton.jit
def _product(x, w, DOT: tl.constexpr):
    # x: [BM, BK] (model dtype) times a ``_load_w`` tile -> [BM, BN] float32. DOT uses the
    # tensor cores (BM >= 16); otherwise multiply-and-sum on the CUDA cores, which lets a small
    # batch use a tile of just its own rows.
    if DOT:
        out = dot(x, w)
    else:
        out = tl.sum(x.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)
    return out


@triton.jit
def _tile_product(x, w_ptr, rows, row_ok, kk, K: tl.constexpr, DOT: tl.constexpr):
    return _product(x, _load_w(w_ptr, rows, row_ok, kk, K, DOT), DOT)


@triton.jit
def _linear_kernel(
    x_ptr, w_ptr, b_ptr, nw_ptr, nb_ptr, y_ptr,
    B, N, K: tl.constexpr, eps,
    NORM: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, ATOMIC: tl.constexpr,
    DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    K_SPLIT: tl.constexpr, BLOCK_KS: tl.constexpr,
    PDL: tl.constexpr, PRELOAD: tl.constexpr,
    best_ptr, PICK: tl.constexpr,
):  # fmt: skip
    # x: [B, K]; w: [N, K] (or [2N, K] gate rows then up rows for ACT_SILU_MUL); y: [B, N].
    # PICK: y is the logits; each program also offers its tile's greedy token (``pick_offer``).
    # Program (n, m, k) computes a [BLOCK_M, BLOCK_N] tile over inputs k*K_SPLIT..+K_SPLIT.
    # ATOMIC: float32 y += the partial product (y is the residual stream: the residual add is
    # free, and splitting K gives a narrow output like o_proj enough programs to fill the GPU).
    pid_n, pid_m, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_ok, n_ok = rm < B, rn < N
    w_dtype = w_ptr.dtype.element_ty
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    acc_up = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    if PRELOAD:
        # The weights are no kernel's output: the first step's tile can load before the wait
        # and the row statistics, so its memory latency overlaps theirs (and, under PDL, the
        # previous kernel's end).
        kk0 = pid_k * K_SPLIT + rk
        w0 = _load_w(w_ptr, rn, n_ok, kk0, K, DOT)
        if ACT == 2:
            w0_up = _load_w(w_ptr, rn + N, n_ok, kk0, K, DOT)
    after_previous(PDL)
    mean, rstd = _row_stats(x_ptr, rm, m_ok, K, eps, NORM, BLOCK_M, BLOCK_KS)
    if PRELOAD:
        x0 = _load_x(x_ptr, w_ptr, nw_ptr, nb_ptr, rm, m_ok, kk0, K, mean, rstd, NORM)
        acc += _product(x0, w0, DOT)
        if ACT == 2:
            acc_up += _product(x0, w0_up, DOT)
    for k0 in range(PRELOAD * BLOCK_K, K_SPLIT, BLOCK_K):  # after the preloaded step
        kk = pid_k * K_SPLIT + k0 + rk
        x = _load_x(x_ptr, w_ptr, nw_ptr, nb_ptr, rm, m_ok, kk, K, mean, rstd, NORM)
        acc += _tile_product(x, w_ptr, rn, n_ok, kk, K, DOT)
        if ACT == 2:
            acc_up += _tile_product(x, w_ptr, rn + N, n_ok, kk, K, DOT)
    release_next(PDL)
    if HAS_BIAS:
        first = (pid_k == 0).to(tl.float32)  # the bias once, from the first split
        acc += first * tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        if ACT == 2:
            acc_up += first * tl.load(b_ptr + N + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    offs = rm[:, None] * N + rn[None, :]
    mask = m_ok[:, None] & n_ok[None, :]
    if ATOMIC:
        tl.atomic_add(y_ptr + offs, acc, mask=mask)
    else:
        # The product is rounded to the model dtype first, as the separate HF modules return it.
        a = acc.to(w_dtype).to(tl.float32)
        if ACT == 1:  # GELU, tanh approximation (gelu_pytorch_tanh)
            inner = 0.7978845608028654 * (a + 0.044715 * a * a * a)
            t = 2.0 / (1.0 + tl.exp(-2.0 * inner)) - 1.0
            a = 0.5 * a * (1.0 + t)
        elif ACT == 2:  # SiLU(gate) * up
            u = acc_up.to(w_dtype).to(tl.float32)
            a = (a / (1.0 + tl.exp(-a))).to(w_dtype).to(tl.float32) * u
        tl.store(y_ptr + offs, a.to(y_ptr.dtype.element_ty), mask=mask)
        if PICK:
            pick_offer(a, rm, m_ok, rn, n_ok, best_ptr)


@triton.jit
def _qkv_rope_kernel(
    x_ptr, w_ptr, b_ptr, nw_ptr, nb_ptr, cos_ptr, sin_ptr, pos_ptr, wpos_ptr, slot_ptr,
    q_ptr, k_ptr, v_ptr,
    B, K: tl.constexpr, eps, n_heads, n_kv,
    s_slot, s_head, s_pos,
    NORM: tl.constexpr, HAS_BIAS: tl.constexpr, ROPE: tl.constexpr, DOT: tl.constexpr,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_KS: tl.constexpr, PDL: tl.constexpr, PRELOAD: tl.constexpr,
):  # fmt: skip
    # x: [B, K]; w: [(H + 2 Hkv) D, K], q heads then k heads then v heads; q: [B, H, D];
    # k, v: one layer of the cache, [slots, Hkv, M + 1, D]; row b writes slot slot[b].
    # A program computes columns j and j + D/2 of one head, the pairs rope rotates together.
    t, pid_j, pid_m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    HALF: tl.constexpr = D // 2
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rj = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    rk = tl.arange(0, BLOCK_K)
    m_ok = rm < B
    row1, row2 = t * D + rj, t * D + HALF + rj
    j_ok = rj < HALF
    acc1 = tl.zeros([BLOCK_M, BLOCK_J], tl.float32)
    acc2 = tl.zeros([BLOCK_M, BLOCK_J], tl.float32)
    if PRELOAD:  # as in _linear_kernel: the first weight tile before the wait
        w1 = _load_w(w_ptr, row1, j_ok, rk, K, DOT)
        w2 = _load_w(w_ptr, row2, j_ok, rk, K, DOT)
    after_previous(PDL)
    mean, rstd = _row_stats(x_ptr, rm, m_ok, K, eps, NORM, BLOCK_M, BLOCK_KS)
    if PRELOAD:
        x0 = _load_x(x_ptr, w_ptr, nw_ptr, nb_ptr, rm, m_ok, rk, K, mean, rstd, NORM)
        acc1 += _product(x0, w1, DOT)
        acc2 += _product(x0, w2, DOT)
    for k0 in range(PRELOAD * BLOCK_K, K, BLOCK_K):
        kk = k0 + rk
        x = _load_x(x_ptr, w_ptr, nw_ptr, nb_ptr, rm, m_ok, kk, K, mean, rstd, NORM)
        acc1 += _tile_product(x, w_ptr, row1, j_ok, kk, K, DOT)
        acc2 += _tile_product(x, w_ptr, row2, j_ok, kk, K, DOT)
    release_next(PDL)
    if HAS_BIAS:
        acc1 += tl.load(b_ptr + row1).to(tl.float32)[None, :]
        acc2 += tl.load(b_ptr + row2).to(tl.float32)[None, :]
    out_dtype = q_ptr.dtype.element_ty
    a1 = acc1.to(out_dtype).to(tl.float32)  # HF rounds the projection before rotating it
    a2 = acc2.to(out_dtype).to(tl.float32)
    rope_store(
        a1, a2, t, rm, m_ok, rj, pos_ptr, wpos_ptr, slot_ptr, cos_ptr, sin_ptr,
        q_ptr, k_ptr, v_ptr, n_heads, n_kv, s_slot, s_head, s_pos, ROPE, D,
    )  # fmt: skip


@triton.jit
def rope_store(
    a1, a2, t, rows, row_ok, rj, pos_ptr, wpos_ptr, slot_ptr, cos_ptr, sin_ptr,
    q_ptr, k_ptr, v_ptr, n_heads, n_kv, s_slot, s_head, s_pos,
    ROPE: tl.constexpr, D: tl.constexpr,
):  # fmt: skip
    # Head t of rows ``rows``, as its two halves (columns rj and rj + D/2, [R, J] float32):
    # q and k heads rotated (with ROPE), then q heads stored to q [R, H, D] and k, v heads into
    # one layer's cache at each row's slot and write position. Shared with the packed prefill.
    HALF: tl.constexpr = D // 2
    if ROPE:
        if t < n_heads + n_kv:  # q and k heads rotate, v heads do not
            p = tl.load(pos_ptr + rows, mask=row_ok, other=0)
            cs = cos_ptr + p[:, None] * D + rj[None, :]
            sn = sin_ptr + p[:, None] * D + rj[None, :]
            c1, c2 = tl.load(cs).to(tl.float32), tl.load(cs + HALF).to(tl.float32)
            s1, s2 = tl.load(sn).to(tl.float32), tl.load(sn + HALF).to(tl.float32)
            a1, a2 = a1 * c1 - a2 * s1, a2 * c2 + a1 * s2
    mask = row_ok[:, None]
    if t < n_heads:
        dst = q_ptr + rows[:, None] * (n_heads * D) + t * D + rj[None, :]
    else:
        wp = tl.load(wpos_ptr + rows, mask=row_ok, other=0)
        sl = tl.load(slot_ptr + rows, mask=row_ok, other=0)
        row = sl[:, None] * s_slot + wp[:, None] * s_pos + rj[None, :]
        if t < n_heads + n_kv:
            dst = k_ptr + row + (t - n_heads) * s_head
        else:
            dst = v_ptr + row + (t - n_heads - n_kv) * s_head
    out_dtype = q_ptr.dtype.element_ty
    tl.store(dst, a1.to(out_dtype), mask=mask)
    tl.store(dst + HALF, a2.to(out_dtype), mask=mask)


# -- launchers ---------------------------------------------------------------------------------


PROGRAMS = 264  # two per multiprocessor on an H100/H200: enough loads in flight per weight


@dataclass(frozen=True)
class Tiles:
    """Tile sizes of one product, from its shape and batch (static per captured graph)."""

    dot: bool  # tensor-core tiles (at least 16 rows, masked) or multiply-and-sum
    block_m: int
    block_n: int
    block_k: int
    k_split: int  # inputs per program along K (== K unless split for an atomic output)
    block_ks: int  # chunk of the row-statistics pass
    num_warps: int = 4
    block_j: int = 16  # q/k/v only: rotary pairs per program (below 16: multiply-and-sum only)
    num_stages: int = 3  # weight tiles in flight per program (Triton's software pipeline)
    preload: bool = False  # load the first weight tile before waiting for the previous kernel

    @staticmethod
    def make(
        B: int, N: int, K: int, *, dot: bool, block_n: int, block_k: int,
        num_warps: int = 4, programs: int = 0, block_j: int = 16, num_stages: int = 3,
        preload: bool = False,
    ) -> Tiles:  # fmt: skip
        """``programs``: split K until about that many programs run (0: no split)."""
        if dot:
            block_m = 16 if B <= 16 else 32 if B <= 32 else 64
        else:
            block_m = max(2, _pow2(B))
        block_k = min(block_k, _pow2(K))
        steps = -(-K // block_k)
        split = 1
        if programs:  # keep whole BK steps per split
            tiles_out = -(-N // block_n) * -(-B // block_m)
            split = max(1, min(steps, programs // max(1, tiles_out)))
        k_split = -(-steps // split) * block_k
        # The row-statistics pass holds a [block_m, block_ks] float32 tile: at 64 rows a 512-wide
        # chunk is 128 KiB of registers, which spills (batch 64 measured 2-4x slower than 32).
        block_ks = min(512, _pow2(K), max(64, 8192 // block_m))
        return Tiles(dot, block_m, block_n, block_k, k_split, block_ks, num_warps, block_j,
                     num_stages, preload)  # fmt: skip

    @staticmethod
    def choose(
        B: int, N: int, K: int, splittable: bool = False, rope: bool = False,
        stacked: bool = False, elem_bytes: int = 2,
    ) -> Tiles:  # fmt: skip
        """Tiles measured best on an H200: tensor-core tiles even for 2 rows, except the q/k/v
        product at batch <= 2; split-K outputs aimed at ~4 programs per multiprocessor
        (bench/engine.py --sweep, each product alone, qwen2.5-coder-0.5b, batch 2 and 8). At
        batch <= 2, the choices that won inside the whole step (bench/step_sweep.py, where the
        weights come from memory, not L2; docs/performance.md, run 15)."""
        small = B <= 2
        if rope:  # wide K steps, but within shared memory once the batch tile grows
            # Multiply-and-sum at batch <= 2 with 4 rotary pairs per program: four times the
            # programs of 16 pairs, 5.7 against 8.4 us (qwen 0.5b; 11.3 against 13.6 starcoder).
            # Its first weight tile loaded before the wait and the norm's row statistics: step
            # 1.541 -> 1.506 ms (starcoder 1b, serial launches, whatever the pipeline depth),
            # 0.834 -> 0.822 (qwen 0.5b, at all three depths; its
            # baseline readings spread 0.809-0.841).
            dot = not small
            return Tiles.make(B, N, K, dot=dot, block_n=16, block_k=512 if B <= 16 else 128,
                              block_j=16 if dot else 4, preload=small)  # fmt: skip
        if splittable:
            return Tiles.make(B, N, K, dot=True, block_n=32, block_k=128, programs=2 * PROGRAMS)
        if small and N >= 32000:
            # The vocabulary: 128 wide instead of 64, 0.833 -> 0.817 ms, 1.536 -> 1.504 (run
            # 15); 256 wide, 792.9 -> 788.1 us, 1397.2 -> 1392.6 (run 29; 256 deep slower).
            # Float32 weights stay 128 wide: 256 needs 281 KiB of shared memory (sm_90: 227;
            # tests/unit/test_kernel_resources.py).
            wide = 256 if elem_bytes <= 2 else 128
            return Tiles.make(B, N, K, dot=True, block_n=wide, block_k=128, num_warps=8)
        if small and not stacked and K >= 1536 and K % 256 == 0:
            # starcoder's c_fc: 1.540 -> 1.467 ms. Not for a gate/up-stacked weight (``stacked``:
            # two tiles a step): qwen 1.5b 1.76 -> 1.91 ms, deepseek 1.62 -> 1.66, likely as
            # its shared memory leaves one program per multiprocessor (qwen 1.5b: 140 programs,
            # two waves on 132).
            return Tiles.make(B, N, K, dot=True, block_n=64, block_k=256, num_warps=4)
        block_n = 64 if N >= 2048 else 32
        warps = 8 if N < 32768 else 4
        return Tiles.make(B, N, K, dot=True, block_n=block_n, block_k=128, num_warps=warps)


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def linear(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    norm: int = NORM_NONE,
    norm_w: torch.Tensor | None = None,
    norm_b: torch.Tensor | None = None,
    eps: float = 1e-6,
    act: int = ACT_NONE,
    accumulate: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    tiles: Tiles | None = None,
    pdl: int | None = None,
    pick: Pick | None = None,
) -> torch.Tensor:
    """``act(norm(x) @ w.T + bias)``; x: [B, K] -> [B, N] (N = rows of w, halved for
    ``ACT_SILU_MUL``). ``accumulate``: a float32 [B, N] tensor that the product is added to in
    place (split over K, atomically) and returned; no activation then. ``tiles``: overrides
    the heuristic (the benchmark's tile sweep). ``pdl``: how it launches (``pdl_mode``).
    ``pick``: the output is logits; also offer each row's greedy token (``Pick``; then
    ``feedback``)."""
    B, K = x.shape
    if pick is not None and (accumulate is not None or act != ACT_NONE or B > pick.rows):
        raise ValueError("pick takes a plain product of at most pick.rows rows")
    N = w.shape[0] // 2 if act == ACT_SILU_MUL else w.shape[0]
    if accumulate is not None:
        if act != ACT_NONE or accumulate.dtype != torch.float32:
            raise ValueError("accumulate takes no activation and a float32 tensor")
        out = accumulate
    else:
        out = torch.empty(B, N, device=x.device, dtype=out_dtype or w.dtype)
    t = tiles or Tiles.choose(
        B, N, K, splittable=accumulate is not None, stacked=act == ACT_SILU_MUL,
        elem_bytes=w.element_size(),
    )  # fmt: skip
    grid = (triton.cdiv(N, t.block_n), triton.cdiv(B, t.block_m), triton.cdiv(K, t.k_split))
    dummy = w
    _linear_kernel[grid](
        x, w, bias if bias is not None else dummy,
        norm_w if norm_w is not None else dummy, norm_b if norm_b is not None else dummy, out,
        B, N, K, eps,
        NORM=norm, HAS_BIAS=bias is not None, ACT=act, ATOMIC=accumulate is not None,
        DOT=t.dot, BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k,
        K_SPLIT=t.k_split, BLOCK_KS=t.block_ks, PRELOAD=t.preload, num_warps=t.num_warps,
        num_stages=t.num_stages,
        **pick_args(pick, dummy), **pdl_args(x, pdl),
    )  # fmt: skip
    return out


def qkv_rope(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
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
    norm: int = NORM_RMS,
    norm_w: torch.Tensor | None = None,
    norm_b: torch.Tensor | None = None,
    eps: float = 1e-6,
    tiles: Tiles | None = None,
    pdl: int | None = None,
) -> torch.Tensor:
    """x: [B, E] -> q: [B, H, D]; writes k, v of row b into slot ``slots[b]`` at ``wpos[b]``.

    k_cache, v_cache: one layer, [slots, Hkv, M + 1, D]; pos, wpos, slots: [B] int64; cos,
    sin: [M + 1, D] (None: no rotary embedding, as in gpt_bigcode)."""
    B, K = x.shape
    D = head_dim
    # The kernels index rows with plain offsets: a broadcast (stride-0) index would read wrong.
    pos, wpos, slots = pos.contiguous(), wpos.contiguous(), slots.contiguous()
    q = torch.empty(B, n_heads, D, device=x.device, dtype=w.dtype)
    t = tiles or Tiles.choose(B, (n_heads + 2 * n_kv) * D, K, rope=True)
    BJ = min(t.block_j, D // 2)
    if t.dot and BJ < 16:
        raise ValueError("tensor-core q/k/v tiles need block_j >= 16")
    grid = (n_heads + 2 * n_kv, (D // 2) // BJ, triton.cdiv(B, t.block_m))
    rope = cos is not None
    dummy = w
    s_slot, s_head, s_pos, _ = k_cache.stride()
    _qkv_rope_kernel[grid](
        x, w, bias if bias is not None else dummy,
        norm_w if norm_w is not None else dummy, norm_b if norm_b is not None else dummy,
        cos if rope else dummy, sin if rope else dummy, pos, wpos, slots,
        q, k_cache, v_cache,
        B, K, eps, n_heads, n_kv,
        s_slot, s_head, s_pos,
        NORM=norm, HAS_BIAS=bias is not None, ROPE=rope, DOT=t.dot,
        D=D, BLOCK_M=t.block_m, BLOCK_J=BJ, BLOCK_K=t.block_k, BLOCK_KS=t.block_ks,
        PRELOAD=t.preload, num_warps=t.num_warps, num_stages=t.num_stages, **pdl_args(x, pdl),
    )  # fmt: skip
    return q

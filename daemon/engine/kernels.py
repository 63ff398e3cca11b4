# SPDX-License-Identifier: Apache-2.0
"""Triton kernels for the fused decode step: six launches per layer instead of ~60.

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
- ``attention``: split-K ("flash-decoding") attention of one new query per row over its cached
  keys; the grouped query heads of one KV head share each key load. A small second kernel merges
  the splits by their log-sum-exp.

Products use ``tl.dot`` on tiles of at least 16 rows (a decode batch below that is masked, which
costs nothing that matters here: the weights, not the rows, are the bytes), or multiply-and-sum
on the CUDA cores where that measured faster (``Tiles.choose``). Every kernel also
runs in Triton's interpreter (``TRITON_INTERPRET=1``) on the CPU in float32, which is how the
unit tests check them against the eager forward.

Shapes: B = rows, K = input features, N = output features, E = hidden, H / Hkv = query / KV
heads, G = H // Hkv, D = head_dim, M = cache positions per slot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

NORM_NONE, NORM_RMS, NORM_LAYER = 0, 1, 2
ACT_NONE, ACT_GELU_TANH, ACT_SILU_MUL = 0, 1, 2


@triton.jit
def _after_previous(PDL: tl.constexpr):
    # Programmatic dependent launch (``pdl_mode``): this kernel may have been launched while the
    # one before it still ran. Wait until that one has finished and its writes are visible.
    # Nothing before this call may read what the previous kernel writes; what the kernels before
    # that one wrote is done (the previous one released this one only after its own wait).
    if PDL != 0:
        gdc_wait()
    if PDL == 1:  # early: the next kernel's programs launch now and wait in their turn
        gdc_launch_dependents()


@triton.jit
def _release_next(PDL: tl.constexpr):
    # Late release: the next kernel launches once every program here is past its main loop.
    if PDL == 2:
        gdc_launch_dependents()


@triton.jit
def dot(a, b):
    # Float32 operands (a float32 model on a GPU) multiply in full precision, as torch's own
    # products do: tf32, Triton's default, would make greedy tokens differ from ``generate``.
    if a.dtype == tl.float32:
        out = tl.dot(a, b, input_precision="ieee")
    else:
        out = tl.dot(a, b)
    return out


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
    # PICK: y is the logits; each program also offers its tile's greedy token (``_pick``).
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
    _after_previous(PDL)
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
    _release_next(PDL)
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
            _pick(a, rm, m_ok, rn, n_ok, best_ptr)


PICK_EMPTY = -(1 << 63)  # a row's best (value, index) key before any program offered one
_PICK_EMPTY = tl.constexpr(PICK_EMPTY)  # the same, as a kernel may read a global


@triton.jit
def _pick(a, rm, m_ok, rn, n_ok, best_ptr):
    # Each program offers its tile's best (value, first index) per row to best [rows], as one
    # int64 key: the value in the high half, as a signed int in float order, the index inverted
    # in the low half so the first index wins a tie, as in torch.argmax. A relaxed atomic max,
    # which no program waits on: ``_feedback_kernel``, launched next, reads the winners. (The
    # last program finishing the job, found by an acq_rel counter, measured slower: every one
    # of qwen 0.5b's 1187 programs then waits for its stores.)
    v = tl.where(n_ok[None, :], a, float("-inf"))
    top = tl.max(v, axis=1) + 0.0  # [BM]; + 0.0 makes -0.0 equal +0.0, as torch compares them
    first = tl.min(tl.where(v == top[:, None], rn[None, :], 2147483647), axis=1)
    bits = top.to(tl.int32, bitcast=True)
    ordered = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    # NaN wins, at its first index, as in torch.argmax (tl.max skips NaN on the GPU, and no
    # value would equal it): an overflowed row still picks a token inside the vocabulary.
    nan = v != v
    first_nan = tl.min(tl.where(nan, rn[None, :], 2147483647), axis=1)
    has_nan = first_nan < 2147483647
    first = tl.where(has_nan, first_nan, first)
    ordered = tl.where(has_nan, 0x7FFFFFFF, ordered)  # above +inf's 0x7F800000
    key = ordered.to(tl.int64) * 4294967296 + (4294967295 - first.to(tl.int64))
    tl.atomic_max(best_ptr + rm, key, mask=m_ok, sem="relaxed")


@triton.jit
def _feedback_kernel(
    best_ptr, io_ptr, io_rows, next_ptr, trash, B, BLOCK_B: tl.constexpr, PDL: tl.constexpr
):  # fmt: skip
    # The winners of ``_pick`` -> next_ids, the ids fed back, and every real row (write position
    # not ``trash``) one position further: what ``graphs.decode_and_pick`` does with six torch
    # kernels after the eager step. io: the step's inputs [3, io_rows] (ids, pos, wpos). Leaves
    # best as the next step's pick expects it.
    rb = tl.arange(0, BLOCK_B)
    b_ok = rb < B
    _after_previous(PDL)
    won = tl.load(best_ptr + rb, mask=b_ok, other=0)
    pos = tl.load(io_ptr + io_rows + rb, mask=b_ok, other=0)
    wpos = tl.load(io_ptr + 2 * io_rows + rb, mask=b_ok, other=0)
    _release_next(PDL)
    token = 4294967295 - (won & 4294967295)
    real = (wpos != trash).to(tl.int64)
    tl.store(next_ptr + rb, token, mask=b_ok)
    tl.store(io_ptr + rb, token, mask=b_ok)
    tl.store(io_ptr + io_rows + rb, pos + real, mask=b_ok)
    tl.store(io_ptr + 2 * io_rows + rb, wpos + real, mask=b_ok)
    tl.store(best_ptr + rb, tl.full([BLOCK_B], _PICK_EMPTY, tl.int64), mask=b_ok)


@triton.jit
def _embed_kernel(
    ids_ptr, pos_ptr, wte_ptr, wpe_ptr, x_ptr, E: tl.constexpr, HAS_WPE: tl.constexpr,
    BLOCK_E: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    # x[r] = float32(wte[ids[r]] (+ wpe[pos[r]], summed in the model's dtype, as HF does)).
    r, pid_e = tl.program_id(0), tl.program_id(1)
    re = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    e_ok = re < E
    _after_previous(PDL)
    token = tl.load(ids_ptr + r)
    h = tl.load(wte_ptr + token * E + re, mask=e_ok, other=0.0)
    x = h.to(tl.float32)
    if HAS_WPE:  # the sum rounded once to the model dtype, as HF's module adds them
        p = tl.load(wpe_ptr + tl.load(pos_ptr + r) * E + re, mask=e_ok, other=0.0)
        x = (x + p.to(tl.float32)).to(h.dtype).to(tl.float32)
    _release_next(PDL)
    tl.store(x_ptr + r * E + re, x, mask=e_ok)


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
    _after_previous(PDL)
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
    _release_next(PDL)
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


@triton.jit
def softmax_fold(scores, v, m_i, l_i, acc):
    # One step of online softmax: a block of (masked) scores [R, L] and its values [L, D] folded
    # into the running row max, sum and output -> (m_i, l_i, acc).
    m_new = tl.maximum(m_i, tl.max(scores, axis=1))
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
    BLOCK_G: tl.constexpr, BLOCK_L: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    # q: [B, H, D]; k, v: one layer of the cache; row b attends slot slot[b] at positions
    # 0..pos[b] (a decode row, or one token of a prompt chunk whose keys are already written).
    # o: [B, H, S, D] float32 partial outputs, lse: [B, H, S] their log-sum-exp.
    b, hk, s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n_splits = tl.num_programs(2)
    rg = tl.arange(0, BLOCK_G)
    rd = tl.arange(0, D)
    rl = tl.arange(0, BLOCK_L)
    g_ok = rg < G
    head = hk * G + rg
    _after_previous(PDL)
    q_offs = (b * n_heads + head[:, None]) * D + rd[None, :]
    q = tl.load(q_ptr + q_offs, mask=g_ok[:, None], other=0.0)
    n_keys = tl.load(pos_ptr + b) + 1
    start = s * SPLIT
    end = tl.minimum(start + SPLIT, n_keys)
    kv = tl.load(slot_ptr + b) * s_slot + hk * s_head
    m_i = tl.full([BLOCK_G], -1e30, tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, D], tl.float32)
    # A fixed trip count (masked past ``end``): splits past the row's length load nothing.
    for l0 in range(0, SPLIT, BLOCK_L):
        ll = start + l0 + rl
        l_ok = ll < end
        offs = kv + ll[:, None] * s_pos + rd[None, :]
        k = tl.load(k_ptr + offs, mask=l_ok[:, None], other=0.0)  # [BLOCK_L, D]
        scores = dot(q, tl.trans(k)) * scale  # [BLOCK_G, BLOCK_L]
        scores = tl.where(l_ok[None, :], scores, float("-inf"))
        v = tl.load(v_ptr + offs, mask=l_ok[:, None], other=0.0)
        m_i, l_i, acc = softmax_fold(scores, v, m_i, l_i, acc)
    _release_next(PDL)
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
    _after_previous(PDL)
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
    _release_next(PDL)
    tl.store(out_ptr + r * D + rd, out.to(out_ptr.dtype.element_ty))


# -- launchers ---------------------------------------------------------------------------------

PDL_OFF, PDL_EARLY, PDL_LATE = 0, 1, 2
_pdl_override: int | None = None  # ``set_pdl_mode`` (the benchmark, tests)


def pdl_mode(device: torch.device | None = None, prefer: int = PDL_LATE) -> int:
    """How the decode kernels launch. ``PDL_OFF``: one after another. With programmatic
    dependent launch (Hopper and later) a kernel is launched before the previous one ends and
    waits for it inside (``_after_previous``), which hides part of a launch's fixed cost in a
    CUDA graph; ``PDL_EARLY`` releases the next kernel as soon as its own wait is over,
    ``PDL_LATE`` once its main loop is done. ``prefer``: the caller's choice (the fused step's,
    per architecture); ``set_pdl_mode``, then ``LSPILOT_PDL`` (0/1/2), override it. The CPU,
    Triton's interpreter and GPUs before Hopper always get ``PDL_OFF``."""
    env = os.environ.get("LSPILOT_PDL", "").strip()
    if env not in ("", "0", "1", "2"):  # a GPU daemon refuses a typo when its engine loads
        raise ValueError(f"LSPILOT_PDL must be 0 (serial), 1 (early) or 2 (late), not {env!r}")
    on_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    if triton.knobs.runtime.interpret or not on_cuda:
        return PDL_OFF
    if torch.cuda.get_device_capability(device)[0] < 9:
        return PDL_OFF
    if _pdl_override is not None:
        return _pdl_override
    return int(env) if env else prefer


def set_pdl_mode(mode: int | None) -> None:
    """Override ``pdl_mode`` (None: no override) for launchers called without ``pdl`` and for
    fused steps built from now on (``FusedDecode`` fixes its mode when it is built)."""
    if mode not in (None, PDL_OFF, PDL_EARLY, PDL_LATE):
        raise ValueError(f"PDL mode {mode!r}: 0, 1, 2 or None")
    global _pdl_override
    _pdl_override = mode


def _pdl_args(x: torch.Tensor, pdl: int | None) -> dict:
    """The PDL keywords of one launch (``launch_pdl`` is a compile option: compiled only).
    ``pdl`` None: ``pdl_mode``'s default."""
    mode = pdl_mode(x.device) if pdl is None else pdl
    return {"PDL": mode, "launch_pdl": True} if mode else {"PDL": mode}


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
        stacked: bool = False,
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
        if small and N >= 32000:  # the vocabulary: 0.833 -> 0.817 ms, 1.536 -> 1.504
            return Tiles.make(B, N, K, dot=True, block_n=128, block_k=128, num_warps=8)
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
        B, N, K, splittable=accumulate is not None, stacked=act == ACT_SILU_MUL
    )
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
        **_pick_args(pick, dummy), **_pdl_args(x, pdl),
    )  # fmt: skip
    return out


class Pick:
    """The greedy choice inside the vocabulary product, then ``feedback``: what they need. The
    step's inputs ``inputs`` [3, rows, 1] int64 (ids, pos, wpos, as ``graphs.DecodeIO`` holds
    them), ``next_ids`` [rows] int64, and ``trash``, the write position of padding rows (which
    stay where they are); and the per-row winners, which ``feedback`` leaves ready for the next
    step. Made outside any graph capture."""

    def __init__(self, inputs: torch.Tensor, next_ids: torch.Tensor, trash: int) -> None:
        self.rows = inputs.shape[1]
        if inputs.shape != (3, self.rows, 1) or not inputs.is_contiguous():
            raise ValueError("inputs must be a contiguous [3, rows, 1] tensor")
        self.inputs, self.next_ids, self.trash = inputs, next_ids, trash
        self.best = torch.full((self.rows,), PICK_EMPTY, dtype=torch.long, device=inputs.device)


def _pick_args(pick: Pick | None, dummy: torch.Tensor) -> dict:
    return {"best_ptr": dummy if pick is None else pick.best, "PICK": pick is not None}


def feedback(pick: Pick, B: int, pdl: int | None = None) -> None:
    """After ``linear(..., pick=pick)`` over rows 0..B-1: their greedy ids into
    ``pick.next_ids`` and the ids fed back as the next inputs, real rows one position on."""
    _feedback_kernel[(1,)](
        pick.best, pick.inputs, pick.rows, pick.next_ids, pick.trash, B,
        BLOCK_B=max(2, triton.next_power_of_2(B)), num_warps=1, **_pdl_args(pick.best, pdl),
    )  # fmt: skip


def embed(
    ids: torch.Tensor, pos: torch.Tensor, wte: torch.Tensor, wpe: torch.Tensor | None = None,
    pdl: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """ids, pos: [R] -> the float32 residual stream [R, E]: ``wte[ids]`` (+ ``wpe[pos]``)."""
    R, E = ids.shape[0], wte.shape[1]
    x = torch.empty(R, E, device=wte.device, dtype=torch.float32)
    block = min(1024, triton.next_power_of_2(E))
    _embed_kernel[(R, triton.cdiv(E, block))](
        ids.contiguous(), pos.contiguous(), wte, wte if wpe is None else wpe, x, E,
        HAS_WPE=wpe is not None, BLOCK_E=block, num_warps=4, **_pdl_args(wte, pdl),
    )  # fmt: skip
    return x


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
        PRELOAD=t.preload, num_warps=t.num_warps, num_stages=t.num_stages, **_pdl_args(x, pdl),
    )  # fmt: skip
    return q


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
) -> torch.Tensor:
    """q: [B, H, D]; row b attends slot ``slots[b]`` at positions 0..pos[b] (< n_keys)
    -> [B, H * D]. ``block_l`` (keys a loop step), ``num_warps``: the benchmark's sweep."""
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
        num_warps=num_warps, num_stages=2, **_pdl_args(q, pdl),
    )  # fmt: skip
    out = torch.empty(B, H * D, device=q.device, dtype=q.dtype)
    _attn_merge_kernel[(B * H,)](
        part, lse, out, S, D=D, BLOCK_S=max(2, triton.next_power_of_2(S)), num_warps=1,
        **_pdl_args(q, pdl),
    )  # fmt: skip
    return out

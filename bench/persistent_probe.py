# SPDX-License-Identifier: Apache-2.0
"""Would one persistent kernel beat the decode step's chain of kernels? A feasibility probe (GPU).

The batch-1 step of qwen2.5-coder-0.5b runs 147 kernels; a kernel boundary alone costs 0.5-0.7
µs graphed with programmatic dependent launch, and the rest of each kernel's ~3 µs is its own
chain of dependent memory round trips (docs/performance.md, "Where the time goes"). The idea
tried here: one launch whose programs (one per multiprocessor) run stage after stage with a
software grid barrier between stages, and issue the next stage's first weight tile before
waiting at the barrier (weights never depend on the previous stage), so that tile's memory
latency overlaps the barrier. Measured in one process, medians of ``--rounds`` rounds:

- ``barrier``: G programs (G = multiprocessors, and twice that) doing 147 rounds of: grid
  barrier, read one value another program wrote in the previous round, write one value; µs per
  round, polling the counter by atomics or by volatile loads. Next to it, the launch floor of
  ``bench/step_parts.py`` (147 near-empty kernels, graphed, serial or with PDL).
- ``chain``: a qwen 0.5b layer's four weight products at batch 1 over 24 layers, each with its
  own random bf16 weights (~720 MB, far above the 50 MB L2), float32 activations, no attention
  (the o product reads the first 896 q/k/v outputs in its place), no norms:
  ``qkv = W_qkv h``; ``h' = h + W_o qkv[:896]``; ``a = SiLU(W_g h') * W_u h'``;
  ``h'' = h' + W_d a``. ``separate_*``: one kernel per product (96 launches in one CUDA graph;
  serial, or PDL releasing the next kernel early or late, the first weight tile always loaded
  before the wait as the engine's kernels do); ``persistent_*``: one launch, a grid barrier
  between products, the next product's first weight tile loaded between arriving at the
  barrier and waiting at it (``early``) or after the wait (``late``). Every variant runs the
  same tile code over the same rows per program, so outputs are checked equal to each other
  and close to torch's (also on a small model where most programs have no rows) before timing.

The barrier is split (arrive, then wait) because a release orders the program's earlier loads
too: a tile loaded before the arrive would have to land before the arrive could. Each wait
gives up after ``MAX_SPIN`` polls and sets the program's error flag (a grid that is not all
resident, or a bug, then ends in about a second rather than hanging the GPU); a program that
gave up passes later barriers without waiting, so the kernel always ends. A grid runs only if
the compiled kernel's registers and shared memory let all of it be resident at once.

Triton's interpreter runs programs one after another, so there a grid barrier passes only
with one program; ``tests/unit/test_persistent_probe.py`` runs every kernel so on tiny shapes.

``python3 bench/persistent_probe.py --out $OUT [--rounds 5]`` writes ``persistent_probe.json``;
``--compile-only`` (no GPU needed) compiles the kernels for sm_90 and reports registers, spills
and shared memory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import triton
import triton.language as tl

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import engine as bench  # noqa: E402  (bench/engine.py: lspilot from this checkout, graph timing)

bench._import_lspilot()
from lspilot.daemon.engine.pdl import (  # noqa: E402
    PDL_EARLY,
    PDL_LATE,
    PDL_OFF,
    after_previous,
    pdl_args,
    release_next,
)

MAX_SPIN = 1 << 20  # polls before a wait gives up (~1 s at ~1 µs a poll)
SPIN_ATOMIC, SPIN_VOLATILE = 0, 1
STORE, RESIDUAL, GATED = 0, 1, 2  # how a product's output is written (``_stage``)
ROUNDS_BARRIER = 147  # the step's kernel count


# -- the grid barrier ---------------------------------------------------------------------------


@triton.jit
def _arrive(counter_ptr):
    # Every thread's stores first (bar.sync), then one release add for the program (a scalar
    # atomic runs in one thread): whoever acquires a count that includes it sees those stores.
    tl.debug_barrier()
    tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu")


@triton.jit
def _poll(counter_ptr, SPIN: tl.constexpr):
    if SPIN == 0:
        seen = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    else:
        seen = tl.load(counter_ptr, volatile=True)
    return seen


@triton.jit
def _wait(counter_ptr, target, failed, SPIN: tl.constexpr, MAX_SPIN: tl.constexpr):
    # Spin until ``target`` programs have arrived (targets grow by G per barrier, so the counter
    # is zeroed once per launch). Returns ``failed``, set if the wait gave up; a program that
    # has failed once passes without waiting, so a grid that can never meet still ends.
    spins = target * 0
    seen = _poll(counter_ptr, SPIN)
    while (seen < target) & (spins < MAX_SPIN) & (failed == 0):
        seen = _poll(counter_ptr, SPIN)
        spins += 1
    if SPIN == 1:
        # The volatile polls are relaxed and per thread; one acquire by the program orders the
        # loads after it (the counter only grows, so it reads at least what the poll saw).
        seen = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()  # the other threads wait for the acquire
    return failed | (seen < target).to(tl.int32)


@triton.jit
def _smid():
    return tl.inline_asm_elementwise(
        "mov.u32 $0, %smid;", "=r", [], dtype=tl.int32, is_pure=False, pack=1
    )


@triton.jit
def barrier_kernel(
    buf_ptr, counter_ptr, err_ptr, smid_ptr, rounds,
    SPIN: tl.constexpr, MAX_SPIN: tl.constexpr, SMID: tl.constexpr,
):  # fmt: skip
    # buf: [rounds + 1, G] float32, row 0 zeroed; round r reads what the next program wrote in
    # round r - 1 (row r) and writes row r + 1: every entry of the last row is ``rounds`` iff
    # each read saw the write the barrier ordered before it (a stale read gives 0 + ...).
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    failed = pid * 0
    for r in range(rounds):
        _arrive(counter_ptr)
        failed = _wait(counter_ptr, (r + 1) * G, failed, SPIN, MAX_SPIN)
        v = tl.load(buf_ptr + r * G + (pid + 1) % G, cache_modifier=".cg")
        tl.store(buf_ptr + (r + 1) * G + pid, v + 1.0)
    tl.store(err_ptr + pid, failed)
    if SMID:
        tl.store(smid_ptr + pid, _smid())


# -- one weight product, as a program's share of a stage -----------------------------------------


@triton.jit
def _rows(pid, G, N):
    # Program pid's rows of an N-row product: a contiguous, balanced share (8 or 9 of q/k/v's
    # 1152 rows over 132 programs, where tiles dealt round-robin would leave some with twice).
    return pid * N // G, (pid + 1) * N // G


@triton.jit
def _w_tile(w_ptr, start, end, t, N, K: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
            MODE: tl.constexpr):  # fmt: skip
    # Tile t of the rows start..end (row block t // NC, inputs (t % NC) * BK..): [BN, BK]; a
    # tile past the last is all masked (no memory traffic). GATED: w is [2N, K] (gate rows, then
    # up rows) and the up tile comes too.
    NC: tl.constexpr = (K + BK - 1) // BK
    rows = start + (t // NC) * BN + tl.arange(0, BN)
    cols = (t % NC) * BK + tl.arange(0, BK)
    mask = (rows < end)[:, None] & (cols < K)[None, :]
    ptrs = w_ptr + rows[:, None] * K + cols[None, :]
    wa = tl.load(ptrs, mask=mask, other=0.0)
    if MODE == 2:
        wb = tl.load(ptrs + N * K, mask=mask, other=0.0)
    else:
        wb = wa
    return wa, wb


@triton.jit
def _first_tile(w_ptr, pid, G, N, K: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                MODE: tl.constexpr):  # fmt: skip
    start, end = _rows(pid, G, N)
    return _w_tile(w_ptr, start, end, 0, N, K, BN, BK, MODE)


@triton.jit
def _stage(
    x_ptr, r_ptr, y_ptr, w_ptr, wa, wb, pid, G, N,
    K: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, MODE: tl.constexpr,
):  # fmt: skip
    # y[rows] = w[rows] @ x over program pid's rows (``_rows``), float32. x: [K]; w: [N, K]
    # ([2N, K] for GATED); wa, wb: the first tile (``_first_tile``), loaded by the caller before
    # or after its wait. STORE: y = w x; RESIDUAL: y = r + w x; GATED: y = SiLU(w_g x) * w_u x.
    # The loop runs over (row block, input block) tiles with the next tile's load issued before
    # the current tile's product. x and r are other programs' (or kernels') outputs: read
    # through L2 (.cg), never from a stale L1 line.
    start, end = _rows(pid, G, N)
    NC: tl.constexpr = (K + BK - 1) // BK
    n_tiles = (end - start + BN - 1) // BN * NC
    acc_a = tl.zeros([BN], tl.float32)
    acc_b = tl.zeros([BN], tl.float32)
    for t in range(0, n_tiles):
        na, nb = _w_tile(w_ptr, start, end, t + 1, N, K, BN, BK, MODE)
        c = t % NC
        cols = c * BK + tl.arange(0, BK)
        x = tl.load(x_ptr + cols, mask=cols < K, other=0.0, cache_modifier=".cg")
        acc_a += tl.sum(wa.to(tl.float32) * x[None, :], axis=1)
        if MODE == 2:
            acc_b += tl.sum(wb.to(tl.float32) * x[None, :], axis=1)
        if c == NC - 1:
            rows = start + (t // NC) * BN + tl.arange(0, BN)
            ok = rows < end
            if MODE == 1:
                out = acc_a + tl.load(r_ptr + rows, mask=ok, other=0.0, cache_modifier=".cg")
            elif MODE == 2:
                out = acc_a / (1.0 + tl.exp(-acc_a)) * acc_b
            else:
                out = acc_a
            tl.store(y_ptr + rows, out, mask=ok)
            acc_a = tl.zeros([BN], tl.float32)
            acc_b = tl.zeros([BN], tl.float32)
        wa, wb = na, nb


@triton.jit
def stage_kernel(
    x_ptr, r_ptr, y_ptr, w_ptr, N,
    K: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, MODE: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    # One product as its own kernel (``_stage`` over this program's rows): the first weight
    # tile before waiting for the previous kernel, as the engine's kernels preload theirs.
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    wa, wb = _first_tile(w_ptr, pid, G, N, K, BN, BK, MODE)
    after_previous(PDL)
    _stage(x_ptr, r_ptr, y_ptr, w_ptr, wa, wb, pid, G, N, K, BN, BK, MODE)
    release_next(PDL)


@triton.jit
def _barrier_then_tile(
    counter_ptr, target, failed, w_ptr, pid, G, N, K: tl.constexpr, BN: tl.constexpr,
    BK: tl.constexpr, MODE: tl.constexpr, EARLY: tl.constexpr, SPIN: tl.constexpr,
    MAX_SPIN: tl.constexpr,
):  # fmt: skip
    # A grid barrier with the next stage's first weight tile loaded between its arrive and its
    # wait (EARLY), or after the wait -> (the tile's two halves, failed).
    _arrive(counter_ptr)
    if EARLY:
        wa, wb = _first_tile(w_ptr, pid, G, N, K, BN, BK, MODE)
    failed = _wait(counter_ptr, target, failed, SPIN, MAX_SPIN)
    if not EARLY:
        wa, wb = _first_tile(w_ptr, pid, G, N, K, BN, BK, MODE)
    return wa, wb, failed


@triton.jit
def persistent_kernel(
    wqkv_ptr, wo_ptr, wgu_ptr, wd_ptr, qkv_ptr, h_ptr, act_ptr,
    counter_ptr, err_ptr, smid_ptr, L,
    H: tl.constexpr, QKV: tl.constexpr, INTER: tl.constexpr,
    BN_QKV: tl.constexpr, BK_QKV: tl.constexpr, BN_O: tl.constexpr, BK_O: tl.constexpr,
    BN_GU: tl.constexpr, BK_GU: tl.constexpr, BN_D: tl.constexpr, BK_D: tl.constexpr,
    EARLY: tl.constexpr, SPIN: tl.constexpr, MAX_SPIN: tl.constexpr, SMID: tl.constexpr,
):  # fmt: skip
    # All L layers' four products in one launch, a grid barrier after each but the last.
    # Weights: wqkv [L, QKV, H], wo [L, H, H], wgu [L, 2 INTER, H], wd [L, H, INTER];
    # activations (float32): h [2L + 1, H] (h[0] the input), qkv [L, QKV], act [L, INTER].
    # EARLY: a stage's first weight tile loads between the arrive and the wait, else after it.
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    failed = pid * 0
    qa, qb = _first_tile(wqkv_ptr, pid, G, QKV, H, BN_QKV, BK_QKV, 0)
    for layer in range(L):
        x_in = h_ptr + 2 * layer * H
        q_out = qkv_ptr + layer * QKV
        h_mid = x_in + H
        a_out = act_ptr + layer * INTER
        h_out = x_in + 2 * H
        wo = wo_ptr + layer * H * H
        wgu = wgu_ptr + layer * 2 * INTER * H
        wd = wd_ptr + layer * H * INTER
        b = 4 * layer  # barriers before this layer

        _stage(x_in, x_in, q_out, wqkv_ptr + layer * QKV * H, qa, qb, pid, G, QKV,
               H, BN_QKV, BK_QKV, 0)  # fmt: skip
        oa, ob, failed = _barrier_then_tile(counter_ptr, (b + 1) * G, failed, wo, pid, G, H, H,
                                            BN_O, BK_O, 1, EARLY, SPIN, MAX_SPIN)  # fmt: skip
        _stage(q_out, x_in, h_mid, wo, oa, ob, pid, G, H, H, BN_O, BK_O, 1)
        ga, gb, failed = _barrier_then_tile(counter_ptr, (b + 2) * G, failed, wgu, pid, G, INTER,
                                            H, BN_GU, BK_GU, 2, EARLY, SPIN, MAX_SPIN)  # fmt: skip
        _stage(h_mid, h_mid, a_out, wgu, ga, gb, pid, G, INTER, H, BN_GU, BK_GU, 2)
        da, db, failed = _barrier_then_tile(counter_ptr, (b + 3) * G, failed, wd, pid, G,
                                            H, INTER, BN_D, BK_D, 1, EARLY, SPIN,
                                            MAX_SPIN)  # fmt: skip
        _stage(a_out, h_mid, h_out, wd, da, db, pid, G, H, INTER, BN_D, BK_D, 1)
        wq_next = wqkv_ptr + tl.minimum(layer + 1, L - 1) * QKV * H  # (the last: a spare load)
        if layer + 1 < L:
            _arrive(counter_ptr)
        if EARLY:
            qa, qb = _first_tile(wq_next, pid, G, QKV, H, BN_QKV, BK_QKV, 0)
        if layer + 1 < L:
            failed = _wait(counter_ptr, (b + 4) * G, failed, SPIN, MAX_SPIN)
        if not EARLY:
            qa, qb = _first_tile(wq_next, pid, G, QKV, H, BN_QKV, BK_QKV, 0)
    tl.store(err_ptr + pid, failed)
    if SMID:
        tl.store(smid_ptr + pid, _smid())


# -- host side ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shapes:
    hidden: int = 896
    qkv: int = 1152  # 14 q heads + 2 k + 2 v heads of 64
    inter: int = 4864
    layers: int = 24

    def products(self) -> list[tuple[str, int, int, int]]:
        """(name, output rows N, inputs K, mode) of one layer's products, in order."""
        H, Q, INTER = self.hidden, self.qkv, self.inter
        return [("qkv", Q, H, STORE), ("o", H, H, RESIDUAL), ("gate_up", INTER, H, GATED),
                ("down", H, INTER, RESIDUAL)]  # fmt: skip

    def weight_bytes(self, elem: int = 2) -> int:
        H, Q, INTER = self.hidden, self.qkv, self.inter
        return self.layers * (Q * H + H * H + 2 * INTER * H + H * INTER) * elem


QWEN_05B = Shapes()


def _pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def stage_tiles(n: int, k: int, programs: int, mode: int, elems: int = 4096, max_bn: int = 16):
    """(BN, BK) of an n-row, k-input product over ``programs`` programs: a row block as tall as
    a program's share of rows (up to ``max_bn``), as deep as ``elems`` weights a tile allows
    (8 KB of bf16, half each for the gate and up tiles: with the next tile in flight that is
    the most 4 warps hold without spilling, compiled for sm_90)."""
    elems //= 2 if mode == GATED else 1
    bn = min(max_bn, max(2, _pow2(-(-n // programs))))
    bk = max(16, min(_pow2(k), elems // bn))
    return bn, bk


@dataclass
class Model:
    """Random weights and the activation buffers the chain writes (each written once a step,
    so a replay's result does not depend on the one before)."""

    shapes: Shapes
    wqkv: object  # [L, QKV, H]
    wo: object  # [L, H, H]
    wgu: object  # [L, 2 INTER, H]: gate rows, then up rows
    wd: object  # [L, H, INTER]
    h: object  # [2L + 1, H] float32; h[0]: the input
    qkv: object  # [L, QKV] float32
    act: object  # [L, INTER] float32
    counter: object  # [1] int32, the grid barrier's
    err: object  # [programs] int32, per program: a wait gave up
    smid: object  # [programs] int32, the multiprocessor each program ran on

    @staticmethod
    def make(shapes: Shapes, dtype, device, seed: int = 0, max_programs: int = 1024) -> Model:
        import torch

        gen = torch.Generator(device=device).manual_seed(seed)
        L, H, Q, INTER = shapes.layers, shapes.hidden, shapes.qkv, shapes.inter

        # Weights of std 0.5 / sqrt(K), an input of rms 0.1: with no norms, SiLU(g) * u (quadratic
        # in h) makes a stream of rms 1 grow without bound over 24 layers; this one stays ~0.2.
        def weights(*shape):
            w = torch.randn(*shape, generator=gen, device=device, dtype=torch.float32)
            return (w * (0.5 / math.sqrt(shape[-1]))).to(dtype)

        h = torch.zeros(2 * L + 1, H, device=device)
        h[0] = 0.1 * torch.randn(H, generator=gen, device=device)

        def ints(n):
            return torch.zeros(n, dtype=torch.int32, device=device)

        return Model(shapes, weights(L, Q, H), weights(L, H, H), weights(L, 2 * INTER, H),
                     weights(L, H, INTER), h, torch.zeros(L, Q, device=device),
                     torch.zeros(L, INTER, device=device), ints(1), ints(max_programs),
                     ints(max_programs))  # fmt: skip

    def clear(self) -> None:
        """Zero every output, so a check cannot pass on a previous run's values."""
        self.h[1:].zero_()
        self.qkv.zero_()
        self.act.zero_()

    def output(self):
        return self.h[-1]


def reference(m: Model):
    """The chain in torch, float32 products of the same weights -> the last h [H]."""
    import torch

    H = m.shapes.hidden
    h = m.h[0].clone()
    for layer in range(m.shapes.layers):
        qkv = m.wqkv[layer].float() @ h
        h = h + m.wo[layer].float() @ qkv[:H]
        gu = m.wgu[layer].float() @ h
        g, u = gu[: m.shapes.inter], gu[m.shapes.inter :]
        h = h + m.wd[layer].float() @ (torch.nn.functional.silu(g) * u)
    return h


def run_separate(m: Model, programs: int, pdl: int, elems: int = 4096, num_warps: int = 4):
    """One ``stage_kernel`` launch per product: 4 per layer."""
    s = m.shapes
    tiles = [stage_tiles(n, k, programs, mode, elems) for _, n, k, mode in s.products()]
    extra = pdl_args(m.h, pdl)
    for layer in range(s.layers):
        x_in, h_mid, h_out = m.h[2 * layer], m.h[2 * layer + 1], m.h[2 * layer + 2]
        q, a = m.qkv[layer], m.act[layer]
        io = [(x_in, x_in, q, m.wqkv[layer]), (q, x_in, h_mid, m.wo[layer]),
              (h_mid, h_mid, a, m.wgu[layer]), (a, h_mid, h_out, m.wd[layer])]  # fmt: skip
        for (x, r, y, w), (_, n, k, mode), (bn, bk) in zip(io, s.products(), tiles, strict=True):
            stage_kernel[(programs,)](x, r, y, w, n, K=k, BN=bn, BK=bk, MODE=mode,
                                      num_warps=num_warps, **extra)  # fmt: skip
    return m.output()


def persistent_args(
    m: Model, programs: int, early: bool, spin: int, elems: int = 4096, smid: bool = False,
    max_spin: int = MAX_SPIN,
) -> tuple[tuple, dict]:  # fmt: skip
    s = m.shapes
    (bq, kq), (bo, ko), (bg, kg), (bd, kd) = (
        stage_tiles(n, k, programs, mode, elems) for _, n, k, mode in s.products()
    )
    args = (m.wqkv, m.wo, m.wgu, m.wd, m.qkv, m.h, m.act, m.counter, m.err, m.smid, s.layers)
    const = dict(H=s.hidden, QKV=s.qkv, INTER=s.inter, BN_QKV=bq, BK_QKV=kq, BN_O=bo, BK_O=ko,
                 BN_GU=bg, BK_GU=kg, BN_D=bd, BK_D=kd, EARLY=early, SPIN=spin,
                 MAX_SPIN=max_spin, SMID=smid)  # fmt: skip
    return args, const


def run_persistent(m: Model, programs: int, early: bool, spin: int = SPIN_ATOMIC,
                   elems: int = 4096, num_warps: int = 4, smid: bool = False,
                   max_spin: int = MAX_SPIN):  # fmt: skip
    """The whole chain in one ``persistent_kernel`` launch of ``programs`` programs (they must
    all be resident at once: ``resident_programs``)."""
    args, const = persistent_args(m, programs, early, spin, elems, smid, max_spin)
    m.counter.zero_()
    persistent_kernel[(programs,)](*args, **const, num_warps=num_warps)
    return m.output()


def run_barrier(buf, counter, err, smid, programs: int, rounds: int, spin: int,
                use_smid: bool = False, max_spin: int = MAX_SPIN, num_warps: int = 4):  # fmt: skip
    """``rounds`` grid barriers of ``programs`` programs; buf [rounds + 1, programs] float32."""
    counter.zero_()
    buf[0].zero_()
    barrier_kernel[(programs,)](buf, counter, err, smid, rounds, SPIN=spin, MAX_SPIN=max_spin,
                                SMID=use_smid, num_warps=num_warps)  # fmt: skip
    return buf[rounds]


def resident_programs(kernel, props) -> int:
    """Programs of a compiled Triton kernel one multiprocessor holds at once, from its
    registers, shared memory and warps (the occupancy calculator's limits; registers are
    allocated per warp in units of 256)."""
    if hasattr(kernel, "_init_handles"):
        kernel._init_handles()
    warps = kernel.metadata.num_warps
    regs_per_warp = -(-max(1, kernel.n_regs) * 32 // 256) * 256
    by_regs = getattr(props, "regs_per_multiprocessor", 65536) // regs_per_warp // warps
    smem_sm = getattr(props, "shared_memory_per_multiprocessor", 228 * 1024)
    by_smem = smem_sm // max(1, kernel.metadata.shared + 1024)  # 1 KiB per block reserved
    by_warps = getattr(props, "max_threads_per_multi_processor", 2048) // 32 // warps
    return max(0, min(by_regs, by_smem, by_warps, 32))


# -- measurement --------------------------------------------------------------------------------


def _graph(fn):
    return bench.capture_graph(fn)[0]


def _time_graphs(graphs: dict, rounds: int, reps: int) -> dict[str, list[float]]:
    """µs per replay of each graph: ``rounds`` rounds, every graph once per round (so each
    sees the same machine state), each ``reps`` back-to-back replays timed by CUDA events."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out: dict[str, list[float]] = {k: [] for k in graphs}
    for _ in range(rounds):
        for name, g in graphs.items():
            g.replay()
            start.record()
            for _ in range(reps):
                g.replay()
            end.record()
            end.synchronize()
            out[name].append(start.elapsed_time(end) * 1000 / reps)
    return out


def _summary(runs: list[float], per: float = 1.0) -> dict:
    return {"median_us": statistics.median(runs) / per, "runs_us": [r / per for r in runs]}


def _failed(err, programs: int) -> int:
    return int(err[:programs].sum().item())


def measure_barrier(sms: int, rounds: int, out: dict) -> None:
    """Per grid size and poll: µs per barrier round (147 rounds per launch, and the launch
    with none, so the launch's own cost can be taken out)."""
    import torch

    res = out.setdefault("barrier", {})
    graphs = {}
    bufs = {}
    for programs in (sms, 2 * sms):
        for spin, spin_name in ((SPIN_ATOMIC, "atomic"), (SPIN_VOLATILE, "volatile")):
            name = f"{spin_name}_{programs}p"
            buf = torch.zeros(ROUNDS_BARRIER + 1, programs, device="cuda")
            counter = torch.zeros(1, dtype=torch.int32, device="cuda")
            err = torch.zeros(programs, dtype=torch.int32, device="cuda")
            smid = torch.full((programs,), -1, dtype=torch.int32, device="cuda")
            bufs[name] = buf
            try:
                k = barrier_kernel.warmup(buf, counter, err, smid, ROUNDS_BARRIER, SPIN=spin,
                                          MAX_SPIN=MAX_SPIN, SMID=True, num_warps=4,
                                          grid=(programs,))  # fmt: skip
                fits = resident_programs(k, torch.cuda.get_device_properties(0)) * sms
                if programs > fits:
                    res[name] = {"skipped": f"{programs} programs, {fits} resident at most"}
                    continue
                last = run_barrier(buf, counter, err, smid, programs, ROUNDS_BARRIER, spin, True)
                torch.cuda.synchronize()
                ok = bool((last == ROUNDS_BARRIER).all()) and _failed(err, programs) == 0
                res[name] = {"correct": ok, "failed_waits": _failed(err, programs),
                             "distinct_sms": int(smid.unique().numel()),
                             "regs": k.n_regs, "spills": k.n_spills}  # fmt: skip
                print(f"  barrier {name}: correct {ok}, programs on "
                      f"{res[name]['distinct_sms']} SMs", flush=True)  # fmt: skip
                if not ok:
                    continue
                for r in (ROUNDS_BARRIER, 0):
                    graphs[(name, r)] = _graph(
                        lambda b=buf, c=counter, e=err, s=smid, p=programs, sp=spin, r=r: (
                            run_barrier(b, c, e, s, p, r, sp)
                        )
                    )
            except Exception as e:  # noqa: BLE001  (one variant's failure must not lose the rest)
                res[name] = {"error": f"{type(e).__name__}: {e}"}
                traceback.print_exc()
    times = _time_graphs(graphs, out["rounds"], reps=20)
    for (name, r), runs in times.items():
        res[name]["launch_us" if r == 0 else "launch_147_us"] = _summary(runs)
        if r:  # the last timed replay's value chain (the launch with no rounds leaves it be)
            res[name]["correct_after_timing"] = bool((bufs[name][r] == r).all())
    for v in res.values():
        if "launch_147_us" in v and "launch_us" in v:
            whole, empty = v["launch_147_us"]["median_us"], v["launch_us"]["median_us"]
            v["us_per_round"] = whole / ROUNDS_BARRIER
            v["us_per_round_net"] = (whole - empty) / ROUNDS_BARRIER


def check_small(sms: int, out: dict) -> None:
    """A 2-layer model small enough that most programs own no rows, every variant against
    torch: a grid that leaves programs idle still meets at every barrier."""
    import torch

    shapes = Shapes(hidden=128, qkv=192, inter=256, layers=2)
    m = Model.make(shapes, torch.bfloat16, "cuda", seed=1)
    ref = reference(m)
    res = out.setdefault("small_check", {})
    for name, var in _variants(sms).items():
        if var.pdl != PDL_OFF:  # the same code as serial here; each one more compile per shape
            continue
        try:
            m.clear()
            m.err.zero_()
            got = var.run(m).clone()
            torch.cuda.synchronize()
            rel = float((got - ref).norm() / ref.norm())
            res[name] = {"rel_err": rel, "failed_waits": _failed(m.err, 2 * sms),
                         "ok": rel < 1e-4 and _failed(m.err, 2 * sms) == 0}  # fmt: skip
        except Exception as e:  # noqa: BLE001
            res[name] = {"error": f"{type(e).__name__}: {e}"}
            traceback.print_exc()
    bad = [k for k, v in res.items() if not v.get("ok")]
    print(f"  small model against torch: {'all ok' if not bad else 'FAILED ' + str(bad)}",
          flush=True)  # fmt: skip


@dataclass(frozen=True)
class Variant:
    """One way to run the chain: ``persistent`` or separate kernels launched with ``pdl``."""

    programs: int
    persistent: bool
    pdl: int = PDL_OFF
    early: bool = True  # persistent: the next stage's first tile before the wait
    spin: int = SPIN_ATOMIC  # persistent: how the wait polls

    def run(self, m: Model):
        if self.persistent:
            return run_persistent(m, self.programs, self.early, self.spin)
        return run_separate(m, self.programs, self.pdl)


def _variants(sms: int) -> dict[str, Variant]:
    v = {}
    for g in (sms, 2 * sms):
        for label, mode in (("serial", PDL_OFF), ("pdl_early", PDL_EARLY), ("pdl_late", PDL_LATE)):
            v[f"separate_{label}_{g}p"] = Variant(g, False, pdl=mode)
        v[f"persistent_early_{g}p"] = Variant(g, True, early=True)
        v[f"persistent_late_{g}p"] = Variant(g, True, early=False)
    v[f"persistent_early_volatile_{sms}p"] = Variant(sms, True, early=True, spin=SPIN_VOLATILE)
    return v


def measure_chain(sms: int, rounds: int, out: dict) -> None:
    import torch

    props = torch.cuda.get_device_properties(0)
    s = QWEN_05B
    m = Model.make(s, torch.bfloat16, "cuda")
    ref = reference(m)
    res = out.setdefault("chain", {})
    base, base_name = None, ""
    graphs = {}
    for name, var in _variants(sms).items():
        try:
            t0 = time.perf_counter()
            if var.persistent:
                g = var.programs
                args, const = persistent_args(m, g, var.early, var.spin)
                k = persistent_kernel.warmup(*args, **const, num_warps=4, grid=(g,))
                fits = resident_programs(k, props) * sms
                res[name] = {"regs": k.n_regs, "spills": k.n_spills, "shared": k.metadata.shared,
                             "resident_per_sm": fits // sms}  # fmt: skip
                if g > fits:
                    res[name]["skipped"] = f"{g} programs, {fits} resident at most"
                    print(f"  {name}: skipped, {res[name]['skipped']}", flush=True)
                    continue
            m.clear()
            m.err.zero_()
            got = var.run(m).clone()
            torch.cuda.synchronize()
            entry = res.setdefault(name, {})
            entry["compile_and_first_run_s"] = time.perf_counter() - t0
            entry["failed_waits"] = _failed(m.err, 2 * sms)
            entry["rel_err_vs_torch"] = float((got - ref).norm() / ref.norm())
            if base is None:
                base, base_name = got, name
            entry["max_abs_diff_vs_first"] = float((got - base).abs().max())
            entry["ok"] = entry["failed_waits"] == 0 and entry["rel_err_vs_torch"] < 1e-3
            print(f"  {name}: ok {entry['ok']}, rel err vs torch "
                  f"{entry['rel_err_vs_torch']:.1e}, max diff vs {base_name} "
                  f"{entry['max_abs_diff_vs_first']:.1e}", flush=True)  # fmt: skip
            if entry["ok"]:
                graphs[name] = _graph(lambda var=var: var.run(m))
        except Exception as e:  # noqa: BLE001
            res.setdefault(name, {})["error"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
    times = _time_graphs(graphs, rounds, reps=20)
    for name, g in graphs.items():  # the graphs as timed still meet and compute the chain
        m.clear()
        m.err.zero_()
        g.replay()
        torch.cuda.synchronize()
        rel = float((m.output() - ref).norm() / ref.norm())
        res[name]["ok_after_timing"] = _failed(m.err, 2 * sms) == 0 and rel < 1e-3
    weights_us = s.weight_bytes() / bench.BANDWIDTH * 1e6
    out["chain_weights_us_at_4.3TBps"] = weights_us
    for name, runs in times.items():
        res[name]["step_us"] = _summary(runs)
        res[name]["layer_us"] = statistics.median(runs) / s.layers
        res[name]["TBps"] = s.weight_bytes() / (statistics.median(runs) * 1e-6) / 1e12
    out["tiles"] = {
        str(g): {p: stage_tiles(n, k, g, mode) for p, n, k, mode in s.products()}
        for g in (sms, 2 * sms)
    }


def print_table(out: dict) -> None:
    print("\n| barrier | µs per round | net of launch | correct | SMs used |")
    print("| --- | --- | --- | --- | --- |")
    _print_rows(out.get("barrier", {}), "us_per_round", 5, lambda v: (
        f"{v['us_per_round']:.3f} | {v['us_per_round_net']:.3f} | {v['correct']} | "
        f"{v['distinct_sms']}"))  # fmt: skip
    floor = out.get("launch_floor_us_per_kernel")
    if floor:
        print("| launch floor, µs per kernel | "
              + ", ".join(f"{k} {v:.2f}" for k, v in floor.items()) + " | | | |")  # fmt: skip
    print(f"\n| chain (24 layers, {QWEN_05B.weight_bytes() / 1e6:.0f} MB; "
          f"{out.get('chain_weights_us_at_4.3TBps', 0):.0f} µs at 4.3 TB/s) | µs per step | "
          "µs per layer | TB/s | regs | spills |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    _print_rows(out.get("chain", {}), "step_us", 6, lambda v: (
        f"{v['step_us']['median_us']:.1f} | {v['layer_us']:.2f} | {v['TBps']:.2f} | "
        f"{v.get('regs', '')} | {v.get('spills', '')}"))  # fmt: skip


def _print_rows(section: dict, timed_key: str, columns: int, cells) -> None:
    """One table row per variant of ``section``: ``cells(v)`` where it was timed, else why not."""
    for name, v in section.items():
        if timed_key in v:
            print(f"| {name} | {cells(v)} |")
        else:
            why = v.get("error") or v.get("skipped") or f"not timed (ok {v.get('ok')})"
            print(f"| {name} | {why} |" + " |" * (columns - 2))


# -- compile check without a GPU --------------------------------------------------------------

COMPILE = """
import json, sys
sys.path.insert(0, {bench!r})
import persistent_probe as P
print(json.dumps(P.compile_resources()))
"""


def compile_resources(sms: int = 132) -> dict:
    """Compile the persistent and stage kernels for sm_90 (no GPU needed) -> registers, spills
    (from ptxas) and shared memory, per variant at the qwen 0.5b shapes."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    target = GPUTarget("cuda", 90, 32)
    s = QWEN_05B
    ptrs = {"L": "i32", "N": "i32", "rounds": "i32"}
    res = {}

    def build(fn, const, name):
        sig = {a: "constexpr" if a in const else ptrs.get(a, "*fp32") for a in fn.arg_names}
        for a in ("wqkv_ptr", "wo_ptr", "wgu_ptr", "wd_ptr", "w_ptr"):
            if a in sig:
                sig[a] = "*bf16"
        for a in ("counter_ptr", "err_ptr", "smid_ptr"):
            if a in sig:
                sig[a] = "*i32"
        cx = {(fn.arg_names.index(k),): v for k, v in const.items()}
        k = compile(ASTSource(fn, sig, constexprs=cx), target=target, options={"num_warps": 4})
        res[name] = {"shared": k.metadata.shared, **_ptxas_usage(k.asm["cubin"])}
        ptx = k.asm["ptx"]
        res[name]["atomics"] = sorted({w for ln in ptx.splitlines() for w in ln.split()
                                       if w.startswith("atom.")})  # fmt: skip

    for g in (sms, 2 * sms):
        for early in (True, False):
            for spin in (SPIN_ATOMIC, SPIN_VOLATILE):
                label = f"persistent_{'early' if early else 'late'}_spin{spin}_{g}p"
                m = Model(s, *([None] * 10))
                _, const = persistent_args(m, g, early, spin, smid=True)
                build(persistent_kernel, const, label)
        for p, n, k, mode in s.products():
            bn, bk = stage_tiles(n, k, g, mode)
            build(stage_kernel, dict(K=k, BN=bn, BK=bk, MODE=mode, PDL=0), f"stage_{p}_{g}p")
    build(barrier_kernel, dict(SPIN=0, MAX_SPIN=MAX_SPIN, SMID=True), "barrier_spin0")
    return res


def _ptxas_usage(cubin: bytes) -> dict:
    """Registers and spill bytes of a cubin (cuobjdump's resource usage)."""
    from triton import knobs

    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        text = subprocess.run([knobs.nvidia.cuobjdump.path, "--dump-resource-usage", f.name],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
    finally:
        os.unlink(f.name)
    usage = {}
    for field in text.split():
        key, _, val = field.partition(":")
        if key in ("REG", "STACK", "SHARED", "LOCAL") and val.isdigit():
            usage[key.lower()] = int(val)
    return usage


def compile_only() -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    run = subprocess.run([sys.executable, "-c", COMPILE.format(bench=str(BENCH))], env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-3000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--compile-only", action="store_true", help="sm_90 resources, no GPU")
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "persistent_probe.json"
    if args.compile_only:
        res = compile_only()
        for name, v in res.items():
            print(f"{name}: {v}")
        path.write_text(json.dumps({"compile_sm90": res}, indent=1))
        return

    import torch

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    out: dict = {"gpu": torch.cuda.get_device_name(0), "sms": sms, "rounds": args.rounds,
                 "triton": triton.__version__, "torch": torch.__version__}  # fmt: skip
    t0 = time.perf_counter()

    def save(step: str) -> None:
        out["elapsed_s"] = time.perf_counter() - t0
        path.write_text(json.dumps(out, indent=1))
        print(f"[{out['elapsed_s']:.0f} s] {step} done", flush=True)

    import step_parts

    for label, step in (
        ("launch floor", lambda: out.__setitem__("launch_floor_us_per_kernel",
                                                 step_parts.launch_floor(ROUNDS_BARRIER))),
        ("barrier", lambda: measure_barrier(sms, args.rounds, out)),
        ("small check", lambda: check_small(sms, out)),
        ("chain", lambda: measure_chain(sms, args.rounds, out)),
    ):  # fmt: skip
        print(f"{label} ...", flush=True)
        try:
            step()
        except Exception as e:  # noqa: BLE001
            out.setdefault("errors", {})[label] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        save(label)
    print_table(out)


if __name__ == "__main__":
    main()

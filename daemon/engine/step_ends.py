# SPDX-License-Identifier: Apache-2.0
"""The fused decode step's two ends: the embedding into the float32 residual stream, and the
greedy token chosen inside the vocabulary product and fed back as the next step's input.

``pick_offer`` runs in the epilogue of ``kernels.linear(..., pick=)``: every program offers its
tile's best (value, first index) per row to a relaxed int64 atomic max; ``feedback``, one small
kernel launched next, writes the winners where ``graphs.decode_and_pick``'s torch tail would:
``next_ids``, the ids fed back, every real row one position further. Six torch kernels become
an epilogue and one launch (docs/performance.md, runs 20-23).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .pdl import after_previous, pdl_args, release_next

PICK_EMPTY = -(1 << 63)  # a row's best (value, index) key before any program offered one
_PICK_EMPTY = tl.constexpr(PICK_EMPTY)  # the same, as a kernel may read a global


@triton.jit
def pick_offer(a, rm, m_ok, rn, n_ok, best_ptr):
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
    # The winners of ``pick_offer`` -> next_ids, the ids fed back, and every real row (write
    # position not ``trash``) one position further: what ``graphs.decode_and_pick`` does with six
    # torch kernels after the eager step. io: the step's inputs [3, io_rows] (ids, pos, wpos).
    # Leaves best as the next step's pick expects it.
    rb = tl.arange(0, BLOCK_B)
    b_ok = rb < B
    after_previous(PDL)
    won = tl.load(best_ptr + rb, mask=b_ok, other=0)
    pos = tl.load(io_ptr + io_rows + rb, mask=b_ok, other=0)
    wpos = tl.load(io_ptr + 2 * io_rows + rb, mask=b_ok, other=0)
    release_next(PDL)
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
    after_previous(PDL)
    token = tl.load(ids_ptr + r)
    h = tl.load(wte_ptr + token * E + re, mask=e_ok, other=0.0)
    x = h.to(tl.float32)
    if HAS_WPE:  # the sum rounded once to the model dtype, as HF's module adds them
        p = tl.load(wpe_ptr + tl.load(pos_ptr + r) * E + re, mask=e_ok, other=0.0)
        x = (x + p.to(tl.float32)).to(h.dtype).to(tl.float32)
    release_next(PDL)
    tl.store(x_ptr + r * E + re, x, mask=e_ok)


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


def pick_args(pick: Pick | None, dummy: torch.Tensor) -> dict:
    return {"best_ptr": dummy if pick is None else pick.best, "PICK": pick is not None}


def feedback(pick: Pick, B: int, pdl: int | None = None) -> None:
    """After ``linear(..., pick=pick)`` over rows 0..B-1: their greedy ids into
    ``pick.next_ids`` and the ids fed back as the next inputs, real rows one position on."""
    _feedback_kernel[(1,)](
        pick.best, pick.inputs, pick.rows, pick.next_ids, pick.trash, B,
        BLOCK_B=max(2, triton.next_power_of_2(B)), num_warps=1, **pdl_args(pick.best, pdl),
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
        HAS_WPE=wpe is not None, BLOCK_E=block, num_warps=4, **pdl_args(wte, pdl),
    )  # fmt: skip
    return x

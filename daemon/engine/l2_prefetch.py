# SPDX-License-Identifier: Apache-2.0
"""Weights pulled into L2 ahead of the kernel that reads them (Hopper's bulk L2 prefetch).

At batch 1-2 each decode kernel waits on its own weights' memory latency: Nsight Compute, each
kernel alone with cold caches, put qwen 0.5b's gate/up product at 1.4 TB/s and q/k/v at 0.25
(docs/performance.md, run 30), while the same kernels with their weights already in L2 ran in
two thirds of the time. A layer's weights (31 MB for qwen 0.5b) fit the H200's 50 MB L2, so a
kernel a few launches earlier can ask for them: at its start, every program issues
``cp.async.bulk.prefetch.L2`` for its share of the region, one instruction per warp, which
does not wait for the bytes. The memory then fetches them while the chain of small kernels in
between is bound by latency, not bandwidth.

``prefetch_l2`` is a no-op unless ``PF`` (a constexpr): Triton's interpreter and GPUs before
Hopper get ``prefetch_args(None, ...)``. A prefetch is a hint: it never changes a result.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .pdl import compiled_hopper

MAX_CHUNK = 1 << 16  # bytes one instruction asks for: no size limit is documented, so a modest one


# Off unless asked for (``LSPILOT_L2_PREFETCH=1``) until it has been timed on the GPU against
# the step without it (bench/step_parts.py's ``no_prefetch``).
ON_BY_DEFAULT = False


def l2_prefetch_ok(device: torch.device | None) -> bool:
    """Prefetch into L2: where it exists (a compiled CUDA device of compute capability 9 or
    later) and ``LSPILOT_L2_PREFETCH`` (0 or 1; unset: ``ON_BY_DEFAULT``) asks for it."""
    env = os.environ.get("LSPILOT_L2_PREFETCH", "").strip()
    if env not in ("", "0", "1"):  # a GPU daemon refuses a typo when its engine loads
        raise ValueError(f"LSPILOT_L2_PREFETCH must be 0 (off) or 1 (on), not {env!r}")
    if env == "0" or (env == "" and not ON_BY_DEFAULT):
        return False
    return compiled_hopper(device)


def prefetch_args(region: torch.Tensor | None, programs: int, num_warps: int, dummy) -> dict:
    """The keywords that make a launch of ``programs`` programs of ``num_warps`` warps pull
    ``region`` (contiguous; None: nothing) into L2: each warp one chunk of at most
    ``MAX_CHUNK`` bytes, or several where the grid is small."""
    lanes = {"PF_LANES": 32 * num_warps}  # one element per thread (``prefetch_l2``)
    if region is None:
        return {"pf_ptr": dummy, "pf_bytes": 0, "pf_chunk": 16, "PF": False, **lanes}
    if not region.is_contiguous():
        raise ValueError("an L2 prefetch region must be contiguous")
    nbytes = region.numel() * region.element_size()
    chunk = min(MAX_CHUNK, max(256, -(-nbytes // (programs * num_warps))))
    chunk = -(-chunk // 16) * 16  # the instruction takes sizes in 16-byte units
    return {"pf_ptr": region, "pf_bytes": nbytes, "pf_chunk": chunk, "PF": True, **lanes}


@triton.jit
def prefetch_l2(pf_ptr, pf_bytes, pf_chunk, PF: tl.constexpr, LANES: tl.constexpr):
    # Warp w of program p (its linear id over the grid) asks for chunks c = p * warps + w,
    # then c + every warp of the grid, ... of the region, each clipped to it. LANES = 32 *
    # num_warps, so element e is thread e, in warp e // 32. The instruction takes uniform
    # operands: with a different address in each thread the compiler would loop over the warp's
    # 32 values one by one; one address a warp is one pass.
    if PF:
        p = tl.program_id(0) + tl.num_programs(0) * (
            tl.program_id(1) + tl.num_programs(1) * tl.program_id(2)
        )
        warps: tl.constexpr = LANES // 32
        every = tl.num_programs(0) * tl.num_programs(1) * tl.num_programs(2) * warps
        first = p * warps + tl.arange(0, LANES) // 32
        for i in range(0, tl.cdiv(pf_bytes, every * pf_chunk)):
            start = (first + i * every).to(tl.int64) * pf_chunk
            size = tl.minimum(pf_chunk, tl.maximum(pf_bytes - start, 0)) // 16 * 16
            addr = pf_ptr.to(tl.pointer_type(tl.int8)) + start
            tl.inline_asm_elementwise(
                "{ .reg .pred p; setp.gt.s32 p, $2, 0; "
                "@p cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0; }",
                "=r,l,r",
                [addr, size.to(tl.int32)],
                dtype=tl.int32,
                is_pure=False,
                pack=1,
            )

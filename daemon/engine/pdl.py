# SPDX-License-Identifier: Apache-2.0
"""Programmatic dependent launch (PDL) for the engine's Triton kernels: how they launch, and the
two calls inside a kernel that make it safe.

On Hopper and later a kernel may be launched while the previous one still runs; it then waits
for that one inside (``after_previous``) and releases the next one early or late
(``release_next``). Inside a CUDA graph this hides part of each launch's fixed cost, which is
most of a small-batch decode step's time (docs/performance.md).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

PDL_OFF, PDL_EARLY, PDL_LATE = 0, 1, 2
_pdl_override: int | None = None  # ``set_pdl_mode`` (the benchmark, tests)


def pdl_mode(device: torch.device | None = None, prefer: int = PDL_LATE) -> int:
    """How the decode kernels launch. ``PDL_OFF``: one after another. With programmatic
    dependent launch (Hopper and later) a kernel is launched before the previous one ends and
    waits for it inside (``after_previous``), which hides part of a launch's fixed cost in a
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


def pdl_args(x: torch.Tensor, pdl: int | None) -> dict:
    """The PDL keywords of one launch (``launch_pdl`` is a compile option: compiled only).
    ``pdl`` None: ``pdl_mode``'s default."""
    mode = pdl_mode(x.device) if pdl is None else pdl
    return {"PDL": mode, "launch_pdl": True} if mode else {"PDL": mode}


@triton.jit
def after_previous(PDL: tl.constexpr):
    # Programmatic dependent launch (``pdl_mode``): this kernel may have been launched while the
    # one before it still ran. Wait until that one has finished and its writes are visible.
    # Nothing read before this call may be used as what the previous kernel writes (a value
    # loaded early must be read again after it, as decode attention does its newest key); what
    # the kernels before that one wrote is done (the previous one released this one only after
    # its own wait).
    if PDL != 0:
        gdc_wait()
    if PDL == 1:  # early: the next kernel's programs launch now and wait in their turn
        gdc_launch_dependents()


@triton.jit
def release_next(PDL: tl.constexpr):
    # Late release: the next kernel launches once every program here is past its main loop.
    if PDL == 2:
        gdc_launch_dependents()

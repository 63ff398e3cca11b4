# SPDX-License-Identifier: Apache-2.0
"""A kernel that does nothing but what every decode kernel does at its boundaries: wait for the
previous kernel, read, release the next one, write (``bench/step_parts.py``'s launch floor)."""

from __future__ import annotations

import triton
import triton.language as tl

from lspilot.daemon.engine.pdl import after_previous, release_next


@triton.jit
def touch(x_ptr, PDL: tl.constexpr):
    i = tl.program_id(0)
    after_previous(PDL)
    v = tl.load(x_ptr + i)
    release_next(PDL)
    tl.store(x_ptr + i, v + 1.0)

# SPDX-License-Identifier: Apache-2.0
"""Tile arithmetic shared by the engine's Triton kernels."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def dot(a, b):
    # Float32 operands (a float32 model on a GPU) multiply in full precision, as torch's own
    # products do: tf32, Triton's default, would make greedy tokens differ from ``generate``.
    if a.dtype == tl.float32:
        out = tl.dot(a, b, input_precision="ieee")
    else:
        out = tl.dot(a, b)
    return out

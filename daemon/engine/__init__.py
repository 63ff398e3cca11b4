# SPDX-License-Identifier: Apache-2.0
"""Fast generation engine: preallocated KV cache, continuous batching, CUDA graphs.

Reading order: ``model`` (KV cache, prefill and decode over the HF model's modules), ``kernels``
and ``fused`` (the decode step as six Triton kernels per layer, on CUDA), ``graphs`` (the decode
step with its greedy token choice, captured per batch and length bucket), ``chunk_attention``
and ``packed`` (the prefill step: many sequences' prompt chunks packed into one forward,
captured per token bucket), ``sampling``, ``scheduler`` (the worker thread's loop: reap, admit
with prefix reuse, chunked prefill, batched decode with one step of lookahead) and ``backend``
(the daemon's Backend protocol on top).
Nothing is imported from torch or triton until a submodule is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backend import EngineBackend
    from .model import UnsupportedModel

__all__ = ["EngineBackend", "UnsupportedModel"]


def __getattr__(name: str):
    if name == "EngineBackend":
        from .backend import EngineBackend

        return EngineBackend
    if name == "UnsupportedModel":
        from .model import UnsupportedModel

        return UnsupportedModel
    raise AttributeError(name)

# SPDX-License-Identifier: Apache-2.0
"""The decode step captured in CUDA graphs, one per (batch bucket, attended-length bucket).

A 1B model's decode step is a few hundred small kernels; launched from Python they take longer
than the GPU needs to read the weights. Replaying a captured graph launches them all at once.
Shapes must be fixed per graph, so a step runs at the smallest captured batch that covers its
highest slot index and the smallest captured length that covers its longest sequence; padding
rows write to the cache's trash row. Graphs are captured lazily (or all at once by ``warmup``)
and share one memory pool.
"""

from __future__ import annotations

import bisect
import logging
import time

import torch

from .model import EngineModel

log = logging.getLogger(__name__)


def buckets(limit: int, first: int) -> list[int]:
    """Powers of two from ``first`` up to ``limit``, with ``limit`` itself last."""
    out, b = [], first
    while b < limit:
        out.append(b)
        b *= 2
    out.append(limit)
    return out


def bucket_for(value: int, options: list[int]) -> int:
    return options[bisect.bisect_left(options, value)]


class DecodeGraphs:
    def __init__(self, em: EngineModel, max_batch: int, min_len: int = 256) -> None:
        self.em = em
        # No batch-1 graph: a batch of 2 costs the same (decode reads weights, not activations),
        # and with torch.compile a size-1 dimension would need a compile of its own.
        self.batch_buckets = buckets(max_batch, min(2, max_batch))
        self.len_buckets = buckets(em.max_len, min(min_len, em.max_len))
        dev = em.device
        # Static inputs; each graph reads a leading slice. ids, pos, wpos: [max_batch, 1]
        self.ids = torch.zeros(max_batch, 1, dtype=torch.long, device=dev)
        self.pos = torch.zeros(max_batch, 1, dtype=torch.long, device=dev)
        self.wpos = torch.full((max_batch, 1), em.max_len, dtype=torch.long, device=dev)
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def shape_for(self, n_rows: int, n_keys: int) -> tuple[int, int]:
        return bucket_for(n_rows, self.batch_buckets), bucket_for(n_keys, self.len_buckets)

    def run(self, B: int, L: int, inputs: torch.Tensor) -> torch.Tensor:
        """inputs: [3, B, 1] (ids, pos, wpos) on the host -> logits [B, V]."""
        entry = self.graphs.get((B, L)) or self.capture(B, L)
        staged = inputs.to(self.em.device, non_blocking=True)
        self.ids[:B].copy_(staged[0])
        self.pos[:B].copy_(staged[1])
        self.wpos[:B].copy_(staged[2])
        entry[0].replay()
        return entry[1]

    def capture(self, B: int, L: int):
        # Capture with padding inputs, so the warm-up runs write only to the trash row.
        self.ids[:B].zero_()
        self.pos[:B].zero_()
        self.wpos[:B].fill_(self.em.max_len)

        def step():
            return self.em.decode_step(
                self.ids[:B], self.pos[:B], self.wpos[:B], self.em.key_pos(L)
            )

        t_start = time.perf_counter()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()  # compiles (if torch.compile is on) and tunes outside the capture
            step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            out = step()
        self.graphs[(B, L)] = (graph, out)
        log.info(
            "captured decode graph batch=%d len=%d (%.2f s with warm-up)",
            B,
            L,
            time.perf_counter() - t_start,
        )
        return graph, out

    def capture_all(self, max_keys: int | None = None) -> int:
        for L in self.len_buckets:
            if max_keys is not None and L > bucket_for(max_keys, self.len_buckets):
                break
            for B in reversed(self.batch_buckets):
                if (B, L) not in self.graphs:
                    self.capture(B, L)
        return len(self.graphs)

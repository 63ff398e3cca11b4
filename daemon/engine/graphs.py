# SPDX-License-Identifier: Apache-2.0
"""The decode step with its token choice, and that step captured in CUDA graphs.

``DecodeIO`` holds the step's static tensors: the inputs it reads, the greedy ids it picks, and
the host buffers that carry inputs in and ids out. ``decode_and_pick`` is the step itself: the
model's ``decode_step``, then the argmax of its logits, then the next step's inputs written in
place (the picked ids, every real row one position further), so a step can follow another with
nothing from the host. The scheduler decides when it may (see ``scheduler``).

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


def fine_buckets(limit: int, first: int, from_size: int = 1024) -> list[int]:
    """``buckets`` with the midpoints (1.5x) added from ``from_size`` on: a step whose time grows
    with its size (a long prefill) then pads at most a third, not half."""
    out = buckets(limit, first)
    mids = [b + b // 2 for b in out if b >= from_size and b + b // 2 < limit]
    return sorted(set(out + mids))


def bucket_for(value: int, options: list[int]) -> int:
    return options[bisect.bisect_left(options, value)]


class IdsToHost:
    """Token ids copied from the device to the host without a wait, into one of two pinned
    buffers (plain ones on the CPU), so a step's ids can still be read after the next step was
    launched and sent its own: ``send`` returns a ticket, ``read`` waits for that copy only.
    The decode step's picks (``DecodeIO``) and the packed prefill's (``PackedPrefill.pick``)
    cross this way for the scheduler's lookahead."""

    def __init__(self, n: int, cuda: bool) -> None:
        self._host = torch.zeros(2, n, dtype=torch.long, pin_memory=cuda)  # [2, n]
        self._events = [torch.cuda.Event(), torch.cuda.Event()] if cuda else None
        self._turn = 0

    def send(self, ids: torch.Tensor) -> int:
        turn, self._turn = self._turn, self._turn ^ 1
        self._host[turn, : len(ids)].copy_(ids, non_blocking=True)
        if self._events is not None:
            self._events[turn].record()
        return turn

    def read(self, ticket: int, n: int) -> list[int]:
        if self._events is not None:
            self._events[ticket].synchronize()
        return self._host[ticket, :n].tolist()


class DecodeIO:
    """The decode step's static tensors, allocated once, and the transfers across to the host.

    Inputs cross in one copy from a host buffer filled in one go; the picked ids come back in one
    small copy into one of two host buffers, so the ids of step k can still be read after step
    k + 1 was launched (its copy lands in the other buffer). On CUDA the host buffers are pinned
    and every copy is asynchronous, ordered on the current stream, with an event to wait on; on
    the CPU the same calls are plain copies.
    """

    def __init__(self, em: EngineModel, max_batch: int) -> None:
        dev = em.device
        N = max_batch
        self.trash = em.max_len  # the cache's trash row: where padding rows write
        self.cuda = dev.type == "cuda"
        # One tensor for all three inputs, so the host's inputs cross in a single copy.
        self.inputs = torch.zeros(3, N, 1, dtype=torch.long, device=dev)  # ids, pos, wpos
        self.inputs[2].fill_(self.trash)
        self.ids, self.pos, self.wpos = self.inputs.unbind(0)  # views, each [N, 1]
        # Separate from ids, which the step overwrites with the same values as its next input:
        # the copy to the host reads this one, so no later write to the inputs can race it.
        self.next_ids = torch.zeros(N, dtype=torch.long, device=dev)  # [N]
        # The fused step picks and feeds back inside its vocabulary product (``step_ends``).
        self.pick = None if em.fused is None else em.fused.pick_for(
            self.inputs, self.next_ids, self.trash
        )  # fmt: skip

        pin = self.cuda
        self._host_inputs = torch.zeros(3 * N, dtype=torch.long, pin_memory=pin)  # [3 N]
        self._host_view = self._host_inputs.numpy()  # fills from a Python list in one call
        # Inputs of an idle row: token 0 at position 0, written to the trash row.
        self._blank = [0] * (2 * N) + [self.trash] * N
        self._ids_out = IdsToHost(N, pin)
        self._uploaded = torch.cuda.Event() if self.cuda else None

    def upload(self, feeds: list[tuple[int, int, int]]) -> None:
        """Set the inputs: one (slot, token id, position) per real row; other rows are padding."""
        N = self.ids.shape[0]
        values = self._blank.copy()
        for slot, token, pos in feeds:
            values[slot] = token
            values[N + slot] = pos
            values[2 * N + slot] = pos  # a real row writes its KV at its own position
        if self._uploaded is not None:
            self._uploaded.synchronize()  # the previous upload has left the pinned buffer
        self._host_view[:] = values
        self.inputs.view(-1).copy_(self._host_inputs, non_blocking=True)
        if self._uploaded is not None:
            self._uploaded.record()

    def fetch(self, B: int) -> int:
        """Start copying the ids the last step picked for rows 0..B-1; returns a ticket."""
        return self._ids_out.send(self.next_ids[:B])

    def read(self, ticket: int, B: int) -> list[int]:
        """The ids of a ``fetch``, indexed by slot; waits for that step only."""
        return self._ids_out.read(ticket, B)


def decode_and_pick(em: EngineModel, io: DecodeIO, B: int, L: int) -> torch.Tensor:
    """One decode step for rows 0..B-1 over ``io``'s inputs, attending ``L`` positions.

    Returns the logits [B, V] float32; leaves the greedy ids in ``io.next_ids[:B]`` and makes
    them the next step's inputs, each real row one position further. Padding rows (``wpos`` at
    the trash row) stay where they are. Graphs capture this whole function.
    """
    ids, pos, wpos = io.ids[:B], io.pos[:B], io.wpos[:B]  # [B, 1]
    if io.pick is not None and em.fused_for(B):  # the product picks, one kernel feeds back
        return em.fused.decode(ids, pos, wpos, em.key_pos(L), io.pick)
    logits = em.decode_step(ids, pos, wpos, em.key_pos(L))  # [B, V]
    next_ids = io.next_ids[:B]  # [B]
    next_ids.copy_(logits.argmax(-1))
    real = wpos != io.trash  # [B, 1]
    ids.copy_(next_ids[:, None])
    pos.add_(real)
    wpos.add_(real)
    return logits


class DecodeGraphs:
    def __init__(self, em: EngineModel, io: DecodeIO, min_len: int = 256) -> None:
        self.em = em
        self.io = io
        max_batch = io.ids.shape[0]
        # No batch-1 graph: a batch of 2 costs the same (decode reads weights, not activations),
        # and with torch.compile a size-1 dimension would need a compile of its own.
        self.batch_buckets = buckets(max_batch, min(2, max_batch))
        self.len_buckets = buckets(em.max_len, min(min_len, em.max_len))
        # The static inputs every graph reads a leading slice of: [max_batch, 1] each.
        self.ids, self.pos, self.wpos = io.ids, io.pos, io.wpos
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def shape_for(self, n_rows: int, n_keys: int) -> tuple[int, int]:
        return bucket_for(n_rows, self.batch_buckets), bucket_for(n_keys, self.len_buckets)

    def run(self, B: int, L: int) -> torch.Tensor:
        """``decode_and_pick`` replayed over the static inputs as they are -> logits [B, V]."""
        entry = self.graphs.get((B, L)) or self.capture(B, L)
        entry[0].replay()
        return entry[1]

    def capture(self, B: int, L: int):
        # The inputs may hold a step's fed-back inputs (the scheduler looking ahead): capturing
        # leaves them as they were.
        saved = self.io.inputs.clone()
        # Capture with padding inputs, so the warm-up runs write only to the trash row.
        self.ids[:B].zero_()
        self.pos[:B].zero_()
        self.wpos[:B].fill_(self.io.trash)

        def step():
            return decode_and_pick(self.em, self.io, B, L)

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
        self.io.inputs.copy_(saved)
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

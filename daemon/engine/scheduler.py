# SPDX-License-Identifier: Apache-2.0
"""The scheduler: one worker thread that runs every model step for every editor.

Each loop iteration is a step boundary:

1. reap: sequences that were cancelled, abandoned (their stream closed) or past their deadline
   leave the batch and free their slot; nothing more is computed for them;
2. admit: waiting requests take free slots, reusing the cached KV of the longest common token
   prefix of an earlier prompt for the same document (``Sequence.cache_key``);
3. prefill: one chunk of pending prompt tokens for up to ``prefill_rows`` sequences, so a long
   prompt costs everyone else at most one chunk of latency per step;
4. decode: one token for every sequence past its prompt, in one batched (graph-captured) step.

Tokens go back to the asyncio side with one ``call_soon_threadsafe`` per event loop per phase,
and cross from the device with one transfer per step for the whole batch.

A slot keeps its KV after its sequence ends: ``_Slot.tokens`` says which tokens it holds, and
the next prompt for that document starts where they differ. A prompt whose remaining tokens are
few (``decode_feed_max``) is fed through the decode step instead of a prefill: after a one-token
edit, the first new token costs about one graph-replayed decode step.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass, field

import torch

from ..backends.base import Sequence, TokenStep
from .graphs import DecodeGraphs
from .model import EngineModel
from .sampling import RowPick, sample

log = logging.getLogger(__name__)

END = object()  # stream marker: the sequence is finished


class EngineClosed(RuntimeError):
    pass


@dataclass
class EngineConfig:
    max_batch: int = 8  # slots: sequences decoded together
    max_len: int = 4096  # positions per slot (prompt + generated)
    # Prompt tokens per sequence per prefill step while others are decoding (their next token
    # waits for the chunk); with nobody decoding a prompt goes in whole, up to the budget.
    prefill_chunk: int = 512
    prefill_token_budget: int = 8192  # prompt tokens per prefill step over all rows
    prefill_rows: int = 16
    cuda_graphs: bool = True  # only on CUDA
    decode_feed_max: int | None = None  # None: 4 with CUDA graphs, else 1
    min_graph_len: int = 256


@dataclass(eq=False)
class Request:
    seq: Sequence
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    deadline: float | None = None  # time.monotonic() after which the sequence stops
    slot: int = -1
    pending: list[int] = field(default_factory=list)  # tokens to feed whose KV is not cached
    generated: list[int] = field(default_factory=list)
    steps_run: int = 0
    steps_at_cancel: int | None = None
    abandoned: bool = False  # the consumer closed the stream
    t_submit: float = 0.0
    t_admit: float = 0.0
    generator: torch.Generator | None = None

    def abandon(self) -> None:
        """Called from the event loop when the stream closes early: stop at the next boundary."""
        if self.steps_at_cancel is None:
            self.steps_at_cancel = self.steps_run
        self.abandoned = True

    def stopped(self, now: float) -> bool:
        if self.abandoned or self.seq.cancelled:
            return True
        return self.deadline is not None and now >= self.deadline


@dataclass
class _Slot:
    tokens: list[int] = field(default_factory=list)  # tokens whose KV this slot holds, in order
    key: str = ""
    owner: Request | None = None
    last_used: int = 0


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class Scheduler:
    def __init__(self, em: EngineModel, cfg: EngineConfig) -> None:
        self.em = em
        self.cfg = cfg
        self.cache = em.allocate(cfg.max_batch)
        on_cuda = em.device.type == "cuda"
        self.graphs = (
            DecodeGraphs(em, cfg.max_batch, cfg.min_graph_len)
            if (on_cuda and cfg.cuda_graphs)
            else None
        )
        feed = cfg.decode_feed_max
        self.decode_feed_max = feed if feed is not None else (4 if self.graphs else 1)
        self.slots = [_Slot() for _ in range(cfg.max_batch)]
        self.waiting: collections.deque[Request] = collections.deque()
        self.active: list[Request] = []  # in admission order
        self._inbox: list[Request] = []
        self._calls: list[tuple[object, object]] = []
        self._cv = threading.Condition()
        self._stop = False
        self._outbox: dict[asyncio.AbstractEventLoop, list] = {}
        self._tick = 0
        self.counters = collections.Counter()
        self._thread = threading.Thread(target=self._run, name="lspilot-engine", daemon=True)

    # -- the asyncio side ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, req: Request) -> None:
        req.t_submit = time.monotonic()
        with self._cv:
            if self._stop:
                raise EngineClosed("engine is closed")
            self._inbox.append(req)
            self._cv.notify()

    def call(self, fn):
        """Run ``fn()`` on the worker thread between steps; returns a concurrent Future."""
        import concurrent.futures

        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._cv:
            self._calls.append((fn, fut))
            self._cv.notify()
        return fut

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def active_count(self) -> int:
        return len(self.active) + len(self.waiting) + len(self._inbox)

    # -- the worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cv:
                    while not (
                        self._stop or self._inbox or self._calls or self.active or self.waiting
                    ):
                        self._cv.wait()
                    if self._stop:
                        break
                    self.waiting.extend(self._inbox)
                    self._inbox.clear()
                    calls, self._calls = self._calls, []
                for fn, fut in calls:
                    try:
                        fut.set_result(fn())
                    except BaseException as e:  # noqa: BLE001 - handed to the caller
                        fut.set_exception(e)
                try:
                    self._iteration()
                except Exception as e:
                    log.exception("engine step failed; failing %d sequences", len(self.active))
                    for req in list(self.active):
                        self._finish(req, error=e)
                self._flush()
            for req in list(self.active) + list(self.waiting) + self._inbox:
                self._emit(req, EngineClosed("engine closed"))
            self._flush()

    def _iteration(self) -> None:
        self._reap()
        self._admit()
        self._prefill_step()
        self._flush()  # first tokens go out before the decode step runs
        self._reap()  # cancels that arrived during the prefill chunk
        self._decode_step()

    # 1. reap ---------------------------------------------------------------------------------

    def _reap(self) -> None:
        now = time.monotonic()
        for req in [r for r in self.waiting if r.stopped(now)]:
            self.waiting.remove(req)
            self._emit(req, END)
        for req in [r for r in self.active if r.stopped(now)]:
            self._finish(req, cancelled=True)

    def _finish(self, req: Request, *, cancelled: bool = False, error=None) -> None:
        if cancelled:
            if req.steps_at_cancel is None:
                req.steps_at_cancel = req.steps_run
            after = req.steps_run - req.steps_at_cancel
            req.seq.steps_after_cancel = after
            self.counters["decode_steps_after_cancel_total"] += after
            self.counters["cancelled_total"] += 1
        else:
            self.counters["completed_total"] += 1
        self.active.remove(req)
        slot = self.slots[req.slot]
        slot.owner = None
        self._tick += 1
        slot.last_used = self._tick
        self._emit(req, error if error is not None else END)

    # 2. admit --------------------------------------------------------------------------------

    def _admit(self) -> None:
        while self.waiting:
            req = self.waiting[0]
            free = [i for i, s in enumerate(self.slots) if s.owner is None]
            if not free:
                return
            self.waiting.popleft()
            prompt = req.seq.prompt_ids
            if not prompt or len(prompt) >= self.cfg.max_len:
                self._emit(
                    req,
                    ValueError(
                        f"prompt of {len(prompt)} tokens; "
                        f"the engine takes 1..{self.cfg.max_len - 1}"
                    ),
                )
                continue
            if req.seq.params.max_new_tokens <= 0:
                self._emit(req, END)
                continue
            self._place(req, free)

    def _place(self, req: Request, free: list[int]) -> None:
        prompt, key = req.seq.prompt_ids, req.seq.cache_key
        src, lcp = -1, 0
        if key:
            for i, s in enumerate(self.slots):
                if s.key == key:
                    n = common_prefix(s.tokens, prompt)
                    if n > lcp or (n == lcp and src >= 0 and s.owner is None):
                        src, lcp = i, n
        reuse = min(lcp, len(prompt) - 1)  # the last prompt token is always run: its logits
        if src >= 0 and self.slots[src].owner is None:
            dst = src
        else:
            # The lowest-index slot holding no document's KV, else the least recently used one.
            # Low indices matter: a decode step covers slots 0..max, so a sequence alone in
            # slot 5 costs six rows (on the CPU, six rows of compute).
            def rank(i: int) -> tuple[bool, int, int]:
                keyed = self.slots[i].key != ""
                return keyed, self.slots[i].last_used if keyed else 0, i

            dst = min(free, key=rank)
            if src >= 0 and reuse > 0:
                self.cache.copy_prefix(src, dst, reuse)
        if key:
            self.counters["prefix_cache_hits" if reuse > 0 else "prefix_cache_misses"] += 1
        slot = self.slots[dst]
        slot.owner, slot.key = req, key
        slot.tokens = list(prompt[:reuse])
        req.slot = dst
        req.pending = list(prompt[reuse:])
        req.seq.cached_tokens = reuse
        req.t_admit = time.monotonic()
        self.counters["cached_tokens_total"] += reuse
        self.counters["requests_total"] += 1
        seed = req.seq.params.seed
        if seed is not None and req.seq.params.temperature > 0:
            req.generator = torch.Generator(device=self.em.device).manual_seed(seed)
        self.active.append(req)

    # 3. prefill ------------------------------------------------------------------------------

    def _prefill_step(self) -> None:
        cfg = self.cfg
        rows: list[tuple[Request, int]] = []
        budget = cfg.prefill_token_budget
        feed = self.decode_feed_max
        decoding = any(0 < len(r.pending) <= feed for r in self.active)
        chunk = cfg.prefill_chunk if decoding else budget
        for req in self.active:
            if len(req.pending) <= feed:
                continue
            n = min(len(req.pending), chunk, budget)
            if n <= 0:
                break
            rows.append((req, n))
            budget -= n
            if len(rows) == cfg.prefill_rows:
                break
        if not rows:
            return
        B, S = len(rows), max(n for _, n in rows)
        ids = torch.zeros(B, S, dtype=torch.long)
        pos = torch.zeros(B, S, dtype=torch.long)
        wpos = torch.full((B, S), self.cache.trash, dtype=torch.long)
        last = torch.tensor([n - 1 for _, n in rows])
        slots = torch.tensor([r.slot for r, _ in rows])
        L = 0
        from_zero = True
        for b, (req, n) in enumerate(rows):
            start = len(self.slots[req.slot].tokens)
            from_zero = from_zero and start == 0
            ids[b, :n] = torch.tensor(req.pending[:n])
            pos[b, :n] = torch.arange(start, start + n)
            wpos[b, :n] = pos[b, :n]
            L = max(L, start + n)
            req.steps_run += 1
        # Attend over a multiple of 64 positions (the mask hides the extra ones): attention
        # kernels want aligned lengths, and fewer distinct shapes means fewer kernel variants.
        L = min(-(-L // 64) * 64, self.cache.max_len + 1)
        dev = self.em.device
        logits = self.em.prefill_step(
            ids.to(dev),
            pos.to(dev),
            wpos.to(dev),
            slots.to(dev),
            self.em.key_pos(L),
            last.to(dev),
            from_zero=from_zero,
        )  # [B, V]
        self.counters["prefill_steps_total"] += 1
        self.counters["prefill_tokens_total"] += sum(n for _, n in rows)
        done = []
        for b, (req, n) in enumerate(rows):
            self.slots[req.slot].tokens.extend(req.pending[:n])
            del req.pending[:n]
            if not req.pending:
                done.append((b, req))
        if done:
            self._sample_and_emit(logits, done)

    # 4. decode -------------------------------------------------------------------------------

    def _decode_step(self) -> None:
        rows = [r for r in self.active if 0 < len(r.pending) <= self.decode_feed_max]
        if not rows:
            return
        n_rows = max(r.slot for r in rows) + 1
        n_keys = max(len(self.slots[r.slot].tokens) for r in rows) + 1
        if self.graphs is not None:
            B, L = self.graphs.shape_for(n_rows, n_keys)
        else:
            B, L = n_rows, n_keys
        inputs = torch.zeros(3, B, 1, dtype=torch.long)  # ids, pos, wpos
        inputs[2].fill_(self.cache.trash)
        for req in rows:
            p = len(self.slots[req.slot].tokens)
            inputs[0, req.slot, 0] = req.pending[0]
            inputs[1, req.slot, 0] = p
            inputs[2, req.slot, 0] = p
            req.steps_run += 1
        if self.graphs is not None:
            logits = self.graphs.run(B, L, inputs)
        else:
            dev = self.em.device
            ids, pos, wpos = inputs.to(dev)
            logits = self.em.decode_step(ids, pos, wpos, self.em.key_pos(L))
        self.counters["decode_steps_total"] += 1
        self.counters["decode_rows_total"] += len(rows)
        done = []
        for req in rows:
            self.slots[req.slot].tokens.append(req.pending.pop(0))
            if not req.pending:
                done.append((req.slot, req))
        if done:
            self._sample_and_emit(logits, done)

    # sampling and streaming ------------------------------------------------------------------

    def _sample_and_emit(self, logits: torch.Tensor, rows: list[tuple[int, Request]]) -> None:
        index = torch.tensor([b for b, _ in rows], device=logits.device)
        picks = []
        for _, req in rows:
            c = req.seq.constraint
            allowed = c.allowed_ids(req.generated) if c is not None else None
            picks.append(RowPick(req.seq.params, allowed, req.generator))
        steps = sample(logits.index_select(0, index), picks)
        now = time.monotonic()
        for (_, req), step in zip(rows, steps, strict=True):
            seq = req.seq
            if not req.generated:
                seq.prefill_ms = (now - req.t_admit) * 1000.0
            req.generated.append(step.token_id)
            self._emit(req, step)
            full = len(self.slots[req.slot].tokens) + 1 >= self.cfg.max_len
            if (
                step.token_id in seq.params.stop_token_ids
                or len(req.generated) >= seq.params.max_new_tokens
                or full
            ):
                self._finish(req)
            else:
                req.pending = [step.token_id]

    def _emit(self, req: Request, item) -> None:
        self._outbox.setdefault(req.loop, []).append((req.queue, item))

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                for q, _ in items:
                    for req in self.active:
                        if req.queue is q:
                            req.abandon()


def _deliver(items) -> None:
    for q, item in items:
        q.put_nowait(item)


def stream_item_is_end(item) -> bool:
    return item is END


__all__ = ["END", "EngineClosed", "EngineConfig", "Request", "Scheduler", "TokenStep"]

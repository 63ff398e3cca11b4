# SPDX-License-Identifier: Apache-2.0
"""The scheduler: one worker thread that runs every model step for every editor.

Each loop iteration is a step boundary:

1. reap: sequences that were cancelled, abandoned (their stream closed) or past their deadline
   leave the batch and free their slot; nothing more is computed for them;
2. admit: waiting requests take free slots, reusing the cached KV of the longest common token
   prefix of an earlier prompt for the same document (``Sequence.cache_key``);
3. prefill: pending prompt tokens of up to ``prefill_rows`` sequences, at most
   ``prefill_token_budget`` in all, so a long prompt costs everyone decoding at most one
   budget-sized step of latency per token (``chunk_sizes`` says how the budget is shared); with
   the packed prefill the decoding rows ride in that step, each as a chunk of its next token;
4. decode: one token for every sequence past its prompt, in one batched (graph-captured) step,
   unless they rode in the prefill step.

Tokens go back to the asyncio side with one ``call_soon_threadsafe`` per event loop per phase,
and cross from the device with one transfer per step for the whole batch. When every row is
greedy the step picks the tokens itself (``decode_and_pick``) and only their ids cross, never
the logits; rows that sample, are constrained or want log-probabilities go through ``sample``.

Looking ahead (``EngineConfig.lookahead``): a greedy step also writes its picks into the next
step's inputs on the device, so while the batch stays the same, step k + 1 is launched before
step k's tokens are read, and the device never waits for the host between steps
(``_decode_step`` says when and how). The packed prefill looks ahead the same way
(``EngineConfig.prefill_lookahead``): its greedy picks stay on the device, the next prefill
step is launched before they are read, and the rows they belong to ride in it on them
(``_prefill_step``).

A slot keeps its KV after its sequence ends: ``_Slot.tokens`` says which tokens it holds, and
the next prompt for that document starts where they differ. A prompt whose remaining tokens are
few (``decode_feed_max``) is fed through the decode step instead of a prefill: after a one-token
edit, the first new token costs about one graph-replayed decode step.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..backends.base import Sequence, TokenStep
from .graphs import DecodeGraphs, DecodeIO, decode_and_pick
from .model import EngineModel, triton_part
from .policy import EngineConfig, chunk_sizes, common_prefix, fills_step, prefill_order
from .sampling import RowPick, sample

log = logging.getLogger(__name__)

END = object()  # stream marker: the sequence is finished


class EngineClosed(RuntimeError):
    pass


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
    unconstrained: bool = False  # the constraint said None: it stays None (TokenConstraint)

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


@dataclass(eq=False)
class _Launched:
    """A decode step handed to the device whose tokens the host has not read yet."""

    rows: list[Request]  # every real row, in admission order
    emitting: list[Request]  # rows that get a token from it (the others still feed a prompt)
    B: int  # rows computed, padding included
    ticket: int | None  # its picked ids on their way to the host (DecodeIO.fetch), if greedy
    logits: torch.Tensor | None = None  # [B, V] for ``sample``, when some row is not greedy
    picks: list[RowPick] = field(default_factory=list)  # one per emitting row, for ``sample``


@dataclass(eq=False)
class _PrefillLaunched:
    """A packed prefill step handed to the device whose greedy tokens the host has not read."""

    emitting: list[Request]  # rows that get a token from it (their prompt's end, or riders)
    chunks: list[int]  # each emitting row's chunk index in the step
    ids: torch.Tensor  # the step's greedy pick per chunk, on the device (``PackedPrefill.pick``)
    ticket: int  # their copy to the host


class Scheduler:
    def __init__(self, em: EngineModel, cfg: EngineConfig) -> None:
        self.em = em
        self.cfg = cfg
        self.cache = em.allocate(cfg.max_batch)
        on_cuda = em.device.type == "cuda"
        self.io = DecodeIO(em, cfg.max_batch)
        self.graphs = (
            DecodeGraphs(em, self.io, cfg.min_graph_len) if (on_cuda and cfg.cuda_graphs) else None
        )
        feed = cfg.decode_feed_max
        self.decode_feed_max = feed if feed is not None else (4 if self.graphs else 1)
        ahead = cfg.lookahead
        self.lookahead = ahead if ahead is not None else self.graphs is not None
        self.packed = self._packed_prefill(cfg.packed_prefill, graphs=self.graphs is not None)
        self._inflight: _Launched | None = None  # a decode step launched ahead, not read yet
        ahead = cfg.prefill_lookahead
        self.prefill_lookahead = self.lookahead if ahead is None else ahead
        self.prefill_lookahead_only_full = cfg.prefill_lookahead_only_full
        self._prefill_inflight: _PrefillLaunched | None = None  # likewise, a prefill step
        self.slots = [_Slot() for _ in range(cfg.max_batch)]
        self.waiting: collections.deque[Request] = collections.deque()
        self.active: list[Request] = []  # in admission order
        self._inbox: list[Request] = []
        self._calls: list[tuple[Callable[[], object], concurrent.futures.Future]] = []
        self._cv = threading.Condition()
        self._stop = False
        self._outbox: dict[asyncio.AbstractEventLoop, list] = {}
        self._tick = 0
        self.counters: collections.Counter[str] = collections.Counter()
        self._thread = threading.Thread(target=self._run, name="lspilot-engine", daemon=True)

    def _packed_prefill(self, want: bool | None, graphs: bool):
        if want is False or (want is None and not graphs):
            return None
        cfg = self.cfg

        def load():
            from .packed import PackedPrefill, packed_support

            def build():
                # One chunk per slot at most: prompts' rows and decoding rows riding along.
                return PackedPrefill(self.em, cfg.prefill_token_budget, cfg.max_batch, graphs)

            return build, packed_support

        return triton_part("packed prefill", want, load, self.em)

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
                    self._inflight = self._prefill_inflight = None
                    for req in list(self.active):
                        self._finish(req, error=e)
                self._flush()
            for req in list(self.active) + list(self.waiting) + self._inbox:
                self._emit(req, EngineClosed("engine closed"))
            self._flush()

    def _iteration(self) -> None:
        self._reap()
        self._admit()
        rode = self._prefill_step()
        self._flush()  # first tokens go out before the decode step runs
        self._reap()  # cancels that arrived during the prefill chunk
        if not rode:
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
        # Free slots, best first: ranked once, as placing a request changes only its own slot's
        # rank (64 arrivals at once ranked 64 slots each: ~2 ms of the start burst's first step).
        free = sorted((i for i, s in enumerate(self.slots) if s.owner is None), key=self._rank)
        while self.waiting:
            req = self.waiting[0]
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
            self._place(req, free[0])
            free.remove(req.slot)

    def _rank(self, i: int) -> tuple[bool, int, int]:
        """The lowest-index slot holding no document's KV first, then the least recently used
        ones. Low indices matter: a decode step covers slots 0..max, so a sequence alone in
        slot 5 costs six rows (on the CPU, six rows of compute)."""
        keyed = self.slots[i].key != ""
        return keyed, self.slots[i].last_used if keyed else 0, i

    def _place(self, req: Request, best_free: int) -> None:
        """Put ``req`` in the free slot holding the longest prefix of its prompt for its
        document, else in ``best_free`` (copying that prefix there from a busy slot)."""
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
            dst = best_free
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

    def _prefill_step(self) -> bool:
        """A step of prompt chunks; True when the decoding rows rode in it (their token for
        this iteration is on its way, so no decode step follows).

        Riding: with the packed prefill, while prompts wait and no decode step is in flight,
        every row with tokens to feed through the decode step (its next token, or the last few
        of a prompt) joins the step as a chunk of them, as a short prompt would. A decode step
        costs about what reading the weights costs; folded into a prefill step that reads them
        anyway, it costs its few rows of compute. Under 64 clients (docs/performance.md, run 18)
        that measured more completions/s and a lower p95 first token and gap; the median first
        token rose a little, since riders can lift a small step into the next token bucket.
        All the decoding rows ride or none do, and only while they leave the prompts at least a
        chunk of the budget.

        Looking ahead (``prefill_lookahead``): when every row the step gives a token is greedy,
        the step's picks stay on the device and start to the host without a wait, and the
        next iteration launches its step before reading them: the rows whose token is still
        unread ride in it on that token, fed on the device (``packed.Fed``), and the host reads
        and streams the earlier step's tokens while the device runs the next. So the device
        does not wait between prefill steps for the host to sample, stream, admit and upload
        (docs/performance.md, run 37: ~2.4 ms a step, a sixth of the start burst's p95).
        """
        cfg = self.cfg
        feed = self.decode_feed_max
        prev, self._prefill_inflight = self._prefill_inflight, None
        waiting = self._waiting_prompts()
        can_ride = cfg.ride_prefill and self.packed is not None and self._inflight is None
        if prev is not None and not (waiting and can_ride):
            self._read_prefill(prev, fed=())  # its rows go on as decoders, or as riders below
            prev = None
        if not waiting:
            return False
        decoders = [r for r in self.active if 0 < len(r.pending) <= feed]
        onboard = [r for r in prev.emitting if self._rides_on_its_pick(r)] if prev else []
        riders: list[Request] = []
        if can_ride:
            room = cfg.prefill_token_budget - sum(len(r.pending) for r in decoders) - len(onboard)
            if room >= min(cfg.prefill_chunk, cfg.prefill_token_budget // 2):
                riders = decoders
            elif prev is not None:  # no room for the rows on the device's picks: read them
                self._read_prefill(prev, fed=())
                return self._prefill_step()
        # Rows in a step in flight are decoding too, with nothing pending on the host.
        decoding = self._inflight is not None or bool(decoders) or bool(onboard)
        rows = self._prompt_rows(waiting, riders, decoding, extra=len(onboard))
        if not rows:
            if prev is not None:
                self._read_prefill(prev, fed=())
            return False
        for req, _ in rows:
            req.steps_run += 1
        for req in onboard:
            req.steps_run += 1
        chunks = [(r.slot, len(self.slots[r.slot].tokens), r.pending[:n]) for r, n in rows]
        fed = None
        if onboard:  # each on its unread token, at the position after its recorded ones
            assert prev is not None  # the rows riding on its picks
            from .packed import Fed  # only with the packed prefill, which needs Triton

            src = {id(r): c for r, c in zip(prev.emitting, prev.chunks, strict=True)}
            fed = Fed(prev.ids, [(len(chunks) + i, src[id(r)]) for i, r in enumerate(onboard)])
            chunks += [(r.slot, len(self.slots[r.slot].tokens), [0]) for r in onboard]
        logits = None
        if self.packed is not None:
            try:
                logits = self.packed.run(chunks, fed)
            except Exception:
                # A bucket that fails to compile or capture (memory, a driver) must not fail
                # every request from now on: the padded prefill computes the same step, and
                # rewrites whatever KV the failed one left at these positions. It pads every
                # row to the longest, so it takes the prompts alone, in chunks, without filling.
                log.exception("packed prefill failed; using the padded prefill from now on")
                if prev is not None:  # its picks were made before: they stand
                    self._read_prefill(prev, fed=())
                self.packed = None
                self.counters["packed_prefill_failures_total"] += 1
                for req in [r for r, _ in rows] + onboard:
                    req.steps_run -= 1
                return self._prefill_step()
        if logits is None:
            logits = self._padded_prefill(rows)
        if riders or onboard:
            self.counters["decode_rows_in_prefill_total"] += len(riders) + len(onboard)
            self.counters["decode_rows_fed_on_device_total"] += len(onboard)
        self.counters["prefill_steps_total"] += 1
        self.counters["prefill_tokens_total"] += sum(n for _, n in rows)
        emitting, at = [], []
        for b, (req, n) in enumerate(rows):
            self.slots[req.slot].tokens.extend(req.pending[:n])
            del req.pending[:n]
            if not req.pending:
                emitting.append(req)
                at.append(b)
        emitting += onboard
        at += [len(rows) + i for i in range(len(onboard))]
        picks = [self._pick(r) for r in emitting]
        # Only where the next step may take these rows on their picks: otherwise they would
        # wait for their tokens until the next iteration read them.
        ahead = self.prefill_lookahead and can_ride and self.packed is not None
        greedy = bool(emitting) and all(p.greedy for p in picks)
        if ahead and greedy and self._next_step_full(emitting, onboard):
            ids, ticket = self.packed.pick(logits)
            launched = _PrefillLaunched(emitting, at, ids, ticket)
            if prev is not None:  # read while the device runs the step just launched
                self.counters["prefill_steps_lookahead_total"] += 1
                self._read_prefill(prev, fed=onboard)
            self._prefill_inflight = launched
            return bool(riders) or bool(onboard)
        if prev is not None:
            self._read_prefill(prev, fed=onboard)
        live = [i for i, r in enumerate(emitting) if self._owns(r)]  # onboard may have stopped
        if live:
            reqs = [emitting[i] for i in live]
            steps = self._sample(logits, [at[i] for i in live], [picks[i] for i in live])
            self._emit_tokens(reqs, steps)
        return bool(riders) or bool(onboard)

    def _waiting_prompts(self) -> list[Request]:
        """The rows with more prompt tokens left than a decode step feeds, in prefill order."""
        cfg = self.cfg
        waiting = [r for r in self.active if len(r.pending) > self.decode_feed_max]
        if cfg.shortest_first:
            waiting = prefill_order(waiting, time.monotonic(), cfg.prompt_wait_max_s)
        return waiting

    def _next_step_full(self, emitting: list[Request], onboard: list[Request]) -> bool:
        """Whether the next prefill step is full of prompts already waiting, with the rows of
        ``emitting`` that will ride in it on their picks (``prefill_lookahead_only_full``):
        when it is not, a prompt arriving before this step ends may still get into it, which
        looking ahead would prevent, as the next step's rows are chosen now. ``onboard``: the
        rows of ``emitting`` fed on the device in this step, whose earlier token is unread
        too; a row at its last token does not ride, and leaves room for a prompt."""
        if not self.prefill_lookahead_only_full:
            return True
        cfg, feed = self.cfg, self.decode_feed_max
        waiting = self._waiting_prompts()
        fed_here = {id(r) for r in onboard}
        riding = sum(self._rides_on_its_pick(r, 2 if id(r) in fed_here else 1) for r in emitting)
        riding += sum(len(r.pending) for r in self.active if len(r.pending) <= feed)
        budget = cfg.prefill_token_budget - riding
        return fills_step(
            [len(r.pending) for r in waiting], budget=budget, max_rows=cfg.prefill_rows
        )

    def _rides_on_its_pick(self, req: Request, unread: int = 1) -> bool:
        """Whether ``req``, with ``unread`` tokens from steps launched that the host has not
        recorded, may take one more from the next step on the last of them: it goes on after
        them, whatever they are, as far as the host can tell (a stop token it cannot: then the
        next step's token is dropped). Two are unread for a row fed on the device in a step
        about to launch the next one."""
        if not self._owns(req) or not self._greedy_from_now(req):
            return False
        if len(req.generated) + unread >= req.seq.params.max_new_tokens:
            return False
        return len(self.slots[req.slot].tokens) + unread < self.cfg.max_len

    def _read_prefill(self, step: _PrefillLaunched, *, fed) -> None:
        """Read ``step``'s tokens and stream them; ``fed``: rows riding in the step launched
        after it, on these tokens (their KV is on its way)."""
        ids = self.packed.read(step.ticket, len(step.ids))
        on = {id(r) for r in fed}
        for riding in (True, False):
            rows = [
                (r, c)
                for r, c in zip(step.emitting, step.chunks, strict=True)
                if self._owns(r) and (id(r) in on) == riding
            ]
            if rows:
                steps = [TokenStep(ids[c]) for _, c in rows]
                self._emit_tokens([r for r, _ in rows], steps, fed=riding)

    def _prompt_rows(
        self, waiting, riders, decoding: bool, extra: int = 0
    ) -> list[tuple[Request, int]]:
        """(request, tokens this step) for the waiting prompts (``chunk_sizes``), then the
        riders with all their pending tokens, which the prompts' budget leaves room for, as
        it does for ``extra`` more tokens."""
        cfg = self.cfg
        sizes = chunk_sizes(
            [len(r.pending) for r in waiting],
            chunk=cfg.prefill_chunk if decoding else cfg.prefill_token_budget,
            budget=cfg.prefill_token_budget - sum(len(r.pending) for r in riders) - extra,
            max_rows=cfg.prefill_rows,
            fill=self.packed is not None,
        )
        rows = list(zip(waiting, sizes, strict=False))
        return rows + [(r, len(r.pending)) for r in riders] if rows else []

    def _padded_prefill(self, rows: list[tuple[Request, int]]) -> torch.Tensor:
        """The chunks right-padded into one [rows, longest] batch (the eager prefill)."""
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
        # Attend over a multiple of 64 positions (the mask hides the extra ones): attention
        # kernels want aligned lengths, and fewer distinct shapes means fewer kernel variants.
        L = min(-(-L // 64) * 64, self.cache.max_len + 1)
        dev = self.em.device
        return self.em.prefill_step(
            ids.to(dev),
            pos.to(dev),
            wpos.to(dev),
            slots.to(dev),
            self.em.key_pos(L),
            last.to(dev),
            from_zero=from_zero,
        )  # [B, V]

    # 4. decode -------------------------------------------------------------------------------

    def _decode_step(self) -> None:
        """Read one decode step's tokens, with the step after it already launched if it can be.

        Looking ahead: a greedy step picks its tokens on the device and writes them into the
        next step's inputs (``decode_and_pick``). When the next step would decode exactly the
        same rows (``_can_follow``), it is launched before this step's tokens are read, so the
        device runs it while the host reads, streams and checks for stops; it stays in flight
        into the next iteration, where it is this method's step. A row that stops on this step's
        token ignores the next step's: the KV that step wrote for it is never recorded in
        ``_Slot.tokens``. When the rows change, the next step's inputs come from the host again.
        """
        step, self._inflight = self._inflight, None
        if step is None:
            step = self._launch()
            if step is None:
                return
            self._reap()  # cancels that came during the launch get no step launched after it
        if self._can_follow(step):
            self._inflight = self._launch_following(step)
        self._complete(step, followed=self._inflight is not None)
        if self._inflight is not None and not any(self._owns(r) for r in self._inflight.rows):
            self._inflight = None  # every row stopped on the step before: nothing to read

    def _launch(self) -> _Launched | None:
        """A decode step on inputs from the host: each row feeds its next pending token."""
        rows = [r for r in self.active if 0 < len(r.pending) <= self.decode_feed_max]
        if not rows:
            return None
        feeds = [(r.slot, r.pending[0], len(self.slots[r.slot].tokens)) for r in rows]
        B, L = self._shape(rows, max(p for _, _, p in feeds) + 1)
        for req in rows:
            req.steps_run += 1
        self.io.upload(feeds)
        logits = self._run_step(B, L)
        self._count_step(rows)
        emitting = []
        for req in rows:
            # Recorded at launch: whatever reads the cache later (a prefix copy, the next step)
            # is ordered after this step on the device.
            self.slots[req.slot].tokens.append(req.pending.pop(0))
            if not req.pending:
                emitting.append(req)
        picks = [self._pick(r) for r in emitting]
        if all(p.greedy for p in picks):
            return _Launched(rows, emitting, B, self.io.fetch(B) if emitting else None)
        return _Launched(rows, emitting, B, None, logits, picks)

    def _can_follow(self, step: _Launched) -> bool:
        """Whether the step after ``step`` may run on the inputs ``step`` wrote on the device.

        Only if it would decode exactly ``step``'s rows, one more greedy token each: nobody
        joins (no prompt pending, nobody waiting who could take a free slot) and nobody leaves
        that the host can tell in advance (cancelled, or done at max_new_tokens or max_len with
        ``step``'s token). A stop token it cannot tell: that row ignores the next step.
        """
        if not self.lookahead or step.ticket is None or len(step.emitting) != len(step.rows):
            return False  # not every row greedy, or some still feeding their prompt
        if len(self.active) != len(step.rows):
            return False  # a row was reaped, or a new one waits for its prefill
        # _inbox is read without the lock: a request missed here is seen at the next step.
        if (self.waiting or self._inbox) and len(self.active) < self.cfg.max_batch:
            return False
        # The bounds of riding on an unread pick: one more token after step's.
        return all(self._rides_on_its_pick(req) for req in step.rows)

    def _launch_following(self, step: _Launched) -> _Launched:
        """The step after ``step``: the same rows, on the inputs ``step`` writes on the device."""
        rows = step.rows
        # Each row's position is the one after step's token: len(tokens) already counts it.
        B, L = self._shape(rows, max(len(self.slots[r.slot].tokens) for r in rows) + 1)
        for req in rows:
            req.steps_run += 1  # counted as run for a row even if it stops on step's token
        self._run_step(B, L)
        self._count_step(rows)
        self.counters["decode_steps_lookahead_total"] += 1
        return _Launched(rows, rows, B, self.io.fetch(B))

    def _complete(self, step: _Launched, *, followed: bool) -> None:
        """Read ``step``'s tokens and stream them; ``followed``: the next step is running."""
        live = [i for i, r in enumerate(step.emitting) if self._owns(r)]  # not reaped meanwhile
        if not live:
            return
        rows = [step.emitting[i] for i in live]
        if step.ticket is not None:
            ids = self.io.read(step.ticket, step.B)  # [B], by slot
            steps = [TokenStep(ids[r.slot]) for r in rows]
        else:
            picks = [step.picks[i] for i in live]
            assert step.logits is not None  # a step without a ticket keeps its logits
            steps = self._sample(step.logits, [r.slot for r in rows], picks)
        self._emit_tokens(rows, steps, fed=followed)

    def _shape(self, rows: list[Request], n_keys: int) -> tuple[int, int]:
        """(B, L): rows computed (slots 0..B-1) and positions attended, graph buckets if any."""
        n_rows = max(r.slot for r in rows) + 1
        if self.graphs is not None:
            return self.graphs.shape_for(n_rows, n_keys)
        return n_rows, n_keys

    def _run_step(self, B: int, L: int) -> torch.Tensor:
        if self.graphs is not None:
            return self.graphs.run(B, L)
        return decode_and_pick(self.em, self.io, B, L)

    def _count_step(self, rows: list[Request]) -> None:
        self.counters["decode_steps_total"] += 1
        self.counters["decode_rows_total"] += len(rows)

    def _owns(self, req: Request) -> bool:
        return self.slots[req.slot].owner is req

    # sampling and streaming ------------------------------------------------------------------

    def _pick(self, req: Request) -> RowPick:
        c = req.seq.constraint
        allowed = None
        if c is not None and not req.unconstrained:
            allowed = c.allowed_ids(req.generated)
            # TokenConstraint: "None once unconstrained", so it is not asked again, and the
            # row may be decoded ahead from now on.
            req.unconstrained = allowed is None
        return RowPick(req.seq.params, allowed, req.generator)

    def _greedy_from_now(self, req: Request) -> bool:
        """Every later token of ``req`` is the argmax of its logits."""
        params = req.seq.params
        unconstrained = req.seq.constraint is None or req.unconstrained
        return unconstrained and not (params.temperature > 0 or params.logprobs)

    def _sample(self, logits: torch.Tensor, index: list[int], picks: list[RowPick]):
        """``sample`` over rows ``index`` of logits [B, V] -> one TokenStep per pick."""
        rows = torch.tensor(index, device=logits.device)
        return sample(logits.index_select(0, rows), picks)

    def _emit_tokens(self, rows: list[Request], steps: list[TokenStep], *, fed=False) -> None:
        """Stream each row's token and finish the rows that are done.

        fed: the step in flight took these tokens as its inputs (looking ahead), so for a row
        that goes on, the token's KV is on its way; for one that ends, it stays unrecorded.
        """
        now = time.monotonic()
        for req, step in zip(rows, steps, strict=True):
            seq = req.seq
            if not req.generated:
                seq.prefill_ms = (now - req.t_admit) * 1000.0
            req.generated.append(step.token_id)
            self._emit(req, step)
            tokens = self.slots[req.slot].tokens
            full = len(tokens) + 1 >= self.cfg.max_len
            if (
                step.token_id in seq.params.stop_token_ids
                or len(req.generated) >= seq.params.max_new_tokens
                or full
            ):
                self._finish(req)
            elif fed:
                tokens.append(step.token_id)
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

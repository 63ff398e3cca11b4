# SPDX-License-Identifier: Apache-2.0
"""From a snapshot to suggestion texts: decide, reuse, debounce, stream, post-process.

Shared by the inline-completion and completion features. In order:

1. decide the stop policy at the cursor (tree-sitter where a grammar exists) or not to complete;
2. if the document's in-flight generation still fits (the user typed along it), attach to it;
   if it diverged, cancel it (the cancel reaches the daemon);
3. else serve from the completion cache (including typed-through hits);
4. else wait the (adaptive) debounce and start a new generation, with snippets of other
   documents chosen by similarity as extra context;
5. post-process what the model wrote against the text around the cursor.

Per document only the newest LSP request waits: a newer one cancels the older request's task.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from lspilot.protocol.client import DaemonUnavailable
from lspilot.protocol.messages import CompleteRequest, StopPolicy

from .config import Settings
from .connection import DaemonConnection
from .core import postprocess as post
from .core.cache import CompletionCache
from .core.context import clip_context, current_line_prefix, cursor_window, infer_indent
from .core.debounce import AdaptiveDebounce, DebounceConfig
from .core.multiline import Decision, Policy, decide_stop_policy
from .core.snippets import SnippetStore, select_snippets
from .core.typethrough import track
from .documents import Snapshot
from .generation import Generation

log = logging.getLogger(__name__)

_ids = itertools.count(1)
SNIPPET_CHARS = 2_000  # extra context per request, before the daemon's token budget


@dataclass
class Outcome:
    request_id: str
    texts: list[str]
    finish_reason: str = ""
    timings: dict = field(default_factory=dict)
    source: str = "model"  # "model", "type-through", "cache" or "skipped"


PartialFn = Callable[[str, str], None]  # (request_id, suggestion so far)


def _after_code(prefix: str) -> bool:
    """Heal only after code typed on this line, not after indentation the editor inserted:
    healing there re-asks the model for the indentation and lets it start another statement
    (at ``if n < 2: return n`` / cursor, the default model wrote ``else:`` instead of the
    return it writes without healing)."""
    return bool(current_line_prefix(prefix).strip())


class Suggester:
    def __init__(self, connection: DaemonConnection, settings: Callable[[], Settings]) -> None:
        self.connection = connection
        self.settings = settings
        self.cache = CompletionCache()
        self.snippets = SnippetStore()
        self.debounce = AdaptiveDebounce()
        self.versions: Callable[[], dict[str, int]] = dict
        self._generations: dict[str, Generation] = {}
        self._waiting: dict[str, asyncio.Task] = {}
        self._client_tag = f"{os.getpid()}"
        self.requests_started = 0

    # --- events from text sync ----------------------------------------------------------

    def on_change(self, core_snapshot, now: float) -> None:
        """A keystroke: feed the debounce, and cancel a generation the edit diverged from."""
        self.debounce.observe_keystroke(now)
        gen = self._generations.get(core_snapshot.uri)
        if gen is None or gen.done:
            return
        verdict = track(gen.shown(), core_snapshot)
        if verdict.state == "diverged":
            gen.cancel()
        elif verdict.typed:
            gen.typed_through = True

    def forget(self, uri: str) -> None:
        task = self._waiting.pop(uri, None)
        if task is not None and not task.done():
            task.cancel()
        gen = self._generations.pop(uri, None)
        if gen is not None:
            gen.cancel()
        self.cache.invalidate_uri(uri)
        self.snippets.remove_document(uri)

    # --- a request ----------------------------------------------------------------------

    async def suggest(
        self,
        snap: Snapshot,
        *,
        n: int = 1,
        invoked: bool = False,
        on_partial: PartialFn | None = None,
    ) -> Outcome:
        s = self.settings()
        request_id = f"{self._client_tag}-{next(_ids)}"
        if s.type_through:
            gen, typed = self._reusable(snap, n)
        else:
            self._drop(snap.uri)
            gen, typed = None, ""
        # A typed-through remainder keeps the decision of the request that started the stream:
        # a fresh one, made inside the block, would cut the rest of the block at this line.
        decision = gen.decision if gen is not None else None
        if decision is None:
            decision = self._decide(snap, s)
        if not decision.complete:
            self._supersede(snap.uri)
            return Outcome(request_id, [], source="skipped")
        policy = StopPolicy(decision.policy)
        # What crosses the wire: bounded, cut at line boundaries (the daemon spends the tokens).
        window = clip_context(snap.prefix, snap.suffix, s.max_prefix_chars, s.max_suffix_chars)
        ctx = post.Context.for_decision(
            *window,
            snap.language_id,
            decision,
            indent=infer_indent(snap.core.text[:50_000]),
        )
        snippets = self._snippets(snap, s) if gen is None else ()
        versions = self._versions_of(snippets)
        if gen is None and n == 1 and s.cache:
            cached = self.cache.lookup(snap.prefix, snap.suffix, versions, policy=policy.value)
            if cached is not None:
                self._supersede(snap.uri)
                return Outcome(request_id, self._finish(ctx, [cached], s), source="cache")
        task = asyncio.current_task()
        assert task is not None  # suggest runs as the LSP request's task
        if gen is None:
            self._supersede(snap.uri)
            self._waiting[snap.uri] = task
            delay = self._delay(snap, s, invoked)
            if delay > 0:
                await asyncio.sleep(delay / 1000)
            gen = await self._start(snap, s, n, decision, request_id, snippets, window)
        source = "model" if not typed and gen.request.request_id == request_id else "type-through"
        gen.attach()
        self._supersede(snap.uri)  # after attaching: the older request may share this stream
        self._waiting[snap.uri] = task
        try:
            started = time.perf_counter()
            async for text in gen.updates():
                if on_partial is not None and text.startswith(typed) and len(text) > len(typed):
                    on_partial(request_id, text[len(typed) :])
            try:
                await gen.wait()
            except DaemonUnavailable:
                self.connection.forget()
                raise
        finally:
            gen.detach()
            if self._waiting.get(snap.uri) is task:
                del self._waiting[snap.uri]
        if source == "model":
            self.debounce.observe_latency(
                gen.timings.get("first_token_ms", 0.0) or (time.perf_counter() - started) * 1000
            )
            self._remember(gen, s)
        raw = [t[len(typed) :] for t in gen.texts if t.startswith(typed)]
        timings = dict(gen.timings, total_ms=(time.perf_counter() - started) * 1000)
        return Outcome(
            gen.request.request_id if source == "model" else request_id,
            self._finish(ctx, raw, s),
            gen.finish_reason,
            timings,
            source,
        )

    # --- steps --------------------------------------------------------------------------

    def _decide(self, snap: Snapshot, s: Settings) -> Decision:
        decision = decide_stop_policy(snap.core)
        log.debug("stop policy %s (%s)", decision.policy, decision.reason)
        if s.stop != "auto":  # the user's choice of policy; the block is still the tree's
            return Decision(cast(Policy, s.stop), "configured", decision.block_indent)
        return decision

    def _reusable(self, snap: Snapshot, n: int) -> tuple[Generation | None, str]:
        gen = self._generations.get(snap.uri)
        if gen is None:
            return None, ""
        verdict = track(gen.shown(), snap.core)
        usable = (
            verdict.state == "continue"
            and gen.request.n >= n
            and gen.error is None
            and not (gen.done and gen.finish_reason == "cancelled")
        )
        if usable and not verdict.exhausted:
            return gen, verdict.typed
        gen.cancel()
        del self._generations[snap.uri]
        return None, ""

    def _drop(self, uri: str) -> None:
        gen = self._generations.pop(uri, None)
        if gen is not None:
            gen.cancel()

    def _supersede(self, uri: str) -> None:
        task = self._waiting.pop(uri, None)
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()

    def _delay(self, snap: Snapshot, s: Settings, invoked: bool) -> float:
        if invoked:
            return 0.0
        if not s.adaptive_debounce:
            return float(s.debounce_ms)
        if self.debounce.config.base_ms != s.debounce_ms:
            self.debounce.config = DebounceConfig(
                base_ms=float(s.debounce_ms), min_ms=min(20.0, float(s.debounce_ms))
            )
        return self.debounce.delay_for(snap.prefix, snap.suffix)

    def _snippets(self, snap: Snapshot, s: Settings) -> tuple:
        if not s.extra_context:
            return ()
        window = cursor_window(snap.prefix, snap.suffix)
        return tuple(select_snippets(self.snippets, window, SNIPPET_CHARS, exclude_path=snap.uri))

    def _versions_of(self, snippets) -> dict[str, int] | None:
        """Versions of the documents whose text goes into the prompt: part of the cache key."""
        if not snippets:
            return None
        versions = self.versions()
        return {sn.path: versions.get(sn.path, 0) for sn in snippets}

    async def _start(
        self,
        snap: Snapshot,
        s: Settings,
        n: int,
        decision: Decision,
        request_id: str,
        snippets: tuple,
        window: tuple[str, str],
    ) -> Generation:
        policy = StopPolicy(decision.policy)
        request = CompleteRequest(
            request_id=request_id,
            client_id=self._client_tag,
            uri=snap.uri,
            language_id=snap.language_id,
            prefix=window[0],
            suffix=window[1],
            snippets=snippets,
            max_new_tokens=s.max_new_tokens,
            stop=policy,
            temperature=s.temperature,
            n=n,
            deadline_ms=s.request_timeout_ms,
            token_healing=s.token_healing and _after_code(snap.prefix),
        )
        client = await self.connection.ready_client()
        self.requests_started += 1
        gen = Generation(snap, request, client, context_versions=self._versions_of(snippets))
        gen.decision = decision
        self._generations[snap.uri] = gen
        log.info("[%s] %s, %d snippets", request_id, policy.value, len(snippets))
        return gen

    def _remember(self, gen: Generation, s: Settings) -> None:
        if not s.cache or gen.error is not None or gen.finish_reason == "cancelled":
            return
        ctx = post.Context.for_decision(
            gen.snap.prefix, gen.snap.suffix, gen.snap.language_id, gen.decision
        )
        kept = post.pre_cache(ctx, gen.texts[0]) if s.postprocess else gen.texts[0]
        if kept:
            self.cache.store(
                gen.snap.prefix,
                gen.snap.suffix,
                gen.context_versions,
                kept,
                policy=gen.request.stop.value,
                uri=gen.snap.uri,
            )

    @staticmethod
    def _finish(ctx: post.Context, texts: list[str], s: Settings) -> list[str]:
        shown: dict[str, None] = {}
        for text in texts:
            out = post.postprocess(ctx, text) if s.postprocess else text
            if out and out.strip():
                shown.setdefault(out, None)
        return list(shown)

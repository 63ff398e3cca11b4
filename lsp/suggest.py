# SPDX-License-Identifier: Apache-2.0
"""From a snapshot to suggestion texts: debounce, supersede, stream, post-process.

Shared by the inline-completion and completion features. Per document, only the newest request
lives: starting one cancels the previous task, whose ``CancelledError`` cancels its gRPC call,
which stops the sequence in the daemon. Streaming text is reported through ``on_partial`` so the
editor can draw ghost text while the model is still generating.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lspilot.protocol.client import DaemonError, DaemonUnavailable
from lspilot.protocol.messages import CompleteRequest, FinishReason, StopPolicy

from .config import Settings
from .connection import DaemonConnection
from .documents import Snapshot

log = logging.getLogger(__name__)

_ids = itertools.count(1)


@dataclass
class Outcome:
    request_id: str
    texts: list[str]
    finish_reason: str = ""
    timings: dict = field(default_factory=dict)


PartialFn = Callable[[str, int, str, bool], None]  # (request_id, choice, text so far, done)


class Suggester:
    def __init__(self, connection: DaemonConnection, settings: Callable[[], Settings]) -> None:
        self.connection = connection
        self.settings = settings
        self._inflight: dict[str, asyncio.Task] = {}
        self._client_tag = f"{os.getpid()}"

    def supersede(self, uri: str) -> None:
        """Cancel the in-flight request of ``uri``, if any (a newer one replaces it)."""
        task = self._inflight.pop(uri, None)
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()

    async def suggest(
        self,
        snap: Snapshot,
        *,
        n: int = 1,
        debounce_ms: float = 0.0,
        on_partial: PartialFn | None = None,
    ) -> Outcome:
        self.supersede(snap.uri)
        task = asyncio.current_task()
        self._inflight[snap.uri] = task
        request_id = f"{self._client_tag}-{next(_ids)}"
        try:
            if debounce_ms > 0:
                await asyncio.sleep(debounce_ms / 1000)
            return await self._run(snap, request_id, n, on_partial)
        finally:
            if self._inflight.get(snap.uri) is task:
                del self._inflight[snap.uri]

    async def _run(self, snap: Snapshot, request_id: str, n: int, on_partial) -> Outcome:
        s = self.settings()
        prefix = snap.prefix[-s.max_prefix_chars :]
        suffix = snap.suffix[: s.max_suffix_chars]
        request = CompleteRequest(
            request_id=request_id,
            client_id=self._client_tag,
            uri=snap.uri,
            language_id=snap.language_id,
            prefix=prefix,
            suffix=suffix,
            max_new_tokens=s.max_new_tokens,
            stop=StopPolicy(s.stop),
            temperature=s.temperature,
            n=n,
            deadline_ms=s.request_timeout_ms,
        )
        client = await self.connection.ready_client()
        texts = [""] * n
        outcome = Outcome(request_id, texts)
        started = time.perf_counter()
        try:
            async for chunk in client.complete(request, timeout=s.request_timeout_ms / 1000 + 5):
                if chunk.error:
                    raise DaemonError(None, chunk.error)
                texts[chunk.index] += chunk.text
                if chunk.finish_reason is not None:
                    outcome.finish_reason = chunk.finish_reason.value
                    if chunk.timings is not None:
                        outcome.timings = {
                            "queued_ms": chunk.timings.queued_ms,
                            "prefill_ms": chunk.timings.prefill_ms,
                            "first_token_ms": chunk.timings.first_token_ms,
                            "prompt_tokens": chunk.timings.prompt_tokens,
                            "cached_tokens": chunk.timings.cached_tokens,
                        }
                if chunk.text and on_partial is not None:
                    on_partial(request_id, chunk.index, texts[chunk.index], False)
        except DaemonUnavailable:
            self.connection.forget()
            raise
        outcome.timings["total_ms"] = (time.perf_counter() - started) * 1000
        if outcome.finish_reason == FinishReason.ERROR.value:
            raise DaemonError(None, "generation failed in the daemon")
        return outcome

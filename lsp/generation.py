# SPDX-License-Identifier: Apache-2.0
"""One daemon stream for one cursor, which later requests share while the user types through it.

A ``Generation`` runs on its own task, independent of the LSP requests that wait for it: when
the user types characters that match the suggestion, the editor's next request attaches to the
same stream instead of starting a new one (Continue's idea), and the stream is cancelled only
when the text diverges or nobody is waiting any more. Cancelling its task cancels the gRPC call,
which stops the sequence in the daemon within a decode step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator

from lspilot.protocol.client import DaemonClient, DaemonError
from lspilot.protocol.messages import CompleteRequest

from .core.multiline import Decision
from .core.typethrough import ShownSuggestion
from .documents import Snapshot

log = logging.getLogger(__name__)

# After the last waiting request is cancelled while the user was typing through the stream,
# keep it this long for the editor's next request (VS Code cancels and re-asks per keystroke).
TYPE_THROUGH_GRACE_S = 1.0


class Generation:
    def __init__(
        self,
        snap: Snapshot,
        request: CompleteRequest,
        client: DaemonClient,
        *,
        context_versions: dict[str, int] | None = None,
    ) -> None:
        self.snap = snap
        self.request = request
        self.context_versions = context_versions  # other documents in the prompt, for the cache
        # The stop decision made for this cursor (set by the suggester).
        self.decision: Decision | None = None
        self.texts = [""] * request.n
        self.finish_reason = ""
        self.timings: dict = {}
        self.error: Exception | None = None
        self.views = 0
        self.typed_through = False  # a didChange showed the user typing along the suggestion
        self._done = asyncio.Event()
        self._changed = asyncio.Condition()
        self._grace: asyncio.TimerHandle | None = None
        self.task = asyncio.create_task(
            self._stream(client), name=f"generation {request.request_id}"
        )

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def shown(self) -> ShownSuggestion:
        return ShownSuggestion.at(self.snap.core, text=self.texts[0], done=self.done)

    def cancel(self) -> None:
        if not self.task.done():
            log.debug("[%s] cancelling generation", self.request.request_id)
            self.task.cancel()

    def attach(self) -> None:
        self.views += 1
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def detach(self) -> None:
        """A waiting request went away; stop the stream if nobody can still use it."""
        self.views -= 1
        if self.views > 0 or self.done:
            return
        if self.typed_through:
            self._grace = asyncio.get_running_loop().call_later(TYPE_THROUGH_GRACE_S, self._expire)
        else:
            self.cancel()

    def _expire(self) -> None:
        if self.views == 0:
            self.cancel()

    async def wait(self) -> None:
        await asyncio.shield(self._done.wait())
        if self.error is not None:
            raise self.error

    async def updates(self) -> AsyncIterator[str]:
        """The first choice's text each time it grows, until the stream ends."""
        seen = -1

        def grown_or_done(seen_len: int) -> bool:
            return self.done or len(self.texts[0]) != seen_len

        while True:
            async with self._changed:
                await self._changed.wait_for(functools.partial(grown_or_done, seen))
            if len(self.texts[0]) != seen:
                seen = len(self.texts[0])
                yield self.texts[0]
            if self.done:
                return

    async def _stream(self, client: DaemonClient) -> None:
        try:
            async for chunk in client.complete(
                self.request, timeout=self.request.deadline_ms / 1000 + 5
            ):
                if chunk.error:
                    raise DaemonError(None, chunk.error)
                self.texts[chunk.index] += chunk.text
                if chunk.finish_reason is not None:
                    self.finish_reason = chunk.finish_reason.value
                    if chunk.timings is not None:
                        self.timings = {
                            "queued_ms": chunk.timings.queued_ms,
                            "prefill_ms": chunk.timings.prefill_ms,
                            "first_token_ms": chunk.timings.first_token_ms,
                            "prompt_tokens": chunk.timings.prompt_tokens,
                            "cached_tokens": chunk.timings.cached_tokens,
                        }
                if chunk.text:
                    await self._notify()
        except asyncio.CancelledError:
            self.finish_reason = "cancelled"
        except Exception as exc:  # handed to every waiting request
            self.error = exc
        finally:
            self._done.set()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

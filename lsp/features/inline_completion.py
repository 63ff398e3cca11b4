# SPDX-License-Identifier: Apache-2.0
"""``textDocument/inlineCompletion`` (LSP 3.18): ghost-text suggestions at the cursor.

Automatic triggers are debounced and ask for one suggestion; an explicit invocation skips the
debounce and asks for several choices. While the model generates, ``lspilot/partialCompletion``
notifications carry the suggestion so far (see docs/protocol.md). A newer request for the same
document cancels this one all the way into the model; a result for a document that changed
meanwhile is dropped.
"""

from __future__ import annotations

import asyncio

from lsprotocol import types

from lspilot.protocol.client import DaemonError, DaemonUnavailable

from ..connection import ModelLoading
from ..documents import NotCompletable, take_snapshot
from ..server import RequestFailed

PARTIAL_NOTIFICATION = "lspilot/partialCompletion"


def register(server) -> None:
    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls, params: types.InlineCompletionParams):
        doc = ls.workspace.get_text_document(params.text_document.uri)
        try:
            snap = take_snapshot(doc, params.position)  # before the first await
        except NotCompletable:
            return types.InlineCompletionList(items=[])
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        settings = ls.settings
        n = max(1, settings.choices_on_invoke) if invoked else 1

        def on_partial(request_id: str, text: str) -> None:
            if settings.partial_updates:
                ls.protocol.notify(PARTIAL_NOTIFICATION, _partial(snap, request_id, text, False))

        try:
            outcome = await ls.suggester.suggest(snap, n=n, invoked=invoked, on_partial=on_partial)
        except asyncio.CancelledError:
            raise  # pygls answers RequestCancelled; the daemon call is already cancelled
        except ModelLoading as exc:
            ls.log_to_editor(f"lspilot: {exc}")  # progress, not a failure: no pop-up
            return types.InlineCompletionList(items=[])
        except DaemonUnavailable as exc:
            ls.report_failure(f"lspilot: daemon unavailable: {exc}")
            raise RequestFailed(f"lspilot daemon unavailable: {exc}") from None
        except DaemonError as exc:
            ls.report_failure(f"lspilot: completion failed: {exc}")
            raise RequestFailed(f"lspilot completion failed: {exc}") from None

        current = ls.workspace.get_text_document(snap.uri)
        stale = current.version != snap.version
        texts = [] if stale else outcome.texts
        if settings.partial_updates:
            final = _partial(snap, outcome.request_id, texts[0] if texts else "", True)
            final.update(
                finishReason=outcome.finish_reason,
                timings=outcome.timings,
                stale=stale,
                source=outcome.source,
            )
            ls.protocol.notify(PARTIAL_NOTIFICATION, final)
        cursor = types.Range(start=snap.position, end=snap.position)
        return types.InlineCompletionList(
            items=[types.InlineCompletionItem(insert_text=t, range=cursor) for t in texts]
        )


def _partial(snap, request_id: str, text: str, done: bool) -> dict:
    return {
        "textDocument": {"uri": snap.uri, "version": snap.version},
        "position": {"line": snap.position.line, "character": snap.position.character},
        "requestId": request_id,
        "text": text,
        "done": done,
    }

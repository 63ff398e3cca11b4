# SPDX-License-Identifier: Apache-2.0
"""``textDocument/completion`` fallback for clients without inline completion (Helix).

Offers the model's suggestion as one completion item. The edit starts at the beginning of the
word under the cursor so that the client's fuzzy filtering (which matches the typed word against
the item) keeps the item visible while the user types on.
"""

from __future__ import annotations

import re

from lsprotocol import types

from lspilot.protocol.client import DaemonError

from ..connection import ModelLoading
from ..documents import NotCompletable, take_snapshot
from ..server import RequestFailed

_WORD_TAIL = re.compile(r"[A-Za-z0-9_]*$")
LABEL_CHARS = 60


def register(server) -> None:
    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions())
    async def completion(ls, params: types.CompletionParams):
        doc = ls.workspace.get_text_document(params.text_document.uri)
        try:
            snap = take_snapshot(doc, params.position)
        except NotCompletable:
            return types.CompletionList(is_incomplete=True, items=[])
        try:
            outcome = await ls.suggester.suggest(snap)
        except ModelLoading as exc:
            ls.log_to_editor(f"lspilot: {exc}")
            return types.CompletionList(is_incomplete=True, items=[])
        except DaemonError as exc:
            ls.report_failure(f"lspilot: completion failed: {exc}")
            raise RequestFailed(f"lspilot completion failed: {exc}") from None
        text = outcome.texts[0] if outcome.texts else ""
        if not text.strip() or ls.workspace.get_text_document(snap.uri).version != snap.version:
            return types.CompletionList(is_incomplete=True, items=[])
        tail = _WORD_TAIL.search(snap.prefix.rsplit("\n", 1)[-1])  # matches, maybe empty
        word = tail.group(0) if tail else ""
        # The word is ASCII, so its length is the same in every position encoding.
        start = types.Position(
            line=snap.position.line, character=snap.position.character - len(word)
        )
        label = (word + text).split("\n", 1)[0].strip()[:LABEL_CHARS] or text.strip()[:LABEL_CHARS]
        item = types.CompletionItem(
            label=label,
            kind=types.CompletionItemKind.Text,
            detail="lspilot",
            documentation=types.MarkupContent(
                kind=types.MarkupKind.Markdown, value=f"```{snap.language_id}\n{word + text}\n```"
            ),
            filter_text=word + text,
            sort_text="0",
            text_edit=types.TextEdit(
                range=types.Range(start=start, end=snap.position), new_text=word + text
            ),
            insert_text_format=types.InsertTextFormat.PlainText,
        )
        return types.CompletionList(is_incomplete=True, items=[item])

# SPDX-License-Identifier: Apache-2.0
"""Text synchronisation hooks (``didOpen``/``didChange``/``didSave``/``didClose``).

pygls applies the incremental edits to its documents; these hooks react to them: every keystroke
feeds the adaptive debounce and may cancel an in-flight generation the user typed away from;
open documents and recently edited regions feed the extra-context store; closing a document
cancels its completion and forgets its cached suggestions. Documents that cannot be completed
(binary, huge) are reported once when opened.
"""

from __future__ import annotations

import time

from lsprotocol import types

from ..core.context import is_binary_or_huge
from ..documents import MAX_DOCUMENT_CHARS, cursor_after_change


def register(server) -> None:
    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls, params: types.DidOpenTextDocumentParams) -> None:
        doc = params.text_document
        if is_binary_or_huge(doc.text, MAX_DOCUMENT_CHARS):
            ls.log_to_editor(
                f"lspilot: not completing {doc.uri} (binary or over "
                f"{MAX_DOCUMENT_CHARS} characters)",
                types.MessageType.Warning,
            )
            return
        ls.suggester.snippets.set_document(doc.uri, doc.text)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls, params: types.DidChangeTextDocumentParams) -> None:
        doc = ls.workspace.get_text_document(params.text_document.uri)
        if not params.content_changes or len(doc.source) > MAX_DOCUMENT_CHARS:
            return
        cursor = cursor_after_change(doc, params.content_changes[-1])
        if cursor is not None:
            ls.suggester.on_change(cursor, time.monotonic())
            ls.suggester.snippets.add_recent(doc.uri, cursor.text, around_line=cursor.line)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls, params: types.DidSaveTextDocumentParams) -> None:
        doc = ls.workspace.get_text_document(params.text_document.uri)
        if len(doc.source) <= MAX_DOCUMENT_CHARS:
            ls.suggester.snippets.set_document(doc.uri, doc.source)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls, params: types.DidCloseTextDocumentParams) -> None:
        ls.suggester.forget(params.text_document.uri)

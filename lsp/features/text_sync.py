# SPDX-License-Identifier: Apache-2.0
"""Text synchronisation hooks (``didOpen``/``didChange``/``didClose``).

pygls applies the incremental edits to its documents; these hooks only react: closing a
document cancels its in-flight completion, and documents that cannot be completed (binary,
huge) are reported once when opened.
"""

from __future__ import annotations

from lsprotocol import types

from ..documents import MAX_DOCUMENT_CHARS


def register(server) -> None:
    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls, params: types.DidOpenTextDocumentParams) -> None:
        text = params.text_document.text
        if len(text) > MAX_DOCUMENT_CHARS or "\x00" in text:
            ls.log_to_editor(
                f"lspilot: not completing {params.text_document.uri} (binary or over "
                f"{MAX_DOCUMENT_CHARS} characters)",
                types.MessageType.Warning,
            )

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls, params: types.DidCloseTextDocumentParams) -> None:
        ls.suggester.supersede(params.text_document.uri)

# SPDX-License-Identifier: Apache-2.0
"""A scripted stand-in for ``lspilot lsp``, for the editor tests that need suggestions the tiny
random model cannot be made to produce: several lines, a range that replaces the closing
character after the cursor, several choices. Same wire contract as the real server
(textDocument/inlineCompletion, lspilot/partialCompletion, lspilot.status); the answers are a
fixed function of the text before the cursor (see ``SCRIPT``).

Run as ``python editor_scripted_server.py`` (stdio).
"""

from __future__ import annotations

import asyncio

from lsprotocol import types
from pygls.lsp.server import LanguageServer

# Line ends with -> suggestion at the cursor.
SCRIPT = {
    "if n ": "< 2:\n        return n\n    return fib(n - 1) + fib(n - 2)",
    "print(": "a, b",
}
CHOICES = ["first choice", "second choice", "third choice"]
CLOSING = ")]}\"'"

server = LanguageServer("lspilot-scripted", "0")


def _units_to_index(line: str, units: int, encoding: str) -> int:
    if encoding == types.PositionEncodingKind.Utf8:
        return len(line.encode("utf-8")[:units].decode("utf-8", "ignore"))
    if encoding == types.PositionEncodingKind.Utf32:
        return units
    return len(line.encode("utf-16-le")[: units * 2].decode("utf-16-le", "ignore"))


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: LanguageServer, params: types.InlineCompletionParams):
    doc = ls.workspace.get_text_document(params.text_document.uri)
    pos = params.position
    line = doc.lines[pos.line].rstrip("\r\n") if pos.line < len(doc.lines) else ""
    i = _units_to_index(line, pos.character, ls.workspace.position_encoding)
    before, after = line[:i], line[i:]
    if params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked:
        texts = CHOICES
    else:
        texts = [text for end, text in SCRIPT.items() if before.endswith(end)] or ["pass"]
    # Stream the first suggestion in two halves, as the real server streams tokens.
    first = texts[0]
    for cut in (len(first) // 2, len(first)):
        ls.protocol.notify(
            "lspilot/partialCompletion",
            {
                "textDocument": {"uri": doc.uri, "version": doc.version},
                "position": {"line": pos.line, "character": pos.character},
                "requestId": "scripted",
                "text": first[:cut],
                "done": cut == len(first),
            },
        )
        await asyncio.sleep(0.05)
    end = pos
    if after[:1] and after[0] in CLOSING and "\n" not in first:
        # Also cover the closing character already there: the range ends after it.
        end = types.Position(line=pos.line, character=pos.character + 1)
        texts = [t + after[0] for t in texts]
    return types.InlineCompletionList(
        items=[
            types.InlineCompletionItem(insert_text=t, range=types.Range(start=pos, end=end))
            for t in texts
        ]
    )


@server.command("lspilot.status")
def status(ls: LanguageServer, *args):
    return {"model": "scripted", "device": "none", "requests_total": 0}


if __name__ == "__main__":
    server.start_io()

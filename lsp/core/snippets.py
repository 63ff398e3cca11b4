# SPDX-License-Identifier: Apache-2.0
"""Extra context for the prompt: code from other open files and recently edited places.

A FIM model sees the current file around the cursor; the definitions it needs are often in a
neighbouring tab or in the function edited a minute ago. Two sources feed a :class:`SnippetStore`:

* **open documents**: each cut into overlapping windows of 40 lines (every 20 lines), replaced
  when the document is set again. Copilot's "neighbouring tabs" and Continue do the same.
* **recent chunks**: a ring of up to 16 chunks of up to 64 lines from places the user edited,
  saved or yanked, as llama.vim keeps. A new chunk evicts older ones it nearly duplicates, so
  editing one function ten times keeps one chunk of it, not ten.

:func:`select_snippets` scores every chunk by Jaccard similarity between identifier sets
(``{tokens in the chunk} ∩ {tokens around the cursor}`` over the union, keywords removed) and
takes the best ones that fit a character budget. Jaccard over identifiers is crude, but it is
what Copilot, Continue and llm-ls ship: cheap enough for every keystroke, and it finds the file
that defines the names being typed.

Everything here is plain computation over strings; the server decides when to feed the store
(didOpen/didSave/didChange of other documents) and the daemon decides where the snippets go.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from lspilot.protocol.messages import MAX_SNIPPETS, Snippet

__all__ = [
    "Chunk",
    "Snippet",
    "SnippetStore",
    "identifier_tokens",
    "jaccard",
    "select_snippets",
]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]+")

# Keywords and names so common that sharing them says nothing about relevance.
_STOPWORDS = frozenset(
    """
    and as assert async await break case catch class const continue def default del do elif
    else enum export extends false final finally fn for from func function go if impl import in
    interface is let match mod mut new nil none not null or package pass pub raise return self
    static struct super switch this throw true try type typeof use var void while with yield
    int str bool float string char byte long double auto err ok
    """.split()
)


def identifier_tokens(text: str) -> frozenset[str]:
    """The identifiers of ``text`` (two characters or more, keywords removed)."""
    return frozenset(t for t in _IDENTIFIER.findall(text) if t.lower() not in _STOPWORDS)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


@dataclass(frozen=True)
class Chunk:
    """A piece of a file, with its identifiers precomputed (they are compared on every request)."""

    path: str
    text: str
    start_line: int
    end_line: int  # exclusive
    source: Literal["document", "recent"]
    tokens: frozenset[str]

    @classmethod
    def of(
        cls, path: str, lines: list[str], start: int, source: Literal["document", "recent"]
    ) -> Chunk:
        text = "\n".join(lines)
        return cls(path, text, start, start + len(lines), source, identifier_tokens(text))


class SnippetStore:
    """Chunks of other documents and of recent edits. Bounded in count and size; no I/O.

    Defaults: 40-line windows every 20 lines (Continue's and Copilot's order of magnitude),
    20 documents of at most 200k characters, and llama.vim's ring of 16 chunks of 64 lines with
    near-duplicates (Jaccard >= 0.9) evicted.
    """

    def __init__(
        self,
        *,
        window_lines: int = 40,
        window_step: int = 20,
        max_documents: int = 20,
        max_document_chars: int = 200_000,
        max_recent: int = 16,
        recent_lines: int = 64,
        duplicate_threshold: float = 0.9,
    ) -> None:
        if window_lines < 1 or not 1 <= window_step <= window_lines:
            raise ValueError("need 1 <= window_step <= window_lines")
        self._window_lines = window_lines
        self._window_step = window_step
        self._max_documents = max_documents
        self._max_document_chars = max_document_chars
        self._recent_lines = recent_lines
        self._duplicate_threshold = duplicate_threshold
        self._documents: OrderedDict[str, tuple[Chunk, ...]] = OrderedDict()
        self._recent: deque[Chunk] = deque(maxlen=max_recent)

    def set_document(self, path: str, text: str) -> None:
        """(Re)index an open document as windows; the most recently set are kept."""
        lines = text[: self._max_document_chars].split("\n")
        windows = []
        start = 0
        while True:
            window = lines[start : start + self._window_lines]
            if any(line.strip() for line in window):
                windows.append(Chunk.of(path, window, start, "document"))
            if start + self._window_lines >= len(lines):
                break
            start += self._window_step
        self._documents[path] = tuple(windows)
        self._documents.move_to_end(path)
        while len(self._documents) > self._max_documents:
            self._documents.popitem(last=False)

    def remove_document(self, path: str) -> None:
        """Forget a closed document and its recent chunks."""
        self._documents.pop(path, None)
        kept = [chunk for chunk in self._recent if chunk.path != path]
        self._recent.clear()
        self._recent.extend(kept)

    def add_recent(self, path: str, text: str, around_line: int = 0) -> None:
        """Remember the region of ``text`` around ``around_line`` (an edit, a save, a yank).

        The chunk is ``recent_lines`` long, centred on the line. Older chunks that it nearly
        duplicates, or that share half their lines with it in the same file, are evicted first.
        """
        lines = text.split("\n")
        start = max(0, min(around_line - self._recent_lines // 2, len(lines) - self._recent_lines))
        chunk = Chunk.of(path, lines[start : start + self._recent_lines], start, "recent")
        if not chunk.text.strip():
            return
        kept = [
            old
            for old in self._recent
            if not (
                jaccard(old.tokens, chunk.tokens) >= self._duplicate_threshold
                or old.text == chunk.text
                or (old.path == path and 2 * _overlap(old, chunk) >= _shorter(old, chunk))
            )
        ]
        self._recent.clear()
        self._recent.extend(kept)
        self._recent.append(chunk)

    def chunks(self) -> Iterable[Chunk]:
        """Recent chunks (newest first), then document windows (most recently set first)."""
        yield from reversed(self._recent)
        for path in reversed(self._documents):
            yield from self._documents[path]

    def __len__(self) -> int:
        return len(self._recent) + sum(len(w) for w in self._documents.values())


def _shorter(a: Chunk, b: Chunk) -> int:
    return min(a.end_line - a.start_line, b.end_line - b.start_line)


def _overlap(a: Chunk, b: Chunk) -> int:
    return max(0, min(a.end_line, b.end_line) - max(a.start_line, b.start_line))


def select_snippets(
    store: SnippetStore,
    cursor_window_text: str,
    max_chars: int,
    *,
    exclude_path: str | None = None,
    min_score: float = 0.05,
    max_snippets: int = MAX_SNIPPETS,
) -> list[Snippet]:
    """The chunks most similar to the code around the cursor, best first, within ``max_chars``.

    ``exclude_path`` is the current document: its windows are already in the prompt as prefix
    and suffix. Its *recent* chunks stay eligible (an edit 2000 lines away is outside the
    clipped prefix), unless their text is already inside ``cursor_window_text``. Overlapping
    windows of one file are not both taken; chunks scoring below ``min_score`` never are.
    """
    query = identifier_tokens(cursor_window_text)
    if not query or max_chars <= 0:
        return []
    scored = []
    for order, chunk in enumerate(store.chunks()):
        if chunk.source == "document" and chunk.path == exclude_path:
            continue
        score = jaccard(query, chunk.tokens)
        if score >= min_score and score > 0 and chunk.text.strip() not in cursor_window_text:
            # Ties go to recent chunks, then to the order of chunks() (newest first).
            scored.append((-score, chunk.source != "recent", order, chunk))
    scored.sort(key=lambda item: item[:3])
    chosen: list[Chunk] = []
    budget = max_chars
    for _, _, _, chunk in scored:
        if len(chosen) >= max_snippets:
            break
        if len(chunk.text) > budget:
            continue
        if any(c.path == chunk.path and _overlap(c, chunk) for c in chosen):
            continue
        chosen.append(chunk)
        budget -= len(chunk.text)
    return [Snippet(chunk.path, chunk.text) for chunk in chosen]

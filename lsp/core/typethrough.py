# SPDX-License-Identifier: Apache-2.0
"""Typing through a suggestion: keep showing (and keep streaming) what still fits.

When a suggestion is on screen, or still streaming in, and the user types, there are three
answers (:func:`track`):

* ``continue``: the characters typed since the suggestion's anchor are its first characters.
  Show the remainder; send no new request; keep consuming the same stream (Continue does this,
  Copilot and Tabby do it from their caches). ``pending`` is set when the user typed further
  than the stream has produced: the next chunk will confirm or refute it.
* ``diverged``: same document, but the typed text disagrees, the cursor went back or away, or
  the code around the anchor changed. Cancel the stream; ask again at the new cursor.
* ``unrelated``: a change to another document. The suggestion stands.

A partial accept (:func:`accept_word`, :func:`accept_line`) needs nothing more: the editor
inserts the accepted text, and the next :func:`track` sees it as typed.

The remainder shown after typing through must go through the post-cache filters again
(``postprocess.post_cache``) with the new prefix and suffix: an editor that auto-closed ``(``
has put a ``)`` after the cursor that the remainder may now duplicate. Keep the *original*
decision's ``policy`` and ``block_indent`` in that context, though: once the user has typed the
first line of a block, a fresh decision would say ``single_line`` and cut the rest of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from lspilot.lsp.core.context import DocumentSnapshot

__all__ = [
    "ShownSuggestion",
    "TypeThrough",
    "accept_line",
    "accept_word",
    "track",
]

State = Literal["continue", "diverged", "unrelated"]

# How much of the text around the anchor must be unchanged: enough to notice an edit at the
# cursor, small enough to compare on every keystroke.
_ANCHOR_CONTEXT_CHARS = 256
# What an editor inserts after the cursor by itself when the user types an opener or a quote.
_AUTO_CLOSED = frozenset(")]}\"'`>")


@dataclass(frozen=True)
class ShownSuggestion:
    """A suggestion and the place it was made for.

    The anchor is an offset plus the text on both sides of it, not a document version: typing
    bumps the version on every keystroke, and that is exactly the case we want to survive.
    """

    uri: str
    anchor_offset: int
    prefix_tail: str
    suffix_head: str
    suffix_len: int
    text: str = ""
    done: bool = False

    @classmethod
    def at(cls, snapshot: DocumentSnapshot, text: str = "", done: bool = False) -> ShownSuggestion:
        """Anchor a suggestion at the snapshot's cursor (the one the request was made from)."""
        offset = snapshot.offset
        return cls(
            uri=snapshot.uri,
            anchor_offset=offset,
            prefix_tail=snapshot.text[max(0, offset - _ANCHOR_CONTEXT_CHARS) : offset],
            suffix_head=snapshot.text[offset : offset + _ANCHOR_CONTEXT_CHARS],
            suffix_len=len(snapshot.text) - offset,
            text=text,
            done=done,
        )

    def extended(self, delta: str, done: bool = False) -> ShownSuggestion:
        """The same suggestion with one more streamed chunk."""
        return replace(self, text=self.text + delta, done=self.done or done)


@dataclass(frozen=True)
class TypeThrough:
    """What to do with a suggestion after an edit. ``remainder`` is what is left to show."""

    state: State
    reason: str
    typed: str = ""
    remainder: str = ""
    pending: bool = False

    @property
    def exhausted(self) -> bool:
        """The user typed the whole (finished) suggestion: nothing is left to show."""
        return self.state == "continue" and not self.remainder and not self.pending


def track(suggestion: ShownSuggestion, snapshot: DocumentSnapshot) -> TypeThrough:
    """Decide whether ``suggestion`` survives the edit that produced ``snapshot``."""
    if snapshot.uri != suggestion.uri:
        return TypeThrough("unrelated", "other_document")
    anchor = suggestion.anchor_offset
    text = snapshot.text
    if snapshot.offset < anchor:
        return TypeThrough("diverged", "cursor_before_anchor")
    if text[anchor - len(suggestion.prefix_tail) : anchor] != suggestion.prefix_tail:
        return TypeThrough("diverged", "prefix_changed")
    typed = text[anchor : snapshot.offset]
    suffix = text[snapshot.offset :]
    added = len(suffix) - suggestion.suffix_len
    if added < 0 or any(ch not in _AUTO_CLOSED for ch in suffix[:added]):
        return TypeThrough("diverged", "suffix_changed", typed)
    if not suffix[added:].startswith(suggestion.suffix_head):
        return TypeThrough("diverged", "suffix_changed", typed)
    if suggestion.text.startswith(typed):
        remainder = suggestion.text[len(typed) :]
        return TypeThrough("continue", "typed_prefix" if typed else "no_change", typed, remainder)
    if not suggestion.done and typed.startswith(suggestion.text):
        return TypeThrough("continue", "ahead_of_stream", typed, "", pending=True)
    return TypeThrough("diverged", "typed_other", typed)


_WORD_STEP = re.compile(r"\s*[^\w\s]*\w*")


def accept_word(text: str) -> tuple[str, str]:
    """Split off the next word of a suggestion: leading whitespace, then any punctuation, then
    word characters (``foo.bar(x)`` accepts ``foo``, ``.bar``, ``(x``, ``)``)."""
    match = _WORD_STEP.match(text)
    end = match.end() if match else 0
    return text[:end], text[end:]


def accept_line(text: str) -> tuple[str, str]:
    """Split off the rest of the current line; at a line break, the break and the next line.

    The line break that ends the accepted line stays in the remainder, so the cursor lands at
    the end of the accepted code and the ghost text still shows what follows.
    """
    start = 0
    if text.startswith("\r\n"):
        start = 2
    elif text.startswith(("\n", "\r")):
        start = 1
    match = re.compile(r"\r\n|\r|\n").search(text, start)
    end = match.start() if match else len(text)
    return text[:end], text[end:]

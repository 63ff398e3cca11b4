# SPDX-License-Identifier: Apache-2.0
"""lsp/core/typethrough.py: continue / diverged / unrelated after an edit, and partial accepts."""

from __future__ import annotations

import pytest

from lspilot.lsp.core.context import DocumentSnapshot
from lspilot.lsp.core.multiline import decide_stop_policy
from lspilot.lsp.core.postprocess import Context, post_cache
from lspilot.lsp.core.typethrough import (
    ShownSuggestion,
    TypeThrough,
    accept_line,
    accept_word,
    track,
)

URI = "file:///a.py"
BEFORE = "def add(a, b):\n    return "
AFTER = "\n\nprint(add(1, 2))\n"


def _snapshot(text: str, offset: int, uri: str = URI) -> DocumentSnapshot:
    line = text.count("\n", 0, offset)
    character = offset - (text.rfind("\n", 0, offset) + 1)
    return DocumentSnapshot.at(uri, 2, "python", text, line, character)


def _shown(text: str = "a + b", done: bool = True) -> ShownSuggestion:
    return ShownSuggestion.at(_snapshot(BEFORE + AFTER, len(BEFORE)), text, done)


@pytest.mark.parametrize(
    ("document", "cursor", "uri", "done", "expected"),
    [
        pytest.param(
            BEFORE + AFTER,
            len(BEFORE),
            URI,
            True,
            TypeThrough("continue", "no_change", "", "a + b"),
            id="no-change",
        ),
        pytest.param(
            BEFORE + "a +" + AFTER,
            len(BEFORE) + 3,
            URI,
            True,
            TypeThrough("continue", "typed_prefix", "a +", " b"),
            id="typed-prefix",
        ),
        pytest.param(
            BEFORE + "a + b" + AFTER,
            len(BEFORE) + 5,
            URI,
            True,
            TypeThrough("continue", "typed_prefix", "a + b", ""),
            id="typed-all",
        ),
        pytest.param(
            BEFORE + "a - " + AFTER,
            len(BEFORE) + 4,
            URI,
            True,
            TypeThrough("diverged", "typed_other", "a - "),
            id="typed-other",
        ),
        pytest.param(
            BEFORE + "a + b * 2" + AFTER,
            len(BEFORE) + 9,
            URI,
            False,
            TypeThrough("continue", "ahead_of_stream", "a + b * 2", "", pending=True),
            id="typed-ahead-of-stream",
        ),
        pytest.param(
            BEFORE + "a + b * 2" + AFTER,
            len(BEFORE) + 9,
            URI,
            True,
            TypeThrough("diverged", "typed_other", "a + b * 2"),
            id="typed-past-finished",
        ),
        pytest.param(
            BEFORE[:-1] + AFTER,
            len(BEFORE) - 1,
            URI,
            True,
            TypeThrough("diverged", "cursor_before_anchor"),
            id="backspace",
        ),
        pytest.param(
            "# x\n" + BEFORE + AFTER,
            len(BEFORE) + 4,
            URI,
            True,
            TypeThrough("diverged", "prefix_changed"),
            id="edit-above-shifts-anchor",
        ),
        pytest.param(
            BEFORE + "a" + AFTER.replace("print", "log"),
            len(BEFORE) + 1,
            URI,
            True,
            TypeThrough("diverged", "suffix_changed", "a"),
            id="suffix-edited",
        ),
        pytest.param(
            BEFORE + "a(" + ")" + AFTER,
            len(BEFORE) + 2,
            URI,
            True,
            TypeThrough("diverged", "typed_other", "a("),
            id="autoclosed-but-typed-other",
        ),
        pytest.param(
            BEFORE + AFTER,
            len(BEFORE),
            "file:///b.py",
            True,
            TypeThrough("unrelated", "other_document"),
            id="other-document",
        ),
    ],
)
def test_track(document: str, cursor: int, uri: str, done: bool, expected: TypeThrough) -> None:
    assert track(_shown(done=done), _snapshot(document, cursor, uri)) == expected


def test_auto_closed_bracket_is_tolerated() -> None:
    shown = _shown("max(a, b)")
    after_typing = _snapshot(BEFORE + "max()" + AFTER, len(BEFORE) + 4)  # the editor added ")"
    result = track(shown, after_typing)
    assert (result.state, result.remainder) == ("continue", "a, b)")


def test_streamed_chunks_confirm_a_pending_type_through() -> None:
    shown = _shown("a", done=False)
    typed = _snapshot(BEFORE + "a + b" + AFTER, len(BEFORE) + 5)
    assert track(shown, typed).pending
    shown = shown.extended(" + b + c", done=True)
    assert track(shown, typed) == TypeThrough("continue", "typed_prefix", "a + b", " + c")


def test_exhausted() -> None:
    typed_all = _snapshot(BEFORE + "a + b" + AFTER, len(BEFORE) + 5)
    assert track(_shown(), typed_all).exhausted
    assert not track(_shown(), _snapshot(BEFORE + AFTER, len(BEFORE))).exhausted


@pytest.mark.parametrize(
    ("text", "accepted", "remainder"),
    [
        pytest.param("foo.bar(x)", "foo", ".bar(x)", id="word"),
        pytest.param(".bar(x)", ".bar", "(x)", id="punctuation-then-word"),
        pytest.param("(x)", "(x", ")", id="open-paren-word"),
        pytest.param(")", ")", "", id="last"),
        pytest.param("  return x", "  return", " x", id="leading-spaces"),
        pytest.param("\n    return x", "\n    return", " x", id="newline-then-word"),
        pytest.param("", "", "", id="empty"),
        pytest.param("名前 = 1", "名前", " = 1", id="unicode-word"),
    ],
)
def test_accept_word(text: str, accepted: str, remainder: str) -> None:
    assert accept_word(text) == (accepted, remainder)


@pytest.mark.parametrize(
    ("text", "accepted", "remainder"),
    [
        pytest.param("a = 1\nb = 2", "a = 1", "\nb = 2", id="rest-of-line"),
        pytest.param("\nb = 2\nc = 3", "\nb = 2", "\nc = 3", id="next-line"),
        pytest.param("\r\nb = 2\r\nc", "\r\nb = 2", "\r\nc", id="crlf"),
        pytest.param("x", "x", "", id="single-line"),
        pytest.param("\n", "\n", "", id="only-newline"),
    ],
)
def test_accept_line(text: str, accepted: str, remainder: str) -> None:
    assert accept_line(text) == (accepted, remainder)


def test_repeated_partial_accepts_rebuild_the_text() -> None:
    text = "if x:\n    return foo(a, b)\nelse:\n    pass"
    for accept in (accept_word, accept_line):
        pieces, rest = [], text
        while rest:
            piece, rest = accept(rest)
            assert piece
            pieces.append(piece)
        assert "".join(pieces) == text


def test_typed_through_block_remainder_keeps_the_original_policy() -> None:
    before, after = "def f(x):\n    ", "\n"
    decision = decide_stop_policy("python", before, after)
    shown = ShownSuggestion.at(_snapshot(before + after, len(before)), "y = x\n    return y", True)
    typed = "y = x\n    "
    now = _snapshot(before + typed + after, len(before + typed))
    result = track(shown, now)
    assert (result.state, result.remainder) == ("continue", "return y")
    assert decide_stop_policy(now).policy == "single_line"  # a fresh decision would cut
    ctx = Context(
        now.prefix, now.suffix, "python", policy=decision.policy, block_indent=decision.block_indent
    )
    assert post_cache(ctx, result.remainder) == "return y"

# SPDX-License-Identifier: Apache-2.0
"""lsp/core/context.py: positions, clipping, and the binary/huge guard."""

from __future__ import annotations

import pytest

from lspilot.lsp.core.context import (
    BracketState,
    DocumentSnapshot,
    Indent,
    clip_context,
    current_line_prefix,
    current_line_suffix,
    cursor_window,
    indent_of,
    infer_indent,
    is_binary_or_huge,
    offset_at,
    scan_brackets,
    split_at_cursor,
)


@pytest.mark.parametrize(
    ("text", "line", "col", "prefix", "suffix"),
    [
        pytest.param("", 0, 0, "", "", id="empty"),
        pytest.param("abc", 0, 1, "a", "bc", id="one-line"),
        pytest.param("ab\ncd", 1, 1, "ab\nc", "d", id="second-line"),
        pytest.param("ab\ncd", 0, 99, "ab", "\ncd", id="col-past-eol-clamps-to-eol"),
        pytest.param("ab\ncd", 7, 0, "ab\ncd", "", id="line-past-eof-clamps-to-eof"),
        pytest.param("ab\r\ncd", 0, 2, "ab", "\r\ncd", id="crlf-eol-not-split"),
        pytest.param("ab\r\ncd", 0, 3, "ab", "\r\ncd", id="crlf-col-clamped-before-cr"),
        pytest.param("ab\r\ncd", 1, 1, "ab\r\nc", "d", id="crlf-second-line"),
        pytest.param("ab\rcd", 1, 0, "ab\r", "cd", id="lone-cr-is-a-line-break"),
        pytest.param("a\fb\nc", 1, 0, "a\fb\n", "c", id="form-feed-is-not-a-line-break"),
        pytest.param(
            "a\u2028b\nc", 1, 1, "a\u2028b\nc", "", id="unicode-line-separator-not-a-break"
        ),
        pytest.param("é😀x\n", 0, 2, "é😀", "x\n", id="code-points-not-utf16"),
        pytest.param("ab\n", 1, 0, "ab\n", "", id="last-empty-line"),
    ],
)
def test_split_at_cursor(text: str, line: int, col: int, prefix: str, suffix: str) -> None:
    assert split_at_cursor(text, line, col) == (prefix, suffix)
    assert offset_at(text, line, col) == len(prefix)


def test_negative_position_is_rejected() -> None:
    with pytest.raises(ValueError):
        offset_at("x", -1, 0)


@pytest.mark.parametrize(
    ("prefix", "suffix", "max_p", "max_s", "want_p", "want_s"),
    [
        pytest.param("a\nb\n", "c\nd", 100, 100, "a\nb\n", "c\nd", id="fits-unchanged"),
        pytest.param("aaa\nbbb\nccc", "", 6, 10, "ccc", "", id="prefix-cut-at-next-line-start"),
        pytest.param("aaa\nbbb\nccc", "", 9, 10, "bbb\nccc", "", id="prefix-cut-mid-line-skips-it"),
        pytest.param(
            "aaa\nbbb\nccc", "", 7, 10, "bbb\nccc", "", id="prefix-cut-exactly-at-line-start"
        ),
        pytest.param("aaa\r\nbbb", "", 4, 10, "bbb", "", id="prefix-cut-inside-crlf"),
        pytest.param("aaa\r\nbbb", "", 3, 10, "bbb", "", id="prefix-cut-exact-after-crlf"),
        pytest.param("x" * 20, "", 5, 10, "x" * 5, "", id="prefix-one-long-line-hard-cut"),
        pytest.param("", "aaa\nbbb\nccc", 10, 6, "", "aaa\n", id="suffix-cut-at-last-line-end"),
        pytest.param("", "aaa\nbbb\nccc", 10, 8, "", "aaa\nbbb\n", id="suffix-cut-at-eol-exactly"),
        pytest.param("", "aaa\r\nbbb", 10, 4, "", "aaa", id="suffix-cut-inside-crlf"),
        pytest.param("", "y" * 20, 10, 5, "", "y" * 5, id="suffix-one-long-line-hard-cut"),
        pytest.param("abc", "def", 0, 0, "", "", id="zero-budget"),
    ],
)
def test_clip_context(
    prefix: str, suffix: str, max_p: int, max_s: int, want_p: str, want_s: str
) -> None:
    got_p, got_s = clip_context(prefix, suffix, max_p, max_s)
    assert (got_p, got_s) == (want_p, want_s)
    assert len(got_p) <= max_p and len(got_s) <= max_s
    assert prefix.endswith(got_p) and suffix.startswith(got_s)


@pytest.mark.parametrize(
    ("text", "max_chars", "expected"),
    [
        pytest.param("def f():\n\treturn 1\n", 100, False, id="code"),
        pytest.param("", 100, False, id="empty"),
        pytest.param("x" * 101, 100, True, id="huge"),
        pytest.param("ab\x00cd", 100, True, id="nul"),
        pytest.param("\x01\x02\x03abcdefgh", 100, True, id="many-controls"),
        pytest.param("a\fb" + "c" * 50, 100, False, id="form-feed-is-whitespace"),
        pytest.param("\ufffd" * 5 + "abc", 100, True, id="replacement-chars"),
    ],
)
def test_is_binary_or_huge(text: str, max_chars: int, expected: bool) -> None:
    assert is_binary_or_huge(text, max_chars) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("def f():\n    return 1\n", Indent(True, 4), id="four-spaces"),
        pytest.param("function f() {\n  return 1;\n}\n", Indent(True, 2), id="two-spaces"),
        pytest.param("func f() {\n\treturn 1\n}\n", Indent(False, 4), id="tabs"),
        pytest.param("a\nb\n", Indent(True, 4), id="no-indentation-default"),
        pytest.param(
            "a:\n  b:\n    c\n    d\n  e:\n    f\n", Indent(True, 2), id="nested-two-space-steps"
        ),
    ],
)
def test_infer_indent(text: str, expected: Indent) -> None:
    assert infer_indent(text) == expected


def test_indent_helpers() -> None:
    assert Indent(True, 2).unit == "  "
    assert Indent(False, 8).unit == "\t"
    assert Indent(False, 4).width("\t  ") == 6
    assert indent_of("\t  x = 1") == "\t  "
    with pytest.raises(ValueError):
        Indent(True, 0)

    class Options:  # the shape of lsprotocol.types.FormattingOptions
        insert_spaces = False
        tab_size = 8

    assert Indent.from_formatting_options(Options()) == Indent(False, 8)


@pytest.mark.parametrize(
    ("prefix", "suffix", "line_prefix", "line_suffix"),
    [
        pytest.param("a\n  b", "c\nd", "  b", "c", id="lf"),
        pytest.param("a\r\n  b", "c\r\nd", "  b", "c", id="crlf"),
        pytest.param("", "", "", "", id="empty"),
    ],
)
def test_line_parts(prefix: str, suffix: str, line_prefix: str, line_suffix: str) -> None:
    assert current_line_prefix(prefix) == line_prefix
    assert current_line_suffix(suffix) == line_suffix


def test_cursor_window_takes_lines_on_both_sides() -> None:
    prefix = "\n".join(f"p{i}" for i in range(30)) + "\nx = "
    suffix = "1\n" + "\n".join(f"s{i}" for i in range(30))
    window = cursor_window(prefix, suffix, lines_before=2, lines_after=1)
    assert window == "p28\np29\nx = 1\ns0"


def test_snapshot_at_derives_offset_and_clamps_character() -> None:
    snap = DocumentSnapshot.at("file:///a.py", 3, "python", "ab\ncd\n", 0, 10)
    assert (snap.offset, snap.character) == (2, 2)
    assert (snap.prefix, snap.suffix) == ("ab", "\ncd\n")
    assert snap.clipped(1, 1) == ("b", "\n")  # one line longer than the bound: hard cut
    with pytest.raises(AttributeError):
        snap.version = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("language_id", "before", "code", "unmatched", "quote", "open_brackets"),
    [
        pytest.param("python", "f(", "a)", [1], None, [], id="closes-outer-paren"),
        pytest.param("python", "f(", "g(a))", [4], None, [], id="own-then-outer"),
        pytest.param("python", "", "a]", [1], None, [], id="closes-nothing"),
        pytest.param("python", "f(", "[a)", [2], None, ["["], id="mismatch-is-unmatched"),
        pytest.param("python", 'f("', 'x")', [1, 2], None, [], id="closes-outer-string"),
        pytest.param("python", "", "'(' + \"[\"", [], None, [], id="brackets-in-strings"),
        pytest.param("python", "", "a  # (", [], None, [], id="hash-comment"),
        pytest.param("javascript", "", "a // (", [], None, [], id="slash-comment"),
        pytest.param("javascript", "", "/* ( */ (", [], None, ["("], id="block-comment"),
        pytest.param("python", "", "'it\\'s' (", [], None, ["("], id="escaped-quote"),
        pytest.param("python", "", '"""a\n(\n', [], '"""', [], id="triple-quote-spans-lines"),
        pytest.param("python", "", "'a\n(", [], None, ["("], id="unterminated-string-ends-at-eol"),
        pytest.param("rust", "", "fn f<'a>(x: &'a str) {", [], None, ["{"], id="rust-lifetimes"),
        pytest.param("javascript", "`${", "name}`", [4, 5], None, [], id="template-subst-closed"),
        pytest.param("javascript", "`a ${", "b} c", [1], "`", [], id="back-in-template"),
        pytest.param("javascript", "", "`${a({})}`", [], None, [], id="nested-in-template"),
        pytest.param("python", "`${", "x}", [1], None, [], id="no-templates-in-python"),
        pytest.param(
            "javascript", "f(", "s.replace(/\\//, '-'))", [20], None, [], id="regex-with-slash"
        ),
        pytest.param("javascript", "", "x = /[)/]/g.test(y)", [], None, [], id="regex-class"),
        pytest.param("javascript", "f(", "a / b)", [5], None, [], id="division"),
        pytest.param("javascript", "", "return /}/.test(s)", [], None, [], id="regex-after-return"),
    ],
)
def test_scan_brackets(
    language_id: str,
    before: str,
    code: str,
    unmatched: list[int],
    quote: str | None,
    open_brackets: list[str],
) -> None:
    found: list[int] = []
    state = scan_brackets(language_id, code, scan_brackets(language_id, before).continued(), found)
    assert found == unmatched
    assert state.quote == quote
    assert state.stack == open_brackets


def test_bracket_state_continued_moves_open_brackets_outside() -> None:
    state = scan_brackets("python", "f(x, [")
    assert state.stack == ["(", "["]
    assert state.continued() == BracketState(None, False, [], ["(", "["])

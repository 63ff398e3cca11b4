# SPDX-License-Identifier: Apache-2.0
"""What the language server knows about the cursor, copied before the first ``await``.

A completion request is answered from a :class:`DocumentSnapshot`: a frozen copy of the
document's text, version and cursor taken on the event loop, so that edits arriving while the
daemon thinks cannot change what the request is about (STYLE.md, "snapshot before you await").

Positions here are Python string indices: ``character`` counts code points within the line. The
LSP position encoding (UTF-16 by default) is converted by pygls before we get here; nothing in
this module knows about it.

This module also bounds what we send: :func:`clip_context` cuts the prefix and suffix to a number
of characters *at line boundaries*. It is not the token budget (the daemon owns the tokenizer and
spends the real budget); it only keeps a 5 MB file from travelling over gRPC on every keystroke.

Last, :func:`scan_brackets` is the little lexer that the stop policy and the post-processing
share to tell which closer closes what, skipping strings and comments.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_MAX_PREFIX_CHARS",
    "DEFAULT_MAX_SUFFIX_CHARS",
    "BracketState",
    "DocumentSnapshot",
    "Indent",
    "clip_context",
    "current_line_prefix",
    "current_line_suffix",
    "cursor_window",
    "indent_of",
    "infer_indent",
    "is_binary_or_huge",
    "offset_at",
    "scan_brackets",
    "split_at_cursor",
]

# About 4k + 1k tokens of code: more than any small FIM model's window, so the daemon, not us,
# decides what is dropped, but a bound on what crosses the wire on every keystroke.
DEFAULT_MAX_PREFIX_CHARS = 16_000
DEFAULT_MAX_SUFFIX_CHARS = 4_000

# LSP knows exactly three line terminators; str.splitlines() knows eight (\v, \f, \x1c, U+2028...),
# which would put the cursor on the wrong line in a file that contains a form feed.
_EOL = re.compile(r"\r\n|\r|\n")


def offset_at(text: str, line: int, character: int) -> int:
    """String index of (line, character), both zero-based, in code points.

    Out-of-range positions are clamped the way the LSP specification asks: a character past the
    end of its line means the end of that line, a line past the end of the text means the end of
    the text. A cursor never lands between ``\\r`` and ``\\n``.
    """
    if line < 0 or character < 0:
        raise ValueError(f"negative position ({line}, {character})")
    start = 0
    for _ in range(line):
        match = _EOL.search(text, start)
        if match is None:
            return len(text)
        start = match.end()
    match = _EOL.search(text, start)
    end_of_line = match.start() if match else len(text)
    return min(start + character, end_of_line)


def split_at_cursor(text: str, line: int, col: int) -> tuple[str, str]:
    """(text before the cursor, text after it) for a zero-based (line, col) in code points."""
    offset = offset_at(text, line, col)
    return text[:offset], text[offset:]


def clip_context(
    prefix: str,
    suffix: str,
    max_prefix_chars: int = DEFAULT_MAX_PREFIX_CHARS,
    max_suffix_chars: int = DEFAULT_MAX_SUFFIX_CHARS,
) -> tuple[str, str]:
    """Keep at most the last ``max_prefix_chars`` of the prefix and the first ``max_suffix_chars``
    of the suffix, cutting at line boundaries.

    Whole lines matter: a prefix that starts mid-token or mid-string confuses both the model and
    tree-sitter. Only when the kept window holds no line break at all (a minified file) do we
    cut inside a line, because the bound matters more than the beauty.
    """
    if max_prefix_chars < 0 or max_suffix_chars < 0:
        raise ValueError("context limits must not be negative")
    if len(prefix) > max_prefix_chars:
        cut = len(prefix) - max_prefix_chars
        start = _line_start_at_or_after(prefix, cut)
        prefix = prefix[start:] if start is not None else prefix[cut:]
    if len(suffix) > max_suffix_chars:
        window = suffix[:max_suffix_chars]
        # A "\r" at the very end of the window may be half of "\r\n": never keep half of one.
        if window.endswith("\r") and suffix[len(window) : len(window) + 1] == "\n":
            window = window[:-1]
        ends = [m.end() for m in _EOL.finditer(window)]
        suffix = window[: ends[-1]] if ends else window
    return prefix, suffix


def _line_start_at_or_after(text: str, index: int) -> int | None:
    """The first index >= ``index`` where a line begins, or None if no line begins there."""
    before = text[index - 1 : index]
    if index == 0 or before == "\n" or (before == "\r" and text[index : index + 1] != "\n"):
        return index
    match = _EOL.search(text, index)
    return match.end() if match else None


def is_binary_or_huge(text: str, max_chars: int = 1_000_000) -> bool:
    """True for documents we should not complete in at all.

    Huge: longer than ``max_chars`` (generated bundles, logs, data dumps: slow to snapshot and
    useless as prompts). Binary: a NUL, or more than 10% control characters other than
    whitespace in the first 8k characters (what editors show for a misdetected encoding). Only
    a sample is scanned so that the check costs the same for every file.
    """
    if len(text) > max_chars:
        return True
    sample = text[:8192]
    if "\x00" in sample:
        return True
    if not sample:
        return False
    controls = sum(
        1 for ch in sample if (ord(ch) < 32 and ch not in "\t\n\r\f\v") or ch in "\x7f\ufffd"
    )
    return controls * 10 > len(sample)


def current_line_prefix(prefix: str) -> str:
    """The part of the cursor's line before the cursor."""
    return prefix[max(prefix.rfind("\n"), prefix.rfind("\r")) + 1 :]


def current_line_suffix(suffix: str) -> str:
    """The part of the cursor's line after the cursor, without its terminator."""
    match = _EOL.search(suffix)
    return suffix[: match.start()] if match else suffix


def indent_of(line: str) -> str:
    """The leading whitespace of ``line`` (spaces and tabs only)."""
    return line[: len(line) - len(line.lstrip(" \t"))]


def cursor_window(prefix: str, suffix: str, lines_before: int = 20, lines_after: int = 10) -> str:
    """The code around the cursor: what snippet selection compares other files with."""
    before = prefix.split("\n")[-lines_before - 1 :]
    after = suffix.split("\n")[: lines_after + 1]
    return "\n".join(before) + "\n".join(after)


@dataclass(frozen=True)
class Indent:
    """The editor's indentation: LSP ``FormattingOptions.insertSpaces`` / ``tabSize``."""

    insert_spaces: bool = True
    tab_size: int = 4

    def __post_init__(self) -> None:
        if self.tab_size < 1:
            raise ValueError(f"tab_size must be at least 1, got {self.tab_size}")

    @property
    def unit(self) -> str:
        """One level of indentation as the editor would type it."""
        return " " * self.tab_size if self.insert_spaces else "\t"

    def width(self, whitespace: str) -> int:
        """Display width in columns of leading whitespace, tabs stopping every ``tab_size``."""
        return len(whitespace.expandtabs(self.tab_size))

    @classmethod
    def from_formatting_options(cls, options: object) -> Indent:
        """From an ``lsprotocol.types.FormattingOptions`` (or anything with the same fields)."""
        return cls(
            insert_spaces=bool(getattr(options, "insert_spaces", True)),
            tab_size=int(getattr(options, "tab_size", 4) or 4),
        )


def infer_indent(text: str, default: Indent = Indent()) -> Indent:
    """Guess the indentation of a document from its lines, for clients that do not tell us.

    ``textDocument/inlineCompletion`` carries no FormattingOptions, so this is the usual source.
    Tabs win if more lines start with a tab than with spaces; the space unit is the most common
    positive difference between consecutive indented lines (2, 4 or 8 in practice).
    """
    tab_lines = space_lines = 0
    steps: Counter[int] = Counter()
    previous = 0
    for line in text.split("\n")[:2000]:
        if not line.strip():
            continue
        if line.startswith("\t"):
            tab_lines += 1
            continue
        width = len(line) - len(line.lstrip(" "))
        if width:
            space_lines += 1
        if width > previous:
            steps[width - previous] += 1
        previous = width
    if tab_lines == 0 and space_lines == 0:
        return default
    if tab_lines > space_lines:
        return Indent(insert_spaces=False, tab_size=default.tab_size)
    unit = max(steps.items(), key=lambda kv: (kv[1], -kv[0]))[0] if steps else default.tab_size
    return Indent(insert_spaces=True, tab_size=unit if 1 <= unit <= 8 else default.tab_size)


@dataclass(frozen=True)
class DocumentSnapshot:
    """A document and a cursor, frozen at the moment a completion was asked for.

    ``line``/``character`` are zero-based, ``character`` in code points within the line (pygls has
    already converted the client's encoding); ``offset`` is the same position as an index into
    ``text``. Build it with :meth:`at` so the three always agree.
    """

    uri: str
    version: int
    language_id: str
    text: str
    line: int
    character: int
    offset: int

    @classmethod
    def at(
        cls, uri: str, version: int, language_id: str, text: str, line: int, character: int
    ) -> DocumentSnapshot:
        offset = offset_at(text, line, character)
        # Re-derive the character so a clamped position (past the end of the line) is stored as
        # the position the cursor really has.
        line_start = max(text.rfind("\n", 0, offset), text.rfind("\r", 0, offset)) + 1
        return cls(uri, version, language_id, text, line, offset - line_start, offset)

    @property
    def prefix(self) -> str:
        return self.text[: self.offset]

    @property
    def suffix(self) -> str:
        return self.text[self.offset :]

    def clipped(
        self,
        max_prefix_chars: int = DEFAULT_MAX_PREFIX_CHARS,
        max_suffix_chars: int = DEFAULT_MAX_SUFFIX_CHARS,
    ) -> tuple[str, str]:
        """(prefix, suffix) bounded by :func:`clip_context`: what goes to the daemon."""
        return clip_context(self.prefix, self.suffix, max_prefix_chars, max_suffix_chars)


# --------------------------------------------------------------------------------------------
# Reading brackets and strings: enough lexing to tell which closer closes what.

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {")": "(", "]": "[", "}": "{"}
_QUOTES_DEFAULT = "\"'"
_QUOTES = {
    "rust": '"',  # ' starts a lifetime as often as a char
    "javascript": "\"'`",
    "javascriptreact": "\"'`",
    "typescript": "\"'`",
    "typescriptreact": "\"'`",
    "go": "\"'`",
    "shellscript": "\"'`",
    "markdown": '"`',
}
_HASH_COMMENTS = frozenset({"python", "shellscript", "ruby", "yaml", "toml", "perl", "r"})
_DASH_COMMENTS = frozenset({"lua", "sql", "haskell"})
_TEMPLATE_LANGUAGES = frozenset({"javascript", "javascriptreact", "typescript", "typescriptreact"})
# A `${` inside a template literal, on the bracket stack; the caret marks a template string
# that began before the scanned text.
_SUBST, _SUBST_OUTER = "${", "${^"


@dataclass
class BracketState:
    """Where a left-to-right reading of code stands.

    ``quote`` is the delimiter of the string the reading is in (None: in code), and
    ``quote_from_before`` says that string was opened before the scanned text. ``stack`` holds
    the brackets opened by the scanned text; ``outer`` those left open before it, which the
    scanned text's unmatched closers close. Mutable on purpose: it is a cursor, used within one
    call.
    """

    quote: str | None = None
    quote_from_before: bool = False
    stack: list[str] = field(default_factory=list)
    outer: list[str] = field(default_factory=list)

    def continued(self) -> BracketState:
        """The state for the text that comes next: what is open now is "before" for it."""
        return BracketState(self.quote, self.quote is not None, [], self.outer + self.stack)


def scan_brackets(
    language_id: str,
    code: str,
    state: BracketState | None = None,
    unmatched: list[int] | None = None,
) -> BracketState:
    """Read ``code`` from ``state``, skipping strings and comments, and return the new state.

    Every closer in ``code`` that closes something opened before it (a bracket in
    ``state.outer``, a string with ``quote_from_before``, or nothing at all) has its index
    appended to ``unmatched``. Heuristic lexing, not a parser: escapes, Python triple quotes,
    ``//``/``#``/``--`` line comments, ``/* */``, JavaScript template substitutions and regex
    literals (by the usual "after an operator" rule) are understood; raw strings and heredocs
    are not.
    """
    state = state if state is not None else BracketState()
    unmatched = unmatched if unmatched is not None else []
    quotes = _QUOTES.get(language_id, _QUOTES_DEFAULT)
    if language_id in _HASH_COMMENTS:
        comment = "#"
    elif language_id in _DASH_COMMENTS:
        comment = "--"
    else:
        comment = "//"
    block_comments = comment == "//"
    templates = language_id in _TEMPLATE_LANGUAGES
    i = 0
    while i < len(code):
        ch = code[i]
        if state.quote is not None:
            if ch == "\\":
                i += 2
                continue
            if templates and state.quote == "`" and code.startswith("${", i):
                state.stack.append(_SUBST_OUTER if state.quote_from_before else _SUBST)
                state.quote, state.quote_from_before = None, False
                i += 2
                continue
            if code.startswith(state.quote, i):
                if state.quote_from_before:
                    unmatched.append(i)
                i += len(state.quote)
                state.quote, state.quote_from_before = None, False
                continue
            if ch == "\n" and len(state.quote) == 1 and state.quote != "`":
                state.quote, state.quote_from_before = None, False  # unterminated: give up
        elif code.startswith(comment, i):
            end = code.find("\n", i)
            i = len(code) if end < 0 else end
            continue
        elif block_comments and code.startswith("/*", i):
            end = code.find("*/", i + 2)
            i = len(code) if end < 0 else end + 2
            continue
        elif templates and ch == "/" and _regex_may_start(code, i):
            regex_end = _regex_end(code, i)
            if regex_end is not None:
                i = regex_end
                continue
        elif ch in quotes:
            triple = ch * 3
            python_triple = language_id == "python" and code.startswith(triple, i)
            state.quote = triple if python_triple else ch
            state.quote_from_before = False
            i += len(state.quote)
            continue
        elif ch in OPENERS:
            state.stack.append(ch)
        elif ch in CLOSERS:
            _close(state, ch, i, unmatched)
        i += 1
    return state


_BEFORE_REGEX = frozenset("(,=:[!&|?{};+-*%<>~^")


def _regex_may_start(code: str, index: int) -> bool:
    """A ``/`` starts a JavaScript regex literal, not a division, after an operator or an
    opening bracket, at the start of a line, or after ``return``."""
    before = code[:index].rstrip()
    return not before or before[-1] in _BEFORE_REGEX or before.endswith(("return", "typeof"))


def _regex_end(code: str, index: int) -> int | None:
    """The index just past the regex literal starting at ``index`` (flags included), or None
    if it does not end on its line (then it was a division after all)."""
    i = index + 1
    in_class = False
    while i < len(code) and code[i] != "\n":
        ch = code[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            in_class = True
        elif ch == "]":
            in_class = False
        elif ch == "/" and not in_class:
            i += 1
            while i < len(code) and code[i].isalpha():
                i += 1
            return i
        i += 1
    return None


def _close(state: BracketState, ch: str, index: int, unmatched: list[int]) -> None:
    """Apply the closer ``ch`` at ``index``: pop what it closes, note it if that was "before"."""
    top = state.stack[-1] if state.stack else None
    if top is not None:
        if top == CLOSERS[ch] or (ch == "}" and top in (_SUBST, _SUBST_OUTER)):
            state.stack.pop()
            if top in (_SUBST, _SUBST_OUTER):  # back into the template literal
                state.quote, state.quote_from_before = "`", top == _SUBST_OUTER
            return
        unmatched.append(index)  # a mismatched closer: never ours
        return
    unmatched.append(index)
    outer = state.outer[-1] if state.outer else None
    if outer == CLOSERS[ch]:
        state.outer.pop()
    elif ch == "}" and outer in (_SUBST, _SUBST_OUTER):
        state.outer.pop()
        state.quote, state.quote_from_before = "`", True

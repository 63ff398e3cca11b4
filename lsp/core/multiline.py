# SPDX-License-Identifier: Apache-2.0
"""Whether to complete at all, and how far: one line, a block, or nothing.

Asked before every request, so it must be cheap and must never raise. The rules, in order:

* ``none`` / ``mid_identifier``: the cursor sits inside a word (``pri|nt``). Whatever the model
  writes would be glued to the rest of the word; every tool we studied skips this case.
* ``none`` / ``before_code``: only indentation before the cursor, code after it on the same line
  (the user pressed Home). A suggestion there must be a whole statement that also ends exactly
  where the old line begins; models rarely manage that, so it is noise.
* ``single_line`` / ``mid_line``: code after the cursor on its line (closing brackets, quotes and
  ``;,`` do not count: ``foo(|)`` is the end of a line). The suggestion must fit in between.
* ``single_line`` / ``in_comment``: prose is worth suggesting (Copilot and Tabby do), but one line
  at a time: multi-line comment completions ramble.
* ``multi_line`` / ``empty_block``: the cursor opens an empty block: the body of a ``def``/``if``
  after ``:``, between ``{`` and ``}``, the first item of a multi-line list. Decided with
  tree-sitter where a grammar package is installed (Python, JavaScript, TypeScript, Go, Rust):
  an identifier (the *hole*) is put at the cursor and parsed; if the hole is the only statement
  or member of the block around it, the block is empty. This is Copilot's ``isEmptyBlockStart``
  and llm-ls' ``should_complete``, done with a hole so that unfinished code still parses.
* ``multi_line`` / ``after_opener``: the textual fallback for other languages (and for a Python
  cursor left at column 0 under ``def f():``, which the tree places outside the block): the line
  before the cursor ends with an opener (``{ ( [``, ``:`` in indentation languages, ``do``/
  ``then``) and nothing deeper follows it.
* ``single_line`` otherwise: a new statement among others. One line is fast, cheap to reject,
  and what users accept most.

:func:`block_end_reached` is the other half of ``multi_line``: the completion stops where the
block it fills ends (its closing bracket, or the first line indented no deeper than the line
that opened it).
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Literal

from lspilot.lsp.core.context import (
    BracketState,
    DocumentSnapshot,
    current_line_prefix,
    current_line_suffix,
    indent_of,
    scan_brackets,
)

if TYPE_CHECKING:  # tree_sitter is imported lazily: no parser is built at import time.
    import tree_sitter

__all__ = [
    "Decision",
    "Policy",
    "block_end_reached",
    "decide_stop_policy",
    "enclosing_indent",
    "has_grammar",
]

log = logging.getLogger(__name__)

Policy = Literal["single_line", "multi_line", "none"]

# Characters that may follow the cursor on its line without making it "the middle of a line":
# what editors auto-insert (closers, quotes) and statement punctuation.
CLOSERS_ONLY = re.compile(r"[\s)\]}>\"'`;,.:]*")
_IDENT_CHAR = re.compile(r"\w")

# Bounds of the text parsed around the cursor: a full parse of a 1 MB file on every keystroke
# would cost more than the rest of the request path.
_PARSE_PREFIX_CHARS = 8_000
_PARSE_SUFFIX_CHARS = 2_000
# How far back to look for a top-level line to start parsing at (a long class body).
_PARSE_PREFIX_REACH = 64_000
# Lines that can start a parse: top-level statements, by grammar module.
_TOP_LEVEL = {
    "tree_sitter_python": re.compile(
        r"(?:async\s+def|def|class|import|from)\s|@|if __name__"
        r"|[A-Za-z_][\w.]*\s*(?::\s*[\w.\[\], |]+)?=[^=]"
    ),
}
_TOP_LEVEL_DEFAULT = re.compile(r"[^\s})\]*/#\"'`]")
_HOLE = "__lspilot_hole__"


@dataclass(frozen=True)
class Decision:
    """What to ask the daemon for, and why (the reason is logged and counted by the bench).

    ``block_indent`` is set for ``multi_line``: the leading whitespace of the line that opened
    the block, which :func:`block_end_reached` needs.
    """

    policy: Policy
    reason: str
    block_indent: str | None = None

    @property
    def complete(self) -> bool:
        return self.policy != "none"


@dataclass(frozen=True)
class _Grammar:
    """Where a tree-sitter grammar lives and which of its nodes hold statements or items."""

    module: str
    function: str
    # Nodes whose named children are statements or members: the body of a def, a class, a {}.
    blocks: frozenset[str]
    # Bracketed literals: a block start only when they opened on an earlier line (`[` then Enter),
    # so `foo(|)` stays single-line.
    literals: frozenset[str] = frozenset()
    # Top-level nodes: a hole directly under one is "not in any block".
    roots: frozenset[str] = frozenset({"module", "program", "source_file"})


_JS_BLOCKS = frozenset(
    {"statement_block", "class_body", "switch_body", "switch_case", "switch_default"}
)
_JS_LITERALS = frozenset({"object", "array", "arguments", "object_pattern", "array_pattern"})
_TS_BLOCKS = _JS_BLOCKS | {"interface_body", "object_type", "enum_body"}

_GRAMMARS: dict[str, _Grammar] = {
    "python": _Grammar(
        "tree_sitter_python",
        "language",
        blocks=frozenset({"block"}),
        literals=frozenset({"list", "dictionary", "set", "tuple", "argument_list"}),
    ),
    "javascript": _Grammar("tree_sitter_javascript", "language", _JS_BLOCKS, _JS_LITERALS),
    "javascriptreact": _Grammar("tree_sitter_javascript", "language", _JS_BLOCKS, _JS_LITERALS),
    "typescript": _Grammar(
        "tree_sitter_typescript", "language_typescript", _TS_BLOCKS, _JS_LITERALS
    ),
    "typescriptreact": _Grammar("tree_sitter_typescript", "language_tsx", _TS_BLOCKS, _JS_LITERALS),
    "go": _Grammar(
        "tree_sitter_go",
        "language",
        blocks=frozenset(
            {
                "block",
                "statement_list",
                "field_declaration_list",
                "interface_type",
                "expression_case",
                "default_case",
                "type_case",
                "communication_case",
            }
        ),
        literals=frozenset({"literal_value", "argument_list"}),
    ),
    "rust": _Grammar(
        "tree_sitter_rust",
        "language",
        blocks=frozenset(
            {
                "block",
                "declaration_list",
                "field_declaration_list",
                "match_block",
                "enum_variant_list",
            }
        ),
        literals=frozenset({"array_expression", "arguments", "field_initializer_list"}),
    ),
}

# Languages whose blocks open with a trailing ":" (textual fallback and the column-0 case).
_COLON_BLOCK_LANGUAGES = frozenset({"python", "yaml", "nim", "coffeescript", "gdscript", "cython"})
_LINE_COMMENT = {
    "python": "#",
    "shellscript": "#",
    "ruby": "#",
    "yaml": "#",
    "toml": "#",
    "perl": "#",
    "r": "#",
    "elixir": "#",
    "nim": "#",
    "makefile": "#",
    "dockerfile": "#",
    "cmake": "#",
    "lua": "--",
    "sql": "--",
    "haskell": "--",
    "elm": "--",
    "lisp": ";",
    "clojure": ";",
    "scheme": ";",
    "ini": ";",
    "latex": "%",
    "tex": "%",
    "erlang": "%",
    "matlab": "%",
    "vim": '"',
}
_COMMENT_STARTS = ("#", "//", "/*", "* ", "--", ";")
_WORD_OPENERS = re.compile(r"(?:^|\W)(?:do|then|else|begin|where|of)$")


def has_grammar(language_id: str) -> bool:
    """True when a tree-sitter grammar for ``language_id`` is installed and loads."""
    return _parser(language_id) is not None


@cache
def _parser(language_id: str) -> tree_sitter.Parser | None:
    """Build (once per language) a tree-sitter parser, or None when no grammar is installed.

    Grammars other than Python's are optional packages: a missing one degrades to the textual
    rules rather than failing the request.
    """
    grammar = _GRAMMARS.get(language_id)
    if grammar is None:
        return None
    try:
        import tree_sitter

        module = importlib.import_module(grammar.module)
        language_fn: Callable[[], object] = getattr(module, grammar.function)
        return tree_sitter.Parser(tree_sitter.Language(language_fn()))
    except (ImportError, AttributeError, ValueError) as exc:
        log.info("no tree-sitter grammar for %s (%s): textual rules only", language_id, exc)
        return None


def decide_stop_policy(
    snapshot_or_language: DocumentSnapshot | str,
    prefix: str | None = None,
    suffix: str | None = None,
) -> Decision:
    """Decide the stop policy for a cursor: ``decide_stop_policy(snapshot)`` or
    ``decide_stop_policy(language_id, prefix, suffix)``. See the module docstring for the rules.
    """
    if isinstance(snapshot_or_language, DocumentSnapshot):
        language_id = snapshot_or_language.language_id
        prefix, suffix = snapshot_or_language.prefix, snapshot_or_language.suffix
    else:
        language_id = snapshot_or_language
        if prefix is None or suffix is None:
            raise TypeError("decide_stop_policy(language_id, prefix, suffix) needs all three")

    line_prefix = current_line_prefix(prefix)
    line_suffix = current_line_suffix(suffix)
    if (
        prefix[-1:]
        and _IDENT_CHAR.match(prefix[-1])
        and suffix[:1]
        and _IDENT_CHAR.match(suffix[0])
    ):
        return Decision("none", "mid_identifier")
    rest_is_closers = CLOSERS_ONLY.fullmatch(_without_comment(language_id, line_suffix)) is not None
    if not line_prefix.strip() and line_suffix.strip() and not rest_is_closers:
        return Decision("none", "before_code")
    if not rest_is_closers:
        return Decision("single_line", "mid_line")

    parser = _parser(language_id)
    if parser is not None:
        verdict, opener_indent = _tree_verdict(parser, _GRAMMARS[language_id], prefix, suffix)
        if verdict == "comment":
            return Decision("single_line", "in_comment")
        if verdict == "empty_block":
            return Decision("multi_line", "empty_block", opener_indent)
        if verdict == "in_block":
            return Decision("single_line", "statement")
    elif _in_line_comment(language_id, line_prefix):
        return Decision("single_line", "in_comment")

    if _after_opener(language_id, prefix, suffix):
        return Decision("multi_line", "after_opener", _opener_indent(prefix))
    return Decision("single_line", "statement")


Verdict = Literal["comment", "empty_block", "in_block", "top_level"]


def _tree_verdict(
    parser: tree_sitter.Parser, grammar: _Grammar, prefix: str, suffix: str
) -> tuple[Verdict, str]:
    """Parse the code around the cursor with a hole at the cursor and classify the hole.

    Also returns, for an empty block, the indentation of the line that opened it: the first
    ancestor of the block that starts above the cursor's line (the ``def``, the ``{`` line),
    or the cursor's own line when the block opens there. Reading it off the tree matters:
    the line just above the cursor may be a comment or the last line of a wrapped signature.
    """
    before = _parse_window_prefix(grammar.module, prefix)
    after = suffix[:_PARSE_SUFFIX_CHARS]
    # surrogatepass: a lone surrogate (legal in JSON, so in LSP text) must not raise here.
    source = (before + _HOLE + after).encode("utf-8", "surrogatepass")
    start = len(before.encode("utf-8", "surrogatepass"))
    tree = parser.parse(source)
    node = tree.root_node.named_descendant_for_byte_range(start, start + len(_HOLE))
    if node is None:
        return "top_level", ""
    if "comment" in node.type:
        return "comment", ""
    if node.type in (
        "string_content",
        "string_fragment",
        "interpreted_string_literal",
        "raw_string_literal",
        "string",
        "template_string",
        "string_literal",
    ):
        return "in_block", ""  # inside a string: one line
    # Climb while the ancestor is nothing but the hole (identifier -> expression_statement,
    # ERROR, a shorthand property...): the first larger ancestor is what holds the hole.
    holders = grammar.blocks | grammar.literals
    item = node
    while (
        item.parent is not None
        and item.parent.type not in holders
        and _only_hole(item.parent, start)
    ):
        item = item.parent
    container = item.parent
    if (
        container is None
        or container.type in grammar.roots
        or container.is_error
        and (container.parent is None or container.parent.type in grammar.roots)
    ):
        return "top_level", ""
    is_block = container.type in grammar.blocks
    is_literal = container.type in grammar.literals
    if not (is_block or is_literal):
        return "in_block", ""
    hole_row = node.start_point.row
    if is_literal and container.start_point.row == hole_row:
        return "in_block", ""
    others = [
        child
        for index, child in enumerate(container.children)
        if child.is_named
        and child.id != item.id
        and "comment" not in child.type
        and not _is_docstring(child)
        # The `1` of `case 1:` is the case's header, not a statement in it.
        and container.field_name_for_child(index) not in ("value", "pattern")
    ]
    if others:
        return "in_block", ""
    row = _opener_row(container, hole_row)
    line = source[_row_start(source, row) :].split(b"\n", 1)[0].decode("utf-8", "replace")
    return "empty_block", indent_of(line)


def _only_hole(node: tree_sitter.Node, hole_start: int) -> bool:
    """True when ``node`` spans the hole and nothing else (an expression statement around it,
    an ERROR node, a shorthand property), so the climb goes on past it."""
    return node.start_byte >= hole_start and node.end_byte <= hole_start + len(_HOLE)


def _is_docstring(node: tree_sitter.Node) -> bool:
    """A Python docstring does not make a function body non-empty."""
    return (
        node.type == "expression_statement"
        and node.named_child_count == 1
        and node.named_children[0].type == "string"
    )


def _opener_row(container: tree_sitter.Node, hole_row: int) -> int:
    """The row of the line that opened ``container``.

    A bracketed block (``{``, ``[``) opens on the row of its bracket. A Python ``block`` starts
    at its first statement, so its opener is the compound statement around it (the ``def``,
    ``if``, ``else:`` line). Other unbracketed holders (``case x:``, Go's statement list) open
    on their own first row when that is above the cursor, else on their parent's.
    """
    text = container.text or b""
    if text[:1] in (b"{", b"[", b"("):
        return container.start_point.row
    parent = container.parent
    if container.type == "block" and parent is not None and not text.startswith(b"{"):
        return parent.start_point.row
    if container.start_point.row < hole_row or parent is None:
        return container.start_point.row
    return parent.start_point.row


def _row_start(source: bytes, row: int) -> int:
    """Byte offset where line ``row`` of ``source`` starts."""
    offset = 0
    for _ in range(row):
        offset = source.index(b"\n", offset) + 1
    return offset


def _without_comment(language_id: str, line_suffix: str) -> str:
    """The rest of the line without a trailing line comment (``)  # noqa`` is still the end of
    a line)."""
    marker = _LINE_COMMENT.get(language_id, "//")
    index = line_suffix.find(marker)
    if index >= 0 and CLOSERS_ONLY.fullmatch(line_suffix[:index]):
        return line_suffix[:index]
    return line_suffix


def _parse_window_prefix(grammar_module: str, prefix: str) -> str:
    """The end of the prefix, starting at a top-level line when one is in reach.

    Starting mid-function is fine for braces but confuses an indentation grammar, and starting
    inside a string turns the rest of the file inside out. So the window begins at the last
    line before its natural cut that starts in column 0 with something that begins a
    top-level statement (for Python: ``def``, ``class``, ``@``, an import or an assignment,
    which a docstring's prose rarely does).
    """
    if len(prefix) <= _PARSE_PREFIX_CHARS:
        return prefix
    top_level = _TOP_LEVEL.get(grammar_module, _TOP_LEVEL_DEFAULT)
    cut = len(prefix) - _PARSE_PREFIX_CHARS
    floor = max(0, len(prefix) - _PARSE_PREFIX_REACH)
    index = cut
    while index > floor:
        index = prefix.rfind("\n", floor, index)
        if index < 0:
            break
        if top_level.match(prefix, index + 1):
            return prefix[index + 1 :]
    for match in re.finditer("\n", prefix[cut:]):
        if top_level.match(prefix, cut + match.end()):
            return prefix[cut + match.end() :]
    start = prefix.find("\n", cut)
    return prefix[start + 1 :] if start >= 0 else prefix[cut:]


def _in_line_comment(language_id: str, line_prefix: str) -> bool:
    """Textual comment test: the language's line-comment marker (``//`` by default) outside a
    string literal on the cursor's line, or a line that continues a ``/* */`` block."""
    marker = _LINE_COMMENT.get(language_id, "//")
    stripped = line_prefix.lstrip()
    if marker == "//" and stripped.startswith(("/*", "* ")):
        return True
    index = line_prefix.find(marker)
    while index >= 0:
        before = line_prefix[:index]
        if before.count('"') % 2 == 0 and before.count("'") % 2 == 0:
            return True
        index = line_prefix.find(marker, index + 1)
    return False


def _opener_line(prefix: str) -> str:
    """The line that would open a block at the cursor: the cursor's own line if it has code
    before the cursor, else the nearest non-blank line above."""
    lines = prefix[-_PARSE_PREFIX_CHARS:].split("\n")
    if lines[-1].strip():
        return lines[-1]
    for line in reversed(lines[:-1]):
        # A comment line says nothing about the block: look above it.
        if line.strip() and not line.lstrip().startswith(_COMMENT_STARTS):
            return line.rstrip("\r")
    return ""


def _opener_indent(prefix: str) -> str:
    return indent_of(_opener_line(prefix))


_OPENER_END = re.compile(r"(?:[:{(\[]|=>|\bdo|\bthen)\s*$")


def enclosing_indent(prefix: str, tab_size: int = 4) -> str:
    """The indentation of the line that opened the block the cursor is in, read from the text.

    For a caller without a :class:`Decision` (a forced ``multi_line``): the cursor's own line
    if it ends with an opener (``def f():|``), else the nearest line above that is indented
    less than the cursor's line (its ``def``, ``if`` or ``{`` line); "" at the top level.
    """
    lines = prefix[-_PARSE_PREFIX_CHARS:].split("\n")
    cursor_line = lines[-1].rstrip("\r")
    if cursor_line.strip() and _OPENER_END.search(cursor_line):
        return indent_of(cursor_line)
    width = len(indent_of(cursor_line).expandtabs(tab_size))
    if not cursor_line.strip():
        width = len(cursor_line.expandtabs(tab_size))
    for line in reversed(lines[:-1]):
        if line.strip() and not line.lstrip().startswith(_COMMENT_STARTS):
            ws = indent_of(line)
            if len(ws.expandtabs(tab_size)) < width:
                return ws
    return ""


def _after_opener(language_id: str, prefix: str, suffix: str) -> bool:
    """Textual empty-block test: the opener line ends with an opener and no deeper line follows."""
    opener = _opener_line(prefix).rstrip()
    if not opener:
        return False
    # `(` and `[` open a multi-line list only once the user pressed Enter after them:
    # `foo(|)` is a call on one line.
    same_line = bool(current_line_prefix(prefix).strip())
    brackets = ("{",) if same_line else ("{", "(", "[")
    ends_with_opener = opener.endswith(brackets) or bool(_WORD_OPENERS.search(opener))
    if language_id in _COLON_BLOCK_LANGUAGES and opener.endswith(":"):
        ends_with_opener = True
    if not ends_with_opener:
        return False
    opener_width = len(indent_of(opener).expandtabs(4))
    for line in suffix[:_PARSE_SUFFIX_CHARS].split("\n")[1:]:
        if line.strip():
            body_width = len(indent_of(line).expandtabs(4))
            return body_width <= opener_width
    return True


def block_end_reached(
    language_id: str,
    indent_of_block: str,
    completion_text: str,
    *,
    tab_size: int = 4,
    body_indent: str | None = None,
) -> int:
    """Index at which ``completion_text`` leaves the block it was asked to fill.

    ``indent_of_block`` is the leading whitespace of the line that opened the block
    (:attr:`Decision.block_indent`). Two signs end a block:

    * a closer that the completion did not open (``}``, ``)``, ``]``, outside strings and
      comments): the block's own closer, usually already in the document. Not used for
      indentation languages (Python, YAML...), where brackets do not delimit blocks;
    * the first non-blank line, after the cursor's own line, indented no deeper than the
      opener: the next statement after a Python body, or code after a C-like block. Skipped
      when ``body_indent`` (the cursor line's indentation, when it is blank) is no deeper than
      the opener: in flat-formatted code (compiled JavaScript) indentation says nothing.

    The earlier sign wins. The cut drops the blank lines before it. Returns
    ``len(completion_text)`` if the block does not end.
    """
    block_width = len(indent_of_block.expandtabs(tab_size))
    flat = body_indent is not None and len(body_indent.expandtabs(tab_size)) <= block_width
    cut = len(completion_text) if flat else _dedent_cut(completion_text, block_width, tab_size)
    if language_id not in _COLON_BLOCK_LANGUAGES:
        unmatched: list[int] = []
        scan_brackets(language_id, completion_text, BracketState(), unmatched)
        if unmatched:
            cut = min(cut, _cut_before(completion_text, unmatched[0]))
    return cut


def _cut_before(text: str, index: int) -> int:
    """Where to cut so that the closer at ``index`` goes: before its line if it starts the
    line, else just before it; trailing blank lines and spaces go too."""
    line_start = max(text.rfind("\n", 0, index), text.rfind("\r", 0, index)) + 1
    cut = line_start if not text[line_start:index].strip() else index
    return len(text[:cut].rstrip())


def _dedent_cut(completion_text: str, block_width: int, tab_size: int) -> int:
    """The end of the last line before the first line (after the first) that is indented no
    deeper than ``block_width`` columns; ``len(completion_text)`` if there is none."""
    position = completion_text.find("\n")
    if position < 0:
        return len(completion_text)
    last_code_end = _before_eol(completion_text, position)
    while position < len(completion_text):
        line_start = position + 1
        line_end = completion_text.find("\n", line_start)
        if line_end < 0:
            line_end = len(completion_text)
        line = completion_text[line_start:line_end].rstrip("\r")
        if line.strip():
            if len(indent_of(line).expandtabs(tab_size)) <= block_width:
                return last_code_end
            last_code_end = _before_eol(completion_text, line_end)
        position = line_end
    return len(completion_text)


def _before_eol(text: str, newline_index: int) -> int:
    """The index where the line ending at ``newline_index`` ends, its ``\r`` excluded."""
    return newline_index - 1 if text[newline_index - 1 : newline_index] == "\r" else newline_index

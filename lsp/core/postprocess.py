# SPDX-License-Identifier: Apache-2.0
"""From what the model wrote to what the editor shows: a pipeline of small named filters.

Every filter is ``(Context, text) -> text | None``: it returns the text it keeps, or None to drop
the suggestion. The filters come in two stages, as in Tabby:

* **pre-cache** filters look at the generated text alone (model sentinels, line endings,
  repetition loops). Their result is what :mod:`lspilot.lsp.core.cache` stores, because it stays
  true wherever the cursor goes next.
* **post-cache** filters look at where the text lands: the rest of the line, the next line, the
  brackets around the cursor, the editor's indentation. They run on every suggestion shown,
  including one served from the cache or typed through, because by then the suffix may differ.

The filters are deliberately conservative: each one that can cut a suggestion only does so on
evidence that the text would duplicate or break the code around it. Names are stable, so the
bench can switch each one off (``enabled=``) and measure what it is worth; see docs/quality.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from lspilot.lsp.core.context import (
    Indent,
    current_line_prefix,
    current_line_suffix,
    indent_of,
    scan_brackets,
)
from lspilot.lsp.core.multiline import Decision, Policy, block_end_reached, enclosing_indent

__all__ = [
    "FILTERS",
    "FILTER_NAMES",
    "POST_CACHE_FILTERS",
    "PRE_CACHE_FILTERS",
    "Context",
    "Filter",
    "NamedFilter",
    "post_cache",
    "postprocess",
    "pre_cache",
    "settled",
]

_EOL = re.compile(r"\r\n|\r|\n")
_WORD = re.compile(r"\w")
_CLOSER_LINE = re.compile(r"[)\]}]+[;,]?")


@dataclass(frozen=True)
class Context:
    """Where a suggestion lands: the (clipped) text around the cursor and the editor's settings.

    ``policy`` and ``block_indent`` come from ``multiline.decide_stop_policy``; ``indent`` from
    the client's FormattingOptions or ``context.infer_indent``.
    """

    prefix: str
    suffix: str
    language_id: str = ""
    indent: Indent = Indent()
    policy: Policy = "multi_line"
    block_indent: str | None = None

    @classmethod
    def for_decision(
        cls,
        prefix: str,
        suffix: str,
        language_id: str,
        decision: Decision,
        indent: Indent | None = None,
    ) -> Context:
        """The context for a request decided by ``decide_stop_policy``: its policy and block."""
        indent = indent if indent is not None else Indent()
        return cls(prefix, suffix, language_id, indent, decision.policy, decision.block_indent)

    @cached_property
    def line_prefix(self) -> str:
        return current_line_prefix(self.prefix)

    @cached_property
    def line_suffix(self) -> str:
        return current_line_suffix(self.suffix)

    @cached_property
    def next_line(self) -> str:
        """The first non-blank line after the cursor's line ("" if none), with its indentation."""
        for line in _EOL.split(self.suffix[:4000])[1:]:
            if line.strip():
                return line
        return ""

    @cached_property
    def previous_line(self) -> str:
        """The last non-blank line before the cursor's line ("" if none)."""
        for line in reversed(_EOL.split(self.prefix[-4000:])[:-1]):
            if line.strip():
                return line
        return ""

    @cached_property
    def eol(self) -> str:
        """The document's line ending, judged from the nearest line break to the cursor."""
        match = _EOL.search(self.suffix[:2000]) or _EOL.search(self.prefix[-2000:])
        return match.group() if match else "\n"


Filter = Callable[[Context, str], "str | None"]
Stage = Literal["pre_cache", "post_cache"]


@dataclass(frozen=True)
class NamedFilter:
    name: str
    stage: Stage
    apply: Filter


# --------------------------------------------------------------------------------------------
# Pre-cache: the text alone.

# Sentinels of the FIM families we serve (StarCoder, CodeLlama, DeepSeek, Qwen, CodeGemma).
# The daemon stops on the model's own special tokens; this is the belt to its braces. Only
# sentinels that never occur in ordinary code are listed (not `</s>` or `<PRE>`: HTML has them).
_SPECIAL_TOKEN = re.compile(
    r"<\|(?:endoftext|fim_(?:prefix|suffix|middle|pad)|file_sep|repo_name|im_end|im_start)\|>"
    r"|<fim_(?:prefix|suffix|middle|pad)>|<file_sep>|<filename>|<reponame>|<EOT>"
    r"|<｜(?:fim▁(?:begin|hole|end)|end▁of▁sentence)｜>"
)
_QUOTE_CHARS = "\"'`"


def cut_special_tokens(ctx: Context, text: str) -> str | None:
    """Cut at the first model sentinel that leaked into the text (``<|endoftext|>`` ...).

    A sentinel between quotes is code about tokenizers (``eos = "<|endoftext|>"``), not a leak.
    """
    for match in _SPECIAL_TOKEN.finditer(text):
        before = text[match.start() - 1 : match.start()]
        after = text[match.end() : match.end() + 1]
        if before and before in _QUOTE_CHARS or after and after in _QUOTE_CHARS:
            continue
        return text[: match.start()]
    return text


def normalize_newlines(ctx: Context, text: str) -> str | None:
    """``\\r\\n`` and ``\\r`` to ``\\n``; the other filters count lines by ``\\n`` alone.
    :func:`match_line_endings` puts the document's own line ending back at the end."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


_MAX_PERIOD = 10


def drop_repetitive_tail(ctx: Context, text: str) -> str | None:
    """Keep one copy of a block of lines that the model repeats until it runs out of tokens.

    A line repeated three times, or a block of two or more lines repeated twice, at the end of
    the text (the last copy may be cut short by the token limit) is a decoding loop, not code.
    Lines without a word (``}``, ``)``, triple quotes) legitimately follow each other, one level of
    indentation apart; they count as a loop only when repeated three times at the same
    indentation.
    """
    lines = text.split("\n")
    # Lines with a word compare without indentation: the first line continues the cursor's
    # line, so its own indentation is in the prefix, not in the text.
    bare = [line.strip() for line in lines]
    best_keep = len(lines)
    for period in range(1, min(_MAX_PERIOD, len(lines) // 2) + 1):
        start, copies = _repeated_tail(bare, period)
        if any(_WORD.search(line) for line in bare[start : start + period]):
            if copies >= (3 if period == 1 else 2):
                best_keep = min(best_keep, start + period)
            continue
        start, copies = _repeated_tail(lines, period)
        if copies >= 3 and start > 0:
            best_keep = min(best_keep, start + period)
    if best_keep == len(lines):
        return text
    return "\n".join(lines[:best_keep])


def _repeated_tail(lines: list[str], period: int) -> tuple[int, float]:
    """(index of the first copy, number of copies) of the block of ``period`` lines that repeats
    at the end of ``lines``; the last copy may be cut short."""
    i = len(lines) - 1
    if i - period >= 0 and lines[i] != lines[i - period]:
        if not (lines[i] and lines[i - period].startswith(lines[i])):
            return len(lines), 0.0
        i -= 1  # a last copy cut short by the token limit
    while i - period >= 0 and lines[i] == lines[i - period]:
        i -= 1
    start = i + 1 - period
    return start, (len(lines) - start) / period


# --------------------------------------------------------------------------------------------
# Post-cache: the text where it lands.


def limit_scope(ctx: Context, text: str) -> str | None:
    """One line for ``single_line``; for ``multi_line``, stop where the block ends.

    The block's indentation is ``ctx.block_indent`` (from the :class:`Decision`), or, when the
    context has none, :func:`~lspilot.lsp.core.multiline.enclosing_indent` of the prefix.

    A closing line (``}``) at the block's indentation is kept only when the document does not
    already have it on the next line, so an editor without auto-closing still gets its brace.
    """
    if ctx.policy == "none":
        return None
    if ctx.policy == "single_line":
        return text.split("\n", 1)[0]
    block_indent = ctx.block_indent
    if block_indent is None:  # no Decision at hand (a forced policy): read it from the text
        block_indent = enclosing_indent(ctx.prefix, ctx.indent.tab_size)
    blank_line = not ctx.line_prefix.strip()
    cut = block_end_reached(
        ctx.language_id,
        block_indent,
        text,
        tab_size=ctx.indent.tab_size,
        body_indent=ctx.line_prefix if blank_line else None,
    )
    if cut >= len(text):
        return text
    rest = text[cut:]
    if rest[:1] in ("\n", "\r"):
        closing = rest.lstrip("\r\n").split("\n", 1)[0].rstrip("\r")
        already_there = closing.strip() in (ctx.next_line.strip(), ctx.line_suffix.strip())
        if _CLOSER_LINE.fullmatch(closing.strip()) and not already_there:
            return text[:cut] + "\n" + closing
    return text[:cut]


def drop_equal_to_next_line(ctx: Context, text: str) -> str | None:
    """Drop a suggestion that is the line below the cursor (Copilot does the same).

    Same text at the same indentation: a ``}`` above another ``}`` one level out is code.
    """
    if ctx.line_suffix.strip() or not ctx.next_line.strip() or "\n" in text.strip():
        return text
    line = ctx.line_prefix + text.strip("\n")
    same = line.strip() == ctx.next_line.strip() and _same_indent(ctx, line, ctx.next_line)
    return None if same else text


def drop_repeat_of_previous_line(ctx: Context, text: str) -> str | None:
    """Drop a suggestion, on a fresh line, that begins by copying the line above the cursor.

    Small models echo the last line when they have nothing better; it is never what the user
    wants to accept.
    """
    if ctx.line_prefix.strip() or ctx.line_suffix.strip():
        return text
    first = text.split("\n", 1)[0].strip()
    previous = ctx.previous_line.strip()
    return None if first and _WORD.search(first) and first == previous else text


def trim_suffix_lines(ctx: Context, text: str) -> str | None:
    """Cut the suggestion where it starts repeating the code below the cursor.

    The first line of the suggestion to match the next non-blank line of the document (same
    content, same indentation) and everything after it go: the document has them already.
    """
    target = ctx.next_line
    if not target.strip():
        return text
    lines = text.split("\n")
    fresh_line = not ctx.line_prefix.strip() and not ctx.line_suffix.strip()
    for index in range(0 if fresh_line else 1, len(lines)):
        line = (ctx.line_prefix + lines[index]) if index == 0 else lines[index]
        if line.strip() == target.strip() and _same_indent(ctx, line, target):
            return "\n".join(lines[:index]).rstrip()
    return text


def _same_indent(ctx: Context, a: str, b: str) -> bool:
    tab = ctx.indent.tab_size
    return len(indent_of(a).expandtabs(tab)) == len(indent_of(b).expandtabs(tab))


_MIN_PARTIAL_OVERLAP = 4


def trim_line_suffix_overlap(ctx: Context, text: str) -> str | None:
    """Never repeat the rest of the cursor's line.

    The rest of the line ends up after the suggestion's *last* line. If that line ends with it
    (``x = |foo(1)`` and the model wrote ``bar + foo(1)``; a body whose last line repeats the
    ``  # type: ignore`` after the cursor), that part goes. A partial overlap (the suggestion
    ends with the start of the rest of the line) is trimmed from 4 characters on: shorter ones
    are as likely to be coincidence. Closers alone are :func:`trim_closing_overlap`'s business.
    """
    rest = ctx.line_suffix.strip()
    if not rest or _is_closers(rest):
        return text
    head, newline, last = text.rpartition("\n")
    body = last.rstrip()
    for k in range(len(rest), 0, -1):
        if k != len(rest) and k < _MIN_PARTIAL_OVERLAP:
            break
        if body.endswith(rest[:k]):
            return head + newline + body[: len(body) - k]
    return text


def _is_closers(text: str) -> bool:
    return all(ch in ")]}\"'` \t" for ch in text)


def trim_closing_overlap(ctx: Context, text: str) -> str | None:
    """Close only what the suggestion opened: drop closers the document already has.

    A closer in the suggestion that does not match an opener *in the suggestion* closes a
    bracket or quote from before the cursor. If the text after the cursor already starts with
    those closers (the editor auto-closed them), the suggestion's copies go, aligned from its
    end: ``foo(bar(|)`` + ``x))`` shows ``x)``. If such a closer sits mid-line followed by more
    code (``foo(|)`` + ``a) + 1``), the suggestion is cut there too: what follows would land
    outside the call. Brackets the suggestion opens and never closes are left alone: guessing
    where they close is the model's job, not ours.
    """
    wanted = [ch for ch in ctx.line_suffix if not ch.isspace()]
    closers: list[str] = []
    for ch in wanted:
        if ch not in ")]}\"'`":
            break
        closers.append(ch)
    if not closers:
        return text
    # The end of the line is enough to know the open string; a minified line is not scanned whole.
    before = scan_brackets(ctx.language_id, ctx.line_prefix[-4000:])
    unmatched: list[int] = []
    scan_brackets(ctx.language_id, text, before.continued(), unmatched)
    if not unmatched:
        return text
    # The run of unmatched closers (spaces between allowed) that starts at the first one.
    run_end = unmatched[0]
    position = unmatched[0]
    members = []
    for index in unmatched:
        if text[position:index].strip():
            break
        members.append(index)
        run_end = index + 1
        position = run_end
    if text[run_end:].strip() and text[members[0]] != closers[0]:
        return text  # code after a closer the document does not provide: leave it be
    run = [text[index] for index in members]
    for k in range(min(len(run), len(closers)), 0, -1):
        if run[len(run) - k :] == closers[:k]:
            keep_until = members[len(run) - k]
            return text[:keep_until].rstrip() or None
    # The closers do not line up with the document's: cut before them if code follows them.
    if text[run_end:].strip():
        return text[: members[0]].rstrip() or None
    return text


def fix_indentation(ctx: Context, text: str) -> str | None:
    """Indent new lines the way the editor does (``insertSpaces``/``tabSize``).

    Only lines after the first are touched (the first continues the cursor's line). Columns are
    preserved: a tab is ``tabSize`` columns, so a model that indents with 4 spaces in a tab file
    with ``tabSize`` 4 gets one tab per level.
    """
    if "\n" not in text:
        return text
    tab = ctx.indent.tab_size
    lines = text.split("\n")
    for index in range(1, len(lines)):
        line = lines[index]
        ws = indent_of(line)
        if not ws:
            continue
        if ctx.indent.insert_spaces:
            if "\t" in ws:
                lines[index] = ws.expandtabs(tab) + line[len(ws) :]
        elif " " in ws:
            width = len(ws.expandtabs(tab))
            lines[index] = "\t" * (width // tab) + " " * (width % tab) + line[len(ws) :]
    return "\n".join(lines)


def trim_doubled_indent(ctx: Context, text: str) -> str | None:
    """Drop the first line's leading whitespace when the cursor already stands indented.

    After Enter the editor indents the new line, and the model often writes that indentation
    again: bench/quality.py saw it in 3 of 20 multi-line holes, two of which then failed to
    parse. Only the first line is touched: the lines after it start at column 0 in any case.
    """
    if not ctx.line_prefix or ctx.line_prefix.strip():
        return text
    first, newline, rest = text.partition("\n")
    return first.lstrip(" \t") + newline + rest


def trim_trailing_whitespace(ctx: Context, text: str) -> str | None:
    """Strip trailing whitespace and trailing blank lines.

    The one exception: the spaces ending a suggestion that is followed by a word on the same
    line (``x = |foo`` + ``bar + `` must keep its space, or it would read ``bar +foo``).
    """
    lines = [line.rstrip() for line in text.split("\n")]
    while len(lines) > 1 and not lines[-1]:
        lines.pop()
    result = "\n".join(lines)
    last = text.rstrip("\n").split("\n")[-1]
    if len(lines) == 1 and _WORD.match(ctx.line_suffix[:1]) and last != last.rstrip():
        trailing = last[len(last.rstrip()) :]
        result = result + trailing
    return result


def match_line_endings(ctx: Context, text: str) -> str | None:
    """Write the document's own line ending (``\\r\\n`` in a Windows file)."""
    return text if ctx.eol == "\n" else text.replace("\n", ctx.eol)


PRE_CACHE_FILTERS: tuple[NamedFilter, ...] = (
    NamedFilter("cut_special_tokens", "pre_cache", cut_special_tokens),
    NamedFilter("normalize_newlines", "pre_cache", normalize_newlines),
    NamedFilter("drop_repetitive_tail", "pre_cache", drop_repetitive_tail),
)

POST_CACHE_FILTERS: tuple[NamedFilter, ...] = (
    NamedFilter("limit_scope", "post_cache", limit_scope),
    NamedFilter("drop_equal_to_next_line", "post_cache", drop_equal_to_next_line),
    NamedFilter("drop_repeat_of_previous_line", "post_cache", drop_repeat_of_previous_line),
    NamedFilter("trim_suffix_lines", "post_cache", trim_suffix_lines),
    NamedFilter("trim_line_suffix_overlap", "post_cache", trim_line_suffix_overlap),
    NamedFilter("trim_closing_overlap", "post_cache", trim_closing_overlap),
    NamedFilter("trim_doubled_indent", "post_cache", trim_doubled_indent),
    NamedFilter("fix_indentation", "post_cache", fix_indentation),
    NamedFilter("trim_trailing_whitespace", "post_cache", trim_trailing_whitespace),
    NamedFilter("match_line_endings", "post_cache", match_line_endings),
)

FILTERS: tuple[NamedFilter, ...] = PRE_CACHE_FILTERS + POST_CACHE_FILTERS
FILTER_NAMES: frozenset[str] = frozenset(f.name for f in FILTERS)


def _run(
    filters: Iterable[NamedFilter], ctx: Context, text: str | None, enabled: frozenset[str] | None
) -> str | None:
    if enabled is not None and not enabled <= FILTER_NAMES:
        raise ValueError(f"unknown filters: {sorted(enabled - FILTER_NAMES)}")
    for named in filters:
        if text is None or not text.strip():
            return None
        if enabled is None or named.name in enabled:
            text = named.apply(ctx, text)
    return text if text is not None and text.strip() else None


def pre_cache(ctx: Context, text: str, enabled: frozenset[str] | None = None) -> str | None:
    """The context-free stage; its result is what the completion cache stores."""
    return _run(PRE_CACHE_FILTERS, ctx, text, enabled)


def post_cache(ctx: Context, text: str, enabled: frozenset[str] | None = None) -> str | None:
    """The context-dependent stage; run on every suggestion shown, cached or fresh."""
    return _run(POST_CACHE_FILTERS, ctx, text, enabled)


def postprocess(ctx: Context, text: str, enabled: frozenset[str] | None = None) -> str | None:
    """Both stages: the text to show, or None to show nothing.

    ``enabled`` names the filters to run (None: all of them), so the bench can measure each.
    """
    kept = pre_cache(ctx, text, enabled)
    return None if kept is None else post_cache(ctx, kept, enabled)


# Text that no filter treats specially: appended to a growing suggestion to see whether more
# text could still change what is shown.
_PROBE = "lspilot_probe"


def settled(ctx: Context, text: str, enabled: frozenset[str] | None = None) -> bool:
    """True when more generated text could no longer change what is shown for ``text``.

    For a streaming suggestion: once the filters cut it before its end (the line ended in
    ``single_line``, the block's ``}`` arrived, the model began repeating the next line), every
    further token is thrown away, so the language server can cancel the stream and free the
    model (Continue stops its stream the same way). Tested by appending a neutral probe: on the
    same line, or on a new line at the last line's indentation so as not to fake a dedent.
    Conservative: when in doubt (a loop still repeating, a line that may go on), not settled.
    """
    # The first line's indentation is in the prefix, before the cursor.
    lines = (ctx.line_prefix + text).split("\n")
    last = lines[-1]
    probe = _PROBE
    if len(lines) > 1 and not last.strip():
        # A line that has only (part of) its indentation so far: complete it to the previous
        # line's, so that the probe does not look like a dedent.
        previous = next((line for line in reversed(lines[:-1]) if line.strip()), "")
        target = indent_of(previous)
        if target.startswith(last):
            probe = target[len(last) :] + _PROBE
    shown = postprocess(ctx, text, enabled)
    probed = postprocess(ctx, text + probe, enabled)
    return (
        shown == probed
        and shown is not None
        or (shown is None and probed is None and bool(text.strip()))
    )

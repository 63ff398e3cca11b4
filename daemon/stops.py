# SPDX-License-Identifier: Apache-2.0
"""Stop rules over the generated text: where a completion must end, and how much is final.

A streamed completion may only show text that no later rule can take back. ``StopRule.scan``
therefore returns both a cut (the completion ends there) and, while running, the length that is
already safe to emit. Pure functions: unit-tested without a model.
"""

from __future__ import annotations

from dataclasses import dataclass

from lspilot.protocol.messages import StopPolicy

BLOCK_OPENERS = (":", "{", "(", "[", "=>", "->", " do", " then", "begin")


@dataclass(frozen=True)
class StopContext:
    policy: StopPolicy  # SINGLE_LINE or MULTI_LINE, never AUTO
    block_indent: int  # width of the block the cursor is in; dedenting below it ends the block
    suffix_next_line: str  # first non-blank line of the suffix after the cursor's line, stripped


@dataclass(frozen=True)
class Scan:
    cut: int | None  # the completion ends at this index, or None to go on
    safe: int  # text[:safe] can be shown now


def _indent_width(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip(" "))


def resolve_policy(policy: StopPolicy, prefix: str, suffix: str) -> StopPolicy:
    """AUTO: one line in the middle of a line, a block after a line that opens one."""
    if policy is not StopPolicy.AUTO:
        return policy
    rest_of_line = suffix.split("\n", 1)[0]
    if rest_of_line.strip(" \t)]}\"'`;,"):
        return StopPolicy.SINGLE_LINE
    cursor_line = prefix.rsplit("\n", 1)[-1]
    if cursor_line.strip():
        return StopPolicy.SINGLE_LINE
    previous = [ln for ln in prefix.split("\n")[:-1] if ln.strip()]
    if previous and previous[-1].rstrip().endswith(BLOCK_OPENERS):
        return StopPolicy.MULTI_LINE
    return StopPolicy.SINGLE_LINE


def make_context(policy: StopPolicy, prefix: str, suffix: str) -> StopContext:
    resolved = resolve_policy(policy, prefix, suffix)
    cursor_line = prefix.rsplit("\n", 1)[-1]
    if cursor_line.strip():
        indent = _indent_width(cursor_line)
    else:
        # An empty line: the block is as deep as the cursor (or the line that opened it, + 1).
        indent = len(cursor_line.expandtabs(4))
        if indent == 0:
            previous = [ln for ln in prefix.split("\n")[:-1] if ln.strip()]
            if previous and previous[-1].rstrip().endswith(BLOCK_OPENERS):
                indent = _indent_width(previous[-1]) + 1
    after = suffix.split("\n")[1:]
    next_line = next((ln.strip() for ln in after if ln.strip()), "")
    return StopContext(resolved, indent, next_line)


def scan(ctx: StopContext, text: str, finished: bool = False) -> Scan:
    """Find where ``text`` must end; ``finished`` when no more tokens will come."""
    if ctx.policy is StopPolicy.SINGLE_LINE:
        newline = text.find("\n")
        if newline >= 0:
            return Scan(cut=newline, safe=newline)
        return Scan(cut=len(text) if finished else None, safe=len(text))
    return _scan_block(ctx, text, finished)


def _scan_block(ctx: StopContext, text: str, finished: bool) -> Scan:
    lines = text.split("\n")
    if len(lines) == 1:
        return Scan(cut=len(text) if finished else None, safe=len(text))
    safe = len(lines[0])  # the first line continues the cursor's line: block rules skip it
    pos = len(lines[0]) + 1  # offset of lines[i] in text
    blank_run = 0
    for i in range(1, len(lines)):
        line = lines[i]
        complete = i < len(lines) - 1 or finished
        stripped = line.strip()
        if not stripped:
            if not complete:
                break  # indentation not known yet
            blank_run += 1
            if blank_run >= 2:  # two blank lines: the model has left the block
                return _cut_at(text, pos)
            pos += len(line) + 1
            continue
        blank_run = 0
        if _indent_width(line) < ctx.block_indent:
            return _cut_at(text, pos)
        if ctx.suffix_next_line:
            if complete and stripped == ctx.suffix_next_line:
                return _cut_at(text, pos)
            if not complete and ctx.suffix_next_line.startswith(stripped):
                break  # may still turn into the suffix's next line
        safe = pos + len(line)
        pos += len(line) + 1
    if finished:
        return Scan(cut=len(text), safe=len(text))
    return Scan(cut=None, safe=safe)


def _cut_at(text: str, line_start: int) -> Scan:
    cut = _trim_trailing_newlines(text, line_start)
    return Scan(cut=cut, safe=cut)


def _trim_trailing_newlines(text: str, end: int) -> int:
    """Cut before the newline(s) that introduced the rejected line."""
    while end > 0 and text[end - 1] in "\n \t":
        end -= 1
    return end

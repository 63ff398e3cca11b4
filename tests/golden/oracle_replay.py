# SPDX-License-Identifier: Apache-2.0
"""Replay real code through the smart-completion core with *oracle* model outputs.

Not a test (pytest does not collect it) and not the model-quality bench (bench/quality.py runs
a real model). It answers what can be answered without a model: given holes cut in real Python
files, and model outputs that are the true middle, or the true middle plus the mistakes models
make (running on into the code below, repeating a line, re-typing closers the editor already
inserted), how often does the pipeline show exactly the true middle? And how often does a
filter damage a suggestion that was already right? The numbers go into docs/quality.md.

    .venv/bin/python tests/golden/oracle_replay.py [--files 200] [--seed 0] [--root DIR]
        [--language python|javascript]

Holes: ``line`` (cursor at a token boundary, middle = rest of the line), ``span`` (middle = part
of a line, the rest of the line stays as suffix), ``call`` (the inside of the first bracket pair
closed on its line: what is typed after an editor auto-closed the bracket), ``block`` (cursor at
the start of a function body that is cut out whole: an empty block, the multi-line case).
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from lspilot.lsp.core.context import infer_indent
from lspilot.lsp.core.multiline import decide_stop_policy
from lspilot.lsp.core.postprocess import FILTER_NAMES, Context, postprocess, settled

_BOUNDARY = re.compile(r"(?<=[\s(\[{,=:.+\-*/])(?=\S)")
_CLOSERS = re.compile(r"^[)\]}\"']+")


@dataclass(frozen=True)
class Hole:
    kind: str
    prefix: str
    middle: str
    suffix: str


# language id -> (file suffix, line comment)
LANGUAGES = {
    "python": (".py", "#"),
    "javascript": (".js", "//"),
}
_JS_FUNCTIONS = (
    "function_declaration",
    "method_definition",
    "function_expression",
    "arrow_function",
)


def _files(root: str, count: int, rng: random.Random, suffix: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in ("test", "tests", "idlelib", "site-packages")
        )
        found += [
            os.path.join(dirpath, f)
            for f in sorted(filenames)
            if f.endswith(suffix) and not f.endswith(".min.js")
        ]
    rng.shuffle(found)
    return found[:count]


def _holes(text: str, rng: random.Random, per_kind: int, language: str) -> Iterator[Hole]:
    lines = text.split("\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    comment = LANGUAGES[language][1]
    code_lines = [
        i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith(comment)
    ]
    for _ in range(per_kind if code_lines else 0):
        i = rng.choice(code_lines)
        bounds = [m.start() for m in _BOUNDARY.finditer(lines[i])]
        if not bounds:
            continue
        col = rng.choice(bounds)
        cursor = starts[i] + col
        end_of_line = starts[i] + len(lines[i])
        if cursor < end_of_line:
            yield Hole("line", text[:cursor], text[cursor:end_of_line], text[end_of_line:])
        call = _bracket_pair(lines[i], comment)
        if call is not None:
            open_col, close_col = call
            yield Hole(
                "call",
                text[: starts[i] + open_col + 1],
                text[starts[i] + open_col + 1 : starts[i] + close_col],
                text[starts[i] + close_col :],
            )
        later = [b for b in bounds if b > col]
        if later:
            stop = starts[i] + rng.choice(later)
            yield Hole("span", text[:cursor], text[cursor:stop], text[stop:])
    bodies = _python_bodies(text, starts) if language == "python" else _js_bodies(text)
    for start, end in rng.sample(bodies, min(per_kind, len(bodies))):
        yield Hole("block", text[:start], text[start:end], text[end:])


def _python_bodies(text: str, starts: list[int]) -> list[tuple[int, int]]:
    """(start, end) offsets of the statements of every multi-line function body."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    bodies = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first, last = fn.body[0], fn.body[-1]
        if first.lineno == fn.lineno or last.end_lineno is None:
            continue  # one-line def
        start = starts[first.lineno - 1] + first.col_offset
        bodies.append((start, starts[last.end_lineno - 1] + (last.end_col_offset or 0)))
    return bodies


def _js_bodies(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the statements of every multi-line JavaScript function body."""
    import tree_sitter
    import tree_sitter_javascript

    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_javascript.language()))
    source = text.encode("utf-8")
    if len(source) != len(text):
        return []  # keep byte and character offsets equal: ASCII files only
    bodies = []
    stack = [parser.parse(source).root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.type != "statement_block" or node.parent is None:
            continue
        if node.parent.type not in _JS_FUNCTIONS or not node.named_children:
            continue
        first, last = node.named_children[0], node.named_children[-1]
        if first.start_point.row == node.start_point.row or "comment" in first.type:
            continue
        bodies.append((first.start_byte, last.end_byte))
    return bodies


def _settle_points(ctx: Context, raw: str, final: str | None) -> tuple[bool, int | None]:
    """(whether `settled` fired where the shown text was not yet final, the first position
    where it fired) over growing prefixes of ``raw``."""
    points = sorted({*range(8, len(raw), 8), *(i + 1 for i, ch in enumerate(raw) if ch == "\n")})
    for point in points:
        if point < len(raw) and settled(ctx, raw[:point]):
            return postprocess(ctx, raw[:point]) != final, point
    return False, None


def _bracket_pair(line: str, comment: str) -> tuple[int, int] | None:
    """The first non-empty ``(...)``/``[...]``/``{...}`` closed on the same line, or None."""
    stack: list[int] = []
    quote = ""
    for col, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif line.startswith(comment, col):
            return None
        elif ch in "([{":
            stack.append(col)
        elif ch in ")]}" and stack:
            open_col = stack.pop()
            if not stack and col > open_col + 1:
                return open_col, col
    return None


def _variants(hole: Hole) -> Iterator[tuple[str, str]]:
    """(name, raw model output); the ideal shown text is always ``hole.middle``."""
    yield "exact", hole.middle
    below = hole.suffix.split("\n")
    yield "overrun", hole.middle + "\n".join(below[:4])
    if hole.kind == "block":
        middle_lines = hole.middle.split("\n")
        last = (
            middle_lines[-1] if len(middle_lines) > 1 else hole.prefix.split("\n")[-1] + hole.middle
        )
        yield "loop", hole.middle + ("\n" + last) * 3
    # An editor that auto-closed the brackets open on the cursor's line; a model that closes
    # them again. Only brackets the line before the cursor left open count.
    closers = _CLOSERS.match(hole.suffix)
    depth = _open_brackets(hole.prefix.split("\n")[-1])
    if closers and hole.kind in ("span", "call") and depth and _open_brackets(hole.middle) == 0:
        run = "".join(ch for ch in closers.group()[:depth] if ch in ")]}")
        if run:
            yield "closers", hole.middle + run


def _open_brackets(code: str) -> int:
    """Brackets left open by ``code``, ignoring strings (roughly: enough to pick test cases)."""
    depth, quote = 0, ""
    for ch in code:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
    return depth if not quote else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--per-kind", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default=os.path.dirname(ast.__file__))
    parser.add_argument("--language", choices=sorted(LANGUAGES), default="python")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    shown_ok: Counter[tuple[str, str]] = Counter()
    raw_ok: Counter[tuple[str, str]] = Counter()
    total: Counter[tuple[str, str]] = Counter()
    suppressed: Counter[tuple[str, str]] = Counter()
    ablation: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    policies: Counter[tuple[str, str, str]] = Counter()
    settle_checks: Counter[tuple[str, str]] = Counter()
    settle_early: Counter[tuple[str, str]] = Counter()
    settle_any: Counter[tuple[str, str]] = Counter()
    settle_saved: defaultdict[tuple[str, str], float] = defaultdict(float)
    decide_s = process_s = 0.0
    calls = 0
    language = args.language
    for path in _files(args.root, args.files, rng, LANGUAGES[language][0]):
        try:
            text = open(path, encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        indent = infer_indent(text)  # what the server does: inlineCompletion has no options
        for hole in _holes(text, rng, args.per_kind, language):
            if not hole.middle.strip():
                continue
            t0 = time.perf_counter()
            decision = decide_stop_policy(language, hole.prefix, hole.suffix)
            decide_s += time.perf_counter() - t0
            policies[(hole.kind, decision.policy, decision.reason)] += 1
            ctx = Context(
                hole.prefix[-16000:],
                hole.suffix[:4000],
                language,
                indent,
                policy=decision.policy,
                block_indent=decision.block_indent,
            )
            ideal = hole.middle.rstrip()
            for variant, raw in _variants(hole):
                key = (hole.kind, variant)
                total[key] += 1
                t0 = time.perf_counter()
                shown = postprocess(ctx, raw)
                process_s += time.perf_counter() - t0
                calls += 1
                shown_ok[key] += shown is not None and shown.rstrip() == ideal
                suppressed[key] += shown is None
                raw_ok[key] += raw.rstrip() == ideal
                if variant in ("exact", "overrun"):
                    early, first = _settle_points(ctx, raw, shown)
                    settle_checks[key] += 1
                    settle_early[key] += early
                    if first is not None:
                        settle_saved[key] += (len(raw) - first) / len(raw)
                        settle_any[key] += 1
                for name in sorted(FILTER_NAMES):
                    off = postprocess(ctx, raw, enabled=FILTER_NAMES - {name})
                    ablation[key][name] += off is not None and off.rstrip() == ideal

    print("| hole | model output | n | shown = true middle | raw = true middle | nothing shown |")
    print("|---|---|---:|---:|---:|---:|")
    for key in sorted(total):
        n = total[key]
        print(
            f"| {key[0]} | {key[1]} | {n} | {100 * shown_ok[key] / n:.1f}% "
            f"| {100 * raw_ok[key] / n:.1f}% | {100 * suppressed[key] / n:.1f}% |"
        )
    print()
    print("Filter ablation: change in 'shown = true middle' (points) when one filter is off")
    names = sorted(FILTER_NAMES)
    print("| hole / output | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for key in sorted(total):
        n = total[key]
        cells = [f"{100 * (ablation[key][name] - shown_ok[key]) / n:+.1f}" for name in names]
        print(f"| {key[0]} / {key[1]} | " + " | ".join(cells) + " |")
    print()
    print("Streaming: `settled` on growing prefixes of the output (every 8 characters, line ends)")
    print("| hole / output | n | settled too early | settled before the end | output left unread |")
    print("|---|---:|---:|---:|---:|")
    for key in sorted(settle_checks):
        n = settle_checks[key]
        left = 100 * settle_saved[key] / settle_any[key] if settle_any[key] else 0.0
        print(
            f"| {key[0]} / {key[1]} | {n} | {100 * settle_early[key] / n:.1f}% "
            f"| {100 * settle_any[key] / n:.1f}% | {left:.0f}% |"
        )
    print()
    print("Stop policy decided at each hole")
    print("| hole | policy | reason | n |")
    print("|---|---|---|---:|")
    for (kind, policy, reason), n in sorted(policies.items()):
        print(f"| {kind} | {policy} | {reason} | {n} |")
    holes = sum(policies.values())
    print()
    print(
        f"decide_stop_policy: {1e3 * decide_s / max(holes, 1):.2f} ms per call over {holes} holes; "
        f"postprocess: {1e3 * process_s / max(calls, 1):.3f} ms per call over {calls} outputs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

# SPDX-License-Identifier: Apache-2.0
"""lsp/core/postprocess.py: golden (document, raw model output) -> shown text, one row per rule.

The golden table lives in tests/golden/postprocess.json so the quality bench can replay it. Each
row names the rule it exercises; a row is checked twice: with every filter on it gives ``shown``;
with its rule (and the rules in ``overlaps``) switched off it gives something else, so the row
really tests that rule, or the same for ``control`` rows, which show a rule leaving good text
alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lspilot.lsp.core.context import Indent
from lspilot.lsp.core.multiline import decide_stop_policy
from lspilot.lsp.core.postprocess import (
    FILTER_NAMES,
    FILTERS,
    POST_CACHE_FILTERS,
    PRE_CACHE_FILTERS,
    Context,
    drop_repetitive_tail,
    post_cache,
    postprocess,
    pre_cache,
    settled,
    trim_closing_overlap,
)

GOLDEN = json.loads(
    (Path(__file__).parent.parent / "golden" / "postprocess.json").read_text(encoding="utf-8")
)


def _context(row: dict[str, Any]) -> Context:
    prefix, suffix = row["document"].split(GOLDEN["cursor"])
    decision = decide_stop_policy(row["language"], prefix, suffix)
    indent = Indent(**row["indent"]) if "indent" in row else Indent()
    if "policy" in row:  # as for a manually invoked completion, which forces the policy
        return Context(prefix, suffix, row["language"], indent, row["policy"], None)
    return Context(prefix, suffix, row["language"], indent, decision.policy, decision.block_indent)


ROWS = [pytest.param(row, id=f"{row['rule']}:{row['id']}") for row in GOLDEN["cases"]]


@pytest.mark.parametrize("row", ROWS)
def test_golden(row: dict[str, Any]) -> None:
    assert postprocess(_context(row), row["raw"]) == row["shown"]


@pytest.mark.parametrize("row", [r for r in ROWS if r.values[0]["rule"] in FILTER_NAMES])
def test_golden_row_depends_on_its_rule(row: dict[str, Any]) -> None:
    # `overlaps` names other rules that would catch the same row on their own.
    off = {row["rule"], *row.get("overlaps", ())}
    without = postprocess(_context(row), row["raw"], enabled=FILTER_NAMES - off)
    if row.get("control"):
        assert without == row["shown"]
    else:
        assert without != row["shown"]


def test_every_filter_has_a_golden_row() -> None:
    covered = {row["rule"] for row in GOLDEN["cases"] if not row.get("control")}
    assert FILTER_NAMES <= covered


def test_filter_names_are_unique_and_staged() -> None:
    assert len(FILTER_NAMES) == len(FILTERS)
    assert {f.stage for f in PRE_CACHE_FILTERS} == {"pre_cache"}
    assert {f.stage for f in POST_CACHE_FILTERS} == {"post_cache"}


def test_unknown_filter_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="no_such_filter"):
        postprocess(Context("", ""), "x", enabled=frozenset({"no_such_filter"}))


def test_no_filters_still_drops_blank() -> None:
    ctx = Context("x = ", "\n")
    assert postprocess(ctx, "  \n", enabled=frozenset()) is None
    assert postprocess(ctx, "1\n2", enabled=frozenset()) == "1\n2"


def test_stages_compose_to_postprocess() -> None:
    ctx = Context("def f():\n    ", "\n", "python", policy="multi_line", block_indent="")
    raw = "a = 1\r\n    return a<|endoftext|>"
    cached = pre_cache(ctx, raw)
    assert cached == "a = 1\n    return a"
    assert post_cache(ctx, cached) == postprocess(ctx, raw) == "a = 1\n    return a"


def test_pre_cache_ignores_the_context() -> None:
    raw = "x\nx\nx\nx<|endoftext|>"
    assert pre_cache(Context("a", "b", "python"), raw) == pre_cache(Context("", "", "go"), raw)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("a\nb\nc", "a\nb\nc", id="no-repeat"),
        pytest.param("a\na", "a\na", id="line-twice-kept"),
        pytest.param("x\na\na\na", "x\na", id="line-thrice"),
        pytest.param("a\nb\na\nb", "a\nb", id="block-twice"),
        pytest.param("a\nb\na\nb\na\nb\na", "a\nb", id="block-with-partial-copy"),
        pytest.param("f(x)\nf(x)\nf(x)\nf(", "f(x)", id="partial-last-line"),
        pytest.param("}\n}\n}\n}", "}\n}\n}\n}", id="closers-are-not-a-loop"),
        pytest.param(
            "f(\n    x,\n    )\n  )\n)", "f(\n    x,\n    )\n  )\n)", id="closers-dedenting"
        ),
        pytest.param("f(\n    x\n)\n)\n)\n)", "f(\n    x\n)", id="closers-at-one-indent-loop"),
        pytest.param(
            '"""\n    doc\n    """\n    """\n    """', '"""\n    doc\n    """', id="quotes"
        ),
        pytest.param("", "", id="empty"),
    ],
)
def test_drop_repetitive_tail(text: str, expected: str) -> None:
    assert drop_repetitive_tail(Context("", ""), text) == expected


@pytest.mark.parametrize(
    ("line_prefix", "line_suffix", "text", "expected"),
    [
        pytest.param("f(", ")", "a]", "a]", id="mismatched-closer-kept"),
        pytest.param("f(", ")", "a] + 1", "a] + 1", id="mismatched-then-code-kept"),
        pytest.param("f(g(", "))", "a)) + b", "a", id="run-then-code"),
        pytest.param("f(", ") + 1", "a)", "a", id="closer-then-code-in-suffix"),
        pytest.param("x = [", "]", "1, 2]", "1, 2", id="square"),
        pytest.param("x = {", "}", "'a': 1}", "'a': 1", id="brace"),
        pytest.param("s = '", "'", "it\\'s'", "it\\'s", id="escaped-quote"),
        pytest.param("f(", ")", ")", None, id="only-the-closer"),
        pytest.param("f(", ")", "a)\nb", "a", id="multi-line-closed-then-continued"),
        pytest.param("f(", ")", "\n    a,\n)", "\n    a,", id="multi-line-ends-with-closer"),
        pytest.param("f(", ")", "[\n    a,\n]", "[\n    a,\n]", id="multi-line-own-brackets"),
    ],
)
def test_trim_closing_overlap(
    line_prefix: str, line_suffix: str, text: str, expected: str | None
) -> None:
    ctx = Context(line_prefix, line_suffix + "\n", "python", policy="single_line")
    assert trim_closing_overlap(ctx, text) == expected


def test_context_properties() -> None:
    ctx = Context("a = 1\r\n\r\n  b = █".replace("█", ""), "x\r\n\r\n  c = 3\r\n", "python")
    assert ctx.line_prefix == "  b = "
    assert ctx.line_suffix == "x"
    assert ctx.next_line == "  c = 3"
    assert ctx.previous_line == "a = 1"
    assert ctx.eol == "\r\n"
    assert Context("", "").eol == "\n"


@pytest.mark.parametrize(
    ("language_id", "document", "streamed", "expected"),
    [
        pytest.param("python", "x = █\n", "foo(", False, id="line-going-on"),
        pytest.param("python", "x = █\n", "foo(a)\n", True, id="single-line-newline"),
        pytest.param("python", "x = foo(█)\n", "a, b)", True, id="closed-the-call"),
        pytest.param("python", "def f(x):\n    █\n", "return x\n", False, id="block-may-go-on"),
        pytest.param(
            "python", "def f(x):\n    █\n", "y = x\n    return y\n", False, id="deeper-line-next"
        ),
        pytest.param(
            "python", "def f(x):\n    █\n", "return x\n\ndef g():", True, id="block-dedented"
        ),
        pytest.param(
            "python", "def f(x):\n    █\n", "y = x\n  ", False, id="indentation-half-streamed"
        ),
        pytest.param(
            "javascript", "function f() {\n  █\n}\n", "return 1;\n}", True, id="block-closed"
        ),
        pytest.param("javascript", "function f() {\n  █\n}\n", "return 1;", False, id="block-open"),
        pytest.param("python", "x = █\n", "", False, id="nothing-yet"),
        pytest.param(
            "python",
            "def f():\n    x = 1\n    █\n    return x\n",
            "return x",
            False,
            id="equal-to-next-line-so-far",
        ),
    ],
)
def test_settled(language_id: str, document: str, streamed: str, expected: bool) -> None:
    prefix, suffix = document.split("█")
    decision = decide_stop_policy(language_id, prefix, suffix)
    ctx = Context(
        prefix, suffix, language_id, policy=decision.policy, block_indent=decision.block_indent
    )
    assert settled(ctx, streamed) is expected


def test_multi_line_without_a_decision_reads_the_block_from_the_text() -> None:
    ctx = Context("def f(x):\n    y = 1\n    ", "\n", "python", policy="multi_line")
    assert postprocess(ctx, "z = 2\n    return z\n\ndef g():\n    pass") == "z = 2\n    return z"


def test_context_for_decision_carries_policy_and_block() -> None:
    decision = decide_stop_policy("python", "def f():\n    ", "\n")
    ctx = Context.for_decision("def f():\n    ", "\n", "python", decision, Indent(False, 8))
    assert (ctx.policy, ctx.block_indent, ctx.indent) == ("multi_line", "", Indent(False, 8))

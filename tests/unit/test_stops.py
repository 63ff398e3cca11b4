# SPDX-License-Identifier: Apache-2.0
"""Stop rules: where a completion ends, and how much of a growing one is safe to show."""

from __future__ import annotations

import pytest

from lspilot.daemon import stops
from lspilot.protocol.messages import StopPolicy

S, M, A = StopPolicy.SINGLE_LINE, StopPolicy.MULTI_LINE, StopPolicy.AUTO


@pytest.mark.parametrize(
    ("prefix", "suffix", "expected"),
    [
        pytest.param("x = foo(", ")\n", S, id="mid-line-closer-only-is-end-of-line"),
        pytest.param("x = ", " + 1\n", S, id="text-after-cursor"),
        pytest.param("def f():\n    ", "\n", M, id="empty-line-after-colon"),
        pytest.param("if (a) {\n  ", "\n}", M, id="empty-line-after-brace"),
        pytest.param("x = 1\n", "", S, id="empty-line-no-opener"),
        pytest.param("def f():\n    return ", "\n", S, id="typed-on-line"),
    ],
)
def test_auto_policy(prefix, suffix, expected):
    assert stops.resolve_policy(A, prefix, suffix) is expected


@pytest.mark.parametrize(
    ("policy", "prefix", "suffix", "text", "finished", "cut"),
    [
        pytest.param(S, "x = ", "\n", "foo(1)\nbar", False, 6, id="single-line-newline"),
        pytest.param(S, "x = ", "\n", "foo(1", False, None, id="single-line-running"),
        pytest.param(S, "x = ", "\n", "foo(1", True, 5, id="single-line-finished"),
        pytest.param(
            M,
            "def f():\n    ",
            "\n",
            "a = 1\n    return a\nprint(f())",
            False,
            18,
            id="dedent-ends-block",
        ),
        pytest.param(
            M,
            "def f():\n    ",
            "\n    return x\n",
            "a = 1\n    return x\n",
            False,
            5,
            id="reaches-suffix-next-line",
        ),
        pytest.param(
            M, "def f():\n    ", "\n", "a = 1\n\n\n    b = 2", False, 5, id="two-blank-lines"
        ),
        pytest.param(
            M, "def f():\n    ", "\n", "a = 1\n    b = 2", True, 15, id="finished-keeps-all"
        ),
        pytest.param(M, "    ", "", "x\n  y", False, 1, id="less-indented-than-cursor"),
    ],
)
def test_cut(policy, prefix, suffix, text, finished, cut):
    ctx = stops.make_context(policy, prefix, suffix)
    assert stops.scan(ctx, text, finished).cut == cut


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        pytest.param("a = 1", 5, id="first-line-always-safe"),
        pytest.param("a = 1\n    ", 5, id="indent-unknown-yet"),
        pytest.param("a = 1\n    b", 11, id="indented-line-safe"),
        pytest.param("a = 1\n    ret", 5, id="could-become-suffix-line"),
    ],
)
def test_safe_prefix_never_retracted(text, safe):
    ctx = stops.make_context(M, "def f():\n    ", "\n    return x\n")
    assert stops.scan(ctx, text).safe == safe

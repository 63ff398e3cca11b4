# SPDX-License-Identifier: Apache-2.0
"""lsp/core/multiline.py: whether to complete, one line or a block, and where a block ends.

Cases are written as one string with ``|`` for the cursor.
"""

from __future__ import annotations

import pytest

from lspilot.lsp.core.context import DocumentSnapshot
from lspilot.lsp.core.multiline import (
    Decision,
    block_end_reached,
    decide_stop_policy,
    enclosing_indent,
    has_grammar,
)


def _decide(language_id: str, doc: str) -> Decision:
    prefix, suffix = doc.split("|")
    return decide_stop_policy(language_id, prefix, suffix)


def _needs(language_id: str) -> None:
    """Languages with a grammar package are decided by tree-sitter; without it, they skip."""
    if language_id in TREE_SITTER_LANGUAGES and not has_grammar(language_id):
        pytest.skip(f"tree-sitter grammar for {language_id} not installed")


TREE_SITTER_LANGUAGES = {"python", "javascript", "typescript", "typescriptreact", "go", "rust"}

# (language, document with | at the cursor, policy, reason)
CASES = [
    # Never complete.
    pytest.param("python", "x = pri|nt(1)\n", "none", "mid_identifier", id="py-mid-identifier"),
    pytest.param("rust", "let ab|c = 1;\n", "none", "mid_identifier", id="rs-mid-identifier"),
    pytest.param("python", "    |return x\n", "none", "before_code", id="py-before-code"),
    pytest.param("plaintext", "|hello\n", "none", "before_code", id="text-before-code"),
    # Single line: something after the cursor on its line.
    pytest.param("python", "x = foo(|a)\n", "single_line", "mid_line", id="py-mid-line"),
    pytest.param("go", "x := |+ 1\n", "single_line", "mid_line", id="go-mid-line"),
    pytest.param("python", "def f(|):\n", "single_line", "statement", id="py-closers-after"),
    pytest.param("javascript", "foo(|);\n", "single_line", "statement", id="js-call-args-one-line"),
    pytest.param("python", 'print("|")\n', "single_line", "statement", id="py-in-string"),
    # Comments: one line of prose.
    pytest.param("python", "x = 1  # the |\n", "single_line", "in_comment", id="py-comment"),
    pytest.param("typescript", "// returns |\n", "single_line", "in_comment", id="ts-comment"),
    pytest.param("go", "package a\n// Foo |\n", "single_line", "in_comment", id="go-comment"),
    pytest.param("lua", "-- sum of |\n", "single_line", "in_comment", id="lua-fallback-comment"),
    pytest.param(
        "cpp", "int x; // why |\n", "single_line", "in_comment", id="cpp-fallback-comment"
    ),
    # Multi-line at the start of an empty block, by tree-sitter.
    pytest.param("python", "def f(x):\n    |\n", "multi_line", "empty_block", id="py-def-body"),
    pytest.param("python", "def f(x):|\n", "multi_line", "empty_block", id="py-end-of-def-line"),
    pytest.param(
        "python",
        "class A:\n    def f(self):\n        |\n\n    def g(self):\n        pass\n",
        "multi_line",
        "empty_block",
        id="py-method-body-before-next-method",
    ),
    pytest.param(
        "python",
        'def f():\n    """Doc."""\n    |\n',
        "multi_line",
        "empty_block",
        id="py-body-with-docstring-only",
    ),
    pytest.param(
        "python",
        "def f(x):  # todo\n    |\n",
        "multi_line",
        "empty_block",
        id="py-opener-with-trailing-comment",
    ),
    pytest.param(
        "python", "if x:\n    a = 1\n    |\n", "single_line", "statement", id="py-nonempty-block"
    ),
    pytest.param(
        "python",
        "def f():\n    |\n    return 1\n",
        "single_line",
        "statement",
        id="py-block-with-code-after",
    ),
    pytest.param("python", "x = 1\n|\ny = 2\n", "single_line", "statement", id="py-between-stmts"),
    pytest.param("python", "x = [\n    |\n]\n", "multi_line", "empty_block", id="py-list-literal"),
    pytest.param(
        "python",
        "for i in range(3):\n|\n",
        "multi_line",
        "after_opener",
        id="py-unindented-cursor-under-opener",
    ),
    pytest.param(
        "javascript",
        "function f(x) {\n  |\n}\n",
        "multi_line",
        "empty_block",
        id="js-function-body",
    ),
    pytest.param(
        "javascript", "function f(x) {|}\n", "multi_line", "empty_block", id="js-braces-same-line"
    ),
    pytest.param(
        "javascript",
        "if (x) {\n  a();\n  |\n}\n",
        "single_line",
        "statement",
        id="js-nonempty-block",
    ),
    pytest.param(
        "javascript", "const o = {\n  |\n};\n", "multi_line", "empty_block", id="js-object"
    ),
    pytest.param(
        "typescript", "interface A {\n  |\n}\n", "multi_line", "empty_block", id="ts-interface"
    ),
    pytest.param(
        "typescriptreact",
        "function C() {\n  |\n}\n",
        "multi_line",
        "empty_block",
        id="tsx-function",
    ),
    pytest.param(
        "go", "package a\n\nfunc f() {\n\t|\n}\n", "multi_line", "empty_block", id="go-func-body"
    ),
    pytest.param(
        "go", "package a\n\ntype A struct {\n\t|\n}\n", "multi_line", "empty_block", id="go-struct"
    ),
    pytest.param(
        "go",
        "package a\n\nfunc f() {\n\tx := 1\n\t|\n}\n",
        "single_line",
        "statement",
        id="go-nonempty-body",
    ),
    pytest.param("rust", "fn f() {\n    |\n}\n", "multi_line", "empty_block", id="rs-fn-body"),
    pytest.param("rust", "impl A {\n    |\n}\n", "multi_line", "empty_block", id="rs-impl"),
    pytest.param(
        "rust",
        "fn f() {\n    let x = 1;\n    |\n}\n",
        "single_line",
        "statement",
        id="rs-nonempty-body",
    ),
    # Textual fallback for languages without a grammar package.
    pytest.param(
        "java", "void f() {\n    |\n}\n", "multi_line", "after_opener", id="java-fallback"
    ),
    pytest.param("java", "foo(|);\n", "single_line", "statement", id="java-call-one-line"),
    pytest.param("java", "foo(\n    |\n);\n", "multi_line", "after_opener", id="java-args-lines"),
    pytest.param("lua", "if x then\n  |\nend\n", "multi_line", "after_opener", id="lua-then"),
    pytest.param(
        "java",
        "void f() {\n    |\n    g();\n}\n",
        "single_line",
        "statement",
        id="java-fallback-nonempty",
    ),
    pytest.param("yaml", "a:\n  |\n", "multi_line", "after_opener", id="yaml-colon"),
    pytest.param(
        "plaintext", "hello:\n|\n", "single_line", "statement", id="text-colon-is-not-a-block"
    ),
    pytest.param("plaintext", "|", "single_line", "statement", id="empty-document"),
]


@pytest.mark.parametrize(("language_id", "doc", "policy", "reason"), CASES)
def test_decide_stop_policy(language_id: str, doc: str, policy: str, reason: str) -> None:
    _needs(language_id)
    decision = _decide(language_id, doc)
    assert (decision.policy, decision.reason) == (policy, reason)
    assert decision.complete is (policy != "none")
    assert (decision.block_indent is not None) is (policy == "multi_line")


def test_block_indent_is_the_opener_lines_indentation() -> None:
    decision = _decide("python", "class A:\n    def f(self):\n        |\n")
    assert decision.block_indent == "    "


@pytest.mark.parametrize(
    ("language_id", "doc", "block_indent"),
    [
        pytest.param("python", "if x:\n    def f():\n        |\n", "    ", id="py-nested"),
        pytest.param(
            "python", "def f():\n    # todo: write it\n    |\n", "", id="py-comment-above-cursor"
        ),
        pytest.param(
            "python",
            "class A:\n    def f(self,\n            x):\n        |\n",
            "    ",
            id="py-wrapped-signature",
        ),
        pytest.param("python", "    def f(x):|\n", "    ", id="py-cursor-on-opener-line"),
        pytest.param("python", "class A:\n    def f(x):|\n", "    ", id="py-nested-opener-line"),
        pytest.param("python", 'def f():\n    """Doc."""\n    |\n', "", id="py-after-docstring"),
        pytest.param("python", "if a:\n    pass\nelse:\n    |\n", "", id="py-else"),
        pytest.param(
            "javascript", "class A {\n  constructor() {|}\n}\n", "  ", id="js-braces-on-cursor-line"
        ),
        pytest.param("javascript", "switch (x) {\n  case 1:\n    |\n}\n", "  ", id="js-case"),
        pytest.param("javascript", "  if (x) {\n    |\n  }\n", "  ", id="js-brace-line"),
        pytest.param("go", "package a\n\nfunc f() {\n\t|\n}\n", "", id="go-func"),
        pytest.param("java", "  void f() {\n    // later\n    |\n  }\n", "  ", id="java-comment"),
    ],
)
def test_block_indent(language_id: str, doc: str, block_indent: str) -> None:
    _needs(language_id)
    decision = _decide(language_id, doc)
    assert decision.policy == "multi_line"
    assert decision.block_indent == block_indent


@pytest.mark.parametrize(
    ("doc", "policy", "reason"),
    [
        pytest.param(
            "def f():\n    |  # pragma: no cover\n", "multi_line", "empty_block", id="body-comment"
        ),
        pytest.param("x = foo(|)  # noqa\n", "single_line", "statement", id="closers-then-comment"),
        pytest.param("x = |y  # noqa\n", "single_line", "mid_line", id="code-then-comment"),
        # Code may go before a trailing comment (`...  # pragma: no cover`).
        pytest.param("    |# comment\n", "single_line", "statement", id="before-a-comment"),
    ],
)
def test_trailing_comment_is_the_end_of_the_line(doc: str, policy: str, reason: str) -> None:
    decision = _decide("python", doc)
    assert (decision.policy, decision.reason) == (policy, reason)


def test_snapshot_form_equals_triple_form() -> None:
    text = "def f(x):\n    \n"
    snapshot = DocumentSnapshot.at("file:///a.py", 1, "python", text, 1, 4)
    assert decide_stop_policy(snapshot) == decide_stop_policy("python", text[:14], text[14:])


def test_missing_arguments_are_a_type_error() -> None:
    with pytest.raises(TypeError):
        decide_stop_policy("python")


@pytest.mark.parametrize(
    "indent",
    [pytest.param("", id="top-level-functions"), pytest.param("    ", id="long-class-body")],
)
def test_long_prefix_parses_from_a_top_level_line(indent: str) -> None:
    header = "class A:\n" if indent else ""
    filler = "".join(f"{indent}def g{i}(x):\n{indent}    return x + {i}\n\n" for i in range(600))
    decision = _decide("python", header + filler + f"{indent}def f(x):\n{indent}    |\n")
    assert (decision.policy, decision.reason) == ("multi_line", "empty_block")
    assert decision.block_indent == indent


def test_long_prefix_does_not_start_parsing_inside_a_docstring() -> None:
    docstring = '"""Module doc.\n\n' + "Prose at column zero, x = not code.\n" * 300 + '"""\n'
    filler = "".join(f"def g{i}(x):\n    return x + {i}\n\n" for i in range(150))
    decision = _decide("python", docstring + filler + "def f(x):\n    |\n")
    assert (decision.policy, decision.reason) == ("multi_line", "empty_block")


@pytest.mark.parametrize(
    "language_id", [pytest.param("python", id="tree-sitter"), pytest.param("java", id="textual")]
)
def test_lone_surrogate_does_not_raise(language_id: str) -> None:
    decision = _decide(language_id, "s = '\ud800'\ndef f():\n    |\n")
    assert decision.policy in ("single_line", "multi_line")


def test_unknown_grammar_has_no_parser() -> None:
    assert not has_grammar("cobol")


@pytest.mark.parametrize(
    ("indent", "text", "expected"),
    [
        pytest.param(
            "", "\n    return 1\n\ndef g():\n    pass", "\n    return 1", id="py-next-def"
        ),
        pytest.param("", "\n    return 1", "\n    return 1", id="py-no-end"),
        pytest.param("    ", "\n        a = 1\n    else:\n", "\n        a = 1", id="py-else-ends"),
        pytest.param("", "\n  return 1;\n}\nfunction g() {}", "\n  return 1;", id="js-closer"),
        pytest.param("\t", "\n\t\tx++\n\t}", "\n\t\tx++", id="tabs"),
        pytest.param("", "return 1\nx = 2", "return 1", id="first-line-then-dedent"),
        pytest.param("", "a = 1", "a = 1", id="single-line"),
        pytest.param(
            "", "\n    a = 1\n\n    b = 2\n", "\n    a = 1\n\n    b = 2\n", id="blank-lines-kept"
        ),
        pytest.param("", "\nx = 1", "", id="dedents-at-once"),
        pytest.param("  ", "\r\n    a\r\n  }", "\r\n    a", id="crlf"),
    ],
)
def test_block_end_reached(indent: str, text: str, expected: str) -> None:
    assert text[: block_end_reached("python", indent, text)] == expected


@pytest.mark.parametrize(
    ("indent", "body_indent", "text", "expected"),
    [
        pytest.param("", "  ", "return x;\n}\nfoo();", "return x;", id="closer-line"),
        pytest.param("", None, "return x; }", "return x;", id="closer-on-first-line"),
        pytest.param(
            "  ", "  ", "a();\n  b();\n  });\n  next();", "a();\n  b();", id="flat-formatting"
        ),
        pytest.param(
            "",
            "  ",
            "s = '}';\n  t = `${u}`;\n}",
            "s = '}';\n  t = `${u}`;",
            id="braces-in-strings",
        ),
        pytest.param(
            "", "  ", "if (a) {\n    b();\n  }\n}", "if (a) {\n    b();\n  }", id="own-braces"
        ),
        pytest.param("", "  ", "a(); // }\n  b();", "a(); // }\n  b();", id="brace-in-comment"),
        pytest.param("", "  ", "a();\n\nfunction g() {}", "a();", id="no-closer-dedent"),
        pytest.param("", "  ", "x: 1,\n  y: [2, 3],\n};", "x: 1,\n  y: [2, 3],", id="object"),
    ],
)
def test_block_end_reached_by_brackets(
    indent: str, body_indent: str | None, text: str, expected: str
) -> None:
    cut = block_end_reached("javascript", indent, text, body_indent=body_indent)
    assert text[:cut] == expected


def test_python_blocks_do_not_end_at_brackets() -> None:
    text = "x = f(a,\n        b)\n    return x"  # the `)` closes the completion's own call
    assert block_end_reached("python", "", text) == len(text)
    assert block_end_reached("python", "", "a = 1\n    )") == len("a = 1\n    )")


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        pytest.param("def f(x):\n    ", "", id="empty-body"),
        pytest.param("class A:\n    def f(self):\n        x = 1\n        ", "    ", id="in-body"),
        pytest.param("class A:\n    def f(self):", "    ", id="cursor-on-opener"),
        pytest.param("function f() {", "", id="brace-on-cursor-line"),
        pytest.param("if (a) {\n  b();\n  // note\n  ", "", id="comment-skipped"),
        pytest.param("x = 1\n", "", id="top-level"),
        pytest.param("\tif x {\n\t\ty()\n\t\t", "\t", id="tabs"),
        pytest.param("def f():\n    return g(\n        a,", "    ", id="continuation-line"),
    ],
)
def test_enclosing_indent(prefix: str, expected: str) -> None:
    assert enclosing_indent(prefix) == expected

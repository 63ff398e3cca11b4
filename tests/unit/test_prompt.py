# SPDX-License-Identifier: Apache-2.0
"""Prompt building: sentinel placement from ids, budget split, line cuts that stay put while
typing, SPM, snippets and healing, against real tokenizers."""

from __future__ import annotations

import pytest

from lspilot.daemon.fim import detect_fim_format
from lspilot.daemon.prompt import (
    PromptBudgetError,
    build_prompt,
    comment_block,
    cut_prefix,
    cut_suffix,
    line_starts,
)
from tests.tiny_models import fixture_tokenizer

FAMILIES = ["qwen", "starcoder", "deepseek", "codellama", "codegen"]
FIM_FAMILIES = ["qwen", "starcoder", "deepseek", "codellama"]

# 600 short, distinct lines of Python: long enough to need cutting at any budget below.
SOURCE = "".join(f"def func_{i}(x):\n    return x * {i} + len('line {i}')\n\n" for i in range(200))


def _setup(family: str):
    tok = fixture_tokenizer(family)
    return tok, detect_fim_format(tok)


def _enc(tok, fmt, text: str, *, continuation: bool = False) -> list[int]:
    from lspilot.daemon.prompt import _encode

    return _encode(tok, text, continuation=continuation, dummy=fmt.dummy_prefix_space)


@pytest.mark.parametrize(
    ("text", "starts"),
    [
        pytest.param("", [0], id="empty"),
        pytest.param("a", [0], id="one-line"),
        pytest.param("a\n", [0], id="trailing-newline"),
        pytest.param("a\nb\n\nc", [0, 2, 4, 5], id="blank-line"),
    ],
)
def test_line_starts(text, starts):
    assert line_starts(text) == starts


@pytest.mark.parametrize("family", FIM_FAMILIES)
def test_psm_layout_short_document(family):
    tok, fmt = _setup(family)
    prefix, suffix = "import os\n\ndef main():\n    ", "\n    return 0\n"
    p = build_prompt(tok, fmt, prefix, suffix, budget=512)
    bos = [fmt.bos_id] if fmt.bos_id is not None else []
    want = (
        bos + list(fmt.prefix_ids) + _enc(tok, fmt, prefix) + list(fmt.suffix_ids)
        + _enc(tok, fmt, suffix, continuation=True) + list(fmt.middle_ids)
    )  # fmt: skip
    assert list(p.ids) == want
    assert (p.prefix_truncated, p.suffix_truncated, p.layout) == (False, False, "psm")
    assert (p.prefix_start, p.suffix_end) == (0, len(suffix))


@pytest.mark.parametrize(
    ("family", "head"),
    [
        pytest.param("deepseek", [32013, 32016], id="deepseek-bos-then-begin"),
        pytest.param("codellama", [1, 32007], id="codellama-bos-then-pre"),
        pytest.param("qwen", [151659], id="qwen-no-bos"),
        pytest.param("starcoder", [1], id="starcoder-no-bos"),
    ],
)
def test_prompt_head(family, head):
    tok, fmt = _setup(family)
    p = build_prompt(tok, fmt, "x = 1\n", "", budget=64)
    assert list(p.ids[: len(head)]) == head
    assert p.ids[-1] == fmt.middle_ids[-1]


def test_codellama_suffix_has_no_dummy_space_and_prefix_has_one():
    """Meta's reference: ``<PRE> {pre} <SUF>{suf} <MID>``: the prefix keeps SentencePiece's
    dummy space, the suffix (encode_infilling) drops it."""
    tok, fmt = _setup("codellama")
    p = build_prompt(tok, fmt, "x", "y", budget=64)
    assert tok.convert_ids_to_tokens(list(p.ids)) == [
        "<s>",
        "▁<PRE>",
        "▁x",
        "▁<SUF>",
        "y",
        "▁<MID>",
    ]


@pytest.mark.parametrize("family", FIM_FAMILIES)
def test_sentinel_text_in_user_code_stays_text(family):
    tok, fmt = _setup(family)
    text = "s = '<fim_prefix><|fim_middle|><｜fim▁end｜><PRE> <MID> <SUF>'\n"
    p = build_prompt(tok, fmt, text, text, budget=256)
    sentinels = set(fmt.prefix_ids + fmt.suffix_ids + fmt.middle_ids)
    assert sum(1 for i in p.ids if i in sentinels) == 3


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("budget", [16, 64, 300, 1000], ids=lambda b: f"budget{b}")
def test_budget_is_respected_and_sentinels_survive(family, budget):
    tok, fmt = _setup(family)
    p = build_prompt(tok, fmt, SOURCE, SOURCE, budget=budget)
    assert len(p.ids) <= budget
    assert p.prefix_truncated
    for sentinel in fmt.prefix_ids + fmt.suffix_ids + fmt.middle_ids:
        assert sentinel in p.ids
    if fmt.is_fim:
        assert p.suffix_tokens <= budget // 4
        assert p.suffix_truncated
    else:
        assert p.suffix_tokens == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_cuts_fall_on_line_boundaries(family):
    tok, fmt = _setup(family)
    p = build_prompt(tok, fmt, SOURCE, SOURCE, budget=400)
    assert p.prefix_start in line_starts(SOURCE)
    assert SOURCE[p.prefix_start - 1] == "\n"
    body = [i for i in p.ids if i != fmt.bos_id][len(fmt.prefix_ids) :][: p.prefix_tokens]
    assert body == _enc(tok, fmt, SOURCE[p.prefix_start :])
    if fmt.is_fim:
        assert SOURCE[p.suffix_end - 1] == "\n"


@pytest.mark.parametrize("grid", [1, 16], ids=["every-line", "grid16"])
def test_prefix_cut_is_on_the_grid(grid):
    tok, fmt = _setup("qwen")
    p = build_prompt(tok, fmt, SOURCE, "", budget=500, cut_grid_lines=grid)
    line_no = SOURCE.count("\n", 0, p.prefix_start)
    assert line_no % grid == 0


@pytest.mark.parametrize("family", ["qwen", "codellama"])
def test_prefix_cut_stays_put_while_typing(family):
    """Typing 200 characters at the end of a long prefix moves the cut only a few times, so
    the leading tokens (and their KV cache) survive most keystrokes."""
    tok, fmt = _setup(family)
    typed = "".join(f"value_{i} = compute({i})\n" for i in range(20))[:200]
    cuts = []
    for n in range(0, len(typed), 2):
        p = build_prompt(tok, fmt, SOURCE + typed[:n], "\n", budget=600)
        cuts.append(p.prefix_start)
    assert cuts == sorted(cuts)
    assert len(set(cuts)) <= 4, set(cuts)


def test_a_one_line_grid_moves_the_cut_more_often():
    """Control for the test above: a one-line grid moves the cut far more often."""
    tok, fmt = _setup("qwen")
    typed = "".join(f"v{i} = f({i})\n" for i in range(20))
    cuts = {
        build_prompt(tok, fmt, SOURCE + typed[:n], "", budget=600, cut_grid_lines=1).prefix_start
        for n in range(0, len(typed), 2)
    }
    coarse = {
        build_prompt(tok, fmt, SOURCE + typed[:n], "", budget=600).prefix_start
        for n in range(0, len(typed), 2)
    }
    assert len(cuts) > len(coarse)


@pytest.mark.parametrize("family", ["starcoder", "codellama"])
def test_spm_layout_and_typing_only_appends(family):
    tok, fmt = _setup(family)
    prefix, suffix = "def main():\n    total = ", "\n    return total\n"
    p = build_prompt(tok, fmt, prefix, suffix, budget=256, layout="spm")
    bos = [fmt.bos_id] if fmt.bos_id is not None else []
    head = bos + list(fmt.prefix_ids) + list(fmt.suffix_ids)
    assert p.layout == "spm"
    assert list(p.ids[: len(head)]) == head
    mid = p.ids.index(fmt.middle_ids[0])
    assert list(p.ids[mid + 1 :]) == _enc(tok, fmt, prefix)
    # One more keystroke: everything up to the last prefix tokens is unchanged.
    q = build_prompt(tok, fmt, prefix + "s", suffix, budget=256, layout="spm")
    common = next(
        (i for i, (a, b) in enumerate(zip(p.ids, q.ids, strict=False)) if a != b), len(p.ids)
    )
    assert common >= len(p.ids) - 2


@pytest.mark.parametrize("family", ["qwen", "deepseek"])
def test_spm_falls_back_to_psm_where_untrained(family):
    tok, fmt = _setup(family)
    p = build_prompt(tok, fmt, "a = 1\n", "b = 2\n", budget=64, layout="spm")
    assert p.layout == "psm"
    assert p.ids == build_prompt(tok, fmt, "a = 1\n", "b = 2\n", budget=64).ids


def test_left_to_right_is_bos_and_prefix():
    tok, fmt = _setup("codegen")
    p = build_prompt(tok, fmt, "import os\n", "ignored()\n", budget=64)
    assert list(p.ids) == _enc(tok, fmt, "import os\n")
    assert p.layout == "l2r"


SNIPPETS = [("lib/util.py", "def helper():\n    return 42\n"), ("lib/more.py", "X = 1\n")]


def test_qwen_snippets_use_repo_level_format():
    tok, fmt = _setup("qwen")
    p = build_prompt(tok, fmt, "import os\n", "", SNIPPETS, budget=512, path="app/main.py")
    text = tok.decode(list(p.ids))
    assert text == (
        "<|file_sep|>lib/util.py\ndef helper():\n    return 42\n"
        "<|file_sep|>lib/more.py\nX = 1\n"
        "<|file_sep|>app/main.py\n<|fim_prefix|>import os\n<|fim_suffix|><|fim_middle|>"
    )
    assert p.snippets_used == 2
    assert p.snippet_tokens > 0


@pytest.mark.parametrize("family", ["deepseek", "starcoder", "codegen"])
def test_other_families_get_snippets_as_a_comment_block(family):
    tok, fmt = _setup(family)
    p = build_prompt(tok, fmt, "import os\n", "", SNIPPETS[:1], budget=512)
    text = tok.decode(list(p.ids), skip_special_tokens=True)
    block = "# Compare this snippet from lib/util.py:\n# def helper():\n#     return 42\n"
    assert block + "import os\n" in text
    assert text.index(block) <= len(tok.decode(list(fmt.prefix_ids)))


def test_snippets_only_get_leftover_budget():
    tok, fmt = _setup("qwen")
    full = build_prompt(tok, fmt, SOURCE, "", SNIPPETS, budget=400)
    assert full.prefix_truncated and full.snippets_used == 0 and full.snippet_tokens == 0


def test_comment_block_format():
    assert comment_block("a.py", "x = 1\n\ny = 2", "//") == (
        "// Compare this snippet from a.py:\n// x = 1\n//\n// y = 2\n"
    )


def test_healing_removes_the_partial_identifier():
    tok, fmt = _setup("qwen")
    p = build_prompt(tok, fmt, "from .read", "", budget=64, heal=True)
    assert p.removed_text == "read"
    assert p.constraint is not None
    assert tok.decode(list(p.ids)) == "<|fim_prefix|>from .<|fim_suffix|><|fim_middle|>"
    assert build_prompt(tok, fmt, "from .read", "", budget=64).removed_text == ""


@pytest.mark.parametrize(
    ("layout", "budget", "error"),
    [
        pytest.param("msp", 64, ValueError, id="unknown-layout"),
        pytest.param("psm", 3, PromptBudgetError, id="budget-below-sentinels"),
    ],
)
def test_bad_arguments(layout, budget, error):
    tok, fmt = _setup("qwen")
    with pytest.raises(error):
        build_prompt(tok, fmt, "a", "b", budget=budget, layout=layout)


@pytest.mark.parametrize("family", ["qwen", "codellama"])
def test_one_huge_line_is_cut_by_tokens(family):
    tok, fmt = _setup(family)
    line = "x = [" + ", ".join(str(i) for i in range(3000)) + "]"
    cut = cut_prefix(tok, line, 50, grid=16, continuation=False, dummy=fmt.dummy_prefix_space)
    assert cut.truncated and len(cut.ids) == 50
    head = cut_suffix(tok, line, 50, dummy=fmt.dummy_prefix_space)
    assert head.truncated and len(head.ids) == 50


def test_huge_prefix_is_cut_from_a_window_with_the_same_result():
    """The windowed search must pick the same grid line a full search would."""
    tok, fmt = _setup("qwen")
    big = SOURCE * 20
    p = build_prompt(tok, fmt, big, "", budget=800)
    starts = line_starts(big)
    grid_points = [c for i, c in enumerate(starts) if i % 16 == 0]
    k = grid_points.index(p.prefix_start)
    room = 800 - 3  # budget minus the three sentinels; the suffix is empty
    assert len(_enc(tok, fmt, big[grid_points[k] :])) <= room
    assert len(_enc(tok, fmt, big[grid_points[k - 1] :])) > room


def test_starcoder2_repo_level_layout():
    """StarCoder2: ``<file_sep>path\\ncode<file_sep><fim_prefix>path\\nprefix<fim_suffix>...``.
    No StarCoder2 tokenizer.json is vendored, so a word-level vocabulary with its ids stands in."""
    from tests.tiny_models import fake_tokenizer

    names = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]
    tok = fake_tokenizer([*names, "<repo_name>", "<file_sep>", "lib.py", "main.py", "A", "B"])
    fmt = detect_fim_format(tok)
    assert (fmt.name, fmt.file_sep_id, fmt.repo_name_id) == ("starcoder", 8, 7)
    p = build_prompt(tok, fmt, "B", "", [("lib.py", "A")], budget=64, path="main.py")
    assert tok.convert_ids_to_tokens(list(p.ids)) == [
        "<file_sep>", "lib.py", "A", "<file_sep>", "<fim_prefix>", "main.py", "B",
        "<fim_suffix>", "<fim_middle>",
    ]  # fmt: skip
    assert p.snippet_tokens == 5


def test_snippet_budget_moves_in_steps_while_typing():
    tok, fmt = _setup("qwen")
    snippet = [("lib/long.py", "".join(f"CONST_{i} = {i}\n" for i in range(400)))]
    sizes = {
        build_prompt(tok, fmt, SOURCE[:n], "", snippet, budget=2048).snippet_tokens
        for n in range(0, 600, 10)
    }
    assert 1 < len(sizes) <= 4


TRICKY = (
    "class A:\n\tdef f(self):  \n\t\treturn 1\n\n\n    x = '中文 😀'\r\n"
    "        y =   2   \n#\n\n  \n" + "".join(f"v{i} = {i} * 3.14159\n" for i in range(40))
)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("limit", [20, 45, 90, 150], ids=lambda n: f"limit{n}")
def test_prefix_cut_ids_equal_a_fresh_encoding(family, limit):
    """The cut reuses the window's ids where a token starts at the cut; they must be exactly
    what encoding the kept text gives."""
    tok, fmt = _setup(family)
    text = TRICKY * 3
    cut = cut_prefix(tok, text, limit, grid=1, continuation=False, dummy=fmt.dummy_prefix_space)
    assert cut.truncated
    assert list(cut.ids) == _enc(tok, fmt, text[cut.start :])
    assert len(cut.ids) <= limit

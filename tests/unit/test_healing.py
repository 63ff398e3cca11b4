# SPDX-License-Identifier: Apache-2.0
"""Token healing: which trailing token is removed, and which tokens may reproduce it."""

from __future__ import annotations

import time

import pytest

from lspilot.daemon.healing import Healing, HealingConstraint, heal, token_table
from tests.tiny_models import fake_tokenizer, fixture_tokenizer

FAMILIES = ["qwen", "starcoder", "deepseek", "codellama", "codegen"]


@pytest.mark.parametrize(
    ("family", "prefix", "removed"),
    [
        pytest.param("qwen", "from .read", "read", id="qwen-identifier"),
        pytest.param("qwen", "x = foo.ba", ".ba", id="qwen-dot-attribute"),
        pytest.param("qwen", "def f():\n    ", "    ", id="qwen-indent"),
        pytest.param("starcoder", "from .read", "read", id="starcoder-identifier"),
        pytest.param("starcoder", "def f():\n    ", "\n    ", id="starcoder-newline-indent"),
        pytest.param("deepseek", "from .read", "read", id="deepseek-identifier"),
        pytest.param("deepseek", "s = '中文", "文", id="deepseek-cjk"),
        pytest.param("codellama", "from .read", "read", id="codellama-identifier"),
        pytest.param("codellama", "x = foo.ba", "ba", id="codellama-attribute"),
        pytest.param("codegen", "if x:\n    ret", "ret", id="codegen-identifier"),
        pytest.param("codegen", "if x:\n    ", "    ", id="codegen-added-whitespace-token"),
    ],
)
def test_heal_removes_the_extendable_last_token(family, prefix, removed):
    tok = fixture_tokenizer(family)
    ids = tok.encode(prefix, add_special_tokens=False)
    h = heal(tok, ids)
    assert h.removed_text == removed
    assert h.healed
    assert list(h.kept_ids) == ids[: len(h.kept_ids)]
    assert tok.decode(list(h.kept_ids)) + removed == tok.decode(ids)


@pytest.mark.parametrize(
    ("family", "ids"),
    [
        pytest.param("qwen", [], id="empty"),
        pytest.param("qwen", [151643], id="special-token"),
        pytest.param("qwen", [151659], id="fim-sentinel-added-token"),
        pytest.param("codellama", [1], id="bos"),
    ],
)
def test_heal_leaves_unhealable_prompts_alone(family, ids):
    h = heal(fixture_tokenizer(family), ids)
    assert h == Healing(tuple(ids), "")
    assert not h.healed


def test_heal_does_not_split_a_character():
    """A byte-level token holding half a character is not removed on its own."""
    tok = fixture_tokenizer("starcoder")
    ids = tok.encode("x = '🦩", add_special_tokens=False)
    h = heal(tok, ids)
    h.removed_text.encode("utf-8")  # always whole characters
    assert tok.decode(list(h.kept_ids)) + h.removed_text == tok.decode(ids)


@pytest.mark.parametrize("family", FAMILIES)
def test_allowed_tokens_are_consistent_with_the_removed_text(family):
    tok = fixture_tokenizer(family)
    table = token_table(tok)
    constraint = HealingConstraint(tok, "read")
    allowed = constraint.allowed_ids([])
    assert allowed
    for tid in allowed:
        data = table.id_bytes[tid]
        assert data.startswith(b"read") or b"read".startswith(data)
    assert tok.convert_tokens_to_ids("read") in allowed
    # Every token in the vocabulary that starts with "read" is allowed.
    every = {t for t, b in table.id_bytes.items() if b.startswith(b"read")}
    assert every <= set(allowed)


def test_constraint_steps_until_the_text_is_reproduced():
    tok = fixture_tokenizer("qwen")
    constraint = HealingConstraint(tok, "reade")
    r, e, ade = (tok.convert_tokens_to_ids(t) for t in ("r", "e", "ade"))
    assert r in constraint.allowed_ids([])
    after_r = constraint.allowed_ids([r])
    assert after_r is not None and e in after_r and tok.convert_tokens_to_ids("r") not in after_r
    assert constraint.allowed_ids([r, e, ade]) is None  # "r"+"e"+"ade" == "reade"
    assert constraint.allowed_ids([tok.convert_tokens_to_ids("reader")]) is None
    assert constraint.allowed_ids([tok.convert_tokens_to_ids("write")]) is None  # left the text


def test_sentencepiece_table_keeps_spaces_and_bytes():
    tok = fixture_tokenizer("codellama")
    table = token_table(tok)
    assert table.id_bytes[tok.convert_tokens_to_ids("▁return")] == b" return"
    assert table.id_bytes[tok.convert_tokens_to_ids("<0xF0>")] == b"\xf0"
    assert 1 not in table.id_bytes and 2 not in table.id_bytes  # specials are out


def test_banned_sentinel_pieces_are_never_allowed_or_removed():
    """CodeLlama's ``▁<PRE>`` is a plain piece (bytes " <PRE>"), so only ``banned`` keeps it out."""
    tok = fixture_tokenizer("codellama")
    pre = tok.convert_tokens_to_ids("▁<PRE>")
    assert pre in HealingConstraint(tok, " <").allowed_ids([])
    assert pre not in HealingConstraint(tok, " <", banned={pre}).allowed_ids([])
    assert heal(tok, [pre], banned={pre}).removed_text == ""


def test_bytelevel_table_covers_the_vocabulary():
    tok = fixture_tokenizer("qwen")
    table = token_table(tok)
    assert table.id_bytes[tok.convert_tokens_to_ids("Ġreturn")] == b" return"
    assert len(table.id_bytes) == 151643  # every regular token, no added ones
    assert token_table(tok) is table  # cached per tokenizer


def test_constraint_steps_are_fast_on_a_151k_vocabulary():
    tok = fixture_tokenizer("qwen")
    constraint = HealingConstraint(tok, "    ")
    constraint.allowed_ids([])
    start = time.perf_counter()
    for _ in range(100):
        constraint.allowed_ids([])
    assert (time.perf_counter() - start) / 100 < 0.005


def test_fake_word_level_tokenizer_falls_back_to_decode():
    tok = fake_tokenizer(["read", "reader", "<|endoftext|>"], eos="<|endoftext|>")
    h = heal(tok, tok.encode("read", add_special_tokens=False))
    assert h.removed_text == "read"
    ids = HealingConstraint(tok, "read").allowed_ids([])
    assert sorted(tok.convert_ids_to_tokens(ids)) == ["read", "reader"]

# SPDX-License-Identifier: Apache-2.0
"""Incremental detokenization with real tokenizers: characters split across byte-level tokens,
SentencePiece spaces and byte fallback, and stripping healed text."""

from __future__ import annotations

import pytest

from lspilot.daemon.detok import IncrementalDetokenizer
from lspilot.daemon.fim import detect_fim_format
from lspilot.daemon.prompt import _encode
from tests.tiny_models import fixture_tokenizer

FAMILIES = ["qwen", "starcoder", "deepseek", "codellama", "codegen"]
PROMPT = "x = 1\n"

TEXTS = [
    pytest.param("def f():\n    return 1\n", id="code"),
    pytest.param("  a  =  b\t\n\n    c", id="spaces-and-tabs"),
    pytest.param("s = '😀🎉'", id="emoji"),
    pytest.param("# 中文注释 こんにちは", id="cjk"),
    pytest.param("é ñ ä ß Ω", id="latin-greek"),
    pytest.param("👨‍👩‍👧 𝔘𝔫𝔦", id="zwj-and-astral"),
]


def _ids(family: str, text: str) -> tuple[object, list[int], list[int]]:
    """The tokenizer, prompt ids and the ids a model would generate for ``text`` after it."""
    tok = fixture_tokenizer(family)
    dummy = detect_fim_format(tok).dummy_prefix_space
    prompt = _encode(tok, PROMPT, continuation=False, dummy=dummy)
    return tok, prompt, _encode(tok, text, continuation=True, dummy=dummy)


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_streamed_text_equals_the_text(family, text):
    tok, prompt, ids = _ids(family, text)
    detok = IncrementalDetokenizer(tok, prompt)
    chunks = [detok.push(i) for i in ids]
    chunks.append(detok.flush())
    assert "".join(chunks) == text
    assert detok.text == text
    assert not any("\ufffd" in c for c in chunks)


@pytest.mark.parametrize("family", ["qwen", "starcoder", "deepseek", "codegen"])
def test_a_character_split_across_tokens_is_held_back(family):
    tok, prompt, ids = _ids(family, "🦩")
    assert len(ids) > 1, "byte-level BPE splits this emoji"
    detok = IncrementalDetokenizer(tok, prompt)
    assert [detok.push(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert detok.push(ids[-1]) == "🦩"


def test_codellama_byte_fallback_emoji_is_held_back():
    tok, prompt, ids = _ids("codellama", "😀")
    assert tok.convert_ids_to_tokens(ids) == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
    detok = IncrementalDetokenizer(tok, prompt)
    assert [detok.push(i) for i in ids] == ["", "", "", "😀"]


def test_codellama_first_piece_keeps_its_space():
    """``▁return`` decoded alone is "return": the prompt context keeps the space."""
    tok = fixture_tokenizer("codellama")
    piece = tok.convert_tokens_to_ids("▁return")
    detok = IncrementalDetokenizer(tok, tok.encode("x =", add_special_tokens=False))
    assert detok.push(piece) == " return"
    assert IncrementalDetokenizer(tok).push(piece) == "return"  # no context: the decoder strips


def test_flush_returns_an_unfinished_character_as_replacement():
    tok, prompt, ids = _ids("qwen", "🦩")
    detok = IncrementalDetokenizer(tok, prompt)
    assert detok.push(ids[0]) == ""
    assert detok.flush() == "\ufffd"
    assert detok.flush() == ""


@pytest.mark.parametrize(
    ("strip", "text", "out", "pending"),
    [
        pytest.param("read", "reader import read", "er import read", "", id="healed-identifier"),
        pytest.param("    ", "        pass", "    pass", "", id="healed-indent"),
        pytest.param("read", "re", "", "ad", id="not-yet-reproduced"),
        pytest.param("read", "write", "write", "", id="diverged-emits-everything-after"),
        pytest.param("", "abc", "abc", "", id="nothing-to-strip"),
    ],
)
def test_strip_prefix(strip, text, out, pending):
    tok, prompt, ids = _ids("qwen", text)
    detok = IncrementalDetokenizer(tok, prompt, strip_prefix=strip)
    got = "".join(detok.push(i) for i in ids) + detok.flush()
    assert got == out
    assert detok.pending_strip == pending


def test_only_the_last_context_tokens_are_decoded():
    tok, _, ids = _ids("qwen", "a = 1")
    long_prompt = tok.encode("y = 2\n" * 1000, add_special_tokens=False)
    detok = IncrementalDetokenizer(tok, long_prompt)
    assert "".join(detok.push(i) for i in ids) + detok.flush() == "a = 1"
    assert len(detok._ids) <= 5 + len(ids)


def test_deepseek_added_byte_tokens_match_raw_text():
    """A DeepSeek-Coder quirk, recorded so nobody "fixes" the detokenizer for it: the added
    tokens 32000-32012 are ByteLevel stand-ins for the bytes that never occur in UTF-8 (0xC0,
    0xC1, 0xF5-0xFF), e.g. "ü" for 0xFC. As added tokens they match "ü" in raw text, so the
    tokenizer itself turns "ü" into byte 0xFC, which decodes to U+FFFD. The model was trained
    through the same tokenizer, so prompts keep it; generated text uses the real UTF-8 pieces."""
    tok = fixture_tokenizer("deepseek")
    assert tok.encode("ü", add_special_tokens=False) == [32009]
    assert tok.decode([32009]) == "\ufffd"


@pytest.mark.parametrize("text", TEXTS[:3])
@pytest.mark.parametrize("family", FAMILIES)
def test_context_ending_in_a_fim_sentinel(family, text):
    """The daemon passes the real prompt, which ends in the middle sentinel (an added token for
    most families, the plain piece ``▁<MID>`` for CodeLlama): the sentinel's own text must not
    leak into the output."""
    from lspilot.daemon.prompt import build_prompt

    tok = fixture_tokenizer(family)
    fmt = detect_fim_format(tok)
    prompt = build_prompt(tok, fmt, "def f():\n", "\n", budget=64)
    ids = _encode(tok, text, continuation=True, dummy=fmt.dummy_prefix_space)
    detok = IncrementalDetokenizer(tok, prompt.ids)
    assert "".join(detok.push(i) for i in ids) + detok.flush() == text

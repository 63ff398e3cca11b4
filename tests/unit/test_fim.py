# SPDX-License-Identifier: Apache-2.0
"""FIM format detection against real tokenizers, and fakes for families we lack files for."""

from __future__ import annotations

import pytest

from lspilot.daemon.fim import FIM_FORMAT_NAMES, FimFormat, FimFormatError, detect_fim_format
from tests.tiny_models import fake_tokenizer, fixture_tokenizer


@pytest.mark.parametrize(
    ("family", "name", "sentinels", "bos", "eos", "stops", "file_sep", "spm"),
    [
        pytest.param(
            "qwen", "qwen", ((151659,), (151661,), (151660,)), None, 151643,
            {151643, 151645, 151662, 151663, 151664}, 151664, False, id="qwen2.5-coder",
        ),
        pytest.param(
            "starcoder", "starcoder", ((1,), (3,), (2,)), None, 0, {0, 4, 5, 18}, None, True,
            id="starcoder",
        ),
        pytest.param(
            "deepseek", "deepseek", ((32016,), (32015,), (32017,)), 32013, 32014,
            {32014, 32021}, None, False, id="deepseek-coder",
        ),
        pytest.param(
            "codellama", "codellama", ((32007,), (32008,), (32009,)), 1, 2,
            {2, 32010, 32011, 32015}, None,
            True, id="codellama",
        ),
        pytest.param("codegen", "none", ((), (), ()), None, 50256, {50256}, None, False,
                     id="codegen-left-to-right"),
    ],
)  # fmt: skip
def test_detect_real_tokenizers(family, name, sentinels, bos, eos, stops, file_sep, spm):
    fmt = detect_fim_format(fixture_tokenizer(family))
    assert fmt.name == name
    assert (fmt.prefix_ids, fmt.suffix_ids, fmt.middle_ids) == sentinels
    assert fmt.bos_id == bos
    assert fmt.eos_id == eos
    assert stops <= fmt.stop_ids
    assert set(sum(sentinels, ())) <= fmt.stop_ids
    assert fmt.file_sep_id == file_sep
    assert fmt.supports_spm is spm


def test_codellama_sentinels_are_plain_vocab_pieces():
    tok = fixture_tokenizer("codellama")
    fmt = detect_fim_format(tok)
    assert tok.convert_ids_to_tokens([*fmt.prefix_ids, *fmt.suffix_ids, *fmt.middle_ids]) == [
        "▁<PRE>", "▁<SUF>", "▁<MID>",
    ]  # fmt: skip
    assert fmt.dummy_prefix_space
    assert 32007 not in tok.all_special_ids


@pytest.mark.parametrize(
    ("tokens", "name", "sentinels"),
    [
        pytest.param(
            ["<|endoftext|>", "<fim-prefix>", "<fim-middle>", "<fim-suffix>", "<fim-pad>"],
            "santacoder", (3, 5, 4), id="santacoder-hyphens",
        ),
        pytest.param(
            ["<pad>", "<eos>", "<bos>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
             "<|file_separator|>", "<start_of_turn>"],
            "codegemma", (5, 7, 6), id="codegemma-not-qwen",
        ),
        pytest.param(
            ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"],
            "qwen", (3, 5, 4), id="qwen-like-without-gemma-markers",
        ),
        pytest.param(
            ["<|endoftext|>", "<|mask:0|>", "<|mask:1|>", "<|endofmask|>"],
            "incoder", (None, 3, 4), id="incoder",
        ),
        pytest.param(["<|endoftext|>"], "none", (None, None, None), id="no-fim-tokens"),
    ],
)  # fmt: skip
def test_detect_fake_vocabularies(tokens, name, sentinels):
    fmt = detect_fim_format(fake_tokenizer(tokens, eos=tokens[0]))
    assert fmt.name == name
    first = lambda ids: ids[0] if ids else None  # noqa: E731
    assert (first(fmt.prefix_ids), first(fmt.suffix_ids), first(fmt.middle_ids)) == sentinels


def test_incoder_middle_is_two_masks_and_stops_at_end_of_mask():
    tok = fake_tokenizer(["<|endoftext|>", "<|mask:0|>", "<|mask:1|>", "<|endofmask|>"])
    fmt = detect_fim_format(tok)
    assert fmt.middle_ids == (4, 3)
    assert 5 in fmt.stop_ids


def test_codegemma_stops_at_file_separator():
    tok = fake_tokenizer(
        ["<eos>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|file_separator|>"],
        eos="<eos>",
    )
    fmt = detect_fim_format(tok)
    assert fmt.name == "codegemma"
    assert {2, 6} <= fmt.stop_ids


@pytest.mark.parametrize("override", [None, "auto"], ids=["none-value", "auto"])
def test_no_override_detects(override):
    assert detect_fim_format(fixture_tokenizer("qwen"), override).name == "qwen"


def test_override_none_runs_fim_model_left_to_right():
    fmt = detect_fim_format(fixture_tokenizer("deepseek"), "none")
    assert fmt == FimFormat("none", bos_id=None, eos_id=fmt.eos_id, stop_ids=fmt.stop_ids)
    assert not fmt.is_fim


def test_unknown_override_names_the_choices():
    with pytest.raises(ValueError, match="unknown FIM format 'starcoder2'") as err:
        detect_fim_format(fixture_tokenizer("qwen"), "starcoder2")
    for name in FIM_FORMAT_NAMES:
        assert name in str(err.value)


def test_override_without_sentinels_is_an_error():
    with pytest.raises(FimFormatError, match="no sentinel tokens"):
        detect_fim_format(fixture_tokenizer("codegen"), "starcoder")

# SPDX-License-Identifier: Apache-2.0
"""Tiny random-weight causal LMs that carry a REAL code-model tokenizer.

Why: component and end-to-end tests need a model directory that loads through the exact path the
daemon uses (``AutoModelForCausalLM.from_pretrained`` + ``AutoTokenizer.from_pretrained``) and
whose tokenizer has the real FIM sentinels, BOS/EOS ids and byte-level quirks, but that runs in
milliseconds on a shared 2-core CPU and needs no model hub. The weights are random, so the text
it generates is noise; only shapes, ids and the loading path are real.

The tokenizer files come from ``tests/fixtures/tokenizers/<family>`` (see SOURCES.md there).

Usage::

    from tests.tiny_models import build_tiny_model
    model_dir = build_tiny_model("qwen", tmp_path / "qwen")
"""

from __future__ import annotations

import json
import pathlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "tokenizers"

# The dimensions every tiny model shares: large enough to exercise multi-head attention and
# grouped KV heads, small enough that a forward pass over a 2k-token prompt is a few ms.
HIDDEN = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
INTERMEDIATE = 128


@dataclass(frozen=True)
class TinyFamily:
    """What differs between families: architecture, real special-token ids, context length."""

    name: str
    tokenizer_dir: str  # folder under tests/fixtures/tokenizers
    vocab_size: int  # the tokenizer's len(); real checkpoints pad the embedding further
    bos_token_id: int | None
    eos_token_id: int
    pad_token_id: int | None
    max_positions: int
    make_config: Callable[[TinyFamily], Any]


def _qwen_config(f: TinyFamily) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=f.vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=f.max_positions,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,  # as in Qwen2.5-Coder-0.5B/1.5B; also halves the file
        bos_token_id=f.bos_token_id,
        eos_token_id=f.eos_token_id,
        pad_token_id=f.pad_token_id,
    )


def _llama_config(rope_theta: float) -> Callable[[TinyFamily], Any]:
    def make(f: TinyFamily) -> Any:
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=f.vocab_size,
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            max_position_embeddings=f.max_positions,
            rope_theta=rope_theta,
            tie_word_embeddings=False,  # as in the real CodeLlama / DeepSeek-Coder checkpoints
            bos_token_id=f.bos_token_id,
            eos_token_id=f.eos_token_id,
            pad_token_id=f.pad_token_id,
        )

    return make


def _starcoder_config(f: TinyFamily) -> Any:
    from transformers import GPTBigCodeConfig

    return GPTBigCodeConfig(
        vocab_size=f.vocab_size,
        n_embd=HIDDEN,
        n_inner=INTERMEDIATE,
        n_layer=LAYERS,
        n_head=HEADS,
        n_positions=f.max_positions,
        multi_query=True,  # StarCoder's multi-query attention: one KV head
        bos_token_id=f.bos_token_id,
        eos_token_id=f.eos_token_id,
        pad_token_id=f.pad_token_id,
    )


def _codegen_config(f: TinyFamily) -> Any:
    from transformers import CodeGenConfig

    return CodeGenConfig(
        vocab_size=f.vocab_size,
        n_embd=HIDDEN,
        n_inner=INTERMEDIATE,
        n_layer=LAYERS,
        n_head=HEADS,
        rotary_dim=HIDDEN // HEADS,
        n_positions=f.max_positions,
        n_ctx=f.max_positions,
        bos_token_id=f.bos_token_id,
        eos_token_id=f.eos_token_id,
        pad_token_id=f.pad_token_id,
    )


# Ids are the real ones (see tests/fixtures/tokenizers/SOURCES.md). The eos is the *base*
# model's, since completion uses base checkpoints.
FAMILIES: dict[str, TinyFamily] = {
    f.name: f
    for f in (
        TinyFamily("qwen", "qwen", 151665, None, 151643, 151643, 32768, _qwen_config),
        TinyFamily("starcoder", "starcoder", 49152, 0, 0, None, 8192, _starcoder_config),
        TinyFamily(
            "deepseek", "deepseek", 32022, 32013, 32014, 32014, 16384, _llama_config(100_000.0)
        ),
        TinyFamily("codellama", "codellama", 32016, 1, 2, None, 16384, _llama_config(1e6)),
        TinyFamily("codegen", "codegen", 50295, 50256, 50256, None, 2048, _codegen_config),
    )
}


def build_tiny_model(family: str, out_dir: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """Write a tiny random-weight model directory for ``family`` and return its path.

    The directory holds config.json, generation_config.json, model.safetensors (fp32) and the
    family's real tokenizer files copied verbatim. Same ``seed``, same weights: the global torch
    RNG is forked, so calling this does not disturb the caller's random state.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    spec = FAMILIES[family]
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    config = spec.make_config(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=spec.bos_token_id,
        eos_token_id=spec.eos_token_id,
        pad_token_id=spec.pad_token_id if spec.pad_token_id is not None else spec.eos_token_id,
    )
    model.save_pretrained(out_dir, safe_serialization=True)

    for src in sorted((FIXTURES / spec.tokenizer_dir).iterdir()):
        if src.is_file() and src.name != "SOURCES.md":
            shutil.copyfile(src, out_dir / src.name)
    (out_dir / "lspilot-tiny.json").write_text(
        json.dumps({"family": family, "seed": seed}, indent=2) + "\n", encoding="utf-8"
    )
    return out_dir


_TOKENIZERS: dict[str, Any] = {}


def fixture_tokenizer(family: str) -> Any:
    """The real tokenizer of ``family`` from the fixtures, loaded once per test session through
    ``lspilot.daemon.families.load_tokenizer`` (the daemon's own loading path)."""
    if family not in _TOKENIZERS:
        from lspilot.daemon.families import load_tokenizer

        _TOKENIZERS[family] = load_tokenizer(FIXTURES / FAMILIES[family].tokenizer_dir)
    return _TOKENIZERS[family]


def fake_tokenizer(tokens: list[str], *, eos: str | None = None, bos: str | None = None) -> Any:
    """A word-level tokenizer whose vocabulary is ``tokens`` (plus ``<unk>`` and ``a``): enough to
    test FIM detection for families whose real tokenizer files we do not have (SantaCoder,
    CodeGemma, InCoder)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(dict.fromkeys(["<unk>", "a", *tokens]))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", eos_token=eos, bos_token=bos
    )

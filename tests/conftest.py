# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: a tiny real model, and a real daemon process serving it."""

from __future__ import annotations

import os

import pytest

# Triton kernels (the engine's fused decode step) run in Triton's interpreter, on CPU tensors.
# It must be set before triton is first imported, by any test, so here.
os.environ.setdefault("TRITON_INTERPRET", "1")

from tests.daemon_process import DaemonProcess


def untie_output_head(model_dir, seed: int = 1) -> None:
    """Give the tiny model its own random output head.

    With tied embeddings and random weights, greedy decoding just repeats the last prompt token
    (a FIM sentinel, which is a stop token), so every completion would be empty. A separate
    random head makes the model emit varied text with occasional newlines, which the end-to-end
    tests need to exercise streaming, stop rules and cancellation.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.config.tie_word_embeddings = False
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.5, generator=generator)
    model.lm_head = head
    model.save_pretrained(model_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from tests.tiny_models import build_tiny_model

    path = build_tiny_model("qwen", tmp_path_factory.mktemp("models") / "tiny-qwen")
    untie_output_head(path)
    return path


@pytest.fixture(scope="session")
def daemon(tiny_model_dir, tmp_path_factory):
    """A real ``lspilot daemon`` (transformers backend) serving the tiny model over a socket."""
    proc = DaemonProcess(tiny_model_dir, tmp_path_factory.mktemp("daemon")).start()
    yield proc
    proc.stop()

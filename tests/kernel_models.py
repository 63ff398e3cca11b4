# SPDX-License-Identifier: Apache-2.0
"""Tiny random decoders for the engine's kernel tests (no tokenizer: ids only), and
``generate``'s greedy tokens and a backend's stream to compare them with.

Head dim 32 (the kernels' smallest), and norms and biases away from their defaults so a kernel
that skipped one would show. Shared by the interpreter tests and the GPU-only ones.
"""

from __future__ import annotations

import torch
import transformers

VOCAB = 300


def tiny_decoder(arch: str):
    """``arch``: "qwen2", "llama" (linear rope scaling) or "gpt_bigcode" (multi-query)."""
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=192, num_hidden_layers=2)
    if arch == "qwen2":
        cfg = transformers.Qwen2Config(
            **common, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512
        )
        model = transformers.Qwen2ForCausalLM(cfg)
    elif arch == "llama":
        cfg = transformers.LlamaConfig(
            **common,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=512,
            rope_scaling={"type": "linear", "factor": 2.0},
        )
        model = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.GPTBigCodeConfig(
            vocab_size=VOCAB, n_embd=128, n_layer=2, n_head=4, multi_query=True, n_positions=512
        )
        model = transformers.GPTBigCodeForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(1.0 if p.shape[0] == 128 else 0.0, 0.3)
    model.config.bos_token_id = model.config.eos_token_id = None
    model.generation_config.bos_token_id = model.generation_config.eos_token_id = None
    return model.eval()


def greedy(model, ids: list[int], n: int) -> list[int]:
    """``model.generate``'s greedy continuation of ``ids``, exactly ``n`` tokens."""
    x = torch.tensor([ids], device=next(model.parameters()).device)
    with torch.no_grad():
        out = model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
            do_sample=False, pad_token_id=0,
        )  # fmt: skip
    return out[0, len(ids) :].tolist()


async def collect(be, seq):
    """Every token id of ``seq``'s stream from backend ``be``."""
    return [s.token_id async for s in be.generate(seq)]

# SPDX-License-Identifier: Apache-2.0
"""Choosing the next token from logits: constraint mask, greedy or temperature/top-p, logprobs."""

from __future__ import annotations

import torch

from .backends.base import SamplingParams, TokenStep


def apply_constraint(logits: torch.Tensor, allowed: list[int] | None) -> torch.Tensor:
    # logits: [V]
    if allowed is None:
        return logits
    mask = torch.full_like(logits, float("-inf"))
    index = torch.tensor(allowed, dtype=torch.long, device=logits.device)
    mask[index] = 0.0
    return logits + mask


def sample(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> TokenStep:
    """Pick one token from ``logits`` ([V], any float dtype) and report its log-probability."""
    logits = logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)
    if params.temperature <= 0.0:
        token = int(torch.argmax(logits))
    else:
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < params.top_p
            sorted_probs = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        token = int(torch.multinomial(probs, 1, generator=generator))
    top: tuple[tuple[int, float], ...] = ()
    if params.logprobs > 0:
        values, ids = torch.topk(logprobs, params.logprobs)
        top = tuple(zip(ids.tolist(), values.tolist(), strict=True))
    return TokenStep(token_id=token, logprob=float(logprobs[token]), top_logprobs=top)

# SPDX-License-Identifier: Apache-2.0
"""Choosing each row's next token from one step's logits, on the device, with one transfer back.

Greedy rows take the argmax; sampled rows use temperature and top-p; a token constraint (token
healing) masks the logits first. Log-probabilities are the model's own, from ``log_softmax`` of
the raw logits, before temperature or constraint: they say how sure the model was.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..backends.base import SamplingParams, TokenStep


@dataclass
class RowPick:
    params: SamplingParams
    allowed: list[int] | None = None  # token-healing constraint for this step, if any
    generator: torch.Generator | None = None

    @property
    def greedy(self) -> bool:
        """The argmax of the raw logits is this row's token (what the decode step picks)."""
        return not (self.allowed or self.params.temperature > 0 or self.params.logprobs)


def sample(logits: torch.Tensor, picks: list[RowPick]) -> list[TokenStep]:
    """logits: [R, V] float32, one row per pick, in order -> one TokenStep per row."""
    if all(p.greedy for p in picks):
        return [TokenStep(t) for t in logits.argmax(-1).tolist()]  # the common case: one sync
    constrained = any(p.allowed for p in picks)
    top_k = max(p.params.logprobs for p in picks)

    masked = logits
    if constrained:
        masked = logits.clone()
        for r, p in enumerate(picks):
            if p.allowed:
                keep = torch.tensor(p.allowed, device=logits.device, dtype=torch.long)
                row = torch.full_like(masked[r], float("-inf"))
                row[keep] = masked[r, keep]
                masked[r] = row
    tokens = masked.argmax(-1)  # [R]
    for r, p in enumerate(picks):
        if p.params.temperature > 0:
            tokens[r] = _sample_row(masked[r], p.params, p.generator)

    if not top_k:
        return [TokenStep(t) for t in tokens.tolist()]
    logp = torch.log_softmax(logits, dim=-1)
    chosen = logp.gather(1, tokens[:, None])[:, 0]
    top = logp.topk(top_k, dim=-1)
    ids, lps = tokens.tolist(), chosen.tolist()
    top_ids, top_vals = top.indices.tolist(), top.values.tolist()
    steps = []
    for r, p in enumerate(picks):
        k = p.params.logprobs
        if k:
            pairs = tuple(zip(top_ids[r][:k], top_vals[r][:k], strict=True))
            steps.append(TokenStep(ids[r], lps[r], pairs))
        else:
            steps.append(TokenStep(ids[r]))
    return steps


def _sample_row(row: torch.Tensor, params: SamplingParams, gen: torch.Generator | None):
    # row: [V] -> a 1-element tensor, left on the device
    probs = torch.softmax(row / params.temperature, dim=-1)
    if params.top_p < 1.0:
        p_sorted, idx = probs.sort(descending=True)
        cum = p_sorted.cumsum(0)
        # Keep the smallest set whose mass reaches top_p (the first token always stays).
        p_sorted = p_sorted.masked_fill(cum - p_sorted > params.top_p, 0.0)
        choice = torch.multinomial(p_sorted, 1, generator=gen)
        return idx[choice]
    return torch.multinomial(probs, 1, generator=gen)

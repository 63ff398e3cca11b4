# SPDX-License-Identifier: Apache-2.0
"""The plain transformers backend: one sequence at a time per step, any causal LM, CPU or CUDA.

Each decode step runs in a worker thread (``asyncio.to_thread``) so the event loop stays free,
and the loop awaits between steps: a cancelled request never starts another step. Steps of
concurrent sequences interleave through one lock, so several editors share the model fairly.
It is the reference the fast engine (``lspilot.daemon.engine``) is measured against.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator

import torch

from ..sampling import apply_constraint, sample
from .base import BackendInfo, Sequence, TokenStep

log = logging.getLogger(__name__)


class TransformersBackend:
    def __init__(self, model, *, device: str) -> None:
        self.model = model
        self.device = device
        self.info = BackendInfo(name="transformers", device=device, dtype=str(model.dtype))
        self._lock = asyncio.Lock()
        self._active = 0

    def active_sequences(self) -> int:
        return self._active

    async def close(self) -> None:
        pass

    async def generate(self, seq: Sequence) -> AsyncGenerator[TokenStep, None]:
        self._active += 1
        try:
            async for step in self._generate(seq):
                yield step
        finally:
            self._active -= 1

    async def _generate(self, seq: Sequence) -> AsyncGenerator[TokenStep, None]:
        from transformers import DynamicCache

        generator = None
        if seq.params.seed is not None:
            generator = torch.Generator().manual_seed(seq.params.seed)
        cache = DynamicCache()
        # input_ids: [1, S]
        input_ids = torch.tensor([seq.prompt_ids], dtype=torch.long, device=self.device)
        generated: list[int] = []
        started = time.perf_counter()
        for step_index in range(seq.params.max_new_tokens):
            if seq.cancelled:
                return
            async with self._lock:
                if seq.cancelled:
                    return
                try:
                    logits = await asyncio.to_thread(self._forward, input_ids, cache)
                except asyncio.CancelledError:
                    # The thread finishes the step it is in; count it, start no other.
                    seq.steps_after_cancel += 1
                    raise
                if seq.cancelled:
                    seq.steps_after_cancel += 1  # the step that was running when cancel came
            if step_index == 0:
                seq.prefill_ms = (time.perf_counter() - started) * 1000
            allowed = seq.constraint.allowed_ids(generated) if seq.constraint else None
            step = sample(apply_constraint(logits, allowed), seq.params, generator)
            generated.append(step.token_id)
            yield step
            if step.token_id in seq.params.stop_token_ids:
                return
            input_ids = torch.tensor([[step.token_id]], dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def _forward(self, input_ids: torch.Tensor, cache) -> torch.Tensor:
        out = self.model(input_ids=input_ids, past_key_values=cache, use_cache=True)
        # logits: [1, S, V] -> last position [V]
        return out.logits[0, -1]

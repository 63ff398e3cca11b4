# SPDX-License-Identifier: Apache-2.0
"""One completion request, from validated message to streamed chunks.

Steps: decide the stop policy, build the prompt from token ids inside the context budget, start
one backend sequence per choice, detokenize incrementally, apply the stop rules, and emit only
text that no rule can take back. Cancellation (the gRPC call cancelled, a ``Cancel`` message or
an expired deadline) flags the sequences and closes their streams, so the backend starts no
further step; the counters record what happened for ``lspilot status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from lspilot.protocol.messages import (
    CompleteChunk,
    CompleteRequest,
    FinishReason,
    Timings,
)

from . import stops
from .backends.base import Backend, SamplingParams, Sequence
from .loader import LoadedModel

log = logging.getLogger(__name__)

# Extra choices for an explicit request with temperature 0 are sampled at this temperature.
CHOICE_TEMPERATURE = 0.6


@dataclass
class Counters:
    requests_total: int = 0
    cancelled_total: int = 0
    errors_total: int = 0
    deadline_total: int = 0
    decode_steps_after_cancel_total: int = 0
    tokens_total: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass
class _Active:
    sequences: list[Sequence]
    task: asyncio.Task | None = None


class CompletionService:
    def __init__(self, model: LoadedModel, backend: Backend) -> None:
        self.model = model
        self.backend = backend
        self.counters = Counters()
        self._active: dict[str, _Active] = {}

    def cancel(self, request_id: str) -> bool:
        active = self._active.get(request_id)
        if active is None:
            return False
        for seq in active.sequences:
            seq.cancelled = True
        if active.task is not None:
            active.task.cancel()
        return True

    async def complete(self, req: CompleteRequest) -> AsyncIterator[CompleteChunk]:
        received = time.perf_counter()
        self.counters.requests_total += 1
        policy = stops.make_context(req.stop, req.prefix, req.suffix)
        prompt = self.model.build_prompt(
            req.prefix,
            req.suffix,
            req.snippets,
            req.max_new_tokens,
            path=_path_of(req.uri),
            heal=req.token_healing,
            comment=_LINE_COMMENT.get(req.language_id, "#"),
        )
        sequences = [self._sequence(req, prompt, i) for i in range(req.n)]
        active = _Active(sequences)
        self._active[req.request_id] = active
        queue: asyncio.Queue[CompleteChunk | None] = asyncio.Queue()
        deadline = received + req.deadline_ms / 1000 if req.deadline_ms else None
        runners = [
            _ChoiceRunner(self, req, seq, i, policy, queue, received, deadline, prompt)
            for i, seq in enumerate(sequences)
        ]
        tasks = [asyncio.create_task(r.run()) for r in runners]
        active.task = asyncio.current_task()
        log.info(
            "[%s] %d prompt tokens, %s, n=%d",
            req.request_id,
            len(prompt.ids),
            policy.policy.value,
            req.n,
        )
        finished = 0
        try:
            while finished < len(tasks):
                chunk = await queue.get()
                if chunk is None:
                    finished += 1
                    continue
                yield chunk
        except (asyncio.CancelledError, GeneratorExit):
            self.counters.cancelled_total += 1
            for s in sequences:
                s.cancelled = True
            raise
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self._active.pop(req.request_id, None)
            self.counters.decode_steps_after_cancel_total += sum(
                s.steps_after_cancel for s in sequences
            )

    def _sequence(self, req: CompleteRequest, prompt, index: int) -> Sequence:
        temperature = req.temperature
        if index > 0 and temperature == 0.0:
            temperature = CHOICE_TEMPERATURE
        params = SamplingParams(
            max_new_tokens=req.max_new_tokens,
            temperature=temperature,
            top_p=req.top_p if temperature > 0 else 1.0,
            logprobs=req.logprobs,
            seed=index if temperature > 0 else None,
            stop_token_ids=self.model.fim.stop_ids,
        )
        return Sequence(
            deadline=time.monotonic() + req.deadline_ms / 1000 if req.deadline_ms else None,
            request_id=f"{req.request_id}/{index}",
            prompt_ids=list(prompt.ids),
            params=params,
            cache_key=req.uri,
            constraint=prompt.constraint,  # stateless: it reads the sequence's own tokens
        )


# How snippets are marked as comments for models without a repo-level format.
_LINE_COMMENT = {
    **dict.fromkeys(
        (
            "c",
            "cpp",
            "csharp",
            "go",
            "java",
            "javascript",
            "javascriptreact",
            "typescript",
            "typescriptreact",
            "rust",
            "swift",
            "kotlin",
            "scala",
            "dart",
            "php",
            "zig",
        ),
        "//",
    ),
    **dict.fromkeys(("lua", "sql", "haskell", "elm"), "--"),
    **dict.fromkeys(("lisp", "clojure", "scheme", "elisp"), ";;"),
}


def _path_of(uri: str) -> str:
    """The file path shown to repo-level prompts: the URI without its scheme."""
    return uri.split("://", 1)[-1] if "://" in uri else uri


class _ChoiceRunner:
    """Streams one choice: tokens -> text -> stop rules -> chunks on the shared queue."""

    def __init__(self, service, req, seq, index, policy, queue, received, deadline, prompt):
        self.service: CompletionService = service
        self.req: CompleteRequest = req
        self.seq: Sequence = seq
        self.index = index
        self.policy: stops.StopContext = policy
        self.queue: asyncio.Queue = queue
        self.received = received
        self.deadline = deadline
        self.prompt = prompt
        self.first_token: float | None = None  # perf_counter() when the first token came

    async def run(self) -> None:
        try:
            reason, tokens = await self._stream()
        except asyncio.CancelledError:
            self.queue.put_nowait(None)
            raise
        except Exception as exc:  # reported to this client, the daemon keeps serving
            log.exception("[%s] generation failed", self.seq.request_id)
            self.service.counters.errors_total += 1
            self.queue.put_nowait(self._chunk("", 0, FinishReason.ERROR, error=str(exc)))
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(self._chunk("", tokens, reason, timings=self._timings()))
        self.queue.put_nowait(None)

    async def _stream(self) -> tuple[FinishReason, int]:
        detok = self.service.model.detokenizer(self.prompt.ids, self.prompt.removed_text)
        text = ""
        emitted = 0
        tokens = 0
        logprobs: list[float] = []
        gen = self.service.backend.generate(self.seq)
        reason = FinishReason.LENGTH
        try:
            async for step in gen:
                tokens += 1
                if tokens == 1:
                    self.first_token = time.perf_counter()
                if step.token_id in self.seq.params.stop_token_ids:
                    reason = FinishReason.STOP
                    break
                text += detok.push(step.token_id)
                if step.logprob is not None and self.req.logprobs:
                    logprobs.append(step.logprob)
                result = stops.scan(self.policy, text)
                end = result.cut if result.cut is not None else result.safe
                if end > emitted:
                    self.queue.put_nowait(
                        self._chunk(text[emitted:end], tokens, None, logprobs=tuple(logprobs))
                    )
                    logprobs = []
                    emitted = end
                if result.cut is not None:
                    reason = FinishReason.STOP
                    break
                if self.deadline is not None and time.perf_counter() > self.deadline:
                    self.service.counters.deadline_total += 1
                    reason = FinishReason.DEADLINE
                    break
            else:
                text += detok.flush()
        finally:
            self.seq.cancelled = True  # whatever ended us, the backend runs no further step
            await gen.aclose()
        self.service.counters.tokens_total += tokens
        if reason is not FinishReason.DEADLINE:
            final = stops.scan(self.policy, text, finished=True)
            end = final.cut if final.cut is not None else len(text)
            if end > emitted:
                self.queue.put_nowait(self._chunk(text[emitted:end], tokens, None))
        return reason, tokens

    def _timings(self) -> Timings:
        first = self.first_token
        return Timings(
            queued_ms=0.0,
            prefill_ms=self.seq.prefill_ms,
            first_token_ms=(first - self.received) * 1000 if first else 0.0,
            prompt_tokens=len(self.prompt.ids),
            cached_tokens=self.seq.cached_tokens,
        )

    def _chunk(self, text, tokens, reason, *, timings=None, error="", logprobs=()):
        return CompleteChunk(
            request_id=self.req.request_id,
            index=self.index,
            text=text,
            tokens=tokens,
            finish_reason=reason,
            timings=timings,
            error=error,
            logprobs=logprobs,
        )

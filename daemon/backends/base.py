# SPDX-License-Identifier: Apache-2.0
"""The backend interface: token ids in, token ids out, as an async stream.

The daemon owns tokenizer, FIM template and stop rules; a backend only runs the model. That keeps
backends small (transformers, the fast engine, Triton/FauxPilot) and lets every one of them
share the same prompt building, detokenization and cancellation accounting.

Cancellation contract: the consumer stops by closing the async iterator (``aclose``) or by the
task being cancelled. A backend must not start another decode step for that sequence afterwards,
and reports steps it ran after ``Sequence.cancelled`` was set in ``Sequence.steps_after_cancel``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    logprobs: int = 0  # top-K log-probabilities to return per token
    seed: int | None = None
    stop_token_ids: frozenset[int] = frozenset()


@dataclass
class Sequence:
    """One generation as the backend sees it. Mutable: the daemon flips ``cancelled``."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    # A key under which consecutive prompts of one document may share KV (e.g. the URI).
    cache_key: str = ""
    # Token healing: restricts the first tokens so they reproduce text cut from the prompt.
    constraint: TokenConstraint | None = None
    # time.monotonic() after which the backend stops the sequence by itself (None: no deadline).
    deadline: float | None = None
    cancelled: bool = False
    steps_after_cancel: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV was reused
    prefill_ms: float = 0.0


class TokenConstraint(Protocol):
    def allowed_ids(self, generated: list[int]) -> list[int] | None:
        """Token ids allowed next, given the ids generated so far; None once unconstrained."""
        ...


@dataclass(frozen=True)
class TokenStep:
    token_id: int
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class BackendInfo:
    name: str  # "transformers", "engine", "triton"
    device: str  # "cpu", "cuda:0", "triton:host:port"
    dtype: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    info: BackendInfo

    def generate(self, seq: Sequence) -> AsyncGenerator[TokenStep, None]:
        """Stream the sequence's new tokens; stop at max_new_tokens or a stop token id. An
        async generator: its ``aclose`` (the caller's cancel) frees the sequence's work."""
        ...

    def active_sequences(self) -> int: ...

    async def close(self) -> None: ...

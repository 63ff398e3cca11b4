# SPDX-License-Identifier: Apache-2.0
"""Typed messages of the lspilot gRPC service.

Every message is a frozen dataclass. The codec (``codec.py``) turns them into msgpack maps and
back, rejecting missing or mistyped fields by name and tolerating unknown ones, so a newer peer
can add optional fields without breaking an older one. Bump ``PROTOCOL_VERSION`` only for
changes an older peer cannot ignore.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

PROTOCOL_VERSION = 1

# Limits checked at the edge, so a runaway client cannot make the daemon allocate without bound.
MAX_TEXT_CHARS = 4_000_000
MAX_SNIPPETS = 32
MAX_NEW_TOKENS = 2048
MAX_CHOICES = 8


class StopPolicy(str, enum.Enum):
    """How far a completion may run: one line, a block, or the daemon's own choice."""

    SINGLE_LINE = "single_line"
    MULTI_LINE = "multi_line"
    AUTO = "auto"


class FinishReason(str, enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    DEADLINE = "deadline"
    ERROR = "error"


@dataclass(frozen=True)
class Snippet:
    """Extra context from another file (or another region of this one)."""

    path: str
    text: str


@dataclass(frozen=True)
class CompleteRequest:
    request_id: str
    client_id: str
    uri: str
    language_id: str
    prefix: str
    suffix: str
    snippets: tuple[Snippet, ...] = ()
    max_new_tokens: int = 64
    stop: StopPolicy = StopPolicy.AUTO
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    # Milliseconds the client will wait from sending; 0 means no deadline beyond gRPC's own.
    deadline_ms: int = 0
    # Top-K log-probabilities per generated token (0 = none); the roadmap's confidence gating.
    logprobs: int = 0
    # Back the prompt up to a clean token boundary and make generation reproduce the cut text.
    token_healing: bool = False


@dataclass(frozen=True)
class Timings:
    queued_ms: float = 0.0
    prefill_ms: float = 0.0
    first_token_ms: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True)
class CompleteChunk:
    """One step of a streamed completion. ``text`` is a delta for choice ``index``."""

    request_id: str
    index: int = 0
    text: str = ""
    tokens: int = 0
    finish_reason: FinishReason | None = None
    timings: Timings | None = None
    error: str = ""
    # Log-probability of each token in this delta, when the request asked for logprobs.
    logprobs: tuple[float, ...] = ()


@dataclass(frozen=True)
class CancelRequest:
    request_id: str


@dataclass(frozen=True)
class CancelReply:
    found: bool


@dataclass(frozen=True)
class InfoRequest:
    protocol_version: int
    client_id: str = ""


@dataclass(frozen=True)
class InfoReply:
    protocol_version: int
    model: str
    family: str
    fim: bool
    fim_format: str
    context_window: int
    device: str
    backend: str
    daemon_version: str = ""
    # Set while the model is still being pulled or loaded: the client shows it to the user.
    loading: str = ""


@dataclass(frozen=True)
class StatusRequest:
    pass


@dataclass(frozen=True)
class StatusReply:
    protocol_version: int
    model: str
    device: str
    backend: str
    uptime_s: float
    requests_total: int
    cancelled_total: int
    errors_total: int
    decode_steps_after_cancel_total: int
    active_sequences: int
    prefix_cache_hits: int = 0
    prefix_cache_misses: int = 0
    loading: str = ""
    pid: int = 0
    extra: dict[str, float] = field(default_factory=dict)

# SPDX-License-Identifier: Apache-2.0
"""The scheduler's knobs and its decisions that need no model: how a prefill step's token budget
is shared, in which order prompts get it, and how much of a slot's cached KV a new prompt reuses.

Pure functions of lists and numbers, unit-tested on their own (tests/unit/test_engine.py); the
``scheduler`` applies them at every step boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar


@dataclass
class EngineConfig:
    max_batch: int = 8  # slots: sequences decoded together
    max_len: int = 4096  # positions per slot (prompt + generated)
    # Prompt tokens each waiting sequence gets first in a prefill step while others decode; the
    # budget's rest then goes to the first prompts in order (``chunk_sizes``). With nobody
    # decoding a prompt goes in whole, up to the budget.
    prefill_chunk: int = 512
    prefill_token_budget: int = 8192  # prompt tokens per prefill step over all rows
    prefill_rows: int = 16
    cuda_graphs: bool = True  # only on CUDA
    decode_feed_max: int | None = None  # None: 4 with CUDA graphs, else 1
    min_graph_len: int = 256
    # Launch the next decode step before reading this one's tokens while the batch is steady
    # and greedy. None: on with CUDA graphs, where the host's share of a step is the largest.
    lookahead: bool | None = None
    # The same for the packed prefill: launch the next prefill step before reading this one's
    # greedy tokens (``Scheduler._prefill_step``). None: as ``lookahead``. Only while the rows
    # can ride (``ride_prefill``), since the next step takes them on their unread tokens.
    prefill_lookahead: bool | None = None
    # ... and only while the prompts still waiting fill the next step (``fills_step``): a prompt
    # arriving meanwhile could not join that step anyway, so launching it early delays nobody.
    # Otherwise that arrival waits one step more (docs/performance.md, runs 39-40).
    prefill_lookahead_only_full: bool = True
    # Prefill chunks packed into one forward, captured per token bucket (``packed``). None: on
    # with CUDA graphs where Triton imports; True: also elsewhere (the CPU only under Triton's
    # interpreter, which the tests use).
    packed_prefill: bool | None = None
    # While prompts wait, the decoding rows ride in the packed prefill step, each as a chunk of
    # its next token, and that iteration runs no decode step of its own (``_prefill_step``).
    ride_prefill: bool = True
    # Prompts with the fewest tokens left go first in a prefill step; one admitted to its slot
    # ``prompt_wait_max_s`` or more ago goes ahead of all those, oldest first
    # (``prefill_order``; time queued for a free slot does not count).
    shortest_first: bool = True
    prompt_wait_max_s: float = 0.5


def chunk_sizes(
    pending: list[int], *, chunk: int, budget: int, max_rows: int, fill: bool
) -> list[int]:
    """Prompt tokens each waiting sequence (in prefill order, ``prefill_order``) gets in one
    prefill step.

    First up to ``chunk`` each, so a long prompt does not hold back the ones behind it; then,
    with ``fill``, what is left of the ``budget`` goes to the first prompts' remaining tokens.
    The trade: a decoding stream's gap between tokens is bounded by the budget either way (16
    chunked rows fill it too), but a lone long prompt now takes one budget-sized step rather than
    many chunk-sized ones, which is fewer, longer gaps for the others and a far sooner first token
    for it (fewer fixed step costs). 64 clients of mixed traffic, runs 11 and 14 (this, the finer
    buckets and, for qwen only, PDL decode between them; docs/performance.md): completions/s
    87.3 -> 100.7, p95 first token 387 -> 366 ms, p95 gap 38.1 -> 39.0 ms (starcoder); 86.6 ->
    129.2, 333 -> 253, 30.7 -> 27.2 (qwen 0.5b). A lower ``prefill_token_budget`` shortens the
    gaps. The padded prefill pads every row to the longest, so it gets no fill.
    """
    sizes: list[int] = []
    for n in pending[:max_rows]:
        take = min(n, chunk, budget)
        if take <= 0:
            break
        sizes.append(take)
        budget -= take
    if fill:
        for i, n in enumerate(sizes):
            extra = min(pending[i] - n, budget)
            sizes[i] += extra
            budget -= extra
    return sizes


def fills_step(pending: list[int], *, budget: int, max_rows: int) -> bool:
    """Whether prompts with ``pending`` tokens left (in prefill order) fill the ``budget`` of a
    packed prefill step as ``chunk_sizes`` shares it with ``fill``: the first ``max_rows`` of
    them take the whole budget, so no prompt arriving now could get into that step."""
    return sum(pending[:max_rows]) >= budget


class Waiting(Protocol):
    pending: list[int]  # prompt tokens not yet in the cache
    t_admit: float  # time.monotonic() when it took its slot


W = TypeVar("W", bound=Waiting)


def prefill_order(waiting: list[W], now: float, max_wait_s: float) -> list[W]:
    """The waiting prompts, fewest pending tokens first; those admitted ``max_wait_s`` or more
    before ``now`` ahead of them, oldest first, so a long prompt under a stream of short ones
    still gets its turn. A step's chunks then go to short prompts first (``chunk_sizes``). 64
    clients on the same traffic, against arrival order (docs/performance.md, run 22): the p95
    first token over 64 x 16 requests 33 against 57 ms (qwen 0.5b), 68 against 108 (starcoder),
    as more of the 64-prompt start burst finishes early; the steady first tokens, the gaps and
    the burst's own p95 stay as they were, and the burst's longest prompts wait longer."""

    def key(r: W) -> tuple[bool, float]:
        late = now - r.t_admit >= max_wait_s
        return (not late, r.t_admit if late else len(r.pending))

    return sorted(waiting, key=key)


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists: how much of a slot's cached KV a
    new prompt keeps. Compares halves by slicing (C speed), not token by token."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo

# SPDX-License-Identifier: Apache-2.0
"""``EngineBackend``: the engine behind the daemon's Backend protocol.

The daemon loads the model (on CPU or CUDA) and hands it over; the backend owns a KV cache for
``max_batch`` sequences of up to ``max_len`` tokens and one worker thread that runs every step.
``generate`` is an async generator: closing it, or cancelling the task that iterates it, or
setting ``seq.cancelled``, or passing ``seq.deadline`` (an optional ``time.monotonic()`` value,
read with getattr) removes the sequence at the next step boundary.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import torch

from ..backends.base import BackendInfo, Sequence, TokenStep
from .model import EngineModel
from .policy import EngineConfig
from .scheduler import END, Request, Scheduler


class EngineBackend:
    def __init__(
        self,
        model,
        *,
        device: str,
        max_batch: int = 8,
        max_len: int = 4096,
        prefill_chunk: int = 512,
        prefill_token_budget: int = 8192,
        prefill_rows: int = 16,
        cuda_graphs: bool = True,
        compile: bool = False,
        compile_prefill: bool = False,
        fused: bool | None = None,
        fused_max_batch: int | None = None,
        decode_feed_max: int | None = None,
        lookahead: bool | None = None,
        prefill_lookahead: bool | None = None,
        prefill_lookahead_only_full: bool = True,
        packed_prefill: bool | None = None,
        ride_prefill: bool = True,
        shortest_first: bool = True,
        prompt_wait_max_s: float = 0.5,
    ) -> None:
        """``model``: a loaded transformers causal LM (llama, qwen2, qwen3, mistral or
        gpt_bigcode), already on ``device``. ``fused``: the Triton decode step (None: on CUDA
        where the architecture is supported; docs/performance.md has its measurements).
        ``fused_max_batch``: larger batches take the eager
        step (None: where that measured faster). ``compile``: torch.compile the eager decode step
        before capture, where the fused one does not run. ``lookahead``: launch a steady greedy
        batch's next step before reading this one's tokens (None: with CUDA graphs);
        ``prefill_lookahead`` the same for the packed prefill's steps (None: as ``lookahead``),
        only while the waiting prompts fill the next step with ``prefill_lookahead_only_full``.
        ``packed_prefill``: prompt chunks packed into one graph-captured forward (None: with CUDA
        graphs where Triton imports). ``ride_prefill``: while prompts wait, the decoding rows
        take their token in the packed prefill step instead of a decode step of their own.
        ``shortest_first``: prompts with the fewest tokens left are prefilled first; one that has
        held its slot for ``prompt_wait_max_s`` or more goes ahead of them."""
        model_device = next(model.parameters()).device
        if torch.device(device).type != model_device.type:
            raise ValueError(f"model is on {model_device}, backend asked for {device}")
        model.eval()
        self._em = EngineModel(
            model,
            max_len,
            compile=compile,
            compile_prefill=compile_prefill,
            fused=fused,
            fused_max_batch=fused_max_batch,
        )
        self.config = EngineConfig(
            max_batch=max_batch,
            max_len=max_len,
            prefill_chunk=prefill_chunk,
            prefill_token_budget=prefill_token_budget,
            prefill_rows=prefill_rows,
            cuda_graphs=cuda_graphs,
            decode_feed_max=decode_feed_max,
            lookahead=lookahead,
            prefill_lookahead=prefill_lookahead,
            prefill_lookahead_only_full=prefill_lookahead_only_full,
            packed_prefill=packed_prefill,
            ride_prefill=ride_prefill,
            shortest_first=shortest_first,
            prompt_wait_max_s=prompt_wait_max_s,
        )
        self._sched = Scheduler(self._em, self.config)
        self.info = BackendInfo(
            name="engine",
            device=str(model_device),
            dtype=str(self._em.dtype).removeprefix("torch."),
            extra={
                "max_batch": str(max_batch),
                "max_len": str(max_len),
                "cuda_graphs": str(self._sched.graphs is not None).lower(),
                "compiled": str(compile).lower(),
                "fused_decode": str(self._em.fused is not None).lower(),
                "fused_max_batch": str(self._em.fused_max_batch),
                "packed_prefill": str(self._sched.packed is not None).lower(),
                "kernel_launch": _kernel_launch(self._em),
                "kv_cache_mib": f"{self._sched.cache.nbytes / 2**20:.0f}",
            },
        )
        self._sched.start()

    async def generate(self, seq: Sequence) -> AsyncGenerator[TokenStep, None]:
        req = Request(
            seq,
            asyncio.get_running_loop(),
            asyncio.Queue(),
            deadline=getattr(seq, "deadline", None),
        )
        self._sched.submit(req)
        finished = False
        try:
            while True:
                item = await req.queue.get()
                if item is END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            if not finished:
                req.abandon()

    async def warmup(self, max_keys: int | None = None) -> int:
        """Capture the graphs now: decode (batch buckets x length buckets up to ``max_keys``)
        and packed prefill (token buckets). Returns how many."""
        return await asyncio.wrap_future(self._capture(max_keys))

    def warmup_blocking(self, max_keys: int | None = None) -> int:
        """``warmup`` for a thread without an event loop (the daemon's model-loading thread):
        Triton compiles and graph captures happen before the first request, not during it."""
        return self._capture(max_keys).result()

    def _capture(self, max_keys: int | None):
        import concurrent.futures

        sched, graphs = self._sched, self._sched.graphs
        if graphs is None:
            done: concurrent.futures.Future = concurrent.futures.Future()
            done.set_result(0)
            return done

        def capture() -> int:
            n = graphs.capture_all(max_keys)
            return n + (sched.packed.capture_all() if sched.packed is not None else 0)

        return sched.call(capture)

    def active_sequences(self) -> int:
        return self._sched.active_count()

    def stats(self) -> dict[str, float]:
        c = self._sched.counters
        out = {
            k: float(c[k])
            for k in (
                "requests_total",
                "completed_total",
                "cancelled_total",
                "prefix_cache_hits",
                "prefix_cache_misses",
                "cached_tokens_total",
                "prefill_steps_total",
                "prefill_tokens_total",
                "decode_steps_total",
                "decode_rows_total",
                "decode_steps_after_cancel_total",
                "decode_steps_lookahead_total",
                "prefill_steps_lookahead_total",
                "decode_rows_in_prefill_total",
                "decode_rows_fed_on_device_total",
                "packed_prefill_failures_total",
            )
        }
        out["active_sequences"] = float(self.active_sequences())
        out["cuda_graphs"] = float(len(self._sched.graphs.graphs) if self._sched.graphs else 0)
        packed = self._sched.packed
        out["prefill_graphs"] = float(len(packed.graphs) if packed and packed.graphs else 0)
        return out

    async def close(self) -> None:
        self._sched.stop()
        await asyncio.to_thread(self._sched.join)


def _kernel_launch(em) -> str:
    """How the fused decode kernels launch (``FusedDecode.pdl``, then any kernel launched
    otherwise), for the backend's info: "pdl-late", "serial", "serial, attention pdl-late"."""
    if em.fused is None:
        return "none"
    names = ("serial", "pdl-early", "pdl-late")
    others = [f"{op} {names[m]}" for op, m in em.fused.pdl_by_op.items()]
    return ", ".join([names[em.fused.pdl], *others])

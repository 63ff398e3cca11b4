# SPDX-License-Identifier: Apache-2.0
"""The prefill step packed: chunks of many sequences in one forward, one CUDA graph per size.

The eager prefill (``EngineModel.prefill``) pads its chunks into a [rows, longest] batch and
launches ~20 kernels per layer from Python; on the GPU machine that launch work alone measured
~36 ms per step for a 0.5B model whatever the length (docs/performance.md), which is most of a
cold first token and, under load, of everyone's wait. Here the chunks are packed end to end
into T tokens (T rounded up to a bucket: 64, 128, ..., 1024, 1536, 2048, 3072, ... up to the
step's token budget), the projections run over all T rows at once (cuBLAS through the HF
modules), and attention is ``chunk_attention``, which reads every chunk's cached prefix from the
KV cache through a block table. All shapes then depend on T alone, so each bucket's whole step
is captured once and replayed; what changes between steps (tokens, positions, slots, the block
table, which rows' logits to return) crosses in one copy into static buffers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import prefill_kernels as PK
from .chunk_attention import block_table, blocks_for, chunk_attention
from .graphs import IdsToHost, bucket_for, fine_buckets
from .model import EngineModel
from .weights import LayerWeights, kernel_support, layer_weights

log = logging.getLogger(__name__)


def packed_support(em: EngineModel) -> str | None:
    """None when the packed prefill can run this model, else why not."""
    d = em.shape.head_dim
    if d < 16 or d & (d - 1):
        return f"head_dim {d} is not a power of two >= 16"
    return None


@dataclass
class Fed:
    """Chunks whose one token is an earlier step's greedy pick, still on the device."""

    ids: torch.Tensor  # that step's ``PackedPrefill.pick`` ids, one per chunk of it
    rows: list[tuple[int, int]]  # (chunk index in this step, chunk index in that one)


class PackedPrefill:
    """``run(chunks)``: logits at the last token of each (slot, first position, tokens) chunk.

    ``max_tokens``: the most tokens of one step (the scheduler's budget); ``max_chunks``: the
    most chunks. ``graphs``: capture each bucket's step (CUDA); otherwise run it directly.
    """

    def __init__(self, em: EngineModel, max_tokens: int, max_chunks: int, graphs: bool) -> None:
        reason = packed_support(em)
        if reason is not None:
            raise ValueError(f"packed prefill cannot run this model: {reason}")
        self.em = em
        self.max_chunks = max_chunks
        self.buckets = fine_buckets(max_tokens, min(64, max_tokens))
        T = self.max_tokens = max_tokens
        # One static buffer: ids, pos, wpos, slots ([T] each) | block table [NB, 4] | out rows
        # | fed rows: where a chunk's token comes from the device, and from which earlier pick.
        self._table_at = 4 * T
        self._rows_at = self._table_at + 4 * blocks_for(T, max_chunks)
        self._fed_at = self._rows_at + max_chunks
        n = self._fed_at + 2 * max_chunks
        dev = em.device
        cuda = dev.type == "cuda"
        self._static = torch.zeros(n, dtype=torch.long, device=dev)
        self._host = torch.zeros(n, dtype=torch.long, pin_memory=cuda)
        self._host_view = self._host.numpy()
        self._uploaded = torch.cuda.Event() if cuda else None
        self._picks_out = IdsToHost(max_chunks, cuda)  # greedy picks on their way (``pick``)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] | None = (
            {} if graphs else None
        )
        self._pool = torch.cuda.graph_pool_handle() if graphs else None
        # The fast layer where the engine's kernels support the architecture; the HF modules
        # otherwise (qwen3's q/k norm, other activations).
        self.fast = kernel_support(em) is None
        self.bigcode = em.arch == "gpt_bigcode"
        self._gelu = em.layers[0].mlp.act if self.bigcode else None
        # Stacked now, not at the first step: stacking re-points the HF modules' weights at new
        # memory, which a decode graph captured before it would still read the old way.
        self.layers = layer_weights(em) if self.fast else []

    # -- the host side ------------------------------------------------------------------------

    def run(self, chunks: list[tuple[int, int, list[int]]], fed: Fed | None = None) -> torch.Tensor:
        """chunks: (slot, first position, tokens) each -> logits [len(chunks), V] float32.

        ``fed``: chunks of one token whose id is not on the host yet but in an earlier step's
        ``pick`` (the scheduler's prefill lookahead); their tokens here are placeholders.
        With graphs the logits are a view of the graph's output, overwritten by the next run:
        use them (as the scheduler's sampling and ``pick`` do, on the same stream) before
        calling again."""
        total = sum(len(t) for _, _, t in chunks)
        if not chunks or total > self.max_tokens or len(chunks) > self.max_chunks:
            raise ValueError(
                f"{len(chunks)} chunks of {total} tokens; the step takes 1..{self.max_chunks} "
                f"chunks of at most {self.max_tokens} tokens"
            )
        T = bucket_for(total, self.buckets)
        self._upload(chunks, T, fed)
        if self.graphs is None:
            logits = self._step(T)
        else:
            graph, logits = self.graphs.get(T) or self.capture(T)
            graph.replay()
        return logits[: len(chunks)]

    def pick(self, logits: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Each chunk's greedy id from ``run``'s logits, left on the device and started on its
        way to the host without waiting: (ids [chunks], ticket for ``read``)."""
        ids = logits.argmax(-1)
        return ids, self._picks_out.send(ids)

    def read(self, ticket: int, n: int) -> list[int]:
        """The ids of a ``pick`` of ``n`` chunks; waits for that step only."""
        return self._picks_out.read(ticket, n)

    def _upload(self, chunks, T: int, fed: Fed | None = None) -> None:
        M = self.max_tokens
        if self._uploaded is not None:
            self._uploaded.synchronize()  # the previous upload has left the pinned buffer
        h = self._host_view
        h[:] = 0
        h[2 * M : 3 * M] = self.em.kv.trash  # padding tokens write to the trash row
        row = 0
        starts = []
        for i, (slot, start, tokens) in enumerate(chunks):
            n = len(tokens)
            starts.append(row)
            h[row : row + n] = tokens
            h[M + row : M + row + n] = np.arange(start, start + n)
            h[2 * M + row : 2 * M + row + n] = h[M + row : M + row + n]
            h[3 * M + row : 3 * M + row + n] = slot
            h[self._rows_at + i] = row + n - 1
            row += n
        table = block_table([(s, p, len(t)) for s, p, t in chunks], self._blocks(T))
        h[self._table_at : self._table_at + len(table)] = table
        C = self.max_chunks
        for j, (chunk, src) in enumerate(fed.rows if fed else ()):
            h[self._fed_at + j] = starts[chunk]
            h[self._fed_at + C + j] = src
        self._static.copy_(self._host, non_blocking=True)
        if self._uploaded is not None:
            self._uploaded.record()
        if fed and fed.rows:  # the fed tokens, from the device, over the placeholders
            n, at = len(fed.rows), self._fed_at
            dst_rows, src_rows = self._static[at : at + n], self._static[at + C : at + C + n]
            self._static[:M].index_copy_(0, dst_rows, fed.ids.index_select(0, src_rows))

    def _blocks(self, T: int) -> int:
        """Rows of the block table a step of bucket ``T`` reads."""
        return blocks_for(T, self.max_chunks)

    # -- the device side (what a graph captures) ----------------------------------------------

    def _step(self, T: int) -> torch.Tensor:
        em, cache, M = self.em, self.em.kv, self.max_tokens
        s = self._static
        ids, pos, wpos, slots = (s[i * M : i * M + T][None] for i in range(4))  # [1, T] each
        nb = self._blocks(T)
        meta = s[self._table_at : self._table_at + 4 * nb].view(nb, 4)
        out_rows = s[self._rows_at : self._rows_at + self.max_chunks]  # not the fed rows after
        x = em._embed(ids, pos)  # [1, T, E]
        if self.fast:
            x = x[0]  # [T, E]
            for i, lw in enumerate(self.layers):
                x = self._fast_layer(i, lw, x, pos[0], wpos[0], slots[0], meta)
            h = x.index_select(0, out_rows)  # [chunks, E]
            return em.lm_head(em.final_norm(h)).float()
        rope = em._rope(pos)
        for i, layer in enumerate(em.layers):
            ln1, ln2, o_proj, mlp = em.layer_parts(layer)
            q, k, v = em._qkv(layer, ln1(x), rope)  # q: [1, H, T, D]; k, v: [1, Hkv, T, D]
            cache.write(i, slots, wpos, k, v)
            attn = chunk_attention(q[0].transpose(0, 1), cache.k[i], cache.v[i], meta, em.scaling)
            x = x + o_proj(attn[None])
            x = x + mlp(ln2(x))
        h = x[0].index_select(0, out_rows)  # [chunks, E]
        return em.lm_head(em.final_norm(h)).float()

    def _fast_layer(self, i, lw: LayerWeights, x, pos, wpos, slots, meta):
        """One decoder layer over x [T, E] on the stacked weights: one product for q/k/v and
        one for gate/up, the elementwise work in single passes (``prefill_kernels``), and the
        residual adds inside the output and down products (cuBLAS's beta = 1)."""
        em, sh, cache = self.em, self.em.shape, self.em.kv
        rope = {} if self.bigcode else {"cos": em.cos, "sin": em.sin}
        qkv = F.linear(self._norm(x, lw.ln1), lw.w_qkv, lw.b_qkv)
        q = PK.qkv_scatter(
            qkv, n_heads=sh.n_heads, n_kv=sh.n_kv_heads, head_dim=sh.head_dim,
            k_cache=cache.k[i], v_cache=cache.v[i], pos=pos, wpos=wpos, slots=slots, **rope,
        )  # fmt: skip
        attn = chunk_attention(q, cache.k[i], cache.v[i], meta, em.scaling)  # [T, H D]
        x = _add_linear(x, attn, lw.w_o, lw.b_o)
        up = F.linear(self._norm(x, lw.ln2), lw.w_up, lw.b_up)
        act = self._gelu(up) if self._gelu is not None else PK.silu_mul(up)
        return _add_linear(x, act, lw.w_down, lw.b_down)

    def _norm(self, x, norm):
        w, b, eps = norm
        if self.bigcode:
            return F.layer_norm(x, (x.shape[-1],), w, b, eps)
        return PK.rms_norm(x, w, eps)

    def capture(self, T: int):
        # Warm up (Triton compiles, cuBLAS picks kernels) on a side stream over the inputs as
        # uploaded, then capture. Inputs are the caller's real ones, so the warm-up's cache
        # writes are the same writes the replay makes.
        t_start = time.perf_counter()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side):
                self._step(T)
        finally:  # a warm-up that fails halfway still orders its cache writes before the rest
            torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            out = self._step(T)
        assert self.graphs is not None  # capture runs only with graphs on
        self.graphs[T] = (graph, out)
        log.info("captured prefill graph tokens=%d (%.2f s)", T, time.perf_counter() - t_start)
        return graph, out

    def capture_all(self) -> int:
        """Capture every bucket now (the daemon's warm-up), with padding inputs only."""
        if self.graphs is None:
            return 0
        for T in self.buckets:
            if T not in self.graphs:
                self._upload([], T)
                self.capture(T)
        return len(self.graphs)


def _add_linear(x, a, w, b):
    """x + a @ w.T (+ b): the add inside the product where there is no bias (rounded once, where
    HF rounds the product and then the sum)."""
    if b is None:
        return torch.addmm(x, a, w.t())
    return x + F.linear(a, w, b)

# SPDX-License-Identifier: Apache-2.0
"""Engine benchmark on a CUDA GPU, side by side with stock transformers in the same run.

Random weights of real architectures in bf16 (speed does not depend on the weights); every
generation is forced to its full length (no stop ids; ``min_new_tokens`` for ``generate``).
Per model it measures:

- decode ms/token at batch 1 (prompt 512): stock ``generate``, ``generate`` with a static cache
  (no compile), and the engine; the share of memory bandwidth that is (weight bytes read per
  token over time, against 4.3 TB/s measured on this machine's copy);
- greedy token match between engine and stock ``generate`` in bf16;
- time to first token at 512, 2k and 8k prompt tokens: stock, engine cold, engine after a
  one-token edit at the end of the prompt, and after a one-token edit 300 tokens before the end
  (a FIM prompt, where the suffix follows the cursor);
- 1, 8, 32, 64 concurrent clients of completion-like traffic (prompts 256-2047 tokens, 16-64 new
  tokens, 30% closed early after a random number of tokens): completions/s, p50/p95 time to
  first token, p95 inter-token gap, decode steps after cancel; against stock sequential
  ``generate`` on the same kind of requests, and transformers' ``generate_batch`` (continuous
  batching, paged attention) on 64 requests of 32 tokens.

Run on the GPU machine: ``python3 bench/engine.py --out $OUT`` (``--models`` to pick,
``--plot`` to draw the figure from JSON already written).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "cuda"
BANDWIDTH = 4.3e12  # bytes/s, device-to-device copy measured on the H200 (KINDS.md)


def save_figure(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def _import_lspilot():
    """Import lspilot.daemon from this checkout, installed or not (the GPU machine is bare)."""
    try:
        import lspilot.daemon.engine  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT))
        import lspilot

        lspilot.__path__.append(str(ROOT))  # lspilot.daemon -> ./daemon, as pyproject maps it


def model_configs():
    from transformers import GPTBigCodeConfig, LlamaConfig, Qwen2Config

    return {
        "starcoder-1b": GPTBigCodeConfig(
            vocab_size=49152,
            n_positions=8192,
            n_embd=2048,
            n_layer=24,
            n_head=16,
            n_inner=8192,
            multi_query=True,
            activation_function="gelu_pytorch_tanh",
        ),
        "qwen2.5-coder-0.5b": Qwen2Config(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
        ),
        "qwen2.5-coder-1.5b": Qwen2Config(
            vocab_size=151936,
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            rope_theta=1000000.0,
            tie_word_embeddings=True,  # as the released checkpoint
        ),
        "deepseek-coder-1.3b": LlamaConfig(
            vocab_size=32256,
            hidden_size=2048,
            intermediate_size=5504,
            num_hidden_layers=24,
            num_attention_heads=16,
            num_key_value_heads=16,
            max_position_embeddings=16384,
            rope_theta=100000.0,
            rope_scaling={"type": "linear", "factor": 4.0},
        ),
    }


def tiny_configs():
    from transformers import GPTBigCodeConfig, Qwen2Config

    return {
        "tiny-gpt_bigcode": GPTBigCodeConfig(
            vocab_size=1000, n_positions=8192, n_embd=64, n_layer=2, n_head=4, multi_query=True
        ),
        "tiny-qwen2": Qwen2Config(
            vocab_size=1000,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        ),
    }


def build(cfg):
    import torch
    from transformers import AutoModelForCausalLM

    cfg.bos_token_id = cfg.eos_token_id = cfg.pad_token_id = None
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = AutoModelForCausalLM.from_config(
            cfg, torch_dtype=torch.bfloat16, attn_implementation="sdpa"
        )
    return model.eval()


def kv_fitting_len(cfg, model, slots: int, max_len: int, budget_gib: float) -> int:
    """The longest power-of-two slot length (at most ``max_len``) whose KV cache for ``slots``
    slots fits ``budget_gib``."""
    if cfg.model_type == "gpt_bigcode":
        layers, kv, dim = (
            cfg.n_layer,
            1 if cfg.multi_query else cfg.n_head,
            cfg.n_embd // cfg.n_head,
        )
    else:
        layers, kv = cfg.num_hidden_layers, cfg.num_key_value_heads
        dim = cfg.hidden_size // cfg.num_attention_heads
    per_position = layers * 2 * kv * dim * next(model.parameters()).element_size()
    n = max_len
    while n > 1024 and slots * (n + 1) * per_position > budget_gib * 2**30:
        n //= 2
    return n


def weight_bytes(model) -> int:
    """Bytes a decode step must read: every weight, less an untied input embedding table."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    emb, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    if emb.data_ptr() != out.data_ptr():
        total -= emb.numel() * emb.element_size()
    return total


def now():
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def rand_prompt(rng, n, vocab):
    return [rng.randrange(10, vocab) for _ in range(n)]


# -- stock transformers ------------------------------------------------------------------------


def stock(model, prompt, n, **kw):
    import torch

    ids = torch.tensor([prompt], device=DEVICE)
    t0 = now()
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
            **kw,
        )
    return now() - t0, out[0, len(prompt) :].tolist()


def stock_decode_ms(model, prompt, n=65, reps=3, **kw):
    stock(model, prompt, n, **kw)  # warm-up
    full = statistics.median(stock(model, prompt, n, **kw)[0] for _ in range(reps))
    first = statistics.median(stock(model, prompt, 1, **kw)[0] for _ in range(reps))
    return (full - first) / (n - 1) * 1000, first * 1000


# -- the engine --------------------------------------------------------------------------------


async def engine_run(be, prompt, n, key="", cancel_after=None, rid="r"):
    from lspilot.daemon.backends.base import SamplingParams, Sequence

    seq = Sequence(rid, prompt, SamplingParams(max_new_tokens=n), cache_key=key)
    t0 = time.perf_counter()
    times, toks = [], []
    agen = be.generate(seq)
    async for st in agen:
        times.append(time.perf_counter())
        toks.append(st.token_id)
        if cancel_after is not None and len(toks) >= cancel_after:
            break
    await agen.aclose()
    return t0, times, toks, seq


def side_engine(model, work, *, warm: bool = False, **kw):
    """``work(be, run)`` on an engine of its own (``kw``: EngineBackend's options) with its own
    event loop (``run`` drives a coroutine to its end), closed afterwards; returns what it
    returns. ``warm``: capture the engine's graphs first."""
    from lspilot.daemon.engine import EngineBackend

    be = EngineBackend(model, device=DEVICE, **kw)
    loop = asyncio.new_event_loop()
    try:
        if warm:
            loop.run_until_complete(be.warmup())
        out = work(be, loop.run_until_complete)
        loop.run_until_complete(be.close())
        return out
    finally:
        loop.close()


async def engine_decode_ms(be, prompt, n=65, reps=3):
    await engine_run(be, prompt, n)
    runs = [await engine_run(be, prompt, n) for _ in range(reps)]
    per = [(r[1][-1] - r[1][0]) / (n - 1) * 1000 for r in runs]
    ttft = [(r[1][0] - r[0]) * 1000 for r in runs]
    return statistics.median(per), statistics.median(ttft), runs[-1][2], per


async def engine_ttft(be, rng, vocab, lengths, reps=3):
    out = {}
    for n in lengths:
        cold, edit_end, edit_fim, cached = [], [], [], []
        for i in range(reps + 1):
            p = rand_prompt(rng, n, vocab)
            key = f"doc-{n}-{i}"
            t0, times, _, s = await engine_run(be, p, 1, key=key)
            e1 = p[:-1] + [(p[-1] + 1) % vocab or 11]  # one token edited at the end
            t1, times1, _, s1 = await engine_run(be, e1, 1, key=key)
            e2 = list(e1)
            e2[-300] = (e2[-300] + 1) % vocab or 11  # one token edited, 300-token suffix after it
            t2, times2, _, s2 = await engine_run(be, e2, 1, key=key)
            if i == 0:
                continue  # warm-up for this length
            cold.append((times[0] - t0) * 1000)
            edit_end.append((times1[0] - t1) * 1000)
            edit_fim.append((times2[0] - t2) * 1000)
            cached.append((s1.cached_tokens, s2.cached_tokens))
        out[str(n)] = {
            "cold_ms": statistics.median(cold),
            "edit_end_ms": statistics.median(edit_end),
            "edit_300_before_end_ms": statistics.median(edit_fim),
            "cold_runs": cold,
            "edit_end_runs": edit_end,
            "edit_fim_runs": edit_fim,
            "cached_tokens": cached[-1],
        }
    return out


def traffic(rng, n_requests, vocab, max_prompt=2048):
    reqs = []
    for _ in range(n_requests):
        plen = rng.randrange(256, max_prompt)
        new = rng.randrange(16, 65)
        cancel = rng.randrange(1, new) if rng.random() < 0.3 else None
        reqs.append((rand_prompt(rng, plen, vocab), new, cancel))
    return reqs


async def engine_concurrency(be, rng, vocab, clients, per_client, tag=""):
    """``clients`` clients of ``per_client`` requests each; ``tag`` prefixes the documents'
    cache keys, so runs of the same traffic under different tags reuse no prefixes."""
    work = [traffic(rng, per_client, vocab) for _ in range(clients)]
    before = be.stats()
    ttfts, gaps, after_cancel, done = [], [], [], 0
    steady = []  # TTFTs of requests after each client's first: the burst of 64 arrivals left out
    first = []  # each client's first request: all arrive at once, cold
    tokens = 0

    async def client(ci):
        nonlocal done, tokens
        for ri, (p, n, cancel) in enumerate(work[ci]):
            t0, times, toks, seq = await engine_run(
                be, p, n, key=f"{tag}c{ci}r{ri}", cancel_after=cancel, rid=f"{ci}.{ri}"
            )
            if times:
                ttfts.append((times[0] - t0) * 1000)
                (steady if ri > 0 else first).append(ttfts[-1])
                gaps.extend((b - a) * 1000 for a, b in zip(times, times[1:], strict=False))
            tokens += len(toks)
            done += 1
            if cancel is not None:
                after_cancel.append(seq)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.perf_counter() - t0
    await asyncio.sleep(0.05)  # let the last cancels be reaped
    after = be.stats()
    return {
        "clients": clients,
        "requests": done,
        "wall_s": wall,
        "completions_per_s": done / wall,
        "tokens_per_s": tokens / wall,
        "ttft_p50_ms": pct(ttfts, 0.5),
        "ttft_p95_ms": pct(ttfts, 0.95),
        "ttft_p99_ms": pct(ttfts, 0.99),
        "ttft_max_ms": max(ttfts, default=0.0),
        "steady_ttft_p50_ms": pct(steady, 0.5),
        "steady_ttft_p95_ms": pct(steady, 0.95),
        "first_ttft_p50_ms": pct(first, 0.5),
        "first_ttft_p95_ms": pct(first, 0.95),
        "gap_p50_ms": pct(gaps, 0.5),
        "gap_p95_ms": pct(gaps, 0.95),
        "cancelled": len(after_cancel),
        "steps_after_cancel_max": max((s.steps_after_cancel for s in after_cancel), default=0),
        "steps_after_cancel_total": after["decode_steps_after_cancel_total"]
        - before["decode_steps_after_cancel_total"],
        "decode_rows_in_prefill": after.get("decode_rows_in_prefill_total", 0)
        - before.get("decode_rows_in_prefill_total", 0),
        "decode_steps": after["decode_steps_total"] - before["decode_steps_total"],
    }


def stock_sequential(model, rng, vocab, n_requests):
    reqs = traffic(rng, n_requests, vocab)
    t0 = time.perf_counter()
    ttfts = []
    for p, n, cancel in reqs:
        # generate cannot be cancelled: give it only the tokens the client would have taken.
        dt, _ = stock(model, p, cancel or n)
        ttfts.append(dt)
    wall = time.perf_counter() - t0
    return {"requests": n_requests, "wall_s": wall, "completions_per_s": n_requests / wall}


def generate_batch_run(model, rng, vocab, n=64, new=32):
    import torch
    from transformers import GenerationConfig

    prompts = [p for p, _, _ in traffic(rng, n, vocab)]
    gc_ = GenerationConfig(max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0)
    import logging

    errors = []

    class Catch(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.ERROR:
                errors.append(self.format(record)[-1500:])

    catch = Catch()
    catch.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("ContinuousBatchingLogger").addHandler(catch)
    prev = model.config._attn_implementation
    model.set_attn_implementation("paged|sdpa")
    try:
        # Not under inference_mode: its worker thread updates tensors made here in place.
        with torch.no_grad():
            model.generate_batch(inputs=prompts[:4], generation_config=gc_)  # warm-up
            t0 = now()
            out = model.generate_batch(inputs=prompts, generation_config=gc_)
            wall = now() - t0
        toks = sum(len(o.generated_tokens) for o in out.values())
    finally:
        model.set_attn_implementation(prev)
        logging.getLogger("ContinuousBatchingLogger").removeHandler(catch)
    return {
        "requests": n,
        "new_tokens": new,
        "wall_s": wall,
        "completions_per_s": n / wall,
        "generated_tokens": toks,
        "errors": errors[:3],
    }


def graph_replay_ms(be, shapes, reps=100):
    """Pure GPU time of one captured decode step per (batch, attended length), CUDA events."""

    graphs = be._sched.graphs
    if graphs is None:
        return {}
    out = {}
    for B, L in shapes:
        if B > graphs.batch_buckets[-1] or L > graphs.len_buckets[-1]:
            what = "max_len" if L > graphs.len_buckets[-1] else "max_batch"
            out[f"B{B}_L{L}"] = f"skipped: beyond {what}"
            continue
        B, L = graphs.shape_for(B, L)
        graph, _ = graphs.graphs.get((B, L)) or graphs.capture(B, L)
        # Every row attends L keys; writes go to the trash row, so no slot is disturbed.
        graphs.pos[:B].fill_(L - 1)
        graphs.wpos[:B].fill_(be._em.max_len)
        for _ in range(10):
            graph.replay()
        out[f"B{B}_L{L}"] = replay_ms(graph, reps)
        graphs.pos[:B].zero_()
    return out


def replay_ms(graph, reps: int, rounds: int = 5) -> float:
    """GPU ms per replay of a captured CUDA graph: ``rounds`` of ``reps`` back-to-back replays
    timed by CUDA events, the median round."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(rounds):
        start.record()
        for _ in range(reps):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / reps)
    return statistics.median(times)


def capture_graph(fn):
    """``fn`` captured in a CUDA graph after two uncaptured calls on a side stream (Triton
    compiles and tunes outside the capture) -> (graph, ``fn``'s output in the graph's memory)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        out = fn()
    return graph, out


def fused_step_ms(em, batches=(2, 8, 32, 64), L=1024, reps=50):
    """GPU time of one fused (Triton) decode step per batch, attending ``L`` keys: the step
    captured alone in a CUDA graph, whatever batch buckets the engine would dispatch to.
    Every row writes to the cache's trash row, so no slot is disturbed; the engine's graphs
    and their inputs are not used."""
    import torch

    if em.fused is None or em.device.type != "cuda":
        return {}
    slots = em.cache.k[0].shape[0]
    out = {}
    for B in batches:
        key = f"B{B}_L{L}"
        if B > slots or L > em.max_len:
            out[key] = f"skipped: beyond {'max_len' if L > em.max_len else 'max_batch'}"
            continue
        with torch.inference_mode():
            ids = torch.zeros(B, 1, dtype=torch.long, device=em.device)
            pos = torch.full((B, 1), L - 1, dtype=torch.long, device=em.device)
            wpos = torch.full((B, 1), em.max_len, dtype=torch.long, device=em.device)
            key_pos = em.key_pos(L)
            step = functools.partial(em.fused.decode, ids, pos, wpos, key_pos)
            graph, logits = capture_graph(step)
            try:
                graph.replay()  # warm
                torch.cuda.synchronize()
                times = []
                for _ in range(reps):
                    start = torch.cuda.Event(enable_timing=True)
                    end = torch.cuda.Event(enable_timing=True)
                    start.record()
                    graph.replay()
                    end.record()
                    end.synchronize()
                    times.append(start.elapsed_time(end))
                out[key] = statistics.median(times)
            finally:
                torch.cuda.synchronize()
                del graph, logits  # the graph's private memory pool goes with them
        del ids, pos, wpos, key_pos, step
        gc.collect()
        torch.cuda.empty_cache()
    return out


def fused_vs_eager(em, vocab, B=4, S=700, L=1024, steps=16):
    """The fused decode step against the eager one on the same cache, in the model's dtype:
    relative logit error per step and how often the greedy token agrees (chained greedily)."""
    import torch

    if em.fused is None:
        return {}
    g = torch.Generator(device=em.device).manual_seed(0)
    ids = torch.randint(10, vocab, (B, S), device=em.device, generator=g)
    pos = torch.arange(S, device=em.device)[None].expand(B, S).contiguous()
    with torch.inference_mode():
        last = torch.full((B,), S - 1, device=em.device)
        em.prefill(ids, pos, pos, torch.arange(B, device=em.device), em.key_pos(S), last, True)
        nid = torch.randint(10, vocab, (B, 1), device=em.device, generator=g)
        errs, agree = [], 0
        for t in range(steps):
            p = torch.full((B, 1), S + t, device=em.device)
            ref = em.decode(nid, p, p, em.key_pos(L))
            got = em.fused.decode(nid, p, p, em.key_pos(L))
            errs.append(((got - ref).norm() / ref.norm()).item())
            same = got.argmax(-1) == ref.argmax(-1)
            agree += int(same.sum())
            nid = ref.argmax(-1, keepdim=True)  # both follow the eager path's tokens
    return {"rel_err_median": statistics.median(errs), "rel_err_max": max(errs),
            "argmax_agree": agree / (B * steps)}  # fmt: skip


def _graph_us(fn, reps=20):
    """GPU time of ``fn`` in µs: ``reps`` calls captured in one CUDA graph, replays timed with
    events (host launch overhead excluded, as in the captured decode step)."""
    import torch

    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(7):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / reps)
    return statistics.median(times)


def kernel_times(em, B=2, L=1024, sweep=False):
    """Each fused kernel of one layer on the GPU alone (graph-replayed), with the bytes it must
    read: a per-kernel profile of the decode step without hardware counters. Launched as the
    fused step launches them (``FusedDecode.pdl``)."""
    from lspilot.daemon.engine import pdl

    if em.fused is None:
        return {}
    pdl.set_pdl_mode(em.fused.pdl)
    try:
        return _kernel_times(em, B, L, sweep)
    finally:
        pdl.set_pdl_mode(None)


def _kernel_times(em, B, L, sweep):
    import torch

    from lspilot.daemon.engine import decode_attention as A
    from lspilot.daemon.engine import kernels as K

    fd = em.fused
    lw, sh, cache = fd.layers[0], em.shape, em.cache
    dev = em.device
    E = lw.w_qkv.shape[1]
    x = torch.randn(B, E, device=dev, dtype=torch.float32)
    pos = torch.full((B,), L - 1, device=dev, dtype=torch.long)
    wpos = torch.full((B,), em.max_len, device=dev, dtype=torch.long)
    slots = em._arange[:B]  # row b is slot b, as FusedDecode.decode passes to _forward
    if slots.shape[0] != B:
        raise ValueError(f"batch {B} exceeds the engine's {slots.shape[0]} slots")
    cos, sin = (None, None) if fd.bigcode else (em.cos, em.sin)
    kc, vc = cache.k[0], cache.v[0]
    act = K.ACT_GELU_TANH if fd.bigcode else K.ACT_SILU_MUL

    def qkv(**kw):
        return K.qkv_rope(x, lw.w_qkv, lw.b_qkv, n_heads=sh.n_heads, n_kv=sh.n_kv_heads,
                          head_dim=sh.head_dim, k_cache=kc, v_cache=vc, pos=pos, wpos=wpos,
                          slots=slots, cos=cos, sin=sin, norm=fd.norm_kind, norm_w=lw.ln1[0],
                          norm_b=lw.ln1[1], eps=lw.ln1[2], **kw)  # fmt: skip

    def up(**kw):
        return K.linear(x, lw.w_up, lw.b_up, norm=fd.norm_kind, norm_w=lw.ln2[0],
                        norm_b=lw.ln2[1], eps=lw.ln2[2], act=act, **kw)  # fmt: skip

    q = qkv()
    attn = A.attention(q, kc, vc, pos, slots, L, em.scaling)
    h = up()
    kv_bytes = 2 * B * sh.n_kv_heads * L * sh.head_dim * kc.element_size()
    ops = {
        "qkv_rope": (qkv, lw.w_qkv),
        "attention": (lambda: A.attention(q, kc, vc, pos, slots, L, em.scaling), None),
        "o_proj": (lambda: K.linear(attn, lw.w_o, lw.b_o, accumulate=x), lw.w_o),
        "up_act": (up, lw.w_up),
        "down": (lambda: K.linear(h, lw.w_down, lw.b_down, accumulate=x), lw.w_down),
        "lm_head": (
            lambda: K.linear(
                x,
                fd.head,
                fd.head_bias,
                norm=fd.norm_kind,
                norm_w=fd.final[0],
                norm_b=fd.final[1],
                eps=fd.final[2],
                out_dtype=torch.float32,
            ),
            fd.head,
        ),  # fmt: skip
    }
    out = {"B": B, "L": L}
    for name, (fn, w) in ops.items():
        us = _graph_us(fn)
        nbytes = kv_bytes if w is None else w.numel() * w.element_size()
        out[name] = {"us": us, "bytes": nbytes, "tb_s": nbytes / us / 1e6}
    out["layer_us"] = sum(out[k]["us"] for k in ops if k != "lm_head")
    # Rotary pairs per q/k/v program: fewer means more programs reading the weight at once.
    qkv_bj = {}
    for bj in (4, 8, 16):
        for bk in (128, 512):
            t = K.Tiles.make(B, lw.w_qkv.shape[0], E, dot=False, block_n=16, block_k=bk,
                             block_j=bj)  # fmt: skip
            try:
                qkv_bj[f"fma|bj{bj}|bk{bk}"] = _graph_us(lambda t=t: qkv(tiles=t))
            except Exception as e:  # noqa: BLE001 - a tile that does not fit
                qkv_bj[f"fma|bj{bj}|bk{bk}"] = type(e).__name__
    out["qkv_block_j"] = qkv_bj

    if not sweep:
        return out
    # Tile sweep of every product at this batch: which tiles the heuristic should pick.
    Kt = K.Tiles
    shapes = {  # op: (N, K, splittable, call taking tiles)
        "qkv_rope": (lw.w_qkv.shape[0], E, False, lambda t: qkv(tiles=t)),
        "o_proj": (lw.w_o.shape[0], lw.w_o.shape[1], True,
                   lambda t: K.linear(attn, lw.w_o, lw.b_o, accumulate=x, tiles=t)),
        "up_act": (h.shape[1], E, False, lambda t: up(tiles=t)),
        "down": (lw.w_down.shape[0], lw.w_down.shape[1], True,
                 lambda t: K.linear(h, lw.w_down, lw.b_down, accumulate=x, tiles=t)),
        "lm_head": (fd.head.shape[0], E, False, lambda t: K.linear(
            x, fd.head, fd.head_bias, norm=fd.norm_kind, norm_w=fd.final[0],
            norm_b=fd.final[1], eps=fd.final[2], out_dtype=torch.float32, tiles=t)),
    }  # fmt: skip
    sweep = {}
    for op, (N, Kin, split_ok, call) in shapes.items():
        for dot in (False, True):
            for bn in (16,) if op == "qkv_rope" else (16, 32, 64) if not split_ok else (16, 32):
                for bk in (128, 256, 512):
                    for warps in (4, 8):
                        for programs in (264, 528) if split_ok else (0,):
                            t = Kt.make(B, N, Kin, dot=dot, block_n=bn, block_k=bk,
                                        num_warps=warps, programs=programs)  # fmt: skip
                            key = f"{op}|dot{int(dot)}|bn{bn}|bk{bk}|w{warps}|p{programs}"
                            try:
                                sweep[key] = _graph_us(lambda c=call, t=t: c(t))
                            except Exception as e:  # noqa: BLE001 - a tile that does not fit
                                sweep[key] = type(e).__name__
    out["sweep"] = sweep
    return out


def prefill_profile(be, lengths=(512, 2048, 8192), sweep_lengths=(2048, 8192)):
    """The packed prefill step alone: ms, tokens/s and TFLOP/s per token bucket, for one
    chunk from position 0 ("cold") and 16 chunks continuing after 1024 cached positions
    ("burst", what many editors arriving at once look like), with the fast layer and, side by
    side, through the HF modules (``PackedPrefill.fast``); then a tile sweep of its
    attention kernel on the same tables. Runs on the engine's thread and forgets every slot
    it wrote (their cached prefixes are garbage afterwards)."""
    import torch

    from lspilot.daemon.engine.chunk_attention import block_table, blocks_for, chunk_attention

    sched = be._sched
    packed, em = sched.packed, be._em
    if packed is None or em.device.type != "cuda":
        return {}
    sh = em.shape
    layer_params = sum(p.numel() for layer in em.layers for p in layer.parameters())
    H, D = sh.n_heads, sh.head_dim

    def workloads(T):
        out = {"burst": [(i, 1024, [11] * (T // 16)) for i in range(16)]}
        if T <= em.max_len:
            out["cold"] = [(0, 0, [11] * T)]
        return out

    def flops(chunks):
        n = sum(len(t) for _, _, t in chunks)
        keys = sum(sum(p + 1 for p in range(s, s + len(t))) for _, s, t in chunks)
        return 2 * layer_params * n + 4 * keys * H * D * sh.n_layers

    def timed(fn, reps=10):
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        return statistics.median(times)

    def steps():
        out = {}
        for T in lengths:
            for kind, chunks in workloads(T).items():
                ms = timed(lambda c=chunks: packed.run(c))
                out[f"{kind}_T{T}"] = {
                    "ms": ms,
                    "tokens_per_s": T / ms * 1000,
                    "tflop_s": flops(chunks) / ms / 1e9,
                }
        return out

    def work():
        res = {"fast_layer": packed.fast, "steps": steps(), "attention_sweep": {}}
        if packed.fast:  # side by side: the same steps through the HF modules, graphs of their own
            saved = packed.graphs
            packed.fast, packed.graphs = False, {} if saved is not None else None
            try:
                res["steps_hf_modules"] = steps()
            finally:
                packed.fast, packed.graphs = True, saved
                torch.cuda.empty_cache()
        kc, vc = em.cache.k[0], em.cache.v[0]

        def attend(q, meta, bm, bn, warps, stages):
            return lambda: chunk_attention(q, kc, vc, meta, em.scaling, block_m=bm, block_n=bn,
                                           num_warps=warps, num_stages=stages)  # fmt: skip

        for T in sweep_lengths:
            q = torch.randn(T, H, D, device=em.device, dtype=em.dtype)
            for kind, chunks in workloads(T).items():
                spans = [(s_, p, len(t)) for s_, p, t in chunks]
                for bm in (64, 128):
                    nb = blocks_for(T, len(chunks), bm)
                    meta = torch.tensor(block_table(spans, nb, bm), device=em.device).view(nb, 4)
                    tiles = itertools.product((32, 64, 128), (4, 8), (2, 3))
                    for bn, warps, stages in tiles:
                        key = f"{kind}_T{T}|bm{bm}|bn{bn}|w{warps}|s{stages}"
                        try:
                            fn = attend(q, meta, bm, bn, warps, stages)
                            res["attention_sweep"][key] = _graph_us(fn, reps=5)
                        except Exception as e:  # noqa: BLE001 - a tile that does not fit
                            res["attention_sweep"][key] = type(e).__name__
        for slot in sched.slots:  # every slot's KV may have been written: nothing is cached
            if slot.owner is None:
                slot.tokens, slot.key = [], ""
        return res

    return sched.call(work).result()


# -- one model ---------------------------------------------------------------------------------


def bench_model(name, cfg, args, deadline):
    import torch

    from lspilot.daemon.engine import EngineBackend

    rng = random.Random(0)
    res = {"model": name, "arch": cfg.model_type}
    t_build = time.perf_counter()
    model = build(cfg)
    res["build_s"] = time.perf_counter() - t_build
    vocab = cfg.vocab_size
    res["params"] = sum(p.numel() for p in model.parameters())
    wb = weight_bytes(model)
    res["weight_bytes"] = wb
    res["floor_ms_per_token"] = wb / BANDWIDTH * 1000
    p512 = rand_prompt(rng, 512, vocab)

    def section(key, fn):
        if args.only and not any(key.startswith(o) for o in args.only):
            return
        if any(key.startswith(o) for o in args.skip):
            return
        print(f"[{name}] {key} ...", flush=True)
        if time.perf_counter() > deadline:
            res[key] = {"skipped": "time budget"}
            return
        t = time.perf_counter()
        signal.alarm(args.section_timeout_s)  # a hung section fails alone, the run goes on
        try:
            res[key] = fn()
        except Exception as e:  # noqa: BLE001 - recorded, the run goes on
            import traceback

            res[key] = {"error": f"{type(e).__name__}: {e}", "tb": traceback.format_exc()[-2000:]}
            # The frames of a failed section hold engines and their KV caches: let them go.
            traceback.clear_frames(e.__traceback__)
        finally:
            signal.alarm(0)
        print(f"[{name}] {key}: {time.perf_counter() - t:.1f}s", flush=True)

    def decode_stock():
        ms, first = stock_decode_ms(model, p512)
        return {
            "ms_per_token": ms,
            "ttft_512_ms": first,
            "bw_share": res["floor_ms_per_token"] / ms,
        }

    def decode_static():
        ms, first = stock_decode_ms(
            model, p512, cache_implementation="static", disable_compile=True
        )
        return {
            "ms_per_token": ms,
            "ttft_512_ms": first,
            "bw_share": res["floor_ms_per_token"] / ms,
        }

    if not args.skip_stock:
        section("stock_decode", decode_stock)
        section("stock_static_decode", decode_static)
    if args.compile_static and name == args.compile_static:

        def decode_static_compiled():
            t = time.perf_counter()
            stock(model, p512, 65, cache_implementation="static")
            first_call = time.perf_counter() - t
            ms, first = stock_decode_ms(model, p512, cache_implementation="static")
            return {
                "ms_per_token": ms,
                "ttft_512_ms": first,
                "first_call_s": first_call,
                "bw_share": res["floor_ms_per_token"] / ms,
            }

        section("stock_static_compiled_decode", decode_static_compiled)

    def ttft_stock():
        out = {}
        for n in args.ttft_lengths:
            p = rand_prompt(rng, n, vocab)
            stock(model, p, 1)
            out[str(n)] = statistics.median(stock(model, p, 1)[0] * 1000 for _ in range(3))
        return out

    if not args.skip_stock:
        section("stock_ttft_ms", ttft_stock)

    replay_shapes = [(1, 512), (1, 4096), (8, 1024), (32, 1024), (64, 1024)]

    def eager_engine():
        # The engine before the Triton kernels (HF modules in CUDA graphs), same run.
        # A short cache: it needs 577 positions at most, and the run's main engine follows.
        def work(be0, run):
            ms, ttft, _, per = run(engine_decode_ms(be0, p512))
            return (
                ms,
                ttft,
                per,
                graph_replay_ms(be0, [(b, n) for b, n in replay_shapes if n <= 1024]),
            )

        ms, ttft, per, replay = side_engine(model, work, max_batch=64, max_len=1088, fused=False)
        return {"ms_per_token": ms, "ttft_512_ms": ttft, "runs": per, "graph_replay_ms": replay,
                "bw_share": res["floor_ms_per_token"] / ms}  # fmt: skip

    if not args.skip_eager:
        section("eager_engine_decode", eager_engine)
        gc.collect()

    def pdl_modes():
        # The kernels' launch modes side by side (pdl.pdl_mode): a small engine rebuilt per
        # mode, decode ms/token end to end, and the fused step alone in a graph.
        from lspilot.daemon.engine import pdl

        out = {}
        try:
            for mode, label in ((0, "serial"), (1, "pdl-early"), (2, "pdl-late")):
                pdl.set_pdl_mode(mode)

                def work(be2, run):
                    ms, _, _, per = run(engine_decode_ms(be2, p512))
                    return ms, per, fused_step_ms(be2._em, batches=(1, 2, 8, 64))

                ms, per, steps = side_engine(model, work, warm=True, max_batch=64, max_len=1088,
                                             packed_prefill=False)  # fmt: skip
                out[label] = {"ms_per_token": ms, "runs": per, "fused_step_ms": steps,
                              "bw_share": res["floor_ms_per_token"] / ms}  # fmt: skip
                gc.collect()
        finally:
            pdl.set_pdl_mode(None)
        return out

    if DEVICE == "cuda" and args.pdl_modes:
        section("pdl_modes", pdl_modes)

    # One engine for everything: 64 slots of 8k (the latency tests use one slot at a time),
    # fewer positions where that cache would not fit the budget (deepseek's 16 KV heads).
    max_len = kv_fitting_len(cfg, model, args.max_batch, args.max_len, args.kv_budget_gib)
    res["engine_max_len"] = max_len
    be = EngineBackend(
        model,
        device=DEVICE,
        max_batch=args.max_batch,
        max_len=max_len,
        compile=args.compile,
        fused=None if args.fused == "auto" else args.fused == "on",
        fused_max_batch=args.fused_max_batch or None,
        packed_prefill=None if args.packed == "auto" else args.packed == "on",
    )
    res["fused_decode"] = be.info.extra.get("fused_decode")
    res["packed_prefill"] = be.info.extra.get("packed_prefill")
    res["fused_max_batch"] = be.info.extra.get("fused_max_batch")
    res["kernel_launch"] = be.info.extra.get("kernel_launch")
    loop = asyncio.new_event_loop()
    try:

        def warm():
            t = time.perf_counter()
            n = loop.run_until_complete(be.warmup())
            return {
                "graphs": n,
                "seconds": time.perf_counter() - t,
                "kv_cache_mib": float(be.info.extra["kv_cache_mib"]),
            }

        section("engine_warmup", warm)

        def decode_engine():
            ms, ttft, toks, per = loop.run_until_complete(engine_decode_ms(be, p512))
            return {
                "ms_per_token": ms,
                "ttft_512_ms": ttft,
                "runs": per,
                "bw_share": res["floor_ms_per_token"] / ms,
            }

        section("engine_decode", decode_engine)
        section("engine_graph_replay_ms", lambda: graph_replay_ms(be, replay_shapes))
        section("fused_step_ms", lambda: fused_step_ms(be._em))
        section("kernel_times", lambda: kernel_times(be._em, sweep=name in args.sweep))
        if name in args.sweep:
            section("kernel_times_b8", lambda: kernel_times(be._em, B=8, sweep=True))
        section("fused_vs_eager", lambda: fused_vs_eager(be._em, vocab))

        def match():
            exact, prefix = 0, []
            for i in range(args.match_prompts):
                p = rand_prompt(random.Random(100 + i), 256, vocab)
                _, ref = stock(model, p, 64)
                _, _, got, _ = loop.run_until_complete(engine_run(be, p, 64))
                exact += got == ref
                k = next((j for j, (a, b) in enumerate(zip(got, ref, strict=True)) if a != b), 64)
                prefix.append(k / 64)
            return {
                "prompts": args.match_prompts,
                "new_tokens": 64,
                "exact_sequences": exact / args.match_prompts,
                "mean_prefix_agreement": statistics.mean(prefix),
            }

        section("bf16_match", match)
        section(
            "engine_ttft",
            lambda: loop.run_until_complete(
                engine_ttft(be, rng, vocab, [n for n in args.ttft_lengths if n < max_len])
            ),
        )
        res["engine_stats_latency"] = be.stats()
        conc = {}
        for clients in args.clients:
            per = max(2, args.min_requests // clients)
            section(
                f"_c{clients}",
                lambda c=clients, k=per: conc.__setitem__(
                    str(c), loop.run_until_complete(engine_concurrency(be, rng, vocab, c, k))
                ),
            )
        res["engine_concurrency"] = conc
        if args.sustained:
            # The most clients for longer: the start burst becomes a small share of requests.
            c = max(args.clients)
            section(
                "_sustained",
                lambda: res.__setitem__(
                    "engine_sustained",
                    loop.run_until_complete(engine_concurrency(be, rng, vocab, c, args.sustained)),
                ),
            )

        def policies(variants):
            # Scheduler policies against each other on the same traffic (the same seeds):
            # 64 clients x 2 (half the requests in the start burst) and x sustained.
            # ``variants``: (label, EngineConfig fields) each; the defaults come back after.
            out, cfg = {}, be._sched.cfg
            saved = {k: getattr(cfg, k) for _, kw in variants for k in kw}
            c = max(args.clients)
            try:
                for label, kw in variants:
                    for k, v in kw.items():
                        setattr(cfg, k, v)
                    for per in (2, args.sustained):
                        out[f"{label}_{c}x{per}"] = loop.run_until_complete(
                            engine_concurrency(be, random.Random(per), vocab, c, per, tag=label)
                        )
            finally:
                for k, v in saved.items():
                    setattr(cfg, k, v)
            return out

        riding = [("ride1", {"ride_prefill": True}), ("ride0", {"ride_prefill": False})]
        if args.riding:  # decoding rows in the prefill step (EngineConfig.ride_prefill) or not
            section("riding", lambda: policies(riding))
        order = [("sjf1", {"shortest_first": True}), ("sjf0", {"shortest_first": False})]
        if args.shortest_first:  # prompts with the fewest tokens left first, or arrival order
            section("shortest_first", lambda: policies(order))
        # The start burst: more prompts per prefill step, or longer first chunks of each.
        burst = [("rows16", {}), ("rows32", {"prefill_rows": 32}), ("rows64", {"prefill_rows": 64}),
                 ("chunk1024", {"prefill_chunk": 1024}),
                 ("rows32_chunk1024", {"prefill_rows": 32, "prefill_chunk": 1024})]  # fmt: skip
        if args.burst_policies:
            section("burst_policies", lambda: policies(burst))

        def same_as_generate_batch():
            reqs = [(p, 32, None) for p, _, _ in traffic(random.Random(7), 64, vocab)]

            async def go():
                t0 = time.perf_counter()
                await asyncio.gather(*(engine_run(be, p, n) for p, n, _ in reqs))
                return time.perf_counter() - t0

            wall = loop.run_until_complete(go())
            return {
                "requests": 64,
                "new_tokens": 32,
                "wall_s": wall,
                "completions_per_s": 64 / wall,
            }

        section("engine_64x32", same_as_generate_batch)
        res["engine_stats_throughput"] = be.stats()
        sweep_lengths = (2048, 8192) if args.attention_sweep else ()
        section("prefill_profile", lambda: prefill_profile(be, sweep_lengths=sweep_lengths))
        loop.run_until_complete(be.close())
        be = None
    finally:
        loop.close()
    gc.collect()

    def padded_prefill():
        # The same engine with the padded eager prefill (HF modules launched from Python) in
        # place of the packed, graph-captured one: first-token times at the same lengths, and
        # the 64-client traffic, side by side with engine_ttft and engine_concurrency above.
        def work(be1, run):
            lengths = [n for n in args.ttft_lengths if n < max_len]
            out = {"ttft": run(engine_ttft(be1, rng, vocab, lengths))}
            c = max(args.clients)
            per = max(2, args.min_requests // c)
            out["concurrency"] = {str(c): run(engine_concurrency(be1, rng, vocab, c, per))}
            return out

        return side_engine(model, work, warm=True, max_batch=args.max_batch, max_len=max_len,
                           packed_prefill=False)  # fmt: skip

    if not args.skip_eager:
        section("padded_prefill", padded_prefill)
    torch._dynamo.reset()  # compiled code holds the engine, and with it the KV cache
    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    if not args.skip_stock:
        section(
            "stock_sequential", lambda: stock_sequential(model, rng, vocab, args.stock_requests)
        )
    section("generate_batch_64x32", lambda: generate_batch_run(model, rng, vocab))
    if name in args.fp32_match:

        def match_fp32():
            m32 = model.float()
            exact, prefix = 0, []

            def work(be32, run):
                nonlocal exact
                for i in range(args.match_prompts):
                    p = rand_prompt(random.Random(100 + i), 256, vocab)
                    _, ref = stock(m32, p, 64)
                    _, _, got, _ = run(engine_run(be32, p, 64))
                    exact += got == ref
                    k = next(
                        (j for j, (a, b) in enumerate(zip(got, ref, strict=True)) if a != b), 64
                    )
                    prefix.append(k / 64)

            side_engine(m32, work, max_batch=2, max_len=512, compile=False)
            return {
                "prompts": args.match_prompts,
                "exact_sequences": exact / args.match_prompts,
                "mean_prefix_agreement": statistics.mean(prefix),
            }

        section("fp32_match", match_fp32)
    model = None  # drop the weights before the next model
    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
        res["cuda_allocated_after_gib"] = torch.cuda.memory_allocated() / 2**30  # leaks show
    return res


def environment():
    import torch
    import transformers

    env = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu",
    }
    try:
        env["nvidia_smi"] = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
    except Exception as e:  # noqa: BLE001
        env["nvidia_smi"] = str(e)
    return env


KERNELS = ("qkv_rope", "attention", "o_proj", "up_act", "down")


# Nsight Compute's parts of a layer (bench/profile_step.py) renamed for the figure.
PART_LABELS = {
    "qkv_rope": "q/k/v + rope",
    "attention_split": "attention",
    "attention_merge": "attention merge",
    "gate_up": "norm + gate/up",
}


def plot(results: list[dict], path: Path, profile: dict | None = None) -> None:
    """Left: decode ms/token at batch 1 per way of running the model, with the weight-read floor.
    Middle: where a fused decode step spends its time, per layer and kernel (``plot_layer``).
    Right (when measured): engine completions/s against concurrent clients, or at 64 clients
    against stock sequential ``generate``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conc = [r for r in results if len(r.get("engine_concurrency", {})) > 1]
    vs_stock = [
        r for r in results if "stock_sequential" in r and "64" in r.get("engine_concurrency", {})
    ]
    right = bool(conc or vs_stock)
    fig, axes = plt.subplots(1, 3 if right else 2, figsize=(17 if right else 12, 4.8))
    plot_decode(axes[0], results)
    plot_layer(axes[1], results, profile)
    if conc:
        plot_clients(axes[2], conc)
    elif vs_stock:
        plot_vs_stock(axes[2], vs_stock)
    fig.suptitle("lspilot engine on one NVIDIA H200 (bf16, random weights of real architectures)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_decode(ax, results: list[dict]) -> None:
    names = [r["model"] for r in results]
    x = range(len(names))
    bars = [
        ("stock_decode", "stock generate"),
        ("stock_static_decode", "generate, static cache"),
        ("eager_engine_decode", "engine, HF modules in CUDA graphs"),
        ("engine_decode", "engine, Triton kernels + lookahead"),
    ]
    bars = [(k, label) for k, label in bars if any(k in r for r in results)]
    w = 0.8 / max(1, len(bars))
    for i, (key, label) in enumerate(bars):
        vals = [r.get(key, {}).get("ms_per_token", 0) or 0 for r in results]
        ax.bar([j + (i - (len(bars) - 1) / 2) * w for j in x], vals, w, label=label)
    ax.scatter(list(x), [r["floor_ms_per_token"] for r in results], color="k", marker="_",
               s=500, label="weights / 4.3 TB/s", zorder=3)  # fmt: skip
    ax.set_xticks(list(x), names, rotation=12, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("decode ms/token, batch 1 (log)")
    ax.set_ylim(top=ax.get_ylim()[1] * 6)  # room above the bars for the legend
    ax.legend(fontsize=7, loc="upper left", ncol=2)


def plot_layer(ax, results: list[dict], profile: dict | None) -> None:
    """Per layer and kernel, against the weight bytes / 4.3 TB/s: from ``profile``
    (bench/profile_step.py's JSON: each kernel alone, cold caches) when given, else from the
    results' ``kernel_times`` (each kernel alone, its weights in L2)."""
    if profile:
        rows = {m: {k: (p["us"], p["dram_mb"]) for k, p in v["parts"].items()}
                for m, v in profile["models"].items()}  # fmt: skip
        xlabel = (f"µs per layer, each kernel alone, cold caches (Nsight Compute), batch "
                  f"{profile['batch']}, {profile['keys']} keys")  # fmt: skip
        per_step = ("embed", "head")  # once a step, not per layer
        parts = {k: PART_LABELS.get(k, k) for k in next(iter(rows.values())) if k not in per_step}
    else:
        rows = {
            r["model"]: {k: (t.get("us", 0.0), t.get("bytes", 0) / 1e6)
                         for k, t in r.get("kernel_times", {}).items()}
            for r in results
        }  # fmt: skip
        xlabel = "µs per layer, each kernel alone (its weights in L2: a lower bound), batch 2"
        parts = {k: k for k in KERNELS}
    for j, kt in enumerate(rows.values()):
        left = 0.0
        for i, (k, label) in enumerate(parts.items()):
            us = kt.get(k, (0.0, 0.0))[0]
            ax.barh(j, us, left=left, color=f"C{i}", label=label if j == 0 else None)
            left += us
        mb = sum(kt.get(k, (0.0, 0.0))[1] for k in parts if not k.startswith("attention"))
        ax.scatter([mb / 4.3], [j], color="k", marker="|", s=300, zorder=3,
                   label="weight bytes / 4.3 TB/s" if j == 0 else None)  # fmt: skip
    ax.set_yticks(list(range(len(rows))), list(rows), fontsize=8)
    ax.set_xlabel(xlabel, fontsize=8)
    widest = max((sum(kt.get(k, (0.0, 0.0))[0] for k in parts) for kt in rows.values()),
                 default=0.0)  # fmt: skip
    ax.set_xlim(0, widest * 1.8 or 1)  # room on the right for the legend, clear of the bars
    ax.legend(fontsize=7, loc="center right")


def plot_clients(ax, conc: list[dict]) -> None:
    for r in conc:
        pts = sorted(int(k) for k in r["engine_concurrency"])
        ax.plot(pts, [r["engine_concurrency"][str(k)]["completions_per_s"] for k in pts],
                marker="o", label=r["model"])  # fmt: skip
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("engine completions/s")
    ax.set_xscale("log", base=2)
    ax.legend(fontsize=8)


def plot_vs_stock(ax, results: list[dict]) -> None:
    """Completions/s of stock sequential ``generate`` against the engine's 64 clients (2
    requests each, half of them the start burst; and 16 each where measured), log scale."""
    series = [("stock sequential generate", lambda r: r["stock_sequential"]),
              ("engine, 64 clients x 2", lambda r: r["engine_concurrency"]["64"]),
              ("engine, 64 clients x 16", lambda r: r.get("engine_sustained"))]  # fmt: skip
    x = range(len(results))
    w = 0.8 / len(series)
    for i, (label, get) in enumerate(series):
        vals = [(get(r) or {}).get("completions_per_s", 0) for r in results]
        ax.bar([j + (i - (len(series) - 1) / 2) * w for j in x], vals, w, label=label)
    for j, r in enumerate(results):
        engine = (r.get("engine_sustained") or r["engine_concurrency"]["64"])["completions_per_s"]
        stock = r["stock_sequential"].get("completions_per_s")  # absent: it ran out of time
        if stock:
            ax.annotate(f"{engine / stock:.0f}x", (j + w, engine), ha="center", va="bottom",
                        fontsize=8)  # fmt: skip
    ax.set_xticks(list(x), [r["model"] for r in results], rotation=12, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("completions/s (log)")
    ax.set_ylim(top=ax.get_ylim()[1] * 4)
    ax.legend(fontsize=7, loc="upper left")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "bench/out"))
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--clients", nargs="*", type=int, default=[1, 8, 32, 64])
    ap.add_argument("--min-requests", type=int, default=16, help="per concurrency level")
    ap.add_argument("--stock-requests", type=int, default=6)
    ap.add_argument("--sustained", type=int, default=16, help="requests per client, most clients")
    ap.add_argument("--match-prompts", type=int, default=8)
    ap.add_argument("--compile-static", default="", help="model to also time compiled static")
    ap.add_argument("--budget-s", type=float, default=520)
    ap.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--layers", type=int, default=0, help="override the number of layers")
    ap.add_argument("--only", nargs="*", default=[], help="section name prefixes to run")
    ap.add_argument("--skip", nargs="*", default=[], help="section name prefixes to leave out")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=8192)
    ap.add_argument("--kv-budget-gib", type=float, default=40.0, help="main engine's KV cache")
    ap.add_argument("--ttft-lengths", nargs="*", type=int, default=[512, 2048, 4096, 8000])
    ap.add_argument("--skip-stock", action="store_true", help="engine sections only")
    ap.add_argument("--skip-eager", action="store_true", help="no eager-engine comparison")
    ap.add_argument("--pdl-modes", action="store_true", help="decode per kernel launch mode")
    ap.add_argument("--riding", action="store_true", help="64 clients, riding on and off")
    ap.add_argument(
        "--shortest-first", action="store_true", help="64 clients, shortest prompt first or not"
    )
    ap.add_argument("--burst-policies", action="store_true", help="64 clients, prefill rows/chunk")
    ap.add_argument("--fused", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--packed", choices=["auto", "on", "off"], default="auto", help="prefill")
    ap.add_argument("--fused-max-batch", type=int, default=0, help="larger: eager (0: auto)")
    ap.add_argument("--sweep", nargs="*", default=[], help="models to sweep kernel tiles for")
    ap.add_argument("--attention-sweep", action="store_true", help="prefill attention tiles")
    ap.add_argument("--fp32-match", nargs="*", default=[], help="models to also match in fp32")
    ap.add_argument("--section-timeout-s", type=int, default=120)
    ap.add_argument("--tiny", action="store_true", help="smoke test: tiny models on the CPU")
    ap.add_argument("--plot", action="store_true", help="only draw the figure from --out JSON")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.plot:
        results = [json.loads(p.read_text()) for p in sorted(out.glob("engine_*.json"))]
        prof = out / "profile_step.json"  # bench/profile_step.py's, for the middle panel
        profile = json.loads(prof.read_text()) if prof.exists() else None
        plot([r for r in results if "model" in r], out / "performance.png", profile)
        return
    _import_lspilot()
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("lspilot").setLevel(logging.INFO)

    def on_alarm(*_):
        raise TimeoutError("section timed out")

    signal.signal(signal.SIGALRM, on_alarm)
    if args.tiny:
        global DEVICE
        DEVICE = "cpu"
    deadline = time.perf_counter() + args.budget_s
    (out / "env.json").write_text(json.dumps(environment(), indent=1))
    configs = tiny_configs() if args.tiny else model_configs()
    print(json.dumps(environment()), flush=True)
    results = []
    for name in args.models or list(configs):
        cfg = configs[name]
        if args.layers:  # a shallower model of the same shapes, e.g. to time compile per layer
            key = "n_layer" if cfg.model_type == "gpt_bigcode" else "num_hidden_layers"
            setattr(cfg, key, args.layers)
        res = bench_model(name, cfg, args, deadline)
        res["layers_override"] = args.layers
        results.append(res)
        tag = f"-{args.layers}l" if args.layers else ""
        tag += "-compiled" if args.compile else ""
        (out / f"engine_{name}{tag}.json").write_text(json.dumps(res, indent=1))
        summary(res)
    try:
        if not args.no_plot:
            plot(results, out / "performance.png")
    except Exception as e:  # noqa: BLE001
        print("plot failed:", e)


def print_kernels(kt: dict) -> None:
    times = {k: v for k, v in kt.items() if isinstance(v, dict) and "us" in v}
    if not times:
        return
    print(
        f"   kernels B={kt['B']}",
        {k: (round(v["us"], 1), round(v["tb_s"], 2)) for k, v in times.items()},
    )
    sweep = {k: v for k, v in kt.get("sweep", {}).items() if isinstance(v, float)}
    for op in ("qkv_rope", "o_proj", "up_act", "down", "lm_head"):
        best = sorted((v, k) for k, v in sweep.items() if k.startswith(op + "|"))[:3]
        if best:
            print(f"   sweep {op}", [(k.split("|", 1)[1], round(v, 1)) for v, k in best])


def summary(r: dict) -> None:
    def g(k, f="ms_per_token"):
        v = r.get(k, {})
        return f"{v.get(f):.2f}" if isinstance(v.get(f), float) else str(v)[:60]

    print(
        f"== {r['model']}: floor {r['floor_ms_per_token']:.3f} ms/tok | stock {g('stock_decode')}"
        f" | static {g('stock_static_decode')} | engine {g('engine_decode')}",
        flush=True,
    )
    print(f"   eager engine {g('eager_engine_decode')} | fused {r.get('fused_decode')}")
    print("   fused vs eager", r.get("fused_vs_eager"))
    print("   replay fused", r.get("engine_graph_replay_ms"))
    print("   fused step (own graph)", r.get("fused_step_ms"), "| launch", r.get("kernel_launch"))
    for label, v in (r.get("pdl_modes") or {}).items():
        if isinstance(v, dict) and "ms_per_token" in v:
            print(f"   launch {label}: {v['ms_per_token']:.3f} ms/tok step {v['fused_step_ms']}")
        else:
            print(f"   launch {label}: {str(v)[:300]}")
    print("   replay eager", r.get("eager_engine_decode", {}).get("graph_replay_ms"))
    for kname in ("kernel_times", "kernel_times_b8"):
        print_kernels(r.get(kname, {}))
    print(
        "   ttft",
        json.dumps(
            {
                k: {kk: vv for kk, vv in v.items() if not kk.endswith("runs")}
                if isinstance(v, dict)
                else v
                for k, v in r.get("engine_ttft", {}).items()
            },
            default=str,
        )[:700],
    )
    print("   stock ttft", r.get("stock_ttft_ms"), "| match", r.get("bf16_match"))
    for c, v in r.get("engine_concurrency", {}).items():
        print(
            f"   c={c}: {v['completions_per_s']:.1f}/s ttft p50 {v['ttft_p50_ms']:.1f} "
            f"p95 {v['ttft_p95_ms']:.1f} steady p95 {v.get('steady_ttft_p95_ms')} "
            f"first p95 {v.get('first_ttft_p95_ms')} "
            f"gap p95 {v['gap_p95_ms']:.2f} "
            f"after-cancel max {v['steps_after_cancel_max']}"
        )
    v = r.get("engine_sustained")
    if isinstance(v, dict) and "requests" in v:
        print(
            f"   sustained c={v['clients']} x{v['requests']}: {v['completions_per_s']:.1f}/s "
            f"ttft p50 {v['ttft_p50_ms']:.1f} p95 {v['ttft_p95_ms']:.1f} first p95 "
            f"{v['first_ttft_p95_ms']:.1f} steady p95 {v['steady_ttft_p95_ms']:.1f} "
            f"gap p95 {v['gap_p95_ms']:.2f} after-cancel max {v['steps_after_cancel_max']}"
        )
    for section_name in ("riding", "shortest_first"):
        for label, v in (r.get(section_name) or {}).items():
            if isinstance(v, dict) and "requests" in v:
                print(
                    f"   {label}: {v['completions_per_s']:.1f}/s ttft p50 {v['ttft_p50_ms']:.1f}"
                    f" p95 {v['ttft_p95_ms']:.1f} max {v.get('ttft_max_ms', 0):.1f}"
                    f" gap p95 {v['gap_p95_ms']:.2f}"
                )
    prof = r.get("prefill_profile", {})
    for k, v in (prof.get("steps") or {}).items():
        print(f"   packed step {k}: {v['ms']:.2f} ms {v['tflop_s']:.0f} TFLOP/s")
    sw = {k: v for k, v in (prof.get("attention_sweep") or {}).items() if isinstance(v, float)}
    for kind in sorted({k.split("|")[0] for k in sw}):
        best = sorted((v, k) for k, v in sw.items() if k.startswith(kind + "|"))[:3]
        now = {c: sw.get(f"{kind}|bm64|{c}|w4|s3") for c in ("bn64", "bn32")}  # the defaults
        print(
            f"   attention {kind}: now {now} best",
            [(k.split("|", 1)[1], round(v, 1)) for v, k in best],
        )
    qbj = r.get("kernel_times", {}).get("qkv_block_j")
    if qbj:
        print("   qkv block_j", qbj)
    pad = r.get("padded_prefill", {})
    for k, v in (pad.get("ttft") or {}).items():
        print(f"   padded prefill ttft {k}", {kk: vv for kk, vv in v.items() if "runs" not in kk})
    for c, v in (pad.get("concurrency") or {}).items():
        print(
            f"   padded prefill c={c}: {v['completions_per_s']:.1f}/s ttft p50 "
            f"{v['ttft_p50_ms']:.1f} p95 {v['ttft_p95_ms']:.1f} gap p95 {v['gap_p95_ms']:.2f}"
        )
    if "error" in pad:
        print("   padded prefill", str(pad)[:300])
    print(
        "   stock seq",
        r.get("stock_sequential"),
        "| gen_batch",
        {k: v for k, v in r.get("generate_batch_64x32", {}).items() if k != "tb"},
    )


if __name__ == "__main__":
    main()

# SPDX-License-Identifier: Apache-2.0
"""The packed prefill step per kernel (GPU): where a full 8192-token step's time goes.

The start burst's first tokens wait on prefill throughput (docs/performance.md): this splits
one packed prefill step (``PackedPrefill._step``, run eagerly so the profiler sees each kernel)
into its kernels, grouped by part (the products, chunk attention, the norms, the activation,
rope and the cache write, the rest), with their GPU time, share of the step, and, for the
products, the rate they reach against their FLOPs. Two workloads at 8192 tokens: 16 prompts'
first 512-token chunks ("burst_cold", what the start burst's steps hold) and 16 chunks after
1024 cached positions ("burst_warm", ``bench/engine.py``'s prefill_profile).

``python3 bench/prefill_parts.py --out $OUT [--models ...]``: a table per model and workload,
``prefill_parts.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine as bench  # noqa: E402  (bench/engine.py: model configs, builder)

# Kernel name fragments -> part, first match wins.
PARTS = [
    ("chunk_attention", ("chunk_attn", "_attend")),
    ("rms_norm", ("rms_norm",)),
    ("layer_norm", ("layer_norm", "LayerNorm")),
    ("silu_mul", ("silu_mul",)),
    ("gelu", ("gelu", "GeluCUDA")),
    ("qkv_scatter", ("qkv_scatter",)),
    ("products", ("gemm", "xmma", "cutlass", "nvjet", "sm90", "cublas", "Gemm")),
    ("zeros/copies", ("fill", "copy", "Memset", "memcpy", "Memcpy")),
]


def part_of(name: str) -> str:
    for part, keys in PARTS:
        if any(k in name for k in keys):
            return part
    return "other"


def workloads(T: int, vocab: int) -> dict[str, list]:
    # Random tokens: one repeated id makes every row of the products alike, which can run the
    # matrix units faster than real text would (run 37 used one id).
    rng = random.Random(0)
    n = T // 16
    return {
        kind: [(i, start, [rng.randrange(vocab) for _ in range(n)]) for i in range(16)]
        for kind, start in (("burst_cold", 0), ("burst_warm", 1024))
    }


def kernel_times(fn, reps: int) -> dict[str, list[float]]:
    """Kernel name -> GPU µs per run (summed over its launches), over ``reps`` profiled runs."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    per_run: list[dict[str, float]] = []
    for _ in range(reps):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        sums: dict[str, float] = {}
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                us = e.time_range.end - e.time_range.start
                sums[e.name] = sums.get(e.name, 0.0) + us
        per_run.append(sums)
    names = {k for r in per_run for k in r}
    return {k: [r.get(k, 0.0) for r in per_run] for k in names}


def graph_ms(fn, reps: int = 10) -> float:
    graph, _ = bench.capture_graph(fn)
    graph.replay()
    return bench.replay_ms(graph, reps)


def run_model(name: str, cfg, T: int, reps: int) -> dict:
    import torch

    from lspilot.daemon.engine.model import EngineModel
    from lspilot.daemon.engine.packed import PackedPrefill

    model = bench.build(cfg)
    em = EngineModel(model, max_len=4096)
    em.allocate(16)
    packed = PackedPrefill(em, T, 16, graphs=False)
    layer_params = sum(p.numel() for layer in em.layers for p in layer.parameters())
    out = {"model": name, "tokens": T, "fast_layer": packed.fast}
    with torch.inference_mode():
        for kind, chunks in workloads(T, cfg.vocab_size).items():
            packed._upload(chunks, T)
            times = kernel_times(lambda: packed._step(T), reps)
            med = {k: statistics.median(v) for k, v in times.items()}
            total = sum(med.values())
            parts: dict[str, float] = {}
            for k, us in med.items():
                parts[part_of(k)] = parts.get(part_of(k), 0.0) + us
            step_ms = graph_ms(lambda: packed._step(T))
            prod_tflop = 2 * layer_params * T / 1e12
            out[kind] = {
                "graph_ms": step_ms,
                "kernels_sum_us": total,
                "parts_us": dict(sorted(parts.items(), key=lambda kv: -kv[1])),
                "products_tflop_s": prod_tflop / (parts.get("products", 0.0) / 1e6 or 1),
                "top_kernels_us": dict(sorted(med.items(), key=lambda kv: -kv[1])[:15]),
            }
            print_table(name, kind, out[kind])
    return out


def print_table(name: str, kind: str, r: dict) -> None:
    print(f"== {name} {kind}: graph {r['graph_ms']:.2f} ms, kernels {r['kernels_sum_us'] / 1e3:.2f}"
          f" ms, products at {r['products_tflop_s']:.0f} TFLOP/s")  # fmt: skip
    for part, us in r["parts_us"].items():
        print(f"   {part:<16} {us / 1e3:7.2f} ms  {us / r['kernels_sum_us'] * 100:5.1f}%")
    for k, us in list(r["top_kernels_us"].items())[:8]:
        print(f"      {us / 1e3:7.2f} ms  {k[:90]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--models", nargs="*", default=["qwen2.5-coder-0.5b", "starcoder-1b"])
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    import torch

    bench._import_lspilot()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = bench.model_configs()
    res = []
    for name in args.models:
        res.append(run_model(name, configs[name], args.tokens, args.reps))
        gc.collect()  # the model and its cache go before the next one is built
        torch.cuda.empty_cache()
    (out / "prefill_parts.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

# SPDX-License-Identifier: Apache-2.0
"""The packed prefill's attention kernel (``chunk_attention``) as it ships against its earlier
form, side by side in one process: every key tile masked (``mask_all``, before run 41) or only
the block's diagonal tiles, the ones holding keys at or after its first query.

Per model's head shape (query heads, KV heads, head size) and per step shape, the kernel alone
in a CUDA graph (``bench/engine.py``'s ``_graph_us``), µs and TFLOP/s (4 x keys seen x heads x
head size), the two forms' outputs compared. Step shapes: one 8192-token prompt from position
0 ("cold"); 16 chunks of 512 after 1024 cached positions ("cached", a step of the burst's later
chunks); 16 prompts from position 0 of the start burst's lengths (256-2047, random), cut to
fill 8192 tokens ("burst", the burst's first step).

``python3 bench/attention_ab.py --out $OUT``: a table and ``attention_ab.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine as bench  # noqa: E402  (bench/engine.py: _graph_us)

HEADS = {  # model -> (query heads, KV heads, head size), as bench/engine.py's configs
    "qwen2.5-coder-0.5b": (14, 2, 64),
    "starcoder-1b": (16, 1, 128),
    "qwen2.5-coder-1.5b": (12, 2, 128),
    "deepseek-coder-1.3b": (16, 16, 128),
}
TOKENS = 8192


def step_shapes(seed: int = 40) -> dict[str, list[tuple[int, int, int]]]:
    """Chunks of (slot, first position, length) per step shape (module docstring)."""
    rng = random.Random(seed)
    burst, left = [], TOKENS
    for slot in range(16):
        n = min(rng.randint(256, 2047), left - (15 - slot))
        burst.append((slot, 0, n))
        left -= n
    slot, start, n = burst[-1]
    burst[-1] = (slot, start, n + left)  # the budget's rest to the last, as ``chunk_sizes``
    return {
        "cold": [(0, 0, TOKENS)],
        "cached": [(slot, 1024, TOKENS // 16) for slot in range(16)],
        "burst": burst,
    }


def keys_seen(chunks) -> int:
    return sum(sum(p + 1 for p in range(s, s + n)) for _, s, n in chunks)


def measure(model: str, reps: int) -> dict:
    import torch

    from lspilot.daemon.engine.chunk_attention import block_table, blocks_for, chunk_attention

    H, Hkv, D = HEADS[model]
    g = torch.Generator(device="cuda").manual_seed(0)
    M = TOKENS + 1024
    kc, vc = torch.randn(2, 16, Hkv, M + 1, D, device="cuda", generator=g).bfloat16().unbind(0)
    out = {}
    for shape, chunks in step_shapes().items():
        T = sum(n for *_, n in chunks)
        q = torch.randn(T, H, D, device="cuda", generator=g).bfloat16()
        nb = blocks_for(T, len(chunks))
        meta = torch.tensor(block_table(chunks, nb), device="cuda").view(nb, 4)
        flop = 4 * keys_seen(chunks) * H * D
        row, results = {}, {}
        for form, mask_all in (("diagonal", False), ("mask_all", True)):

            def fn(q=q, meta=meta, m=mask_all):
                return chunk_attention(q, kc, vc, meta, D**-0.5, mask_all=m)

            results[form] = fn()
            us = [bench._graph_us(fn, reps=reps) for _ in range(3)]
            row[form] = {"us": statistics.median(us), "rounds_us": us}
            row[form]["tflop_s"] = flop / row[form]["us"] / 1e6
        diff = (results["diagonal"].float() - results["mask_all"].float()).abs().max().item()
        row["max_abs_diff"] = diff
        row["speedup"] = row["mask_all"]["us"] / row["diagonal"]["us"]
        out[shape] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--models", nargs="*", default=list(HEADS))
    ap.add_argument("--reps", type=int, default=10, help="kernel calls per graph")
    args = ap.parse_args()
    bench._import_lspilot()
    import torch

    res = {"device": torch.cuda.get_device_name(), "models": {}}
    print("| model | step | every tile masked (µs) | diagonal only (µs) | TFLOP/s | x | max diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model in args.models:
        res["models"][model] = rows = measure(model, args.reps)
        for shape, r in rows.items():
            old, new = r["mask_all"], r["diagonal"]
            print(f"| {model} | {shape} | {old['us']:.1f} | {new['us']:.1f} | "
                  f"{old['tflop_s']:.0f} -> {new['tflop_s']:.0f} | {r['speedup']:.2f} | "
                  f"{r['max_abs_diff']:.2g} |")  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "attention_ab.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

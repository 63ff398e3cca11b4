# SPDX-License-Identifier: Apache-2.0
"""The packed prefill's attention kernel (``chunk_attention``) as it ships against its form
before run 41, side by side in one process. Now: only a block's diagonal key tiles are masked
(those holding keys at or after its first query), the blocks that see the most keys go first,
64 keys a step. Before: every key tile masked (``mask_all``), the chunks' order, 32 keys a
step at head size 128. ``--sweep``: the shipped form at other tiles, in either order.
(Run 42 timed the mask alone: the chunks' order, and 32 keys at head size 128, on both sides.)

Per model's head shape (query heads, KV heads, head size) and per step shape, the kernel alone
in a CUDA graph (``bench/engine.py``'s ``_graph_us``), µs and TFLOP/s (4 x keys seen x heads x
head size), the two forms' outputs compared. Step shapes: one 8192-token prompt from position
0 ("cold"); 16 chunks of 512 after 1024 cached positions ("cached", a step of the burst's later
chunks); 16 prompts from position 0 of the start burst's lengths (256-2047, random), cut to
fill 8192 tokens ("burst", the burst's first step).

``python3 bench/attention_ab.py --out $OUT``: a table and ``attention_ab.json``; ``--out DIR
--plot PNG`` draws that JSON (needs matplotlib).
"""

from __future__ import annotations

import argparse
import itertools
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


def timed(fn, reps: int, rounds: int = 3) -> dict:
    us = [bench._graph_us(fn, reps=reps) for _ in range(rounds)]
    return {"us": statistics.median(us), "rounds_us": us}


def measure(model: str, reps: int, sweep: bool) -> dict:
    """Both forms at the shipped tiles, the outputs compared; with ``sweep``, the shipped form
    at other tiles and with the heaviest blocks first (``block_table``'s ``heavy_first``)."""
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
        tables = {}
        for heavy in (False, True):
            table = block_table(chunks, nb, heavy_first=heavy)
            tables[heavy] = torch.tensor(table, device="cuda").view(nb, 4)
        flop = 4 * keys_seen(chunks) * H * D

        def fn(meta=tables[True], q=q, **kw):
            return chunk_attention(q, kc, vc, meta, D**-0.5, **kw)

        # Before run 41: every tile masked, the chunks' order, 32 keys a step at head size 128.
        before = dict(meta=tables[False], mask_all=True, block_n=64 if D <= 64 else 32)
        row = {"shipped": timed(fn, reps), "before": timed(lambda b=before: fn(**b), reps)}
        diff = (fn().float() - fn(**before).float()).abs().max().item()
        row.update(max_abs_diff=diff, speedup=row["before"]["us"] / row["shipped"]["us"])
        if sweep:
            row["sweep"] = {}
            for heavy, bn, warps, stages in itertools.product(
                (False, True), (32, 64, 128), (4, 8), (2, 3, 4)
            ):
                key = f"heavy{int(heavy)}|bn{bn}|w{warps}|s{stages}"
                kw = dict(meta=tables[heavy], block_n=bn, num_warps=warps, num_stages=stages)
                try:
                    row["sweep"][key] = timed(lambda kw=kw: fn(**kw), reps, rounds=1)["us"]
                except Exception as e:  # noqa: BLE001 - a tile that does not fit
                    row["sweep"][key] = type(e).__name__
        for form in ("shipped", "before"):
            row[form]["tflop_s"] = flop / row[form]["us"] / 1e6
        out[shape] = row
    return out


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(res["models"])
    shapes = list(res["models"][models[0]])
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        rows = res["models"][model]
        for i, shape in enumerate(shapes):
            before, now = rows[shape]["before"]["tflop_s"], rows[shape]["shipped"]["tflop_s"]
            ax.bar(i - 0.2, before, 0.4, color="#bbbbbb", label="before run 41" if i == 0 else None)
            ax.bar(i + 0.2, now, 0.4, color="#4c72b0", label="as shipped" if i == 0 else None)
            ax.annotate(f"{now / before:.2f}x", (i + 0.2, now), xytext=(0, 2),
                        textcoords="offset points", ha="center", fontsize=7)  # fmt: skip
        H, Hkv, D = HEADS[model]
        ax.set_title(f"{model}\n{H} heads of {D}, {Hkv} KV", fontsize=8)
        ax.set_xticks(range(len(shapes)), shapes, fontsize=8)
    axes[0][0].set_ylabel("TFLOP/s, the kernel alone (H200, bf16)")
    axes[0][0].legend(fontsize=7, loc="lower left")
    bench.save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--models", nargs="*", default=list(HEADS))
    ap.add_argument("--reps", type=int, default=10, help="kernel calls per graph")
    ap.add_argument("--sweep", nargs="*", default=[], help="models to sweep tiles and order for")
    ap.add_argument("--plot", metavar="PNG", help="only draw the JSON in --out into PNG")
    args = ap.parse_args()
    if args.plot:
        return plot(json.loads((Path(args.out) / "attention_ab.json").read_text()), args.plot)
    bench._import_lspilot()
    import torch

    res = {"device": torch.cuda.get_device_name(), "models": {}}
    print("| model | step | before run 41 (µs) | as shipped (µs) | TFLOP/s | x | max diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model in args.models:
        res["models"][model] = rows = measure(model, args.reps, model in args.sweep)
        for shape, r in rows.items():
            old, new = r["before"], r["shipped"]
            print(f"| {model} | {shape} | {old['us']:.1f} | {new['us']:.1f} | "
                  f"{old['tflop_s']:.0f} -> {new['tflop_s']:.0f} | {r['speedup']:.2f} | "
                  f"{r['max_abs_diff']:.2g} |")  # fmt: skip
            times = {k: v for k, v in r.get("sweep", {}).items() if isinstance(v, float)}
            for key in sorted(times, key=times.get)[:4]:
                print(f"|   sweep | {shape} {key} | | {times[key]:.1f} | | | |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "attention_ab.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

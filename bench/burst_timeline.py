# SPDX-License-Identifier: Apache-2.0
"""Where the 64-client start burst's time goes: device busy, device idle, and the host between.

``bench/engine.py``'s 64 x 2 traffic (half the requests the 64 simultaneous cold starts) runs
on a warmed engine while the scheduler's steps are timed from both sides: CUDA events around
every packed prefill step and decode step (the device's busy spans and the idle gaps between
them), and host clocks around the scheduler's phases (admission, ordering, the upload, the
launch, sampling, streaming). The window that decides the burst's p95 first token is from the
first arrival to the 61st first token; inside it the script reports how much of the device's
time was prefill, decode, and idle, and what the host was doing meanwhile. Each round runs
the burst once per variant (``VARIANTS``: the scheduler's prefill lookahead always, only into
full steps, and off, a shorter GIL switch interval), and with ``--sustained`` the 64 x 16
traffic after each.

``python3 bench/burst_timeline.py --out $OUT [--models qwen2.5-coder-0.5b starcoder-1b]``:
a table per model and ``burst_timeline_<model>.json``; ``--out DIR --plot PNG`` draws that JSON
(needs matplotlib).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine as bench  # noqa: E402  (bench/engine.py: model configs, builder, traffic)

# Scheduler methods timed on the host (instance attributes shadow the class's methods).
HOST_PHASES = ("_reap", "_admit", "_prefill_step", "_decode_step", "_sample", "_emit_tokens",
               "_flush")  # fmt: skip


DEFAULT_SWITCH_S = 0.005  # CPython's
# What a round alternates: label -> (sys.setswitchinterval, scheduler attributes). Run 37 found
# the switch interval moves nothing; the prefill lookahead is the scheduler's own switch.
# "ahead" looks ahead at every prefill step (run 39's), "full" only while the waiting prompts
# fill the next step (``EngineConfig.prefill_lookahead_only_full``).
VARIANTS = {
    "ahead": (DEFAULT_SWITCH_S, {"prefill_lookahead": True, "prefill_lookahead_only_full": False}),
    "full": (DEFAULT_SWITCH_S, {"prefill_lookahead": True, "prefill_lookahead_only_full": True}),
    "plain": (DEFAULT_SWITCH_S, {"prefill_lookahead": False}),
    "si0.5": (0.0005, {"prefill_lookahead": False}),  # run 37's, which had no lookahead
}


class Timeline:
    """Host time per phase, and device spans of the steps, on the scheduler's thread."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.host: dict[str, list[float]] = {}
        self.spans: list[tuple[str, int, float, object, object]] = []  # kind, tokens, t, ev, ev
        self.origin = None
        self.t_origin = 0.0

    def start(self) -> None:
        torch = self.torch
        torch.cuda.synchronize()
        self.host.clear()
        self.spans.clear()
        self.origin = torch.cuda.Event(enable_timing=True)
        self.origin.record()
        self.t_origin = time.perf_counter()

    def timed_host(self, name, fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.host.setdefault(name, []).append(time.perf_counter() - t)

        return wrapper

    def timed_device(self, kind, fn, tokens=lambda *a: 0):
        torch = self.torch

        @functools.wraps(fn)
        def wrapper(*a, **kw):
            if self.origin is None:
                return fn(*a, **kw)
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t = time.perf_counter()
            begin.record()
            out = fn(*a, **kw)
            end.record()
            self.host.setdefault(f"{kind} launch", []).append(time.perf_counter() - t)
            self.spans.append((kind, tokens(*a), t - self.t_origin, begin, end))
            return out

        return wrapper

    def device_spans(self) -> list[dict]:
        self.torch.cuda.synchronize()
        out = []
        for kind, tokens, t_host, begin, end in self.spans:
            start = self.origin.elapsed_time(begin)
            out.append({"kind": kind, "tokens": tokens, "host_ms": t_host * 1000,
                        "start_ms": start, "end_ms": start + begin.elapsed_time(end)})  # fmt: skip
        return out


def instrument(sched, tl: Timeline) -> None:
    for name in HOST_PHASES:
        setattr(sched, name, tl.timed_host(name, getattr(sched, name)))
    packed = sched.packed
    packed._upload = tl.timed_host("upload", packed._upload)
    packed.read = tl.timed_host("read picks", packed.read)
    packed.run = tl.timed_device(
        "prefill", packed.run, lambda chunks, fed=None: sum(len(c[2]) for c in chunks)
    )
    sched._run_step = tl.timed_device("decode", sched._run_step)


def window_summary(spans: list[dict], until_ms: float) -> dict:
    """Device busy (by kind) and idle between the first span's start and ``until_ms``."""
    busy = {"prefill": 0.0, "decode": 0.0}
    idle_gaps: list[float] = []
    cursor = None  # the end of the device's work so far
    for s in sorted(spans, key=lambda s: s["start_ms"]):
        if s["start_ms"] >= until_ms:
            break
        a, b = s["start_ms"], min(s["end_ms"], until_ms)
        if cursor is not None and a > cursor:
            idle_gaps.append(a - cursor)
        lo = a if cursor is None else max(a, cursor)
        busy[s["kind"]] += max(0.0, b - lo)
        cursor = b if cursor is None else max(cursor, b)
    idle = sum(idle_gaps)
    first = min((s["start_ms"] for s in spans), default=0.0)
    return {
        "first_step_ms": first,
        "window_ms": until_ms - first,
        "prefill_busy_ms": busy["prefill"],
        "decode_busy_ms": busy["decode"],
        "idle_ms": idle,
        "idle_gaps": len(idle_gaps),
        "idle_gap_p50_ms": bench.pct(idle_gaps, 0.5),
        "idle_gap_max_ms": max(idle_gaps, default=0.0),
        "prefill_steps": sum(
            1 for s in spans if s["kind"] == "prefill" and s["start_ms"] < until_ms
        ),
        "decode_steps": sum(1 for s in spans if s["kind"] == "decode" and s["start_ms"] < until_ms),
    }


async def burst(be, vocab, clients: int, per: int, tl: Timeline, tag: str):
    """``bench.engine_concurrency``'s traffic (the same seed, so the same prompts as its 64 x 2
    run), each client's first token time kept; ``tag`` keeps rounds' cache keys apart, so no
    round reuses another's prefixes."""
    rng = random.Random(per)
    work = [bench.traffic(rng, per, vocab) for _ in range(clients)]
    firsts: list[float] = []

    async def client(ci):
        for ri, (p, n, cancel) in enumerate(work[ci]):
            t0, times, _, _ = await bench.engine_run(
                be, p, n, key=f"{tag}c{ci}r{ri}", cancel_after=cancel, rid=f"b{ci}.{ri}"
            )
            if ri == 0 and times:
                firsts.append((times[0] - tl.t_origin) * 1000)

    tl.start()
    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return firsts, time.perf_counter() - t0


def run_model(name: str, cfg, args) -> dict:
    import torch

    from lspilot.daemon.engine import EngineBackend

    model = bench.build(cfg)
    max_len = bench.kv_fitting_len(cfg, model, 64, 8192, 40.0)
    be = EngineBackend(model, device=bench.DEVICE, max_batch=64, max_len=max_len)
    loop = asyncio.new_event_loop()
    out: dict = {"model": name, "rounds": []}
    try:
        loop.run_until_complete(be.warmup())
        tl = Timeline()
        instrument(be._sched, tl)
        # Round 0 warms the traffic's buckets, not reported; the intervals alternate within a
        # round, so each sees the same machine state.
        for r in range(args.rounds + 1):
            for label in args.variants:
                si, attrs = VARIANTS[label]
                sys.setswitchinterval(si)
                for k, v in attrs.items():
                    setattr(be._sched, k, v)
                firsts, wall = loop.run_until_complete(
                    burst(be, cfg.vocab_size, 64, 2, tl, f"round{r}{label}")
                )
                spans = tl.device_spans()
                firsts.sort()
                p95 = bench.pct(firsts, 0.95)
                host = {k: {"calls": len(v), "total_ms": sum(v) * 1000} for k, v in tl.host.items()}
                rec = {"variant": label, "switch_interval_s": si, "first_token_p95_ms": p95,
                       "wall_s": wall, "first_token_ms": firsts, "host": host,
                       "window": window_summary(spans, p95)}  # fmt: skip
                if args.sustained and r > 0:
                    tl.origin = None  # no spans: the sustained run is timed from outside
                    rec["sustained"] = loop.run_until_complete(
                        bench.engine_concurrency(
                            be, random.Random(16), cfg.vocab_size, 64, 16, tag=f"r{r}{label}"
                        )
                    )
                if r == 0:
                    continue
                if args.spans:
                    rec["spans"] = spans
                out["rounds"].append(rec)
                print_round(name, r, rec)
        sys.setswitchinterval(DEFAULT_SWITCH_S)
        loop.run_until_complete(be.close())
    finally:
        loop.close()
    del be, model
    torch.cuda.empty_cache()
    return out


def print_round(name: str, r: int, rec: dict) -> None:
    w = rec["window"]
    print(
        f"== {name} round {r}, {rec['variant']}: burst p95 "
        f"first token {rec['first_token_p95_ms']:.1f} ms, first step at {w['first_step_ms']:.1f}"
    )
    if "sustained" in rec:
        c = rec["sustained"]
        print(
            f"   64 x 16: p95 first token {c['ttft_p95_ms']:.1f} ms, p95 gap {c['gap_p95_ms']:.1f}"
            f" ms, {c['completions_per_s']:.1f} completions/s"
        )
    print(f"   window {w['window_ms']:.1f} ms: prefill {w['prefill_busy_ms']:.1f} "
          f"({w['prefill_steps']} steps), decode {w['decode_busy_ms']:.1f} ({w['decode_steps']} "
          f"steps), idle {w['idle_ms']:.1f} in {w['idle_gaps']} gaps (p50 "
          f"{w['idle_gap_p50_ms'] or 0:.2f}, max {w['idle_gap_max_ms']:.2f})")  # fmt: skip
    for k, v in sorted(rec["host"].items(), key=lambda kv: -kv[1]["total_ms"]):
        print(f"   host {k:<16} {v['calls']:>6} calls {v['total_ms']:>9.1f} ms")


def plot(folder: Path, path: Path) -> None:
    """Each model's burst window per variant, from ``burst_timeline_*.json`` in ``folder``: the
    median round's time before the first step, prefill, decode and device idle, stacked, with
    the p95 first token marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [json.loads(f.read_text()) for f in sorted(folder.glob("burst_timeline_*.json"))]
    fig, axes = plt.subplots(1, len(results), figsize=(4.8 * len(results), 3.6), squeeze=False)
    parts = [("first_step_ms", "before the first step", "#bbbbbb"),
             ("prefill_busy_ms", "prefill steps", "#4c72b0"),
             ("decode_busy_ms", "decode steps", "#55a868"),
             ("idle_ms", "device idle between steps", "#c44e52")]  # fmt: skip
    for ax, res in zip(axes[0], results, strict=True):
        labels = list(res["medians"])
        for x, label in enumerate(labels):
            rounds = sorted((r for r in res["rounds"] if r["variant"] == label),
                            key=lambda r: r["first_token_p95_ms"])  # fmt: skip
            w = rounds[len(rounds) // 2]["window"]
            bottom = 0.0
            for key, name, color in parts:
                ax.bar(x, w[key], bottom=bottom, color=color, width=0.6,
                       label=name if x == 0 else None)  # fmt: skip
                bottom += w[key]
            p95 = res["medians"][label]["p95_ms"]
            ax.plot([x - 0.35, x + 0.35], [p95, p95], color="black", lw=1.5,
                    label="p95 first token (median)" if x == 0 else None)  # fmt: skip
            ax.annotate(f"{p95:.0f} ms", (x, p95), xytext=(0, 3), textcoords="offset points",
                        ha="center", fontsize=8)  # fmt: skip
        names = {"ahead": "lookahead", "full": "into full steps", "plain": "without",
                 "si0.5": "0.5 ms GIL switch"}  # fmt: skip
        ax.set_xticks(range(len(labels)), [names.get(v, v) for v in labels])
        ax.set_title(f"{res['model']}: 64 editors start at once", fontsize=9)
        ax.set_ylabel("ms from the arrivals to the 61st first token")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.45)  # room for the legend above the bars
    axes[0][0].legend(fontsize=7, loc="upper left", ncol=2)
    bench.save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--models", nargs="*", default=["qwen2.5-coder-0.5b"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--spans", action="store_true", help="keep every device span in the JSON")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS)[:3], choices=list(VARIANTS))
    ap.add_argument("--sustained", action="store_true", help="also 64 x 16 per interval")
    ap.add_argument("--plot", metavar="PNG", help="only draw the JSON in --out into PNG")
    args = ap.parse_args()
    if args.plot:
        plot(Path(args.out), Path(args.plot))
        return
    bench._import_lspilot()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = bench.model_configs()
    for name in args.models:
        res = run_model(name, configs[name], args)
        res["medians"] = {}
        for label in args.variants:
            rounds = [r for r in res["rounds"] if r["variant"] == label]
            med = {
                "p95_ms": statistics.median(r["first_token_p95_ms"] for r in rounds),
                "idle_ms": statistics.median(r["window"]["idle_ms"] for r in rounds),
                "first_step_ms": statistics.median(r["window"]["first_step_ms"] for r in rounds),
            }
            if args.sustained:
                for k in ("ttft_p95_ms", "gap_p95_ms", "completions_per_s"):
                    med[f"sustained_{k}"] = statistics.median(r["sustained"][k] for r in rounds)
            res["medians"][label] = med
            print(f"== {name}, {label}: medians {med}")
        (out / f"burst_timeline_{name}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

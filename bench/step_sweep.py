# SPDX-License-Identifier: Apache-2.0
"""Tile sweep of the fused decode step on a CUDA GPU, each candidate timed inside the whole step.

``bench/engine.py --sweep`` times each product alone, replayed over one layer's weights, which
then stay in L2 (50 MB on an H200; qwen 0.5b's gate/up weight is 17 MB): alone a product looks
faster than it is in the step, where every layer's weights come from memory, and the tiles that
win in L2 need not win from memory. Here a candidate replaces one product's tiles
(``FusedDecode.tile_kw``) in every layer of the real model's step, captured in a CUDA graph, and
is timed against the heuristic's tiles in the same run (the baseline re-measured between
products, as these machines drift). Then the best per product together, in each kernel launch
mode (``pdl.pdl_mode``), at batch 2 and 8.

The candidates compile first in parallel worker processes, each holding a one-layer model of the
same shapes (so the same kernel specializations), which fills Triton's disk cache; the timing
process then only loads them.

``python3 bench/step_sweep.py --out $OUT [--models ...]``: a table per model, and
``step_sweep_<model>.json``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine as bench  # noqa: E402  (bench/engine.py: model configs, builder, step timer)

L_KEYS = 1024  # the length bucket a 512-token prompt decodes in
SLOTS, MAX_LEN = 8, 1088


def candidates() -> dict[str, list[dict]]:
    """``Tiles.make`` keywords per product, around the heuristic's choice."""
    grid = itertools.product
    qkv = [
        {"dot": dot, "block_n": 16, "block_k": bk, "block_j": 16 if dot else bj,
         "num_stages": st, "preload": pre}
        for (dot, bj), bk, st, pre in grid(((False, 4), (False, 8), (True, 16)), (256, 512),
                                           (2, 3, 4), (False, True))
    ]  # fmt: skip
    split = [
        {"dot": True, "block_n": bn, "block_k": bk, "programs": p, "num_stages": st,
         "preload": pre}
        for bn, bk, p, st, pre in grid((16, 32, 64), (128, 256), (264, 528, 1056), (3, 4),
                                       (False, True))
    ]  # fmt: skip
    up = [
        {"dot": True, "block_n": bn, "block_k": bk, "num_warps": w, "num_stages": st,
         "preload": pre}
        for bn, bk, w, st, pre in grid((16, 32, 64, 128), (128, 256), (4, 8), (3, 5),
                                       (False, True))
    ]  # fmt: skip
    head = [
        {"dot": True, "block_n": bn, "block_k": bk, "num_warps": w, "num_stages": st,
         "preload": pre}
        for bn, bk, w, st, pre in grid((32, 64, 128), (128, 256), (4, 8), (3, 4), (False, True))
    ]  # fmt: skip
    o = [kw for kw in split if kw["block_n"] <= 32 and kw["block_k"] == 128]  # 1.6-8 MB
    return {"qkv": qkv, "o": o, "up": up, "down": split, "head": head}


def before_run15(em) -> dict[str, dict]:
    """At batch 2, the tiles ``Tiles.choose`` picked before this sweep: the side-by-side baseline
    of ``--confirm``."""
    E, n_mid = em.fused.layers[0].w_down.shape
    return {
        "qkv": {"dot": False, "block_n": 16, "block_k": 512, "block_j": 4},
        "up": {"dot": True, "block_n": 64 if n_mid >= 2048 else 32, "block_k": 128,
               "num_warps": 8},
        "head": {"dot": True, "block_n": 64, "block_k": 128,
                 "num_warps": 8 if em.fused.head.shape[0] < 32768 else 4},
    }  # fmt: skip


def confirm_model(name: str) -> dict:
    """The heuristic now against the one before, alternating, at batch 2 (what batch 1 runs)."""
    em = make_engine_model(bench.model_configs()[name])
    old = before_run15(em)
    runs = {"now": [], "before": []}
    for _ in range(5):
        runs["now"].append(step_ms(em, {}))
        runs["before"].append(step_ms(em, old))
    res = {"model": name, "B": 2, "L": L_KEYS, "pdl": em.fused.pdl, "runs_ms": runs}
    for k, v in runs.items():
        res[f"{k}_ms"] = statistics.median(x for x in v if isinstance(x, float))
    print(f"[{name}] step at batch 2: now {res['now_ms']:.4f} ms, before {res['before_ms']:.4f}",
          flush=True)  # fmt: skip
    del em
    gc.collect()
    return res


def make_engine_model(cfg, layers: int | None = None):
    from lspilot.daemon.engine.model import EngineModel

    if layers:
        key = "n_layer" if cfg.model_type == "gpt_bigcode" else "num_hidden_layers"
        setattr(cfg, key, layers)
    em = EngineModel(bench.build(cfg), max_len=MAX_LEN, fused=True)
    em.allocate(SLOTS)
    return em


def _compile_worker(args) -> int:
    """In a worker process: compile each (op, keywords) on a one-layer model; -> failures."""
    name, jobs = args
    os.environ.setdefault("TRITON_INTERPRET", "0")
    bench._import_lspilot()
    import torch

    em = make_engine_model(bench.model_configs()[name], layers=1)
    bad = 0
    for op, kw in jobs:
        em.fused.tile_kw = {op: kw}
        ids = torch.zeros(2, 1, dtype=torch.long, device="cuda")  # batch 2, as the timer
        pos = torch.full((2, 1), L_KEYS - 1, dtype=torch.long, device="cuda")
        wpos = torch.full((2, 1), em.max_len, dtype=torch.long, device="cuda")
        try:
            with torch.inference_mode():
                em.fused.decode(ids, pos, wpos, em.key_pos(L_KEYS))
        except Exception:  # noqa: BLE001 - a tile that does not fit: the timer says so
            bad += 1
    torch.cuda.synchronize()
    return bad


def precompile(name: str, cands: dict[str, list[dict]], workers: int) -> dict:
    jobs = [(op, kw) for op, kws in cands.items() for kw in kws]
    t = time.perf_counter()
    chunks = [jobs[i::workers] for i in range(workers)]
    with mp.get_context("spawn").Pool(workers) as pool:
        bad = sum(pool.map(_compile_worker, [(name, c) for c in chunks if c]))
    return {"jobs": len(jobs), "failed": bad, "seconds": time.perf_counter() - t}


def key_of(kw: dict) -> str:
    short = {"dot": "dot", "block_n": "bn", "block_k": "bk", "block_j": "bj", "programs": "p",
             "num_warps": "w", "num_stages": "st", "preload": "pre"}  # fmt: skip
    return "|".join(f"{short[k]}{int(v)}" for k, v in kw.items())


def step_ms(em, tile_kw: dict, B: int = 2) -> float | str:
    em.fused.tile_kw = tile_kw
    try:
        got = bench.fused_step_ms(em, batches=(B,), L=L_KEYS, reps=40)[f"B{B}_L{L_KEYS}"]
    except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
        got = f"{type(e).__name__}: {str(e)[:80]}"
    finally:
        em.fused.tile_kw = {}
    return got


def sweep_model(name: str, workers: int) -> dict:
    from lspilot.daemon.engine import pdl

    cands = candidates()
    try:
        pre = precompile(name, cands, workers)
    except Exception as e:  # noqa: BLE001 - the timing process then compiles as it goes
        pre = {"error": f"{type(e).__name__}: {e}"}
    res = {"model": name, "B": 2, "L": L_KEYS, "precompile": pre}
    print(f"[{name}] precompiled {res['precompile']}", flush=True)
    em = make_engine_model(bench.model_configs()[name])
    res["default_pdl"] = em.fused.pdl
    best: dict[str, dict] = {}
    per_op = {}
    for op, kws in cands.items():
        t = time.perf_counter()
        base = [step_ms(em, {})]
        rows = {}
        for i, kw in enumerate(kws):
            rows[key_of(kw)] = step_ms(em, {op: kw})
            if i % 12 == 11:
                base.append(step_ms(em, {}))
        base.append(step_ms(em, {}))
        base_ms = statistics.median(b for b in base if isinstance(b, float))
        timed = sorted((v, k) for k, v in rows.items() if isinstance(v, float))
        win_ms, win = timed[0]
        best[op] = next(kw for kw in kws if key_of(kw) == win)
        per_op[op] = {"baseline_ms": base_ms, "baselines": base, "best": win, "best_ms": win_ms,
                      "saving_us_per_step": (base_ms - win_ms) * 1000, "all": rows}  # fmt: skip
        print(f"[{name}] {op}: baseline {base_ms:.4f} ms, best {win} {win_ms:.4f} ms "
              f"({len(kws)} tried, {time.perf_counter() - t:.0f} s)", flush=True)  # fmt: skip
    res["per_op"] = per_op
    res["best_tile_kw"] = best
    combined = {}
    for mode in (pdl.PDL_OFF, pdl.PDL_EARLY, pdl.PDL_LATE):
        em.fused.pdl, em.fused.pdl_by_op = mode, {}  # every kernel alike
        for B in (2, 8):
            combined[f"pdl{mode}_B{B}_default"] = step_ms(em, {}, B)
            combined[f"pdl{mode}_B{B}_best"] = step_ms(em, best, B)
            pre = {op: {**kw, "preload": True} for op, kw in best.items()}
            combined[f"pdl{mode}_B{B}_best_preload"] = step_ms(em, pre, B)
    res["combined_ms"] = combined
    for k, v in combined.items():
        print(f"[{name}] {k}: {v if isinstance(v, str) else round(v, 4)}", flush=True)
    del em
    gc.collect()
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "bench/out"))
    ap.add_argument("--models", nargs="*", default=["qwen2.5-coder-0.5b", "starcoder-1b"])
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--confirm", action="store_true", help="the heuristic now vs before only")
    args = ap.parse_args()
    os.environ["TRITON_INTERPRET"] = "0"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench._import_lspilot()
    (out / "env.json").write_text(json.dumps(bench.environment(), indent=1))
    for name in args.models:
        if args.confirm:
            res = confirm_model(name)
            (out / f"step_confirm_{name}.json").write_text(json.dumps(res, indent=1))
            continue
        res = sweep_model(name, args.workers)
        (out / f"step_sweep_{name}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

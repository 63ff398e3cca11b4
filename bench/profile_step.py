# SPDX-License-Identifier: Apache-2.0
"""Hardware counters of every kernel in one fused decode step, through Nsight Compute (GPU).

``python3 bench/profile_step.py --out $OUT [--models ...] [--batch 1] [--keys 1024]`` runs
itself under ``ncu`` once per model: the step is compiled and run outside the profiled range,
then one step (embedding, six kernels a layer, the vocabulary product) inside it. ncu replays
each kernel alone with the caches flushed first (its default), so every weight comes from
memory as in the real step, but the kernels run one after another: what programmatic dependent
launch overlaps is not in these times (``bench/step_parts.py`` times the whole step).

Per kernel of the step, averaged over the layers: duration, bytes read from memory and the rate
that is, registers, grid, achieved occupancy, and what the warps waited on (the stall reasons,
in cycles per issued instruction). Writes ``profile_<model>.csv`` (ncu's raw CSV) and
``profile_step.json``, and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

STALLS = [
    "long_scoreboard", "barrier", "membar", "wait", "short_scoreboard", "lg_throttle",
    "mio_throttle", "math_pipe_throttle", "no_instruction", "not_selected", "selected",
    "dispatch_stall", "drain", "sleeping", "branch_resolving", "imc_miss", "tex_throttle",
]  # fmt: skip
METRICS = [
    "gpu__time_duration.sum",
    "dram__bytes_read.sum",
    "launch__registers_per_thread",
    "launch__grid_size",
    "launch__block_size",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "launch__shared_mem_per_block_static",
    "launch__shared_mem_per_block_dynamic",
    "smsp__inst_executed.sum",
] + [f"smsp__average_warps_issue_stalled_{s}_per_issue_active.ratio" for s in STALLS]
LAYER_PARTS = ["qkv_rope", "attention_split", "attention_merge", "o_proj", "gate_up", "down"]


def run_step(name: str, batch: int, keys: int) -> None:
    """Inside ncu: compile and warm the step, then one step between profiler start and stop."""
    import engine as bench
    import torch

    bench._import_lspilot()
    from lspilot.daemon.engine.model import EngineModel

    em = EngineModel(bench.build(bench.model_configs()[name]), max_len=keys + 64, fused=True)
    em.allocate(max(8, batch))
    with torch.inference_mode():
        ids = torch.zeros(batch, 1, dtype=torch.long, device=em.device)
        pos = torch.full((batch, 1), keys - 1, dtype=torch.long, device=em.device)
        wpos = torch.full((batch, 1), em.max_len, dtype=torch.long, device=em.device)
        key_pos = em.key_pos(keys)
        for _ in range(3):
            em.fused.decode(ids, pos, wpos, key_pos)
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStart()
        em.fused.decode(ids, pos, wpos, key_pos)
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()


def profile(name: str, batch: int, keys: int, out: Path) -> list[dict]:
    """ncu over ``run_step`` -> one dict per profiled kernel, in launch order."""
    cmd = [
        "ncu", "--profile-from-start", "off", "--clock-control", "none", "--csv",
        "--page", "raw", "--metrics", ",".join(METRICS),
        sys.executable, __file__, "--inner", name, "--batch", str(batch), "--keys", str(keys),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    raw = done.stdout
    (out / f"profile_{name}.csv").write_text(raw)
    start = raw.find('"ID"')
    if done.returncode or start < 0:
        sys.stderr.write(done.stderr[-4000:] + raw[-4000:])
        raise RuntimeError(f"ncu failed for {name} (rc {done.returncode})")
    rows = list(csv.DictReader(io.StringIO(raw[start:])))
    return [r for r in rows if r.get("ID", "").isdigit()]  # the second row holds the units


def num(row: dict, key: str) -> float:
    try:
        return float(str(row.get(key, "nan")).replace(",", ""))
    except ValueError:
        return float("nan")


def summarize(rows: list[dict]) -> dict:
    """Kernels labelled by their place in the step (embedding, six per layer, the vocabulary
    product) -> per part: medians over the layers."""
    n_layers = (len(rows) - 2) // len(LAYER_PARTS)
    labels = ["embed"] + LAYER_PARTS * n_layers + ["head"]
    if len(labels) != len(rows):
        labels = [r["Kernel Name"][:40] for r in rows]
    parts: dict[str, list[dict]] = {}
    for label, row in zip(labels, rows, strict=True):
        parts.setdefault(label, []).append(row)
    out = {}
    for label, rs in parts.items():
        med = {m: statistics.median(num(r, m) for r in rs) for m in METRICS}
        us = med["gpu__time_duration.sum"] / 1e3  # ns -> µs
        stalls = {s: med[f"smsp__average_warps_issue_stalled_{s}_per_issue_active.ratio"]
                  for s in STALLS}  # fmt: skip
        out[label] = {
            "kernel": rs[0]["Kernel Name"], "count": len(rs), "us": us,
            "dram_mb": med["dram__bytes_read.sum"] / 1e6,
            "tb_per_s": med["dram__bytes_read.sum"] / (us * 1e6) if us else 0.0,
            "regs": med["launch__registers_per_thread"], "grid": med["launch__grid_size"],
            "block": med["launch__block_size"],
            "occupancy_pct": med["sm__warps_active.avg.pct_of_peak_sustained_active"],
            "smem": med["launch__shared_mem_per_block_static"]
            + med["launch__shared_mem_per_block_dynamic"],
            "instructions": med["smsp__inst_executed.sum"],
            "stalls": dict(sorted(stalls.items(), key=lambda kv: -kv[1])),
        }  # fmt: skip
    total = sum(num(r, "gpu__time_duration.sum") for r in rows) / 1e3
    return {"kernels": len(rows), "sum_us": total, "parts": out}


def table(name: str, s: dict) -> str:
    lines = [f"{name}: {s['kernels']} kernels, {s['sum_us']:.1f} µs serialized and cold",
             "part | µs | MB | TB/s | regs | grid | occ % | top stalls (cycles/instr)",
             "--- | --- | --- | --- | --- | --- | --- | ---"]  # fmt: skip
    for label, p in s["parts"].items():
        top = ", ".join(f"{k} {v:.1f}" for k, v in list(p["stalls"].items())[:3])
        lines.append(
            f"{label} | {p['us']:.1f} | {p['dram_mb']:.1f} | {p['tb_per_s']:.2f} | "
            f"{p['regs']:.0f} | {p['grid']:.0f} | {p['occupancy_pct']:.0f} | {top}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--models", nargs="*", default=["qwen2.5-coder-0.5b", "starcoder-1b"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--keys", type=int, default=1024)
    ap.add_argument("--inner", help=argparse.SUPPRESS)  # the run inside ncu
    args = ap.parse_args()
    if args.inner:
        run_step(args.inner, args.batch, args.keys)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"batch": args.batch, "keys": args.keys, "models": {}}
    for name in args.models:
        s = summarize(profile(name, args.batch, args.keys, args.out))
        result["models"][name] = s
        print(table(name, s), flush=True)
    (args.out / "profile_step.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

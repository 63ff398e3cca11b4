# SPDX-License-Identifier: Apache-2.0
"""The fused decode step with one part swapped for the stock way, timed in one process (GPU).

Each variant replaces one piece of ``FusedDecode``'s step and the whole step is captured in a
CUDA graph and replayed (batch 2, 1024 keys, every row writing the cache's trash row), in
rounds, so every variant sees the same machine state:

- ``new``: the step as it ships; ``torchembed``: the embedding by HF's modules and a float32
  copy instead of one Triton kernel;
- ``no_attn_preload``: attention's first keys and values loaded after the wait for the q/k/v
  kernel, not before; ``head_bn128``, ``head_bk256``: the vocabulary product 128 wide (as before
  run 29), or 128 wide and 256 deep (the shipped tiles: 256 wide, 128 deep, 8 warps);
- ``pdl_off``, ``pdl_late``, ``pdl_early``: every kernel launched serially, or early with a
  late release, or early with an early release (``pdl.py``), whatever the architecture's
  default; ``flip_qkv``, ``flip_up``, ...: one
  kernel of every layer (or the vocabulary product) launched the other way from how it ships
  (run 35 ran them before gpt_bigcode's attention shipped with PDL);
- ``pick_in_head``: ``graphs.decode_and_pick`` as it ships (the greedy ids offered inside the
  vocabulary product, then one feedback kernel); ``pick_torch``: the same step followed by the
  six torch kernels of the eager tail.

``launch_floor``: the step's kernel count (147 for qwen 0.5b) of kernels that do nothing but
wait for the previous one, read one value and write one, graphed, serially or with PDL: the
fixed cost of a kernel boundary, which no tile choice inside a kernel removes.

``python3 bench/step_parts.py --out $OUT [--models ...] [--variants ...]`` (default: every
variant above but ``torchembed``, measured in run 23): medians per variant (µs), and
``step_parts.json``. Runs 20-21 of docs/performance.md ran an earlier form of this script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine as bench  # noqa: E402  (bench/engine.py: model configs, builder)

# Kernels whose launch mode a flip_<kernel> variant changes alone (``FusedDecode.pdl_by_op``).
FLIP = ("qkv", "attention", "o", "up", "down", "head")
VARIANTS = ["new", "no_attn_preload", "head_bn128", "head_bk256", "pdl_off", "pdl_late",
            "pdl_early", *(f"flip_{k}" for k in FLIP)]  # fmt: skip


def capture_ms(fn, reps: int = 50) -> float:
    """``fn`` (a whole step) captured in a CUDA graph -> GPU ms per replay."""
    import torch

    graph, _ = bench.capture_graph(fn)
    graph.replay()
    torch.cuda.synchronize()
    return bench.replay_ms(graph, reps)


def use_variant(F, em, name: str, stock: dict) -> None:
    """Point the fused step's attention and embedding (names in ``F``, the ``fused`` module) at
    the variant's, and set its launch mode (``stock``: the originals)."""
    from lspilot.daemon.engine import kernels as K
    from lspilot.daemon.engine.pdl import PDL_EARLY, PDL_LATE, PDL_OFF

    F.attention, F.embed = stock["attention"], stock["embed"]
    # The vocabulary product's shipped tiles with one change (head_bk256 as run 29 timed it:
    # 128 wide, 256 deep).
    head = {"head_bn128": {"block_n": 128}, "head_bk256": {"block_n": 128, "block_k": 256}}.get(
        name
    )
    em.fused.tile_kw = {}
    if head:
        V, E = em.fused.head.shape
        t = K.Tiles.choose(2, V, E, elem_bytes=em.fused.head.element_size())
        shipped = {"dot": t.dot, "block_n": t.block_n, "block_k": t.block_k,
                   "num_warps": t.num_warps}  # fmt: skip
        em.fused.tile_kw = {"head": {**shipped, **head}}
    modes = {"pdl_off": PDL_OFF, "pdl_late": PDL_LATE, "pdl_early": PDL_EARLY}
    em.fused.pdl = modes.get(name, stock["pdl"])
    # Kernels launched otherwise than the rest as shipped (gpt_bigcode's attention), but none
    # for pdl_off / pdl_late; flip_<kernel>: that one kernel launched the other way from how it
    # ships (serial <-> PDL released late).
    by_op = {} if name in modes else dict(stock["pdl_by_op"])
    flipped = name.removeprefix("flip_")
    if flipped in FLIP:
        by_op[flipped] = PDL_OFF if by_op.get(flipped, stock["pdl"]) else PDL_LATE
    em.fused.pdl_by_op = by_op
    if name == "no_attn_preload":
        F.attention = lambda *a, **k: stock["attention"](*a, **k, preload=False)
    if "torchembed" in name:

        def embed(ids, pos, wte, wpe=None, pdl=None):
            return em._embed(ids[:, None], pos[:, None])[:, 0].float()

        F.embed = embed


def measure(name: str, rounds: int, variants: list[str]) -> dict:
    import torch

    from lspilot.daemon.engine import fused as F
    from lspilot.daemon.engine.graphs import DecodeIO, decode_and_pick
    from lspilot.daemon.engine.model import EngineModel

    em = EngineModel(bench.build(bench.model_configs()[name]), max_len=1088, fused=True)
    em.allocate(8)
    io = DecodeIO(em, 8)
    stock = {"attention": F.attention, "embed": F.embed, "pdl": em.fused.pdl,
             "pdl_by_op": dict(em.fused.pdl_by_op)}  # fmt: skip
    B, L = 2, 1024
    res: dict[str, list[float]] = {}
    try:
        with torch.inference_mode():
            ids = torch.zeros(B, 1, dtype=torch.long, device=em.device)
            pos = torch.full((B, 1), L - 1, dtype=torch.long, device=em.device)
            wpos = torch.full((B, 1), em.max_len, dtype=torch.long, device=em.device)
            key_pos = em.key_pos(L)
            for _ in range(rounds):
                for v in variants:
                    use_variant(F, em, v, stock)
                    res.setdefault(v, []).append(
                        capture_ms(lambda: em.fused.decode(ids, pos, wpos, key_pos))
                    )
                use_variant(F, em, "new", stock)
                io.inputs.zero_()
                io.inputs[1, :B] = L - 1
                io.inputs[2].fill_(io.trash)  # padding rows: nothing moves between replays
                for label, pick in (("pick_in_head", io.pick), ("pick_torch", None)):
                    saved, io.pick = io.pick, pick
                    res.setdefault(label, []).append(
                        capture_ms(lambda: decode_and_pick(em, io, B, L))
                    )
                    io.pick = saved
    finally:
        use_variant(F, em, "new", stock)
    return {k: {"median_ms": statistics.median(v), "runs_ms": v} for k, v in res.items()}


def launch_floor(kernels: int = 147, reps: int = 50) -> dict:
    """µs per kernel of a graphed chain of ``kernels`` near-empty kernels, per launch mode and
    grid size (1 program, or 264: two per multiprocessor, as the step's products)."""
    import torch
    from floor_kernels import touch

    from lspilot.daemon.engine.pdl import PDL_LATE, PDL_OFF, pdl_args

    x = torch.zeros(264, device="cuda")
    out = {}
    for programs in (1, 264):
        for label, mode in (("serial", PDL_OFF), ("pdl_late", PDL_LATE)):

            def chain(programs=programs, mode=mode):
                for _ in range(kernels):
                    touch[(programs,)](x, num_warps=4, **pdl_args(x, mode))

            chain()  # compile outside the capture
            graph, _ = bench.capture_graph(chain)
            graph.replay()
            torch.cuda.synchronize()
            ms = bench.replay_ms(graph, reps)
            out[f"{label}_{programs}p"] = ms * 1000 / kernels
    return out


# The sixth session's comparisons (docs/performance.md, runs 25-29): (run, what changed, the
# variant with the change, the variant without it, what became of it). Each pair ran in the
# same process.
COMPARISONS = [
    ("run25", "product merges attention's splits", "new", "merge_kernel", "reverted"),
    ("run26", "gate/up split over K", "new", "up_unsplit", "reverted"),
    ("run27", "RMS norm's scale after the product", "new", "norm_before", "reverted"),
    ("run29", "q/k/v tables before the wait", "new", "late_tables", "reverted"),
    ("run29", "attention's keys before the wait", "new", "no_attn_preload", "kept"),
    ("run29", "vocabulary product 256 wide", "head_bn256", "new", "kept"),
    ("run29", "vocabulary product 256 deep", "head_bk256", "new", "reverted"),
    ("run29", "PDL, late release", "pdl_late", "pdl_off", "qwen only"),
]


def plot(data: Path, path: Path) -> None:
    """The comparisons above from ``data`` (docs/data/engine-2026-12-02) as one figure: the
    step's change in µs per model, symmetric-log scale (they span -5 to +1500 µs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = ["qwen2.5-coder-0.5b", "starcoder-1b"]
    rows = []
    for run, label, changed, base, kept in COMPARISONS:
        res = json.loads((data / run / "step_parts.json").read_text())
        deltas = [(res[m][changed]["median_ms"] - res[m][base]["median_ms"]) * 1000 for m in models]
        rows.append((label, deltas, kept))
    fig, ax = plt.subplots(figsize=(9, 4.6))
    y = range(len(rows))
    for i, m in enumerate(models):
        ax.barh([r - 0.2 + 0.4 * i for r in y], [d[i] for _, d, _ in rows], height=0.38,
                label=m, color=["#4c72b0", "#dd8452"][i])  # fmt: skip
    for r, (_, d, _) in zip(y, rows, strict=True):
        for i, v in enumerate(d):
            ax.annotate(f"{v:+.1f}", (v, r - 0.2 + 0.4 * i), fontsize=7, va="center",
                        ha="left" if v >= 0 else "right", xytext=(3 if v >= 0 else -3, 0),
                        textcoords="offset points")  # fmt: skip
    ax.set_yticks(list(y), [f"{lab} ({fate})" for lab, _, fate in rows])
    ax.invert_yaxis()
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(-400, 8000)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("change of the whole decode step, µs (batch 2, 1024 keys; < 0 is faster)")
    floor = json.loads((data / "run29" / "step_parts.json").read_text())
    f = floor["launch_floor_us_per_kernel"]
    ax.set_title(
        "H200, bf16: the decode step with one part changed at a time (runs 25-29)\n"
        f"a kernel boundary alone: {f['pdl_late_264p']:.2f} µs with PDL, "
        f"{f['serial_264p']:.2f} serial (264 programs)",
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", nargs="*", default=["qwen2.5-coder-0.5b", "starcoder-1b"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", nargs="*", default=VARIANTS)
    ap.add_argument("--plot", metavar="DATA", help="only draw the runs 25-29 figure into --out")
    args = ap.parse_args()
    unknown = set(args.variants) - set(VARIANTS) - {"torchembed"}
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}: {VARIANTS + ['torchembed']}")
    if args.plot:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        plot(Path(args.plot), Path(args.out) / "step_parts.png")
        return
    bench._import_lspilot()
    out = {"launch_floor_us_per_kernel": launch_floor()}
    print(
        "| launch floor, us per kernel | "
        + " | ".join(f"{k} {v:.2f}" for k, v in out["launch_floor_us_per_kernel"].items())
        + " |",
        flush=True,
    )
    for name in args.models:
        out[name] = measure(name, args.rounds, args.variants)
        print(
            f"| {name} | "
            + " | ".join(f"{k} {v['median_ms'] * 1000:.1f}" for k, v in out[name].items())
            + " |",
            flush=True,
        )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "step_parts.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

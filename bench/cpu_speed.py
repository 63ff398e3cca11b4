# SPDX-License-Identifier: Apache-2.0
"""CPU speed of one FIM completion: stock transformers against the engine, in one run.

Qwen2.5-Coder-0.5B (the converted default model under ~/.cache/lspilot/models if present, else
random weights of its architecture), a FIM prompt of about 1.5k prefix and 300 suffix tokens of
real Python source. For each variant: time to first token (the prompt's prefill), decode
ms/token (forced length, no stop), and for the engine the first token after a one-token edit
at the end of the prefix (prefix reuse). Variants:

- stock ``generate``, bf16 (what the transformers backend does);
- stock ``generate`` with a static KV cache, bf16, no compile;
- the engine, bf16 (its own KV cache, batched scheduler; no CUDA graphs on a CPU);
- int8 dynamic quantisation (``torch.ao.quantization.quantize_dynamic`` on every Linear, fp32
  activations), stock and engine.

Keep it short: the development machine has 2 cores shared with others. ``--new-tokens`` and
``--reps`` trade time for noise. Run: ``python bench/cpu_speed.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = Path.home() / ".cache" / "lspilot" / "models" / "qwen2.5-coder-0.5b"


def load_model(dtype):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (MODEL_DIR / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(MODEL_DIR)
        return model.eval(), tok, str(MODEL_DIR)
    # The same architecture definition as the GPU benchmark, so both measure one model.
    sys.path.insert(0, str(Path(__file__).parent))
    from engine import model_configs

    cfg = model_configs()["qwen2.5-coder-0.5b"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval(), None, "random weights (qwen2 0.5B architecture)"


def fim_prompt(tok, n_prefix=1500, n_suffix=300) -> list[int]:
    """Real Python source around a cursor, in Qwen2.5-Coder's FIM layout."""
    import transformers.models.qwen2.modeling_qwen2 as src

    text = Path(src.__file__).read_text()
    if tok is None:
        import random

        rng = random.Random(0)
        return [rng.randrange(100, 150000) for _ in range(n_prefix + n_suffix + 3)]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    prefix, suffix = ids[:n_prefix], ids[n_prefix : n_prefix + n_suffix]
    special = tok.convert_tokens_to_ids(["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"])
    return [special[0], *prefix, special[1], *suffix, special[2]]


class _Clock:
    """A generate() streamer that only records when each new token arrives."""

    def __init__(self):
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value):
        if self._prompt_seen:  # the first put is the prompt itself
            self.times.append(time.perf_counter())
        self._prompt_seen = True

    def end(self):
        pass


def stock(model, ids, n, **kw) -> tuple[float, list[float], list[int]]:
    import torch

    x = torch.tensor([ids])
    clock = _Clock()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
            streamer=clock,
            **kw,
        )
    return t0, clock.times, out[0, len(ids) :].tolist()


def time_stock(model, ids, args, **kw) -> dict:
    # Token timestamps from a streamer, as for the engine: a decode rate computed from two
    # separate runs would carry their prefill noise, seconds on a shared machine.
    stock(model, ids[:64], 2, **kw)  # warm-up
    runs = [stock(model, ids, args.new_tokens, **kw) for _ in range(args.reps)]
    return {
        "ttft_ms": statistics.median((r[1][0] - r[0]) * 1000 for r in runs),
        "decode_ms_per_token": statistics.median(
            (r[1][-1] - r[1][0]) / (len(r[1]) - 1) * 1000 for r in runs
        ),
        "tokens": runs[-1][2],
    }


async def engine_run(be, ids, n, key=""):
    from lspilot.daemon.backends.base import SamplingParams, Sequence

    seq = Sequence("cpu", ids, SamplingParams(max_new_tokens=n), cache_key=key)
    t0 = time.perf_counter()
    times, toks = [], []
    async for step in be.generate(seq):
        times.append(time.perf_counter())
        toks.append(step.token_id)
    return t0, times, toks, seq


def time_engine(model, ids, args) -> dict:
    from lspilot.daemon.engine import EngineBackend

    async def go():
        be = EngineBackend(model, device="cpu", max_batch=2, max_len=len(ids) + 128)
        try:
            await engine_run(be, ids[:64], 2)  # warm-up
            ttfts = []
            for i in range(args.reps):
                t0, times, _, _ = await engine_run(be, ids, 1, key=f"cold{i}")
                ttfts.append(times[0] - t0)
            t0, times, toks, _ = await engine_run(be, ids, args.new_tokens, key="doc")
            # A one-token edit at the end of the prefix, i.e. just before the FIM suffix: the
            # engine reuses the KV of everything before it and recomputes the rest.
            cut = len(ids) - 303
            edited = [*ids[:cut], ids[cut] + 1, *ids[cut + 1 :]]
            te, times_e, _, seq_e = await engine_run(be, edited, 1, key="doc")
            # And typing at the very end of the prompt (a prefix-only prompt grows by a token).
            grown = [*ids, toks[0]]
            tg, times_g, _, seq_g = await engine_run(be, grown, 1, key="doc")
            return {
                "ttft_ms": statistics.median(ttfts) * 1000,
                "decode_ms_per_token": (times[-1] - times[0]) / (len(times) - 1) * 1000,
                "edit_before_suffix_ttft_ms": (times_e[0] - te) * 1000,
                "edit_before_suffix_cached_tokens": seq_e.cached_tokens,
                "append_one_token_ttft_ms": (times_g[0] - tg) * 1000,
                "tokens": toks,
                "stats": be.stats(),
            }
        finally:
            await be.close()

    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=17)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "cpu_speed.json"))
    ap.add_argument("--skip", nargs="*", default=[], help="variants to leave out")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    try:
        import lspilot.daemon.engine  # noqa: F401
    except ImportError:
        import lspilot

        lspilot.__path__.append(str(ROOT))
    import torch

    if args.threads:
        # On a shared machine, fewer threads than cores can be much faster: OpenMP teams wait
        # on each other at every small op when another process holds a core.
        torch.set_num_threads(args.threads)
    model, tok, source = load_model(torch.bfloat16)
    ids = fim_prompt(tok)
    res = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "load_average": os.getloadavg(),
        "model": source,
        "prompt_tokens": len(ids),
        "new_tokens": args.new_tokens,
        "variants": {},
    }
    v = res["variants"]

    def run(name, fn):
        if name in args.skip:
            return
        t = time.perf_counter()
        try:
            v[name] = fn()
        except Exception as e:  # noqa: BLE001 - recorded; the other variants still run
            v[name] = {"error": f"{type(e).__name__}: {e}"}
        print(f"{name}: {time.perf_counter() - t:.0f}s {summary(v[name])}", flush=True)

    run("stock_bf16", lambda: time_stock(model, ids, args))
    run(
        "stock_bf16_static_cache",
        lambda: time_stock(model, ids, args, cache_implementation="static", disable_compile=True),
    )
    run("engine_bf16", lambda: time_engine(model, ids, args))
    q8 = None
    if not {"stock_int8", "engine_int8"} <= set(args.skip):
        q8 = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).float(), {torch.nn.Linear}, dtype=torch.qint8
        )
        run("stock_int8", lambda: time_stock(q8, ids, args))
        run("engine_int8", lambda: time_engine(q8, ids, args))
    ref = v.get("stock_bf16", {}).get("tokens")
    for r in v.values():
        if ref and "tokens" in r:
            r["same_tokens_as_stock_bf16"] = r["tokens"] == ref
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: summary(r) for k, r in v.items()}, indent=1))


def summary(r: dict) -> dict:
    return {
        k: round(x, 1) if isinstance(x, float) else x
        for k, x in r.items()
        if k not in ("tokens", "stats")
    }


if __name__ == "__main__":
    main()

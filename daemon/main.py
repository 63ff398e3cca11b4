# SPDX-License-Identifier: Apache-2.0
"""``lspilot daemon``: parse options, take the per-user lock, load the model, serve."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import sys
from pathlib import Path

from lspilot.protocol.endpoint import create_token, default_address, parse_address, runtime_dir

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="",
        help="registry name, model directory or .gguf file "
        "(default: the registry's default model, pulled on first start)",
    )
    p.add_argument(
        "--listen",
        default="",
        help="unix:/path.sock (default, in the runtime "
        "directory) or tcp:127.0.0.1:PORT (then a token is required)",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback TCP address (anyone who can reach it and holds "
        "the token can use the model)",
    )
    p.add_argument("--backend", choices=["auto", "transformers", "engine"], default="auto")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    p.add_argument("--dtype", default="auto", help="bfloat16, float16, float32 (default: auto)")
    p.add_argument("--fim", default=None, help="override the detected FIM format")
    p.add_argument("--context", type=int, default=None, help="context window cap in tokens")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch (default: torch's choice; on a busy machine "
        "fewer than the cores can be several times faster, see docs/performance.md)",
    )
    p.add_argument(
        "--quantize",
        choices=["none", "int8"],
        default="none",
        help="CPU only: int8 dynamic quantisation of the linear layers (about 3-5x "
        "faster decode on a CPU; the suggestions change slightly)",
    )
    p.add_argument(
        "--slots",
        type=int,
        default=8,
        help="engine: sequences decoded together, i.e. editors served at once without "
        "queueing (each holds a KV cache of the model's context; a GPU server for a team "
        "wants 32-64, see docs/performance.md)",
    )
    p.add_argument("--log-level", default="INFO")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        address = parse_address(args.listen) if args.listen else default_address()
    except ValueError as exc:
        print(f"lspilot daemon: {exc}", file=sys.stderr)
        return 2
    if not address.is_loopback() and not args.allow_remote:
        print(
            f"lspilot daemon: refusing non-loopback address {address}; pass --allow-remote "
            "if you really mean to serve other machines",
            file=sys.stderr,
        )
        return 2
    lock = _take_lock(address)
    if lock is None:
        print(f"lspilot daemon: another daemon already serves {address}", file=sys.stderr)
        return 3
    token = create_token() if address.kind == "tcp" else None
    from .server import serve

    asyncio.run(serve(address, lambda state: _load(args, state), token=token))
    return 0


def _take_lock(address) -> object | None:
    """One daemon per address: an exclusive flock held for the daemon's lifetime."""
    name = "daemon-" + "".join(c if c.isalnum() else "_" for c in str(address))[-80:] + ".lock"
    fd = os.open(runtime_dir() / name, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _load(args: argparse.Namespace, state):
    from .completion import CompletionService
    from .loader import load_model

    path, name = _resolve_model(args.model, state)
    state.loading = f"loading {name}"
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = load_model(
        path,
        name=name,
        device=args.device,
        dtype=args.dtype,
        fim_override=args.fim,
        context_window=args.context,
        quantize=args.quantize,
    )
    backend = make_backend(args.backend, model, slots=args.slots)
    log.info("backend %s: %s", backend.info.name,
             " ".join(f"{k}={v}" for k, v in backend.info.extra.items()))  # fmt: skip
    if hasattr(backend, "warmup_blocking") and backend.info.extra.get("cuda_graphs") == "true":
        # Kernel compiles and graph captures take tens of seconds on a fresh machine (Triton
        # caches its kernels on disk for later starts): pay them while "loading", not inside
        # someone's first completions.
        state.loading = f"warming up {name}"
        n = backend.warmup_blocking()
        log.info("engine warm: %d CUDA graphs captured (decode and prefill)", n)
    return CompletionService(model, backend)


def make_backend(kind: str, model, slots: int = 8):
    """The fast engine where it supports the architecture, else plain transformers.

    ``auto`` falls back quietly (with a log line); asking for ``engine`` explicitly fails loudly
    on an architecture the engine does not know.
    """
    if kind in ("engine", "auto"):
        from .engine import EngineBackend, UnsupportedModel

        try:
            return EngineBackend(model.model, device=model.device, max_batch=slots)
        except UnsupportedModel as exc:
            if kind == "engine":
                raise
            log.info("engine does not support this model (%s); using transformers", exc)
    from .backends.hf import TransformersBackend

    return TransformersBackend(model.model, device=model.device)


def _resolve_model(arg: str, state) -> tuple[Path, str]:
    """A local directory as is; a registry name (or the default) or a .gguf file is pulled or
    converted into the cache first."""
    if arg and Path(arg).is_dir():
        return Path(arg), Path(arg).name
    from .models.pull import ensure_model, resolve_model
    from .models.registry import load_registry

    name = arg or load_registry().default_name
    local = resolve_model(name)
    if local is not None and local.is_dir():
        return local, name

    def progress(stage: str, done: int, total: int) -> None:
        pct = f" {100 * done // total}%" if total else ""
        state.loading = f"pulling {name}: {stage}{pct}"

    state.loading = f"pulling {name}"
    label = Path(name).stem if name.endswith(".gguf") else name
    return ensure_model(name, progress=progress), label

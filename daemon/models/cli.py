# SPDX-License-Identifier: Apache-2.0
"""``lspilot model pull NAME`` and ``lspilot model list``.

The top-level CLI owns the parser and the ``model`` command; it calls
``add_subcommands(subparsers)`` with that command's subparsers to get ``pull`` and ``list``, and
``run(args)`` to execute them. Errors from the model layer become one line on stderr
and exit status 1; progress goes to stderr as tqdm bars, so stdout stays parseable.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from . import cache
from .errors import ModelError
from .registry import PypiSource, load_registry

logger = logging.getLogger(__name__)

_STAGES = ("download", "join", "verify", "convert")


def add_subcommands(subparsers: Any) -> None:
    """Add ``pull`` and ``list`` to the ``model`` command's subparsers object.

    The top-level CLI creates ``model`` and its subparsers (``dest="model_command"``), calls
    this, and hands the parsed arguments to ``run``. Each parser's default ``func`` is ``run``,
    for CLIs that dispatch with ``args.func(args)``.
    """
    pull = subparsers.add_parser(
        "pull",
        help="download, verify and convert a model into the cache",
        description="Download, verify and convert a model into the cache. NAME is a registry "
        "name (see `lspilot model list`) or a path to a .gguf file; without NAME, the default "
        "model.",
    )
    pull.add_argument("name", nargs="?", default=None, metavar="NAME")
    pull.add_argument("--quiet", action="store_true", help="no progress bars")
    pull.set_defaults(func=run)
    listing = subparsers.add_parser("list", help="models in the registry and in the cache")
    listing.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``model`` command; returns the process exit status."""
    try:
        if args.model_command == "pull":
            return _pull(args.name, quiet=getattr(args, "quiet", False))
        if args.model_command == "list":
            return _list()
    except ModelError as error:
        print(f"lspilot: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lspilot: interrupted; nothing was left in the cache", file=sys.stderr)
        return 130
    print(f"lspilot: error: unknown model command {args.model_command!r}", file=sys.stderr)
    return 2


def _pull(name: str | None, *, quiet: bool) -> int:
    from .pull import ensure_model

    name = name or load_registry().default_name
    bars = _Bars(enabled=not quiet)
    started = time.monotonic()
    try:
        path = ensure_model(name, progress=bars)
    finally:
        bars.close()
    took = time.monotonic() - started
    stages = ", ".join(f"{stage} {secs:.1f} s" for stage, secs in bars.durations().items())
    print(f"{name}: ready at {path}", file=sys.stderr)
    if stages:
        print(f"took {took:.1f} s ({stages})", file=sys.stderr)
    print(path)
    return 0


def _list() -> int:
    registry = load_registry()
    rows = [("NAME", "PULLED", "SIZE", "FAMILY", "PARAMS", "FIM", "CONTEXT", "LICENCE")]
    for spec in registry:
        directory = cache.model_dir(spec.name)
        manifest = cache.read_manifest(directory)
        pulled = manifest is not None and manifest.gguf_sha256 == spec.sha256
        if pulled:
            size = f"{_human(cache.dir_size(directory))} on disk"
        else:
            download = next(
                (s.download_size for s in spec.sources if isinstance(s, PypiSource)), spec.size
            )
            size = f"{_human(download)} download"
        name = spec.name + (" (default)" if spec.name == registry.default_name else "")
        rows.append(
            (name, "yes" if pulled else "no", size, spec.family, spec.parameters, spec.fim,
             str(spec.context_window), spec.licence)
        )  # fmt: skip
    models = cache.models_dir()
    if models.is_dir():
        for directory in sorted(models.iterdir()):
            manifest = cache.read_manifest(directory)
            if manifest is None or directory.name in registry:
                continue
            size = f"{_human(cache.dir_size(directory))} on disk"
            origin = manifest.source.removeprefix("gguf:")
            rows.append((f"{directory.name} ({origin})", "yes", size, "-", "-", "-", "-", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    print(f"\ncache: {cache.cache_root()}", file=sys.stderr)
    return 0


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


class _Bars:
    """A progress callback drawing one tqdm bar per stage, and timing each stage."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.stage: str | None = None
        self.bar: Any = None
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.finished: set[str] = set()

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        self.first.setdefault(stage, now)
        self.last[stage] = now
        if not self.enabled:
            return
        if stage != self.stage:
            if stage in self.finished and total and done >= total:
                return  # a repeated "done" report for a stage whose bar is already closed
            self._close_bar()
            from tqdm.auto import tqdm

            steps = stage == "convert"
            self.bar = tqdm(
                total=total,
                desc=f"{stage:<8}",
                unit="step" if steps else "B",
                unit_scale=not steps,
                unit_divisor=1024,
                file=sys.stderr,
                leave=True,
            )
            self.stage = stage
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)
        if total and done >= total:
            self._close_bar()  # so its elapsed time is the stage's, not until the next starts
            self.finished.add(stage)
            self.stage = None

    def durations(self) -> dict[str, float]:
        return {s: self.last[s] - self.first[s] for s in _STAGES if s in self.first}

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        self._close_bar()
        self.stage = None


def main(argv: list[str] | None = None) -> int:
    """``python -m lspilot.daemon.models.cli pull|list``: the same commands without the top CLI."""
    parser = argparse.ArgumentParser(prog="lspilot model")
    add_subcommands(parser.add_subparsers(dest="model_command", required=True))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

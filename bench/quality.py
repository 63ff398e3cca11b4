# SPDX-License-Identifier: Apache-2.0
"""Completion quality on held-out Python code, measured through the real stack.

For each hole cut out of a held-out file (``bench/quality_data``), the benchmark runs what an
editor would: it starts a real ``lspilot daemon`` with the model, the real language server
(``python -m lspilot lsp``) under a pygls ``LanguageClient``, opens the other modules of the same
package as documents (the extra context the server may use), opens the file with the hole, asks
``textDocument/inlineCompletion`` (trigger kind ``Invoked``) at the hole and compares the first
item's ``insertText`` with the text that was removed.

Holes, chosen deterministically from ``--seed`` with ``tokenize`` and ``ast``:

* **single-line**: the rest of a line from a point after some code on it, the end of a token
  (``x = |foo(a)``, ``foo(|a)``, ``self.|name``) or, for about a quarter, the middle of an
  identifier (``self.na|me``), where token healing matters. Only lines that are one whole
  logical line, with no comment and not a docstring.
* **multi-line**: the body of a ``def`` / ``if`` / ``for`` / ``while`` / ``with`` / ``try``
  block of 2-10 lines. The cursor sits on an empty line right after the line ending in ``:``
  (after the docstring, for a function that has one), indented as an editor indents after
  Enter; the expected text is the block's lines.

Metrics, per configuration and hole kind: exact match (trailing whitespace stripped), edit
similarity (1 - Levenshtein / max length), the share of non-empty suggestions after which the
whole file still parses (``ast.parse``), the empty-suggestion rate and the median round-trip
latency of the request.

Configurations are language-server settings sent as ``initializationOptions``
(:data:`CONFIGS`), one language server each, all talking to one daemon (see :func:`run_holes`
for why the configurations take turns).

Run (about 15-20 minutes on the 2-core development machine)::

    .venv/bin/python bench/quality.py
    .venv/bin/python bench/quality.py --limit 5 --configs full   # a quick check

Writes ``bench/out/quality-<date>.json``; ``--doc`` rewrites the tables of
``docs/quality-measured.md`` between its markers and ``--chart`` draws ``docs/img/quality.png``.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import dataclasses
import datetime as dt
import io
import json
import os
import platform
import random
import re
import shlex
import statistics
import subprocess
import sys
import time
import tokenize
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "quality_data"
OUT = ROOT / "bench" / "out"
DOC = ROOT / "docs" / "quality-measured.md"
CHART = ROOT / "docs" / "img" / "quality.png"

# Modules of 100-400 lines in which holes are cut; every .py file of the same package is opened
# as a document too, so the server can draw extra context from it.
TARGETS = (
    "gamekit/grid.py",
    "gamekit/loop.py",
    "gamekit/ecs.py",
    "faultshield/circuit_breaker.py",
    "faultshield/retry.py",
    "faultshield/pipeline.py",
    "csvdoctor/textutil.py",
    "csvdoctor/fix.py",
)

CONFIGS: dict[str, dict[str, Any]] = {
    "full": {},
    "no-postprocess": {"postprocess": False},
    "no-extra-context": {"extraContext": False},
    "extra-context": {"extraContext": True},  # off by default since 2026-11-28
    "token-healing": {"tokenHealing": True},  # the default since 2026-11-28 (after code)
    "no-token-healing": {"tokenHealing": False},
    "three-choices": {"choicesOnInvoke": 3},  # scored on the first item and on any item
}

MAX_NEW_TOKENS = {"single": 24, "multi": 96}
# Settings every configuration shares. The request deadline is raised from the default 30 s:
# on a busy 2-core machine a 2k-token prefill alone can take that long, and a deadline would
# measure the machine's load, not the suggestion.
BASE_OPTIONS = {
    "autostartDaemon": False,
    "choicesOnInvoke": 1,
    "debounceMs": 0,
    "requestTimeoutMs": 120_000,
}
KINDS = ("single", "multi")

# A single-line hole at a token boundary begins where the next token starts, so the prefix keeps
# the space a user would have typed (``x = |``).
MIN_EXPECTED_CHARS = 3
MID_WORD_SHARE = 0.25
BLOCK_LINES = (2, 10)
BLOCK_MAX_CHARS = 400


# --- holes ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Hole:
    id: str
    kind: str  # single | multi
    cut: str  # token | mid_word (single-line) or block | after_docstring (multi-line)
    path: str  # relative to DATA
    line: int  # 0-based position of the cursor
    character: int  # UTF-16 code units, as LSP counts by default
    offset: int  # in characters, into ``text``
    text: str  # the file with the hole cut out
    expected: str


def _utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def _line_starts(source: str) -> list[int]:
    starts, pos = [0], 0
    for line in source.splitlines(keepends=True):
        pos += len(line)
        starts.append(pos)
    return starts


def single_line_candidates(source: str) -> list[tuple[int, int, str]]:
    """``(line, column, cut)`` (0-based line, column in characters) where a line may be cut.

    A line qualifies when it holds one whole logical line with no comment and is not a bare
    string (docstrings): the rest of it, from the cut, is then what a completion should write.
    """
    lines = source.splitlines()
    logical: list[list[tokenize.TokenInfo]] = [[]]
    skip = {tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in skip:
            continue
        if tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            if logical[-1]:
                logical.append([])
            continue
        logical[-1].append(tok)
    out = []
    for toks in logical:
        if not toks:
            continue
        row = toks[0].start[0]
        if any(t.start[0] != row or t.end[0] != row for t in toks):
            continue  # spans several physical lines
        if any(t.type == tokenize.COMMENT for t in toks):
            continue
        if toks[0].type == tokenize.STRING or toks[0].string in ("import", "from", "@"):
            continue  # docstrings, imports and decorators: memory, not completion
        text = lines[row - 1]
        end = len(text.rstrip())
        for tok in toks[1:]:
            col = tok.start[1]
            if len(text[col:end].strip()) >= MIN_EXPECTED_CHARS:
                out.append((row - 1, col, "token"))
        for tok in toks[1:]:  # not the line's first word: some code stands before the cut
            if tok.type == tokenize.NAME and len(tok.string) >= 4:
                col = tok.start[1] + len(tok.string) // 2
                if len(text[col:end].strip()) >= MIN_EXPECTED_CHARS:
                    out.append((row - 1, col, "mid_word"))
    return out


def multi_line_candidates(source: str) -> list[tuple[int, int, str]]:
    """``(first_line, last_line, cut)``, 0-based and inclusive, of blocks worth completing."""
    lines = source.splitlines()
    out = []
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if not isinstance(body, list) or not body or isinstance(node, (ast.Module, ast.ClassDef)):
            continue
        if not isinstance(
            node,
            (ast.FunctionDef, ast.AsyncFunctionDef, ast.If, ast.For, ast.While, ast.With, ast.Try),
        ):
            continue
        cut = "block"
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            docstring, body = body[0], body[1:]
            # The cursor goes right after the docstring: skip when a blank line follows it.
            if not body or body[0].lineno != docstring.end_lineno + 1:
                continue
            cut = "after_docstring"
        elif not lines[body[0].lineno - 2].rstrip().endswith(":"):
            continue  # body on the header's line, or a comment between header and body
        first, last = body[0].lineno - 1, body[-1].end_lineno - 1
        block = "\n".join(lines[first : last + 1])
        if not BLOCK_LINES[0] <= last - first + 1 <= BLOCK_LINES[1] or len(block) > BLOCK_MAX_CHARS:
            continue
        out.append((first, last, cut))
    return sorted(out)


def cut_single(path: str, source: str, line: int, col: int, cut: str) -> Hole:
    lines = source.splitlines(keepends=True)
    text_line = lines[line]
    body = text_line.rstrip("\r\n")
    newline = text_line[len(body) :]
    expected = body[col:].rstrip()
    starts = _line_starts(source)
    holed = source[: starts[line]] + body[:col] + newline + source[starts[line + 1] :]
    return Hole(
        id=f"{path}:{line + 1}:{col}",
        kind="single",
        cut=cut,
        path=path,
        line=line,
        character=_utf16_len(body[:col]),
        offset=starts[line] + col,
        text=holed,
        expected=expected,
    )


def cut_multi(path: str, source: str, first: int, last: int, cut: str) -> Hole:
    lines = source.splitlines(keepends=True)
    indent = re.match(r"[ \t]*", lines[first]).group(0)
    block = "".join(lines[first : last + 1]).rstrip()
    expected = block[len(indent) :]
    starts = _line_starts(source)
    newline = "\n" if lines[last].endswith("\n") else ""
    holed = source[: starts[first]] + indent + newline + source[starts[last + 1] :]
    return Hole(
        id=f"{path}:{first + 1}-{last + 1}",
        kind="multi",
        cut=cut,
        path=path,
        line=first,
        character=_utf16_len(indent),
        offset=starts[first] + len(indent),
        text=holed,
        expected=expected,
    )


def make_holes(n_single: int, n_multi: int, seed: int) -> list[Hole]:
    """Holes spread evenly over :data:`TARGETS`, the same for the same seed and data."""
    rng = random.Random(seed)
    per_file_single: list[list[Hole]] = []
    per_file_multi: list[list[Hole]] = []
    for path in TARGETS:
        source = (DATA / path).read_text()
        cands = single_line_candidates(source)
        token = [c for c in cands if c[2] == "token"]
        mid = [c for c in cands if c[2] == "mid_word"]
        rng.shuffle(token)
        rng.shuffle(mid)
        # Interleave so that about MID_WORD_SHARE of a file's holes are mid-word cuts, and
        # no two holes share a line (they would test the same thing twice).
        picked, used = [], set()
        while token or mid:
            pool = mid if (mid and (not token or rng.random() < MID_WORD_SHARE)) else token
            line, col, cut = pool.pop()
            if line in used:
                continue
            used.add(line)
            picked.append(cut_single(path, source, line, col, cut))
        per_file_single.append(picked)
        blocks = multi_line_candidates(source)
        rng.shuffle(blocks)
        per_file_multi.append([cut_multi(path, source, *b) for b in blocks])
    return _round_robin(per_file_single, n_single, rng) + _round_robin(per_file_multi, n_multi, rng)


def _round_robin(per_file: list[list[Hole]], n: int, rng: random.Random) -> list[Hole]:
    order = list(range(len(per_file)))
    rng.shuffle(order)
    queues = [list(per_file[i]) for i in order]
    out: list[Hole] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return sorted(out, key=lambda h: (h.path, h.line))


# --- metrics --------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Trailing whitespace removed on every line and at the end."""
    return "\n".join(line.rstrip() for line in text.rstrip().splitlines())


try:
    from rapidfuzz.distance import Levenshtein as _lev

    def edit_similarity(a: str, b: str) -> float:
        return _lev.normalized_similarity(a, b)
except ImportError:  # pragma: no cover - rapidfuzz is optional
    import difflib

    def edit_similarity(a: str, b: str) -> float:
        if not a and not b:
            return 1.0
        return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def parses(text: str) -> bool:
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True


def score(hole: Hole, suggestion: str) -> dict[str, Any]:
    got, want = normalize(suggestion), normalize(hole.expected)
    return {
        "exact": got == want,
        "edit_similarity": round(edit_similarity(got, want), 4),
        "empty": not suggestion.strip(),
        "valid": parses(hole.text[: hole.offset] + suggestion + hole.text[hole.offset :]),
    }


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in results if r.get("error") is None]
    non_empty = [r for r in ok if not r["empty"]]
    latencies = [r["latency_ms"] for r in ok]
    cold = [r["latency_ms"] for r in ok if _is_cold(r)]
    prompts = [r["timings"]["prompt_tokens"] for r in ok if r.get("timings")]
    n = len(ok)
    return {
        "holes": len(results),
        "errors": len(results) - n,
        "exact": _share(sum(r["exact"] for r in ok), n),
        "exact_any_choice": _share(sum(r.get("exact_any", r["exact"]) for r in ok), n),
        "edit_similarity": round(statistics.fmean(r["edit_similarity"] for r in ok), 3)
        if ok
        else None,
        "valid": _share(sum(r["valid"] for r in non_empty), len(non_empty)),
        "empty": _share(sum(r["empty"] for r in ok), n),
        "median_latency_ms": round(statistics.median(latencies)) if latencies else None,
        "p90_latency_ms": round(_quantile(latencies, 0.9)) if latencies else None,
        "cold": len(cold),
        "median_cold_latency_ms": round(statistics.median(cold)) if cold else None,
        "median_prompt_tokens": round(statistics.median(prompts)) if prompts else None,
    }


def _is_cold(r: dict[str, Any]) -> bool:
    """The daemon reused the KV of at most a tenth of the prompt: a full prefill, nearly."""
    t = r.get("timings") or {}
    return bool(t) and t.get("cached_tokens", 0) <= 0.1 * t.get("prompt_tokens", 0)


def _share(k: int, n: int) -> float | None:
    return round(k / n, 3) if n else None


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# --- running the stack ----------------------------------------------------------------------


def snapshot(rev: str, workdir: Path) -> tuple[Path, str]:
    """The lspilot sources of commit ``rev``, importable as ``lspilot``: ``(path entry, sha)``.

    The working tree of a busy repository is often half edited; measuring a commit makes the
    numbers reproducible and says what they are of. ``git archive`` leaves the repository alone.
    The layout mirrors pyproject's package-dir: lsp/, daemon/ and protocol/ under ``lspilot``.
    """
    sha = subprocess.run(
        ["git", "rev-parse", rev], cwd=ROOT, text=True, capture_output=True, check=True
    ).stdout.strip()
    src = workdir / f"src-{sha[:12]}"
    if not (src / ".complete").exists():
        src.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha, "lspilot", "lsp", "daemon", "protocol"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        root = src / "pkgroot"
        root.mkdir(exist_ok=True)
        (root / "lspilot").symlink_to(src / "lspilot")
        for sub in ("lsp", "daemon", "protocol"):
            (src / "lspilot" / sub).symlink_to(src / sub)
        (src / ".complete").touch()
    return src / "pkgroot", sha


def use_source(path_entry: Path | None) -> dict[str, str]:
    """The environment for our subprocesses, and this process's own imports, from the snapshot.

    ``PYTHONPATH`` comes before the editable install's finder, so ``lspilot`` resolves there.
    """
    env = dict(os.environ)
    if path_entry is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path_entry), env.get("PYTHONPATH")]))
        sys.path.insert(0, str(path_entry))
    return env


class Daemon:
    """A real ``lspilot daemon`` process on a private unix socket."""

    def __init__(
        self, model: str, workdir: Path, extra_args: list[str], env: dict[str, str]
    ) -> None:
        self.workdir = workdir
        self.env = env
        self.address = f"unix:{workdir / 'daemon.sock'}"
        self.log_path = workdir / "daemon.log"
        self.cmd = [
            sys.executable,
            "-m",
            "lspilot",
            "daemon",
            "--model",
            model,
            "--listen",
            self.address,
            *extra_args,
        ]
        self.proc: subprocess.Popen | None = None

    def launch(self) -> None:
        env = dict(self.env, LSPILOT_RUNTIME_DIR=str(self.workdir))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )

    async def wait_ready(self, timeout: float) -> float:
        """Seconds from now until the model is loaded."""
        started = time.perf_counter()
        from lspilot.protocol.client import DaemonClient, DaemonUnavailable
        from lspilot.protocol.endpoint import parse_address

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"daemon exited with {self.proc.returncode}; see {self.log_path}"
                )
            client = DaemonClient(parse_address(self.address))
            try:
                info = await client.info(timeout=2)
                if not info.loading:
                    return time.perf_counter() - started
                if "failed" in info.loading:
                    raise RuntimeError(f"daemon failed to load: {info.loading}")
            except DaemonUnavailable:
                pass
            finally:
                await client.close()
            await asyncio.sleep(0.3)
        raise TimeoutError(f"daemon not ready after {timeout:.0f}s; see {self.log_path}")

    async def status(self) -> dict[str, Any]:
        from lspilot.protocol.client import DaemonClient
        from lspilot.protocol.endpoint import parse_address

        client = DaemonClient(parse_address(self.address))
        try:
            return dataclasses.asdict(await client.status(timeout=5))
        finally:
            await client.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Session:
    """One real language server, driven as an editor drives it."""

    def __init__(self, options: dict[str, Any], log_path: Path, env: dict[str, str]) -> None:
        from pygls.lsp.client import LanguageClient

        self.options = options
        self.env = env
        self.log_path = log_path
        self.client = LanguageClient("lspilot-quality", "1")
        self.versions: dict[str, int] = {}
        self.open_package: str | None = None
        self.final: dict[str, Any] = {}

        @self.client.feature("lspilot/partialCompletion")
        def on_partial(params) -> None:
            params = _plain(params)
            if params.get("done"):
                self.final = params

    async def start(self) -> None:
        from lsprotocol import types

        # pygls pipes the server's stderr and never reads it: send it to a file instead, so a
        # chatty server cannot fill the pipe and stall.
        command = (
            f"exec {shlex.quote(sys.executable)} -m lspilot lsp "
            f"2>>{shlex.quote(str(self.log_path))}"
        )
        # Not run from the repository root, where ``-m lspilot`` would find the working tree's
        # package before the snapshot on PYTHONPATH.
        await self.client.start_io("sh", "-c", command, cwd=str(self.log_path.parent), env=self.env)
        await self.client.initialize_async(
            types.InitializeParams(
                capabilities=types.ClientCapabilities(), initialization_options=self.options
            )
        )
        self.client.initialized(types.InitializedParams())

    async def stop(self) -> None:
        try:
            await asyncio.wait_for(self.client.shutdown_async(None), 10)
            self.client.exit(None)
        finally:
            await self.client.stop()

    def _open(self, path: str, text: str) -> None:
        from lsprotocol import types

        uri = (DATA / path).as_uri()
        self.versions[path] = self.versions.get(path, 0) + 1
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id="python", version=self.versions[path], text=text
                )
            )
        )

    def _close(self, path: str) -> None:
        from lsprotocol import types

        self.client.text_document_did_close(
            types.DidCloseTextDocumentParams(
                text_document=types.TextDocumentIdentifier(uri=(DATA / path).as_uri())
            )
        )

    def _package_files(self, package: str) -> list[str]:
        return sorted(str(p.relative_to(DATA)) for p in (DATA / package).glob("*.py"))

    def show_package(self, package: str) -> None:
        """Every module of ``package`` open in full, as tabs of an editor; others closed."""
        if self.open_package == package:
            return
        if self.open_package is not None:
            for path in self._package_files(self.open_package):
                self._close(path)
        for path in self._package_files(package):
            self._open(path, (DATA / path).read_text())
        self.open_package = package

    async def complete(self, hole: Hole, timeout: float) -> tuple[str, float, dict[str, Any]]:
        """Replace the target document by the holed text, ask at the hole, restore it."""
        from lsprotocol import types

        self.show_package(hole.path.split("/")[0])
        self._close(hole.path)
        self._open(hole.path, hole.text)
        self.final = {}
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=(DATA / hole.path).as_uri()),
            position=types.Position(line=hole.line, character=hole.character),
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Invoked
            ),
        )
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(
                self.client.text_document_inline_completion_async(params), timeout
            )
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            self._close(hole.path)
            self._open(hole.path, (DATA / hole.path).read_text())
        items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
        self.last_items = [_text(i.insert_text) for i in items]
        text = items[0].insert_text if items else ""
        if isinstance(text, types.StringValue):
            text = text.value
        await asyncio.sleep(0)  # let a done notification that raced the response land
        return text, elapsed_ms, dict(self.final)


def _plain(obj):
    if hasattr(obj, "_asdict"):
        obj = obj._asdict()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


async def run_holes(
    configs: list[str], holes: list[Hole], args, workdir: Path, daemon: Daemon
) -> list[dict[str, Any]]:
    """Every hole under every configuration, one language server per configuration and kind.

    Holes go one after the other, and for each hole the configurations take turns being
    first. One daemon serves them all, which halves the run: its prefix cache keeps the KV of
    recent prompts, and "full" and "no-postprocess" send the same prompt ("token-healing" one
    that differs only at its end), so whichever of them comes second skips most of the
    prefill. The quality metrics do not depend on that (decoding is greedy); round-trip times
    do, and the rotation does not even it out ("no-postprocess" follows "full" in three turns
    of four). Hence :func:`summarize` also gives the median over cold prompts alone.
    """
    results = []
    for kind in KINDS:
        kind_holes = [h for h in holes if h.kind == kind]
        if not kind_holes:
            continue
        sessions: dict[str, Session] = {}
        try:
            for name in configs:
                options = {
                    **BASE_OPTIONS,
                    "daemonAddress": daemon.address,
                    "maxNewTokens": MAX_NEW_TOKENS[kind],
                    **CONFIGS[name],
                }
                sessions[name] = Session(options, workdir / f"lsp-{name}-{kind}.log", daemon.env)
                await sessions[name].start()
            for i, hole in enumerate(kind_holes):
                shift = i % len(configs)
                for name in configs[shift:] + configs[:shift]:
                    record = await _one(sessions[name], name, hole, args.timeout)
                    results.append(record)
                    _progress(name, kind, i + 1, len(kind_holes), hole, record)
        finally:
            for session in sessions.values():
                await session.stop()
    return results


async def _one(session: Session, name: str, hole: Hole, timeout: float) -> dict[str, Any]:
    record: dict[str, Any] = {
        "config": name,
        "hole": hole.id,
        "kind": hole.kind,
        "cut": hole.cut,
        "expected": hole.expected,
        "suggestion": "",
        "latency_ms": None,
        "error": None,
        "finish_reason": None,
        "timings": None,
    }
    try:
        text, ms, final = await session.complete(hole, timeout)
    except Exception as exc:  # noqa: BLE001 - one failed hole must not end the run
        record["error"] = f"{type(exc).__name__}: {exc}"
        return record
    record.update(
        suggestion=text,
        latency_ms=round(ms, 1),
        finish_reason=final.get("finishReason"),
        timings=final.get("timings"),
        **score(hole, text),
    )
    # With several choices (an explicit invocation), is any of them the right one?
    want = normalize(hole.expected)
    record["choices"] = len(session.last_items)
    record["exact_any"] = any(normalize(t) == want for t in session.last_items)
    return record


def _text(value) -> str:
    """An item's insertText: a plain string, or a snippet (StringValue) whose value we take."""
    return getattr(value, "value", value)


def _progress(name: str, kind: str, i: int, n: int, hole: Hole, r: dict[str, Any]) -> None:
    if r["error"]:
        verdict = f"ERROR {r['error'][:80]}"
    else:
        mark = (
            "exact"
            if r["exact"]
            else ("empty" if r["empty"] else f"sim {r['edit_similarity']:.2f}")
        )
        verdict = f"{mark:<9} {'valid' if r['valid'] else 'INVALID':<7} {r['latency_ms']:6.0f} ms"
    shown = (r.get("suggestion") or "").splitlines()[:1]
    print(
        f"[{name} {kind} {i:>2}/{n}] {hole.id:<38} {verdict}  {shown[0][:40] if shown else ''!r}",
        file=sys.stderr,
        flush=True,
    )


# --- reporting ------------------------------------------------------------------------------


def table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    rows = [
        "| config | holes | exact | edit sim. | parses (non-empty) | empty | median ms | p90 ms "
        "| median ms, cold prompt (n) | prompt tokens |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    out = []

    def errors(s: dict[str, Any]) -> str:
        return f" ({s['errors']} failed)" if s["errors"] else ""

    for kind in (*KINDS, "single/token", "single/mid_word"):
        lines = list(rows)
        for config, by_kind in summary.items():
            s = by_kind.get(kind)
            if not s:
                continue
            lines.append(
                f"| {config} | {s['holes']}{errors(s)} "
                f"| {_pct(s['exact'])} | {_num(s['edit_similarity'])} | {_pct(s['valid'])} "
                f"| {_pct(s['empty'])} | {_num(s['median_latency_ms'], 0)} "
                f"| {_num(s['p90_latency_ms'], 0)} "
                f"| {_num(s.get('median_cold_latency_ms'), 0)} ({s.get('cold', 0)}) "
                f"| {_num(s.get('median_prompt_tokens'), 0)} |"
            )
        if len(lines) > 2:
            title = {
                "single": "Single-line holes",
                "multi": "Multi-line holes",
                "single/token": "Single-line holes cut at a token boundary (part of the above)",
                "single/mid_word": "Single-line holes cut mid-word (the rest of them)",
            }[kind]
            out.append(f"**{title}**\n\n" + "\n".join(lines))
    return "\n\n".join(out)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def summaries(results: list[dict[str, Any]], configs: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for config in configs:
        mine = [r for r in results if r["config"] == config]
        out[config] = {
            kind: summarize([r for r in mine if r["kind"] == kind])
            for kind in KINDS
            if any(r["kind"] == kind for r in mine)
        }
        for cut in ("token", "mid_word"):
            subset = [r for r in mine if r["kind"] == "single" and r["cut"] == cut]
            if subset:
                out[config][f"single/{cut}"] = summarize(subset)
    return out


def write_doc(path: Path, report: dict[str, Any]) -> None:
    """Replace the generated part of ``path`` (between the markers), keeping the prose."""
    begin, end = "<!-- quality:begin (bench/quality.py --doc) -->", "<!-- quality:end -->"
    meta = report["meta"]
    generated = "\n".join(
        [
            begin,
            f"Measured {meta['date']} at commit `{meta['commit']}`: {meta['model']} "
            f"({meta['dtype']}, {meta['device']}) on {meta['machine']}; "
            f"{meta['holes']['single']} single-line and {meta['holes']['multi']} multi-line holes, "
            f"seed {meta['seed']}, maxNewTokens "
            f"{MAX_NEW_TOKENS['single']} / {MAX_NEW_TOKENS['multi']}, "
            f"{meta['wall_s'] / 60:.0f} minutes in all.",
            "",
            table(report["summary"]),
            end,
        ]
    )
    old = (
        path.read_text() if path.exists() else f"# Completion quality, measured\n\n{begin}\n{end}\n"
    )
    if begin in old and end in old:
        new = old[: old.index(begin)] + generated + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip() + "\n\n" + generated + "\n"
    path.write_text(new)


def draw_chart(path: Path, summary: dict[str, dict[str, dict[str, Any]]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(summary)
    metrics = [
        ("exact", "exact match"),
        ("edit_similarity", "edit\nsimilarity"),
        ("valid", "parses\n(non-empty)"),
        ("empty", "empty"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [2, 2, 1.6]})
    width = 0.8 / len(configs)
    colors = plt.get_cmap("tab10").colors
    for ax, kind in zip(axes[:2], KINDS, strict=True):
        for j, config in enumerate(configs):
            s = summary[config].get(kind, {})
            values = [s.get(key) or 0 for key, _ in metrics]
            xs = [i + (j - (len(configs) - 1) / 2) * width for i in range(len(metrics))]
            bars = ax.bar(xs, values, width, label=config, color=colors[j % len(colors)])
            ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=6, padding=1)
        ax.set_xticks(range(len(metrics)), [label for _, label in metrics])
        ax.set_ylim(0, 1.3)
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_title(f"{'single' if kind == 'single' else 'multi'}-line holes")
        ax.grid(axis="y", alpha=0.3)
    ax = axes[2]
    groups = [
        (kind, key) for kind in KINDS for key in ("median_latency_ms", "median_cold_latency_ms")
    ]
    for j, config in enumerate(configs):
        values = [summary[config].get(kind, {}).get(key) or 0 for kind, key in groups]
        xs = [i + (j - (len(configs) - 1) / 2) * width for i in range(len(groups))]
        bars = ax.bar(xs, [v / 1000 for v in values], width, color=colors[j % len(colors)])
        ax.bar_label(bars, labels=[f"{v / 1000:.1f}" for v in values], fontsize=6, padding=1)
    ax.set_xticks(
        range(len(groups)),
        [
            f"{kind}-line\n{'all' if key == 'median_latency_ms' else 'cold prompt'}"
            for kind, key in groups
        ],
        fontsize=8,
    )
    ax.set_title("median round trip (s)")
    ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left", ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# --- main -----------------------------------------------------------------------------------


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def prepare(args) -> tuple[list[Hole], str, dict[str, str]]:
    """The holes, the commit measured and the environment that makes our processes use it."""
    holes = make_holes(
        args.single if args.limit is None else min(args.single, args.limit),
        args.multi if args.limit is None else min(args.multi, args.limit),
        args.seed,
    )
    for hole in holes:  # the benchmark itself must be sound: putting back the answer parses
        assert parses(hole.text[: hole.offset] + hole.expected + hole.text[hole.offset :]), hole.id
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    if args.list_holes:
        return holes, "", {}
    if args.source == "worktree":
        return holes, _commit() + " + uncommitted changes", use_source(None)
    path_entry, sha = snapshot(args.source, Path(args.workdir))
    print(f"measuring lspilot at {sha[:10]} ({path_entry})", file=sys.stderr)
    return holes, sha[:10], use_source(path_entry)


async def measure(
    args, holes: list[Hole], commit: str, env: dict[str, str], earlier: dict | None = None
) -> dict[str, Any]:
    workdir = Path(args.workdir)
    counts = {kind: sum(h.kind == kind for h in holes) for kind in KINDS}
    kept: list[dict[str, Any]] = []
    if earlier:  # results of an earlier run for the same holes and configs are kept
        wanted = {(c, h.id) for c in args.configs for h in holes}
        kept = [r for r in earlier["results"] if (r["config"], r["hole"]) in wanted]
        done = {(r["config"], r["hole"]) for r in kept}
        holes = [h for h in holes if any((c, h.id) not in done for c in args.configs)]
        kept = [r for r in kept if r["hole"] not in {h.id for h in holes}]
        print(f"resuming: {len(kept)} results kept, {len(holes)} holes to run", file=sys.stderr)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    daemon = Daemon(args.model, workdir, args.daemon_arg, env)
    daemon.launch()
    try:
        load_s = await daemon.wait_ready(args.load_timeout)
        print(f"daemon ready in {load_s:.1f} s ({args.model})", file=sys.stderr)
        results = kept + await run_holes(args.configs, holes, args, workdir, daemon)
        daemon_status = await daemon.status()
    finally:
        daemon.stop()
    wall_s = time.perf_counter() - started + (earlier["meta"]["wall_s"] if earlier else 0)
    meta = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "model": args.model,
        "device": daemon_status.get("device", "?"),
        "backend": daemon_status.get("backend", "?"),
        "dtype": args.dtype_label,
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU ({platform.system()})",
        "seed": args.seed,
        "holes": counts,
        "configs": {name: CONFIGS[name] for name in args.configs},
        "base_options": BASE_OPTIONS,
        "max_new_tokens": MAX_NEW_TOKENS,
        "wall_s": round(wall_s, 1),
        "daemon_status": daemon_status,
    }
    return {"meta": meta, "summary": summaries(results, args.configs), "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument(
        "--source",
        default="HEAD",
        help="commit of lspilot to measure (a `git archive` snapshot), or "
        "'worktree' for the working tree as it is",
    )
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}"
    )
    parser.add_argument("--single", type=int, default=40, help="single-line holes")
    parser.add_argument("--multi", type=int, default=20, help="multi-line holes")
    parser.add_argument("--limit", type=int, help="at most this many holes of each kind")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds per request")
    parser.add_argument("--load-timeout", type=float, default=300.0)
    parser.add_argument("--workdir", default="/tmp/lspilot-quality")
    parser.add_argument(
        "--daemon-arg",
        action="append",
        default=[],
        help="extra argument for `lspilot daemon` (repeatable), e.g. --dtype=bfloat16",
    )
    parser.add_argument("--dtype-label", default="bf16", help="dtype recorded in the report")
    parser.add_argument("--out", help="JSON path (default: bench/out/quality-<date>.json)")
    parser.add_argument(
        "--doc", action="store_true", help=f"rewrite the tables in {DOC.relative_to(ROOT)}"
    )
    parser.add_argument("--chart", action="store_true", help=f"draw {CHART.relative_to(ROOT)}")
    parser.add_argument("--list-holes", action="store_true", help="print the holes and exit")
    parser.add_argument("--from-json", help="skip the run: report from an earlier JSON file")
    parser.add_argument(
        "--resume",
        help="an earlier JSON of the same commit and seed: keep its results, run only the "
        "holes it lacks (a larger --single/--multi picks a superset of the same holes)",
    )
    args = parser.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")

    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
        report["summary"] = summaries(report["results"], list(report["meta"]["configs"]))
    else:
        holes, commit, env = prepare(args)
        counts = {kind: sum(h.kind == kind for h in holes) for kind in KINDS}
        print(
            f"{counts['single']} single-line and {counts['multi']} multi-line holes in "
            f"{len(TARGETS)} modules; configs: {', '.join(args.configs)}",
            file=sys.stderr,
        )
        if args.list_holes:
            for h in holes:
                print(f"--- {h.id} [{h.kind}/{h.cut}]\n{h.expected}")
            return 0
        earlier = json.loads(Path(args.resume).read_text()) if args.resume else None
        if earlier and earlier["meta"]["commit"] != commit:
            parser.error(
                f"--resume: {args.resume} measured {earlier['meta']['commit']}, not {commit}"
            )
        report = asyncio.run(measure(args, holes, commit, env, earlier))
        out = Path(args.out) if args.out else OUT / f"quality-{dt.date.today().isoformat()}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
        print(f"wrote {out}", file=sys.stderr)
    print(table(report["summary"]))
    if args.doc:
        write_doc(DOC, report)
        print(f"wrote {DOC}", file=sys.stderr)
    if args.chart:
        meta = report["meta"]
        draw_chart(
            CHART,
            report["summary"],
            f"lspilot completion quality on held-out code: {meta['model']} ({meta['dtype']}, "
            f"{meta['device']}), {meta['holes']['single']} single-line / "
            f"{meta['holes']['multi']} multi-line holes, {meta['date']}",
        )
        print(f"wrote {CHART}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

# SPDX-License-Identifier: Apache-2.0
"""Typing through the real stack: what type-through, the cache and the debounce are worth.

A simulated user types the bodies of held-out functions (the multi-line holes of
``bench/quality.py``, in ``bench/quality_data``) key by key at a seeded human rhythm, the way VS
Code drives an inline-completion server: every keystroke sends ``didChange``, cancels the
pending ``textDocument/inlineCompletion`` (``$/cancelRequest``) and asks again (trigger
Automatic). The real language server and a real daemon with the default model answer.

Per configuration (one piece switched off at a time):

* **daemon requests** started, and how many of those were cancelled: the model work spent;
* **useful keystrokes**: keystrokes at which the suggestion on screen (the newest answer for the
  current cursor) predicted at least the next 3 characters the user then typed: what the user
  gets out of it.

Run (about 5-10 minutes on the 2-core machine with the default model)::

    .venv/bin/python bench/keystrokes.py
    .venv/bin/python bench/keystrokes.py --holes 1 --chars 40 --configs full   # a quick check

Writes ``bench/out/keystrokes-<date>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality import make_holes  # noqa: E402

from tests.daemon_process import DaemonProcess  # noqa: E402

CONFIGS = {
    "full": {},
    "no-type-through": {"typeThrough": False},
    "no-cache": {"cache": False},
    "fixed-debounce": {"adaptiveDebounce": False},
}
USEFUL_CHARS = 3  # a suggestion counts when it predicts at least this many next characters


def rhythm(rng: random.Random, char: str) -> float:
    """Seconds before the next key: ~8 keys/s within a line, a pause to think (2.5-3.5 s)
    before each new line, which is when a suggestion on a 2-core CPU has time to appear."""
    return rng.uniform(2.5, 3.5) if char == "\n" else rng.uniform(0.08, 0.16)


class Typist:
    """Types one hole's expected text into one open document and scores the ghost text."""

    def __init__(self, client: LanguageClient, uri: str, line: int, character: int) -> None:
        self.client = client
        self.uri = uri
        self.line, self.character = line, character
        self.version = 1
        self.typed = 0  # characters typed so far: the index the next answer belongs to
        self.pending: tuple[str, asyncio.Future] | None = None
        self.shown: dict[int, str] = {}  # typed index -> newest suggestion for that cursor
        self.ids = 0

    def ask(self, index: int) -> None:
        if self.pending is not None and not self.pending[1].done():
            self.client.protocol.notify(
                types.CANCEL_REQUEST, types.CancelParams(id=self.pending[0])
            )
        self.ids += 1
        msg_id = f"{self.uri}#{self.ids}"
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=self.uri),
            position=types.Position(line=self.line, character=self.character),
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Automatic
            ),
        )
        future = asyncio.ensure_future(
            self.client.protocol.send_request_async(
                types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id
            )
        )
        future.add_done_callback(lambda f, i=index: self._answered(i, f))
        self.pending = (msg_id, future)

    def _answered(self, index: int, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        result = future.result()
        items = getattr(result, "items", None) or []
        if items:
            self.shown[index] = items[0].insert_text

    def partial(self, line: int, character: int, text: str) -> None:
        """A streamed suggestion for the cursor it names; kept if that is still the cursor."""
        if (line, character) == (self.line, self.character):
            self.shown[self.typed] = text

    def type_char(self, char: str) -> None:
        at = types.Position(line=self.line, character=self.character)
        self.version += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(
                    uri=self.uri, version=self.version
                ),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=at, end=at), text=char
                    )
                ],
            )
        )
        self.typed += 1
        if char == "\n":
            self.line, self.character = self.line + 1, 0
        else:
            self.character += len(char.encode("utf-16-le")) // 2


async def type_hole(client, hole, uri: str, chars: int, rng: random.Random, typists: dict) -> dict:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id="python", version=1, text=hole.text
            )
        )
    )
    typist = Typist(client, uri, hole.line, hole.character)
    typists[uri] = typist
    text = hole.expected[:chars]
    useful = shown_count = 0
    typist.ask(0)
    for index, char in enumerate(text):
        await asyncio.sleep(rhythm(rng, char))
        shown = typist.shown.get(index, "")
        shown_count += bool(shown)
        if len(shown) >= USEFUL_CHARS and text[index:].startswith(shown[:USEFUL_CHARS]):
            useful += 1
        typist.type_char(char)
        typist.ask(index + 1)
    if typist.pending is not None:
        try:
            await asyncio.wait_for(asyncio.shield(typist.pending[1]), 60)
        except Exception:  # cancelled or failed: nothing more to score
            pass
    client.text_document_did_close(
        types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    return {
        "hole": hole.id,
        "keystrokes": len(text),
        "shown_keystrokes": shown_count,
        "useful_keystrokes": useful,
    }


async def run_config(name: str, settings: dict, daemon: DaemonProcess, holes, args) -> dict:
    client = LanguageClient("typing-bench", "1")

    typists: dict[str, Typist] = {}

    @client.feature("lspilot/partialCompletion")
    def _partial(params) -> None:
        # Ghost text while the model streams: editor plugins draw it, so it counts as shown.
        typist = typists.get(params.textDocument.uri)
        if typist is not None and not params.done:
            typist.partial(params.position.line, params.position.character, params.text)

    await client.start_io(sys.executable, "-m", "lspilot", "lsp")
    options = {
        "daemonAddress": daemon.address,
        "autostartDaemon": False,
        "requestTimeoutMs": 120_000,
        **settings,
    }
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(), initialization_options=options
        )
    )
    client.initialized(types.InitializedParams())
    before = await daemon.status_async()
    rng = random.Random(args.seed)
    started = time.perf_counter()
    per_hole = []
    for i, hole in enumerate(holes):
        per_hole.append(
            await type_hole(client, hole, f"file:///bench/{name}/{i}.py", args.chars, rng, typists)
        )
        print(
            f"[{name}] {hole.id}: {per_hole[-1]['useful_keystrokes']}/"
            f"{per_hole[-1]['keystrokes']} useful keystrokes",
            flush=True,
        )
    after = await daemon.status_async()
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    keystrokes = sum(h["keystrokes"] for h in per_hole)
    useful = sum(h["useful_keystrokes"] for h in per_hole)
    shown = sum(h["shown_keystrokes"] for h in per_hole)
    requests = after["requests_total"] - before["requests_total"]
    cancelled = after["cancelled_total"] - before["cancelled_total"]
    return {
        "config": name,
        "settings": settings,
        "keystrokes": keystrokes,
        "shown_keystrokes": shown,
        "useful_keystrokes": useful,
        "daemon_requests": requests,
        "daemon_cancelled": cancelled,
        "seconds": time.perf_counter() - started,
        "holes": per_hole,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| config | keystrokes | suggestion shown | useful (next 3 chars right) "
        "| daemon requests | of them cancelled | requests per keystroke |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        n = max(1, r["keystrokes"])
        lines.append(
            f"| {r['config']} | {r['keystrokes']} | {r['shown_keystrokes']} | "
            f"{r['useful_keystrokes']} ({r['useful_keystrokes'] / n:.0%}) | "
            f"{r['daemon_requests']} | {r['daemon_cancelled']} | "
            f"{r['daemon_requests'] / n:.2f} |"
        )
    return "\n".join(lines)


async def main_async(args) -> list[dict]:
    holes = [h for h in make_holes(0, args.holes, args.seed) if h.kind == "multi"]
    workdir = Path(tempfile.mkdtemp(prefix="lspilot-typing-"))
    daemon = DaemonProcess(args.model, workdir, backend="auto").start(timeout=1800)
    try:
        rows = []
        for name in args.configs.split(","):
            rows.append(await run_config(name, CONFIGS[name], daemon, holes, args))
        return rows
    finally:
        daemon.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--holes", type=int, default=4, help="function bodies to type")
    parser.add_argument("--chars", type=int, default=100, help="characters typed per body")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    rows = asyncio.run(main_async(args))
    print(table(rows))
    out = Path(args.out or ROOT / "bench" / "out" / f"keystrokes-{dt.date.today()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(),
                "args": vars(args),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

# SPDX-License-Identifier: Apache-2.0
"""``lspilot complete FILE --line L --character C``: one completion through the real stack.

It starts (or finds) the daemon, waits while the model is pulled and loaded (showing progress),
then runs the real language server as a subprocess and asks it for an inline completion, the
way an editor would. Prints the inserted text; ``--json`` adds timings and the finish reason.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from lspilot.lsp.connection import DaemonConnection
from lspilot.protocol.client import DaemonError, DaemonUnavailable

LANGUAGES = {
    ".py": "python",
    ".js": "javascript",
    ".ts": "typescript",
    ".rs": "rust",
    ".go": "go",
    ".c": "c",
    ".cpp": "cpp",
    ".java": "java",
    ".lua": "lua",
}


def run(args) -> int:
    path = Path(args.file).resolve()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"lspilot complete: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_complete(args, path, text))
    except DaemonError as exc:
        print(f"lspilot complete: {exc}", file=sys.stderr)
        return 1


async def wait_until_ready(connection: DaemonConnection, wait_s: float) -> None:
    """Start the daemon if needed and wait for its model, printing progress to stderr."""
    deadline = time.monotonic() + wait_s
    last = None
    while True:
        try:
            await connection.ready_client()
            return
        except DaemonUnavailable as exc:
            message = str(exc)
            if time.monotonic() > deadline:
                raise
            if message != last:
                print(f"lspilot: {message}", file=sys.stderr, flush=True)
                last = message
            await asyncio.sleep(0.5)


async def _complete(args, path: Path, text: str) -> int:
    connection = DaemonConnection(
        args.daemon,
        model=args.model,
        on_status=lambda m: print(f"lspilot: {m}", file=sys.stderr, flush=True),
    )
    await wait_until_ready(connection, args.wait)
    await connection.client.close()

    client = LanguageClient("lspilot-complete", "1")
    final: dict = {}

    @client.feature("lspilot/partialCompletion")
    def on_partial(params) -> None:
        params = _plain(params)
        if params.get("done"):
            final.update(params)

    await client.start_io(sys.executable, "-m", "lspilot", "lsp")
    options = {
        "daemonAddress": str(connection.address),
        "choicesOnInvoke": 1,
        "maxNewTokens": args.max_new_tokens,
    }
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(), initialization_options=options
        )
    )
    client.initialized(types.InitializedParams())
    uri = path.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id=LANGUAGES.get(path.suffix, "plaintext"), version=1, text=text
            )
        )
    )
    started = time.perf_counter()
    try:
        result = await client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=args.line, character=args.character),
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Invoked
                ),
            )
        )
    except Exception as exc:  # a JSON-RPC error from the server: show its message
        print(f"lspilot complete: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.shutdown_async(None)
        client.exit(None)
        await client.stop()
    elapsed = (time.perf_counter() - started) * 1000
    items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
    inserted = items[0].insert_text if items else ""
    if isinstance(inserted, types.StringValue):
        inserted = inserted.value
    if args.json:
        print(
            json.dumps(
                {
                    "text": inserted,
                    "finish_reason": final.get("finishReason"),
                    "timings": final.get("timings"),
                    "round_trip_ms": round(elapsed, 1),
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        print(inserted)
    return 0 if items else 1


def _plain(obj):
    """pygls hands unknown notifications over as nested namedtuples; make them dicts."""
    if hasattr(obj, "_asdict"):
        obj = obj._asdict()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj

# SPDX-License-Identifier: Apache-2.0
"""Helpers for end-to-end tests that drive the real ``lspilot lsp`` with pytest-lsp."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from lsprotocol import types

from lspilot.protocol.client import DaemonClient
from lspilot.protocol.endpoint import parse_address
from lspilot.protocol.messages import CompleteRequest, StopPolicy

PARTIAL = "lspilot/partialCompletion"


def field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name)


class Partials:
    """Collects ``lspilot/partialCompletion`` notifications as they arrive."""

    def __init__(self, client) -> None:
        self.items: list[Any] = []
        self._event = asyncio.Event()

        @client.feature(PARTIAL)
        def on_partial(params) -> None:
            self.items.append(params)
            self._event.set()

    async def wait(self, predicate, timeout: float = 30.0):
        async def poll():
            while True:
                for item in self.items:
                    if predicate(item):
                        return item
                self._event.clear()
                await self._event.wait()

        return await asyncio.wait_for(poll(), timeout)

    def for_request(self, request_id: str) -> list[Any]:
        return [p for p in self.items if field(p, "requestId") == request_id]


def open_document(client, uri: str, text: str, version: int = 1, language: str = "python"):
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id=language, version=version, text=text
            )
        )
    )


def type_text(client, uri: str, version: int, line: int, character: int, text: str) -> None:
    """An incremental didChange inserting ``text`` at (line, character)."""
    at = types.Position(line=line, character=character)
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(start=at, end=at), text=text
                )
            ],
        )
    )


def inline_params(uri: str, line: int, character: int, invoked: bool = True):
    kind = (
        types.InlineCompletionTriggerKind.Invoked
        if invoked
        else types.InlineCompletionTriggerKind.Automatic
    )
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=kind),
    )


async def direct_completion(
    address: str,
    prefix: str,
    suffix: str,
    *,
    max_new_tokens: int,
    stop: StopPolicy = StopPolicy.AUTO,
    token_healing: bool = False,
) -> str:
    """The same completion asked of the daemon directly over gRPC (greedy, one choice)."""
    client = DaemonClient(parse_address(address))
    request = CompleteRequest(
        request_id="direct",
        client_id="test",
        uri="file:///direct",
        language_id="python",
        prefix=prefix,
        suffix=suffix,
        max_new_tokens=max_new_tokens,
        stop=stop,
        token_healing=token_healing,
    )
    text = ""
    try:
        async for chunk in client.complete(request):
            text += chunk.text
    finally:
        await client.close()
    return text


async def status(address: str) -> dict:
    client = DaemonClient(parse_address(address))
    try:
        return dataclasses.asdict(await client.status())
    finally:
        await client.close()

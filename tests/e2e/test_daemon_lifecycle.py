# SPDX-License-Identifier: Apache-2.0
"""The language server starts the daemon, survives its death, and starts it again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.e2e.lsp_session import (
    Partials,
    field,
    inline_params,
    open_document,
    status,
    type_text,
)

URI = "file:///work/long.py"
TEXT = "import os\n\n"


@pytest.fixture
def runtime(tmp_path_factory):
    # A short path: unix socket paths are limited to ~107 bytes.
    return tmp_path_factory.mktemp("rt")


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "lspilot", "lsp"]),
)
async def client(lsp_client: LanguageClient, tiny_model_dir, runtime, monkeypatch):
    lsp_client.partials = Partials(lsp_client)
    lsp_client.address = f"unix:{runtime}/d.sock"
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            initialization_options={
                "daemonAddress": lsp_client.address,
                "autostartDaemon": True,
                "model": str(tiny_model_dir),
                "debounceMs": 0,
                "maxNewTokens": 1500,
                "choicesOnInvoke": 1,
                "stop": "multi_line",
                "cache": False,
            },
        )
    )
    yield
    await lsp_client.shutdown_session()
    try:
        os.kill((await status(lsp_client.address))["pid"], signal.SIGTERM)
    except Exception:
        pass


async def _complete_when_ready(client, timeout: float = 90.0, line: int = 2, character: int = 0):
    """The first request starts the daemon; while its model loads, answers are empty."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await client.text_document_inline_completion_async(
            inline_params(URI, line, character)
        )
        if result.items or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.5)


async def test_daemon_killed_mid_request_then_restarted(client: LanguageClient):
    open_document(client, URI, TEXT)
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"maxNewTokens": 8})
    )
    first = await _complete_when_ready(client)  # autostarted by the language server
    assert first.items, "the autostarted daemon served no completion"
    pid = (await status(client.address))["pid"]

    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"maxNewTokens": 1500})
    )
    # Type something the suggestion does not start with, so the next request needs the model.
    other = "#" if not first.items[0].insert_text.startswith("#") else "@"
    type_text(client, URI, 2, 2, 0, other)
    pending = asyncio.ensure_future(
        client.text_document_inline_completion_async(inline_params(URI, 2, 1))
    )
    await client.partials.wait(lambda p: not field(p, "done"))
    os.kill(pid, signal.SIGKILL)  # a crash, mid-generation
    with pytest.raises(JsonRpcException) as err:
        await pending
    assert err.value.code == -32803  # RequestFailed, with a message, not an empty success
    assert "unavailable" in str(err.value)

    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"maxNewTokens": 8})
    )
    again = await _complete_when_ready(client, line=2, character=1)  # a new daemon
    assert again.items
    new_pid = (await status(client.address))["pid"]
    assert new_pid != pid
    errors = [m.message for m in client.log_messages if m.type == types.MessageType.Error]
    assert any("unavailable" in m for m in errors), "the editor was not told"
    infos = [m.message for m in client.log_messages if m.type == types.MessageType.Info]
    assert any("starting lspilot daemon" in m for m in infos)


async def test_two_editors_starting_at_once_share_one_daemon(tiny_model_dir, runtime):
    from pygls.lsp.client import LanguageClient as PlainClient

    address = f"unix:{runtime}/shared.sock"
    clients = [PlainClient("editor", "1") for _ in range(2)]
    for c in clients:
        await c.start_io(sys.executable, "-m", "lspilot", "lsp")
    options = {
        "daemonAddress": address,
        "model": str(tiny_model_dir),
        "debounceMs": 0,
        "maxNewTokens": 8,
        "stop": "single_line",
    }
    await asyncio.gather(
        *(
            c.initialize_async(
                types.InitializeParams(
                    capabilities=types.ClientCapabilities(), initialization_options=options
                )
            )
            for c in clients
        )
    )
    for c in clients:
        c.initialized(types.InitializedParams())
        open_document(c, URI, TEXT)
    try:
        # Both ask at once; each may need several tries while the one daemon loads its model.
        results = await asyncio.gather(*(_complete_when_ready(c) for c in clients))
        assert all(r.items for r in results)
        pgrep = await asyncio.create_subprocess_exec(
            "pgrep", "-f", f"lspilot daemon --listen {address}", stdout=asyncio.subprocess.PIPE
        )
        daemons = (await pgrep.communicate())[0].decode().split()
        assert len(daemons) == 1, f"{len(daemons)} daemons serve {address}"
    finally:
        for c in clients:
            await c.shutdown_async(None)
            c.exit(None)
            await c.stop()
        with contextlib.suppress(Exception):
            os.kill((await status(address))["pid"], signal.SIGTERM)

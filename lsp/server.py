# SPDX-License-Identifier: Apache-2.0
"""The lspilot language server: shared state, and the wiring of one module per feature.

Started by the editor over stdio (``lspilot lsp``). Nothing but LSP goes to stdout; logs go to
stderr and, for the user, to ``window/logMessage``. This module never imports torch,
transformers or tritonclient: the daemon owns the model.
"""

from __future__ import annotations

import logging
import time

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer

from lspilot import __version__

from .config import Settings
from .connection import DaemonConnection
from .suggest import Suggester

log = logging.getLogger(__name__)

SHOW_MESSAGE_INTERVAL_S = 60.0  # real failures pop up at most once a minute


class RequestFailed(JsonRpcException):
    """LSP's RequestFailed: the request was valid but the daemon could not serve it."""

    CODE = -32803


class LspilotServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("lspilot", __version__)
        self.settings = Settings()
        self._connection: DaemonConnection | None = None
        self._suggester: Suggester | None = None
        self._last_popup = 0.0

    @property
    def connection(self) -> DaemonConnection:
        if self._connection is None:  # built after initialize, when settings are known
            s = self.settings
            self._connection = DaemonConnection(
                s.daemon_address,
                autostart=s.autostart_daemon,
                model=s.model,
                on_status=self.log_to_editor,
            )
        return self._connection

    @property
    def suggester(self) -> Suggester:
        if self._suggester is None:
            self._suggester = Suggester(self.connection, lambda: self.settings)
            self._suggester.versions = lambda: {
                uri: doc.version or 0 for uri, doc in self.workspace.text_documents.items()
            }
        return self._suggester

    def log_to_editor(self, message: str, kind=types.MessageType.Info) -> None:
        log.info("%s", message)
        self.window_log_message(types.LogMessageParams(type=kind, message=message))

    def report_failure(self, message: str) -> None:
        """Log every failure; pop up at most one per minute so the editor is not flooded."""
        self.log_to_editor(message, types.MessageType.Error)
        now = time.monotonic()
        if now - self._last_popup > SHOW_MESSAGE_INTERVAL_S:
            self._last_popup = now
            self.window_show_message(
                types.ShowMessageParams(type=types.MessageType.Warning, message=message)
            )


def create_server() -> LspilotServer:
    from .features import (
        commands,
        completion,
        configuration,
        feedback,
        inline_completion,
        text_sync,
    )

    server = LspilotServer()
    for feature in (configuration, text_sync, inline_completion, completion, feedback, commands):
        feature.register(server)
    return server


def main(tcp: str = "") -> None:
    server = create_server()
    if tcp:
        host, _, port = tcp.rpartition(":")
        server.start_tcp(host or "127.0.0.1", int(port))
    else:
        server.start_io()

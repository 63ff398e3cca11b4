# SPDX-License-Identifier: Apache-2.0
"""``workspace/executeCommand``: ``lspilot.status`` returns the daemon's state for health checks."""

from __future__ import annotations

import dataclasses

from lspilot.protocol.client import DaemonError

from ..server import RequestFailed

STATUS_COMMAND = "lspilot.status"


def register(server) -> None:
    @server.command(STATUS_COMMAND)
    async def status(ls, *args):
        try:
            client = ls.connection.client
            info = await client.info()
            reply = await client.status()
        except DaemonError as exc:
            raise RequestFailed(f"lspilot daemon unavailable: {exc}") from None
        result = dataclasses.asdict(reply)
        result.update(
            address=str(ls.connection.address),
            fim_format=info.fim_format,
            context_window=info.context_window,
            server_version=ls.version,
            feedback=dict(getattr(ls, "feedback", {})),
            cache=dataclasses.asdict(ls.suggester.cache.stats),
            daemon_requests_started=ls.suggester.requests_started,
        )
        return result

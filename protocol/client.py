# SPDX-License-Identifier: Apache-2.0
"""An asyncio client for the daemon: the typed calls, metadata, and one error type.

Used by the language server and the CLI. gRPC failures are mapped here, once, to
``DaemonUnavailable`` (nothing is listening, or it died mid-request) or ``DaemonError`` (it
answered with an error), so callers never see raw grpc exceptions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from . import service
from .endpoint import Address, read_token
from .messages import (
    PROTOCOL_VERSION,
    CancelRequest,
    CompleteChunk,
    CompleteRequest,
    InfoReply,
    InfoRequest,
    StatusReply,
    StatusRequest,
)


class DaemonError(Exception):
    """The daemon answered with an error status."""

    def __init__(self, code: grpc.StatusCode | None, message: str) -> None:
        super().__init__(message)
        self.code = code


class DaemonUnavailable(DaemonError):
    """No daemon answers at the address, or the connection broke mid-request."""


def _map(exc: grpc.aio.AioRpcError) -> DaemonError:
    code = exc.code()
    detail = exc.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        return DaemonUnavailable(code, detail)
    return DaemonError(code, detail)


class DaemonClient:
    def __init__(self, address: Address, *, client_id: str = "", token: str | None = None) -> None:
        self.address = address
        self.client_id = client_id
        self.token = token  # for TCP; None: read the daemon's token file for this user
        self._channel: grpc.aio.Channel | None = None

    def _metadata(self, request_id: str = "") -> tuple[tuple[str, str], ...]:
        md = [(service.METADATA_VERSION, str(PROTOCOL_VERSION))]
        if self.address.kind == "tcp":
            token = self.token or read_token()
            if token:
                md.append((service.METADATA_TOKEN, token))
        if request_id:
            md.append((service.METADATA_REQUEST_ID, request_id))
        return tuple(md)

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self.address.grpc_target, options=service.CHANNEL_OPTIONS
            )
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _unary(self, method: service.Method, request, timeout: float | None):
        call = service.stub(self.channel, method)
        try:
            return await call(request, metadata=self._metadata(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _map(exc) from None

    async def info(self, timeout: float | None = 5.0) -> InfoReply:
        return await self._unary(
            service.INFO, InfoRequest(PROTOCOL_VERSION, self.client_id), timeout
        )

    async def status(self, timeout: float | None = 5.0) -> StatusReply:
        return await self._unary(service.STATUS, StatusRequest(), timeout)

    async def cancel(self, request_id: str, timeout: float | None = 2.0) -> bool:
        reply = await self._unary(service.CANCEL, CancelRequest(request_id), timeout)
        return reply.found

    async def complete(
        self, request: CompleteRequest, timeout: float | None = None
    ) -> AsyncIterator[CompleteChunk]:
        """Stream chunks. Cancelling the consuming task cancels the call in the daemon."""
        call = service.stub(self.channel, service.COMPLETE)(
            request, metadata=self._metadata(request.request_id), timeout=timeout
        )
        try:
            async for chunk in call:
                yield chunk
        except grpc.aio.AioRpcError as exc:
            raise _map(exc) from None
        finally:
            call.cancel()  # no-op when finished; stops the daemon's work otherwise

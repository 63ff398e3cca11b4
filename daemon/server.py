# SPDX-License-Identifier: Apache-2.0
"""The daemon's gRPC edge: decoding, auth, version check, and error -> status mapping.

Everything that crosses the wire is decoded and validated here, once; a malformed message is
answered INVALID_ARGUMENT naming the field and never reaches the model. The server listens
before the model is ready, so editors can connect at once and show the loading progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from lspilot.protocol import codec, service
from lspilot.protocol.endpoint import Address
from lspilot.protocol.messages import (
    PROTOCOL_VERSION,
    CancelReply,
    CancelRequest,
    CompleteChunk,
    CompleteRequest,
    FinishReason,
    InfoReply,
    InfoRequest,
    StatusReply,
    StatusRequest,
)
from lspilot.protocol.validate import check_complete_request

from .completion import CompletionService
from .errors import DaemonError, ModelLoadError, ModelNotReady, Overloaded

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 64


@dataclass
class ModelState:
    """What the daemon is serving, or why it is not yet."""

    service: CompletionService | None = None
    loading: str = "starting"
    error: str = ""

    def require(self) -> CompletionService:
        if self.service is not None:
            return self.service
        if self.error:
            raise ModelLoadError(self.error)
        raise ModelNotReady(f"model not ready: {self.loading}")


_STATUS = {
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    ModelLoadError: grpc.StatusCode.FAILED_PRECONDITION,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class Servicer:
    def __init__(self, state: ModelState, token: str | None) -> None:
        self.state = state
        self.token = token
        self.started = time.monotonic()
        self.in_flight = 0

    def handlers(self) -> grpc.GenericRpcHandler:
        return service.generic_handler(
            {
                "Complete": self.complete,
                "Cancel": self._unary(CancelRequest, self.cancel),
                "Info": self._unary(InfoRequest, self.info),
                "Status": self._unary(StatusRequest, self.status),
            }
        )

    # --- the edge -----------------------------------------------------------------------

    async def _admit(self, context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        if self.token is not None:
            sent = metadata.get(service.METADATA_TOKEN, "")
            if not hmac.compare_digest(sent.encode(), self.token.encode()):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")
        version = metadata.get(service.METADATA_VERSION)
        if version is not None and version != str(PROTOCOL_VERSION):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"protocol version {version} not supported; this daemon speaks {PROTOCOL_VERSION}",
            )

    async def _decode(self, cls, data: bytes, context):
        try:
            return codec.decode(cls, data)
        except codec.ProtocolError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    def _unary(self, cls, method: Callable):
        async def handler(data: bytes, context: grpc.aio.ServicerContext):
            await self._admit(context)
            request = await self._decode(cls, data, context)
            try:
                return await method(request)
            except DaemonError as exc:
                await context.abort(_STATUS.get(type(exc), grpc.StatusCode.INTERNAL), str(exc))

        return handler

    # --- methods ------------------------------------------------------------------------

    async def complete(self, data: bytes, context: grpc.aio.ServicerContext):
        await self._admit(context)
        request: CompleteRequest = await self._decode(CompleteRequest, data, context)
        try:
            check_complete_request(request)
            svc = self.state.require()
            if self.in_flight >= MAX_IN_FLIGHT:
                raise Overloaded(f"{self.in_flight} requests in flight; retry shortly")
        except codec.ProtocolError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except DaemonError as exc:
            await context.abort(_STATUS.get(type(exc), grpc.StatusCode.INTERNAL), str(exc))
        self.in_flight += 1
        try:
            async for chunk in svc.complete(request):
                yield chunk
        except Exception as exc:  # a bug or a backend crash: this request fails, not the daemon
            log.exception("[%s] request failed", request.request_id)
            yield CompleteChunk(
                request.request_id, finish_reason=FinishReason.ERROR, error=str(exc)
            )
        finally:
            self.in_flight -= 1

    async def cancel(self, request: CancelRequest) -> CancelReply:
        svc = self.state.service
        return CancelReply(found=bool(svc and svc.cancel(request.request_id)))

    async def info(self, request: InfoRequest) -> InfoReply:
        if request.protocol_version != PROTOCOL_VERSION:
            raise ModelLoadError(
                f"client speaks protocol {request.protocol_version}, daemon {PROTOCOL_VERSION}:"
                " upgrade the older side"
            )
        from lspilot import __version__

        svc = self.state.service
        if svc is None:
            return InfoReply(
                PROTOCOL_VERSION,
                "",
                "",
                False,
                "",
                0,
                "",
                "",
                __version__,
                loading=self.state.error or self.state.loading,
            )
        m = svc.model
        return InfoReply(
            protocol_version=PROTOCOL_VERSION,
            model=m.name,
            family=m.family,
            fim=m.fim.name != "none",
            fim_format=m.fim.name,
            context_window=m.context_window,
            device=m.device,
            backend=svc.backend.info.name,
            daemon_version=__version__,
        )

    async def status(self, request: StatusRequest) -> StatusReply:
        svc = self.state.service
        c = svc.counters if svc else None
        stats: dict[str, float] = getattr(svc.backend, "stats", dict)() if svc else {}
        prefix = f"{svc.backend.info.name}." if svc else ""
        return StatusReply(
            protocol_version=PROTOCOL_VERSION,
            model=svc.model.name if svc else "",
            device=svc.model.device if svc else "",
            backend=svc.backend.info.name if svc else "",
            uptime_s=time.monotonic() - self.started,
            requests_total=c.requests_total if c else 0,
            cancelled_total=c.cancelled_total if c else 0,
            errors_total=c.errors_total if c else 0,
            decode_steps_after_cancel_total=c.decode_steps_after_cancel_total if c else 0,
            active_sequences=svc.backend.active_sequences() if svc else 0,
            prefix_cache_hits=int(stats.get("prefix_cache_hits", 0)),
            prefix_cache_misses=int(stats.get("prefix_cache_misses", 0)),
            loading="" if svc else (self.state.error or self.state.loading),
            pid=os.getpid(),
            # Backend counters under their own prefix: "cancelled" there means "closed early",
            # which includes completions the stop rules ended.
            extra={f"{prefix}{k}": float(v) for k, v in stats.items()},
        )


async def serve(
    address: Address,
    load: Callable[[ModelState], CompletionService],
    *,
    token: str | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Listen on ``address``, load the model in a thread, serve until SIGTERM/SIGINT."""
    state = ModelState()
    servicer = Servicer(state, token)
    server = grpc.aio.server(options=service.CHANNEL_OPTIONS)
    server.add_generic_rpc_handlers([servicer.handlers()])
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set(service.HEALTH_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)

    if address.kind == "unix":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address.target)
        old_umask = os.umask(0o177)  # the socket is created 0600: this user only
        try:
            server.add_insecure_port(address.grpc_target)
        finally:
            os.umask(old_umask)
    else:
        server.add_insecure_port(address.grpc_target)
    await server.start()
    log.info("listening on %s", address)
    if ready:
        ready()

    async def load_in_background() -> None:
        try:
            state.service = await asyncio.to_thread(load, state)
            state.loading = ""
            await health_servicer.set(
                service.HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING
            )
            log.info("model ready")
        except Exception as exc:
            log.exception("model failed to load")
            state.error = f"model failed to load: {exc}"

    loader = asyncio.create_task(load_in_background())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop(grace=2)
    loader.cancel()
    if state.service is not None:
        await state.service.backend.close()
    if address.kind == "unix":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address.target)

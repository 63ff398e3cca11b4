# SPDX-License-Identifier: Apache-2.0
"""The gRPC service ``lspilot.v1.Completion``, without generated code.

Each method is described once (name, request and reply types, streaming or not); the daemon
builds its generic handler from this table and clients build their callables from it, so the two
sides cannot disagree about paths or encodings. Requests carry the protocol version and an
optional auth token as metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from . import codec
from .messages import (
    CancelReply,
    CancelRequest,
    CompleteChunk,
    CompleteRequest,
    InfoReply,
    InfoRequest,
    StatusReply,
    StatusRequest,
)

SERVICE_NAME = "lspilot.v1.Completion"
HEALTH_SERVICE = SERVICE_NAME  # the name reported to grpc.health.v1
METADATA_VERSION = "lspilot-protocol"
METADATA_TOKEN = "lspilot-token"
METADATA_REQUEST_ID = "lspilot-request-id"

# gRPC's default 4 MiB is too small for a 4M-character document in UTF-8.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


@dataclass(frozen=True)
class Method:
    name: str
    request: type
    reply: type
    streaming: bool = False

    @property
    def path(self) -> str:
        return f"/{SERVICE_NAME}/{self.name}"


COMPLETE = Method("Complete", CompleteRequest, CompleteChunk, streaming=True)
CANCEL = Method("Cancel", CancelRequest, CancelReply)
INFO = Method("Info", InfoRequest, InfoReply)
STATUS = Method("Status", StatusRequest, StatusReply)
METHODS = (COMPLETE, CANCEL, INFO, STATUS)


def _decoder(cls: type):
    return lambda data: codec.decode(cls, data)


def generic_handler(implementations: dict[str, Any]) -> grpc.GenericRpcHandler:
    """Build the server side. ``implementations`` maps method name to an async callable.

    Request decoding happens inside the implementation wrapper (see the daemon), not in a
    deserializer: a deserializer failure makes grpc answer INTERNAL without our message.
    """
    handlers = {}
    for m in METHODS:
        impl = implementations[m.name]
        factory = (
            grpc.unary_stream_rpc_method_handler
            if m.streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[m.name] = factory(
            impl, request_deserializer=None, response_serializer=codec.encode
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def stub(channel: grpc.aio.Channel, method: Method):
    """A client callable for ``method`` on an aio channel."""
    make = channel.unary_stream if method.streaming else channel.unary_unary
    return make(
        method.path, request_serializer=codec.encode, response_deserializer=_decoder(method.reply)
    )

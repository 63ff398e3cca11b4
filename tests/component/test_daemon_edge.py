# SPDX-License-Identifier: Apache-2.0
"""The daemon's gRPC edge against a real daemon process: validation, versions, auth, locks."""

from __future__ import annotations

import socket
import subprocess
import sys

import grpc
import msgpack
import pytest

from lspilot.protocol import codec, service
from lspilot.protocol.client import DaemonClient, DaemonError
from lspilot.protocol.endpoint import parse_address
from lspilot.protocol.messages import PROTOCOL_VERSION, CompleteRequest, InfoRequest
from tests.daemon_process import DaemonProcess

GOOD = CompleteRequest(
    "r1", "c", "file:///a.py", "python", "def f():\n    return ", "\n", max_new_tokens=4
)


async def _raw_complete(address: str, payload: bytes, metadata=()):
    async with grpc.aio.insecure_channel(parse_address(address).grpc_target) as channel:
        call = channel.unary_stream(
            service.COMPLETE.path, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        return [chunk async for chunk in call(payload, metadata=metadata)]


def _with(**changes) -> bytes:
    plain = msgpack.unpackb(codec.encode(GOOD))
    plain.update(changes)
    return msgpack.packb(plain)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(b"\xc1garbage", "not a msgpack message", id="garbage"),
        pytest.param(
            _with(prefix=42), "CompleteRequest.prefix: expected str, got int", id="mistyped"
        ),
        pytest.param(_with(stop="always"), "CompleteRequest.stop", id="bad-enum"),
        pytest.param(_with(max_new_tokens=0), "CompleteRequest.max_new_tokens", id="out-of-range"),
        pytest.param(_with(prefix="\x00\x01binary"), "binary", id="binary-text"),
    ],
)
async def test_bad_messages_are_invalid_argument_naming_the_field(daemon, payload, message):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _raw_complete(
            daemon.address, payload, ((service.METADATA_VERSION, str(PROTOCOL_VERSION)),)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    # ... and the daemon is still serving
    chunks = await _raw_complete(daemon.address, codec.encode(GOOD))
    assert chunks


async def test_protocol_version_mismatch_is_refused(daemon):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _raw_complete(
            daemon.address, codec.encode(GOOD), ((service.METADATA_VERSION, "999"),)
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    client = DaemonClient(parse_address(daemon.address))
    try:
        with pytest.raises(DaemonError, match="protocol 999"):
            await client._unary(service.INFO, InfoRequest(999), 5)
    finally:
        await client.close()


async def test_unix_socket_is_private(daemon):
    mode = daemon.socket.stat().st_mode & 0o777
    assert mode == 0o600, oct(mode)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_tcp_requires_the_token(tiny_model_dir, tmp_path):
    proc = DaemonProcess(tiny_model_dir, tmp_path)
    proc.address = f"tcp:127.0.0.1:{_free_port()}"
    proc.env["LSPILOT_DAEMON_ADDRESS"] = proc.address
    proc.start()
    try:
        token = (tmp_path / "token").read_text()
        assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _raw_complete(proc.address, codec.encode(GOOD))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        chunks = await _raw_complete(
            proc.address, codec.encode(GOOD), ((service.METADATA_TOKEN, token),)
        )
        assert chunks
    finally:
        proc.stop()


def test_non_loopback_address_is_refused(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lspilot",
            "daemon",
            "--listen",
            "tcp:0.0.0.0:7777",
            "--model",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"LSPILOT_RUNTIME_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "refusing non-loopback" in result.stderr


def test_second_daemon_on_the_same_address_refuses(daemon):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lspilot",
            "daemon",
            "--listen",
            daemon.address,
            "--model",
            daemon.model,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=daemon.env,
    )
    assert result.returncode == 3
    assert "already serves" in result.stderr


def test_model_that_will_not_load_is_reported(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    proc = DaemonProcess(tmp_path / "broken", tmp_path)
    with pytest.raises(RuntimeError, match="failed to load"):
        proc.start(timeout=60)
    status = proc.status()
    assert "cannot load model" in status["loading"]
    proc.stop()

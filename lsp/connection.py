# SPDX-License-Identifier: Apache-2.0
"""Finding, starting and reconnecting to the per-user daemon.

One daemon per user serves every editor. The first language server that finds none starts it,
under a file lock so two editors opening at once never start two. If the daemon dies, the next
request finds it gone and starts (or waits for) a new one. Progress and failures are reported
through callbacks so the server can tell the editor instead of failing silently.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable

from lspilot.protocol.client import DaemonClient, DaemonError, DaemonUnavailable
from lspilot.protocol.endpoint import Address, default_address, parse_address, runtime_dir
from lspilot.protocol.messages import InfoReply

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0  # for the socket to answer; pulling a model can take longer, that's fine


class ModelLoading(DaemonUnavailable):
    """The daemon answers but its model is still being pulled or loaded."""


class DaemonConnection:
    def __init__(
        self,
        address: str = "",
        *,
        autostart: bool = True,
        model: str = "",
        client_id: str = "",
        on_status: Callable[[str], None] = lambda msg: None,
    ) -> None:
        self.address: Address = parse_address(address) if address else default_address()
        self.autostart = autostart
        self.model = model
        self.client = DaemonClient(self.address, client_id=client_id)
        self.on_status = on_status
        self.info: InfoReply | None = None
        self._lock = asyncio.Lock()

    async def ready_client(self) -> DaemonClient:
        """A client whose daemon answers and has its model loaded, starting it if needed."""
        async with self._lock:
            if self.info is not None and not self.info.loading:
                return self.client
            info = await self._info_or_start()
            if info.loading:
                if "failed" in info.loading:
                    raise DaemonError(None, info.loading)
                raise ModelLoading(None, f"lspilot daemon is not ready: {info.loading}")
            self.info = info
            return self.client

    def forget(self) -> None:
        """Called after a failed call: check (and maybe restart) the daemon next time.

        The channel is replaced too: a gRPC channel that failed to connect backs off for up to
        minutes before trying again, while a restarted daemon is ready in seconds.
        """
        self.info = None
        old = self.client
        self.client = DaemonClient(self.address, client_id=old.client_id, token=old.token)
        asyncio.get_running_loop().create_task(old.close())

    async def _info_or_start(self) -> InfoReply:
        try:
            return await self.client.info(timeout=2.0)
        except DaemonUnavailable:
            if not self.autostart:
                raise
        await asyncio.to_thread(self._start_daemon)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                return await self.client.info(timeout=2.0)
            except DaemonUnavailable:
                if time.monotonic() > deadline:
                    raise DaemonUnavailable(
                        None, f"lspilot daemon did not start; see {self.log_path()}"
                    ) from None
                await asyncio.sleep(0.2)

    def log_path(self):
        return runtime_dir() / "daemon.log"

    def _start_daemon(self) -> None:
        """Start a daemon unless another process holds (or just started) one."""
        lock_path = runtime_dir() / "spawn.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # brief: held while checking and spawning
            if self._socket_answers():
                return
            self.on_status(f"starting lspilot daemon on {self.address}")
            cmd = [sys.executable, "-m", "lspilot", "daemon", "--listen", str(self.address)]
            if self.model:
                cmd += ["--model", self.model]
            with open(self.log_path(), "ab") as logf:
                subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=logf,
                    start_new_session=True,  # outlives this editor; serves the next one
                )
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and not self._socket_answers():
                time.sleep(0.1)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _socket_answers(self) -> bool:
        import socket

        if self.address.kind == "unix":
            s = socket.socket(socket.AF_UNIX)
            target = self.address.target
        else:
            s = socket.socket(socket.AF_INET)
            host, port = self.address.target.rsplit(":", 1)
            target = (host, int(port))
        try:
            s.settimeout(0.5)
            s.connect(target)
            return True
        except OSError:
            return False
        finally:
            s.close()

# SPDX-License-Identifier: Apache-2.0
"""A real ``lspilot daemon`` subprocess for tests: start, wait until ready, kill, restart."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lspilot.protocol.client import DaemonClient, DaemonUnavailable


class DaemonProcess:
    def __init__(
        self,
        model: Path | str,
        workdir: Path,
        *,
        backend: str = "transformers",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.model = str(model)
        self.workdir = workdir
        self.backend = backend
        self.extra_args = extra_args
        self.socket = workdir / "daemon.sock"
        self.address = f"unix:{self.socket}"
        self.log_path = workdir / "daemon.log"
        self.env = dict(
            os.environ, LSPILOT_DAEMON_ADDRESS=self.address, LSPILOT_RUNTIME_DIR=str(workdir)
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> DaemonProcess:
        cmd = [
            sys.executable,
            "-m",
            "lspilot",
            "daemon",
            "--model",
            self.model,
            "--listen",
            self.address,
            "--backend",
            self.backend,
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                info = _run_sync(self._info)
                if not info.loading:
                    return
                if "failed" in info.loading:
                    raise RuntimeError(f"daemon failed to load:\n{self.log()}")
            except DaemonUnavailable:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"daemon not ready after {timeout}s:\n{self.log()}")

    def client(self) -> DaemonClient:
        token_file = self.workdir / "token"
        token = token_file.read_text() if token_file.exists() else None
        return DaemonClient(_parse(self.address), token=token)

    async def _info(self):
        client = self.client()
        try:
            return await client.info(timeout=2)
        finally:
            await client.close()

    def status(self) -> dict:
        async def fetch():
            client = self.client()
            try:
                return await client.status(timeout=5)
            finally:
                await client.close()

        return dataclasses.asdict(_run_sync(fetch))

    async def status_async(self) -> dict:
        client = self.client()
        try:
            return dataclasses.asdict(await client.status(timeout=5))
        finally:
            await client.close()

    def kill(self) -> None:
        """SIGKILL: the daemon dies as in a crash, with no chance to clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except FileNotFoundError:
            return ""


def _run_sync(make_coroutine):
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()


def _parse(address: str):
    from lspilot.protocol.endpoint import parse_address

    return parse_address(address)

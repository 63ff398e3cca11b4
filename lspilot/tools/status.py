# SPDX-License-Identifier: Apache-2.0
"""``lspilot status``: the daemon's model, device and counters."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys

from lspilot.protocol.client import DaemonClient, DaemonError
from lspilot.protocol.endpoint import default_address, parse_address


def _fetch(args, command: str):
    address = parse_address(args.daemon) if args.daemon else default_address()

    async def fetch():
        client = DaemonClient(address)
        try:
            return await client.status()
        finally:
            await client.close()

    try:
        return address, asyncio.run(fetch())
    except DaemonError as exc:
        print(f"lspilot {command}: no daemon at {address}: {exc}", file=sys.stderr)
        return address, None


def stop(args) -> int:
    """SIGTERM to the daemon's pid, as reported by the daemon itself (same user only)."""
    address, reply = _fetch(args, "stop")
    if reply is None:
        return 1
    os.kill(reply.pid, signal.SIGTERM)
    print(f"stopped the daemon at {address} (pid {reply.pid})")
    return 0


def run(args) -> int:
    address, reply = _fetch(args, "status")
    if reply is None:
        return 1
    data = dataclasses.asdict(reply)
    data["address"] = str(address)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    extra = data.pop("extra")
    width = max(map(len, data))
    for key, value in data.items():
        print(f"{key:<{width}}  {value}")
    for key, value in sorted(extra.items()):
        print(f"{key:<{width}}  {value:g}")
    return 0

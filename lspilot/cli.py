# SPDX-License-Identifier: Apache-2.0
"""The ``lspilot`` command: ``daemon``, ``lsp``, ``complete``, ``status`` and ``model``.

Each subcommand imports its side lazily, so ``lspilot lsp`` never loads torch.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lspilot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    from lspilot.daemon.main import add_arguments as daemon_arguments

    p = sub.add_parser("daemon", help="serve the model to every editor of this user (gRPC)")
    daemon_arguments(p)

    p = sub.add_parser("lsp", help="the language server, for the editor to start (stdio)")
    p.add_argument("--tcp", default="", help="listen on HOST:PORT instead of stdio (debugging)")
    p.add_argument("--log-level", default="WARNING")

    p = sub.add_parser("complete", help="complete FILE at a position through the real server")
    p.add_argument("file")
    p.add_argument("--line", type=int, required=True, help="0-based line")
    p.add_argument("--character", type=int, required=True, help="0-based UTF-16 column")
    p.add_argument("--daemon", default="", help="daemon address (default: the user's daemon)")
    p.add_argument("--model", default="", help="model for a daemon this command starts")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument(
        "--wait",
        type=float,
        default=1800.0,
        help="seconds to wait for the model to be pulled and loaded",
    )
    p.add_argument("--json", action="store_true", help="also print timings and finish reason")

    p = sub.add_parser("status", help="the daemon's model, device and counters")
    p.add_argument("--daemon", default="")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("stop", help="stop the daemon (editors start a new one on demand)")
    p.add_argument("--daemon", default="")

    p = sub.add_parser("model", help="pull and list models")
    from lspilot.daemon.models.cli import add_subcommands

    add_subcommands(p.add_subparsers(dest="model_command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "daemon":
        from lspilot.daemon.main import run

        return run(args)
    if args.command == "lsp":
        import logging

        logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
        from lspilot.lsp.server import main as lsp_main

        lsp_main(args.tcp)
        return 0
    if args.command == "complete":
        from lspilot.tools.complete import run

        return run(args)
    if args.command == "status":
        from lspilot.tools.status import run

        return run(args)
    if args.command == "stop":
        from lspilot.tools.status import stop

        return stop(args)
    if args.command == "model":
        from lspilot.daemon.models.cli import run

        return run(args)
    return 2

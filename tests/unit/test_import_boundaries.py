# SPDX-License-Identifier: Apache-2.0
"""The language server must start without the model stack, and import must do no work."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import lspilot.lsp.server as server
server.create_server()
import lspilot.lsp.features.inline_completion, lspilot.lsp.connection, lspilot.cli
heavy = sorted(m for m in ("torch", "transformers", "tritonclient") if m in sys.modules)
print(",".join(heavy))
"""


def test_language_server_imports_no_model_stack():
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "", f"lsp imported {out.stdout.strip()}"


def test_no_top_level_daemon_or_protocol_module():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util as u;"
            "print([n for n in ('daemon','protocol','lsp') if u.find_spec(n)])",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
        timeout=60,
    )
    assert out.stdout.strip() == "[]"

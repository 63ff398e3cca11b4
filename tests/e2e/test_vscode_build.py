# SPDX-License-Identifier: Apache-2.0
"""The VS Code extension (editors/vscode) type-checks and compiles, and its manifest matches
its code. No VS Code runs here (none can be installed on our machines); this catches a broken
build and commands declared but not registered.

Needs ``npm ci`` in editors/vscode first; skipped otherwise.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

VSCODE = Path(__file__).resolve().parents[2] / "editors" / "vscode"
TSC = VSCODE / "node_modules" / ".bin" / "tsc"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not TSC.exists(),
    reason="node or editors/vscode/node_modules missing (cd editors/vscode && npm ci)",
)


def test_extension_compiles(tmp_path):
    proc = subprocess.run(
        [str(TSC), "-p", str(VSCODE), "--outDir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "extension.js").exists()


def test_manifest_commands_are_registered_and_client_is_new_enough():
    manifest = json.loads((VSCODE / "package.json").read_text())
    source = (VSCODE / "src" / "extension.ts").read_text()
    declared = {c["command"] for c in manifest["contributes"]["commands"]}
    registered = set(re.findall(r'registerCommand\("([^"]+)"', source))
    assert declared == registered
    # Inline completions over LSP 3.18 are a default feature from vscode-languageclient 10 on.
    major = int(re.search(r"\d+", manifest["dependencies"]["vscode-languageclient"]).group(0))
    assert major >= 10
    lock = json.loads((VSCODE / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/vscode-languageclient"]["version"].split(".")[0] == str(
        major
    )

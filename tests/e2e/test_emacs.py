# SPDX-License-Identifier: Apache-2.0
"""The Emacs minor mode (editors/emacs/lspilot.el) over eglot, in batch Emacs, against the real
language server and the ``daemon`` fixture.

editor_emacs_driver.el types through the command-loop hooks and prints what it saw; this side
checks it against the server's own answer for a position computed here (UTF-16 columns).
Skipped when Emacs or eglot is missing (Debian: apt-get install emacs-nox elpa-eglot).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LSPILOT_EL = REPO / "editors" / "emacs" / "lspilot.el"
DRIVER_EL = Path(__file__).with_name("editor_emacs_driver.el")


def _emacs_with_eglot() -> str | None:
    emacs = shutil.which("emacs")
    if emacs is None:
        return None
    probe = subprocess.run(
        [
            emacs,
            "--batch",
            "-Q",
            "--eval",
            "(progn (require 'package)"
            ' (add-to-list \'package-directory-list "/usr/share/emacs/site-lisp/elpa")'
            " (package-initialize) (require 'eglot))",
        ],
        capture_output=True,
        timeout=60,
    )
    return emacs if probe.returncode == 0 else None


EMACS = _emacs_with_eglot()
pytestmark = [
    pytest.mark.skipif(
        EMACS is None,
        reason="emacs with eglot not installed (apt-get install emacs-nox elpa-eglot)",
    ),
    pytest.mark.timeout(180),
]


def server_cmd() -> list[str]:
    override = os.environ.get("LSPILOT_E2E_SERVER_CMD")
    return shlex.split(override) if override else [sys.executable, "-m", "lspilot", "lsp"]


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


SAMPLE = (
    "import os\n\n\ndef greet(name):\n"
    '    message = "Hello, " + name\n'
    "    return \n"
    '    label = ("😀 漢字 " + )\n'
)


def apply(before: str, point: int, item: dict, line_text: str, col: int) -> str:
    """The buffer after inserting ``item`` at ``point`` (a 0-based character offset)."""
    text = (
        item["insertText"] if isinstance(item["insertText"], str) else item["insertText"]["value"]
    )
    end = point
    if item.get("range"):
        # Ranges are UTF-16 columns on the cursor's line.
        end_units = item["range"]["end"]["character"]
        i = col
        while utf16(line_text[:i]) < end_units:
            i += 1
        end = point + (i - col)
    return before[:point] + text + before[end:]


def test_emacs_minor_mode_shows_and_accepts_the_server_suggestion(daemon, tmp_path):
    path = tmp_path / "sample.py"
    path.write_text(SAMPLE, encoding="utf-8")
    lines = SAMPLE.split("\n")
    cases = []
    for row, prefix, typed, burst in [
        (5, "    return ", "m", False),
        (6, '    label = ("😀 漢字 " + ', "s", False),
        (4, '    message = "Hello, " + name', " + xyz", True),  # typing on during requests
    ]:
        assert lines[row].startswith(prefix)
        cases.append(
            {
                "line": row,
                "col": len(prefix),
                "type": typed,
                "burst": burst,
                "utf16": utf16(prefix + typed),
            }
        )
    env = {
        **os.environ,
        **{k: str(v) for k, v in daemon.env.items()},
        "HOME": str(tmp_path),  # no user init, no eglot state from the user
        "LSPILOT_E2E_FILE": str(path),
        "LSPILOT_E2E_SERVER": json.dumps(server_cmd()),
        "LSPILOT_E2E_CASES": json.dumps(cases),
    }
    proc = subprocess.run(
        [EMACS, "--batch", "-Q", "-L", str(LSPILOT_EL.parent), "-l", str(DRIVER_EL)],
        capture_output=True,
        text=True,
        env=env,
        timeout=150,
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    results = [
        json.loads(line.split(" ", 1)[1])
        for line in proc.stdout.splitlines()
        if line.startswith("LSPILOT-RESULT ")
    ]
    assert len(results) == len(cases) + 1, out

    for case, res in zip(cases, results, strict=False):
        # The request went out at the cursor, in UTF-16 columns.
        assert res["sent"] == {"line": case["line"], "character": case["utf16"]}, res
        item = res["answer"]
        assert item, f"the server answered nothing: {res}"
        line_text = res["before"].split("\n")[case["line"]]
        col = len(line_text[: case["col"]]) + len(case["type"])
        text = item["insertText"]
        # The overlay shows the server's suggestion (minus closing characters already there).
        expected_after = apply(res["before"], res["point"], item, line_text, col)
        replaced_len = len(expected_after) - len(res["before"]) - len(text)
        replaced = res["before"][res["point"] : res["point"] - replaced_len]
        shown = (
            text[: len(text) - len(replaced)]
            if replaced and "\n" not in text and text.endswith(replaced)
            else text
        )
        assert res["ghost"] == shown, res
        assert res["binding"] == "lspilot-accept"
        assert res["overlays"] == 1, res  # one suggestion, for where point is now
        # Accept-word inserted a prefix of the suggestion and kept the rest on screen.
        inserted = res["word_buffer"][
            res["point"] : len(res["word_buffer"]) - (len(res["before"]) - res["point"])
        ]
        assert inserted and text.startswith(inserted), res
        if inserted != text:
            assert res["word_ghost"] == shown[len(inserted) :], res
        # TAB inserted the rest: the whole suggestion is in, at the right place.
        assert res["after"] == expected_after, res
    assert results[0]["partials"] >= 1, "no lspilot/partialCompletion was drawn"
    status = results[-1]["status"]
    assert status.get("model"), status

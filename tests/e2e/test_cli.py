# SPDX-License-Identifier: Apache-2.0
"""``lspilot complete`` and ``lspilot status`` against the real daemon and language server."""

from __future__ import annotations

import json
import subprocess
import sys

from lspilot.protocol.messages import StopPolicy
from tests.e2e.lsp_session import direct_completion

SOURCE = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return \n"


def _lspilot(*args, env, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "lspilot", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


async def test_complete_prints_the_models_suggestion(daemon, tmp_path):
    path = tmp_path / "example.py"
    path.write_text(SOURCE)
    result = _lspilot(
        "complete",
        str(path),
        "--line",
        "5",
        "--character",
        "11",
        "--max-new-tokens",
        "24",
        "--json",
        "--daemon",
        daemon.address,
        env=daemon.env,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    expected = await direct_completion(
        daemon.address,
        SOURCE[: SOURCE.rindex("return ") + 7],
        "\n",
        max_new_tokens=24,
        stop=StopPolicy.AUTO,
        token_healing=True,  # the default setting
    )
    assert data["text"] == expected
    assert data["finish_reason"] in ("stop", "length")
    assert data["timings"]["prompt_tokens"] > 10
    assert data["timings"]["first_token_ms"] > 0


def test_complete_rejects_a_position_outside_the_file(daemon, tmp_path):
    path = tmp_path / "example.py"
    path.write_text(SOURCE)
    result = _lspilot(
        "complete",
        str(path),
        "--line",
        "40",
        "--character",
        "0",
        "--daemon",
        daemon.address,
        env=daemon.env,
    )
    assert result.returncode == 1
    assert "outside" in result.stderr


def test_status_json_has_the_counters(daemon):
    result = _lspilot("status", "--json", "--daemon", daemon.address, env=daemon.env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for key in (
        "protocol_version",
        "model",
        "device",
        "requests_total",
        "cancelled_total",
        "decode_steps_after_cancel_total",
        "active_sequences",
    ):
        assert key in data
    assert data["model"] == "tiny-qwen"
    assert data["device"] == "cpu"


def test_status_without_a_daemon_is_a_clear_error(tmp_path):
    result = _lspilot(
        "status",
        "--daemon",
        f"unix:{tmp_path}/none.sock",
        env={"PATH": "/usr/bin:/bin", "LSPILOT_RUNTIME_DIR": str(tmp_path)},
    )
    assert result.returncode == 1
    assert "no daemon at" in result.stderr


def test_stop_ends_the_daemon(tiny_model_dir, tmp_path):
    from tests.daemon_process import DaemonProcess

    proc = DaemonProcess(tiny_model_dir, tmp_path).start()
    try:
        result = _lspilot("stop", "--daemon", proc.address, env=proc.env)
        assert result.returncode == 0, result.stderr
        assert proc.proc.wait(timeout=30) == 0
    finally:
        proc.stop()

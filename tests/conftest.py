# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: a tiny real model, and a real daemon process serving it."""

from __future__ import annotations

import pytest

from tests.daemon_process import DaemonProcess


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from tests.tiny_models import build_tiny_model

    return build_tiny_model("qwen", tmp_path_factory.mktemp("models") / "tiny-qwen")


@pytest.fixture(scope="session")
def daemon(tiny_model_dir, tmp_path_factory):
    """A real ``lspilot daemon`` (transformers backend) serving the tiny model over a socket."""
    proc = DaemonProcess(tiny_model_dir, tmp_path_factory.mktemp("daemon")).start()
    yield proc
    proc.stop()

# SPDX-License-Identifier: Apache-2.0
"""Which backend serves a model: the engine where it knows the architecture, else transformers."""

from __future__ import annotations

import pytest

from lspilot.daemon.backends.hf import TransformersBackend
from lspilot.daemon.engine import EngineBackend, UnsupportedModel
from lspilot.daemon.loader import load_model
from lspilot.daemon.main import make_backend
from tests.tiny_models import build_tiny_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("choice")
    return {f: load_model(build_tiny_model(f, root / f)) for f in ("starcoder", "codegen")}


async def test_auto_uses_the_engine_for_a_known_architecture(models):
    backend = make_backend("auto", models["starcoder"], slots=3)
    try:
        assert isinstance(backend, EngineBackend)
        assert backend.info.extra["max_batch"] == "3"  # the daemon's --slots
    finally:
        await backend.close()


def test_auto_falls_back_to_transformers_for_an_unknown_one(models):
    assert isinstance(make_backend("auto", models["codegen"]), TransformersBackend)


def test_asking_for_the_engine_on_an_unknown_architecture_fails_loudly(models):
    with pytest.raises(UnsupportedModel):
        make_backend("engine", models["codegen"])


async def test_int8_quantised_daemon_serves_completions(tiny_model_dir, tmp_path):
    from lspilot.protocol.messages import StopPolicy
    from tests.daemon_process import DaemonProcess
    from tests.e2e.lsp_session import direct_completion

    proc = DaemonProcess(
        tiny_model_dir, tmp_path, extra_args=("--quantize", "int8", "--threads", "1")
    ).start()
    try:
        text = await direct_completion(
            proc.address, "import os\n\n", "", max_new_tokens=8, stop=StopPolicy.MULTI_LINE
        )
        assert text.strip()
        assert "linear layers to int8" in proc.log_path.read_text()
    finally:
        proc.stop()

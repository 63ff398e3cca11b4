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
    backend = make_backend("auto", models["starcoder"])
    try:
        assert isinstance(backend, EngineBackend)
    finally:
        await backend.close()


def test_auto_falls_back_to_transformers_for_an_unknown_one(models):
    assert isinstance(make_backend("auto", models["codegen"]), TransformersBackend)


def test_asking_for_the_engine_on_an_unknown_architecture_fails_loudly(models):
    with pytest.raises(UnsupportedModel):
        make_backend("engine", models["codegen"])

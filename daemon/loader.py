# SPDX-License-Identifier: Apache-2.0
"""Loading a model directory: tokenizer, FIM format, weights, device and dtype.

The result, ``LoadedModel``, is everything the completion service needs about the model:
prompt building and detokenization are methods here so the service never touches the
tokenizer directly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_CAP = 4096  # tokens; enough for FIM, and it bounds prefill time on a CPU


@dataclass
class LoadedModel:
    name: str
    path: Path
    family: str
    tokenizer: Any
    model: Any
    fim: Any  # lspilot.daemon.fim.FimFormat
    context_window: int
    device: str
    layout: str = "psm"

    def build_prompt(
        self,
        prefix: str,
        suffix: str,
        snippets: Seq,
        max_new_tokens: int,
        *,
        path: str = "",
        heal: bool = False,
        comment: str = "#",
    ):
        from .prompt import build_prompt

        budget = max(16, self.context_window - max_new_tokens)
        pairs = [(s.path, s.text) for s in snippets]
        return build_prompt(
            self.tokenizer,
            self.fim,
            prefix,
            suffix,
            pairs,
            budget=budget,
            layout=self.layout,
            heal=heal,
            path=path,
            comment=comment,
        )

    def detokenizer(self, prompt_ids, strip_prefix: str = ""):
        from .detok import IncrementalDetokenizer

        return IncrementalDetokenizer(self.tokenizer, prompt_ids, strip_prefix=strip_prefix)


def pick_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(requested: str, device: str):
    """bf16 on GPUs and on CPUs with native bf16 (AVX-512 BF16 / AMX), else fp32."""
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device.startswith("cuda"):
        return torch.bfloat16
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return torch.bfloat16 if ("amx_bf16" in flags or "avx512_bf16" in flags) else torch.float32


def load_model(
    path: Path,
    *,
    name: str = "",
    device: str = "auto",
    dtype: str = "auto",
    fim_override: str | None = None,
    context_window: int | None = None,
    layout: str = "psm",
    quantize: str = "none",
) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    from .families import load_tokenizer
    from .fim import detect_fim_format

    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    try:
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except Exception as exc:
        raise ModelLoadError(f"cannot load model from {path}: {exc}") from exc
    model.to(device).eval()  # type: ignore[arg-type]  # transformers types ``to`` as a wrapper
    if quantize == "int8":
        model = _quantize_int8(model, device)
    fim = detect_fim_format(tokenizer, fim_override)
    window = getattr(model.config, "max_position_embeddings", None) or DEFAULT_CONTEXT_CAP
    window = min(window, context_window or DEFAULT_CONTEXT_CAP)
    family = getattr(model.config, "model_type", "unknown")
    log.info(
        "loaded %s (%s, FIM %s) on %s as %s, context %d",
        path,
        family,
        fim.name,
        device,
        torch_dtype,
        window,
    )
    return LoadedModel(
        name=name or path.name,
        path=path,
        family=family,
        tokenizer=tokenizer,
        model=model,
        fim=fim,
        context_window=window,
        device=device,
        layout=layout,
    )


def _quantize_int8(model, device: str):
    """int8 dynamic quantisation of every Linear (weights int8, activations per token).

    Measured on the 2-core CPU (docs/performance.md): decode 48-57 ms/token against 160-247 in
    bf16. It changes the numbers slightly, so it is an option, not the default.
    """
    import torch

    if not device.startswith("cpu"):
        raise ModelLoadError("--quantize int8 runs on the CPU only")
    log.info("quantising the linear layers to int8 (dynamic)")
    return torch.ao.quantization.quantize_dynamic(
        model.float(), {torch.nn.Linear}, dtype=torch.qint8
    )

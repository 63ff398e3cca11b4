# SPDX-License-Identifier: Apache-2.0
"""Each decoder layer's weights as the engine's own kernels want them, built once per model.

The q/k/v projections (and gate/up) of llama-style layers become one stacked weight, so one
product computes all three (two); the HF modules' own parameters are then re-pointed at slices
of it, so the model keeps one copy of every weight and the HF modules, which the eager steps
call, read the same memory. gpt_bigcode's c_attn is stacked already. Used by the fused decode
step (``fused``) and the packed prefill (``packed``), whichever asks first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Norm = tuple[torch.Tensor, torch.Tensor | None, float]  # weight, bias, eps


@dataclass
class LayerWeights:
    w_qkv: torch.Tensor  # [(H + 2 Hkv) D, E]: q heads, then k heads, then v heads
    b_qkv: torch.Tensor | None
    w_o: torch.Tensor  # [E, H D]
    b_o: torch.Tensor | None
    w_up: torch.Tensor  # [2 I, E] gate rows then up rows (llama), or [I, E] (gpt_bigcode)
    b_up: torch.Tensor | None
    w_down: torch.Tensor  # [E, I]
    b_down: torch.Tensor | None
    ln1: Norm
    ln2: Norm


def kernel_support(em) -> str | None:
    """None when the engine's own kernels (fused decode, packed prefill's fast layer) can run
    this architecture, else why not: llama-style decoders with SiLU MLPs and no per-head q/k
    norm (llama, qwen2, mistral), and multi-query gpt_bigcode with the tanh GELU."""
    from .model import LLAMA_LIKE

    cfg = em.model.config
    if em.arch == "gpt_bigcode":
        if cfg.activation_function not in ("gelu_pytorch_tanh", "gelu_new"):
            return f"activation {cfg.activation_function!r}"
        if not cfg.multi_query:  # c_attn's rows are then q, k, v per head, interleaved
            return "gpt_bigcode without multi-query attention"
        return None
    if em.arch not in LLAMA_LIKE:
        return f"architecture {em.arch!r}"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act!r}"
    if hasattr(em.layers[0].self_attn, "q_norm"):
        return "per-head q/k norm (qwen3)"
    return None


def layer_weights(em) -> list[LayerWeights]:
    """``em``'s layers (an ``EngineModel``), stacked on the first call and remembered there.
    Stacking re-points the HF modules' weights, so it must happen before any graph capture:
    the fused step and the packed prefill call this when they are built."""
    got = em._layer_weights
    if got is None:
        with torch.no_grad():
            got = [_layer(em.arch, layer) for layer in em.layers]
        em._layer_weights = got
    return got


def norm_of(mod) -> Norm:
    # llama-like norms call it variance_epsilon, LayerNorm eps
    eps = getattr(mod, "variance_epsilon", None) or getattr(mod, "eps", None) or 1e-6
    return mod.weight, getattr(mod, "bias", None), float(eps)


def bias_of(mod) -> torch.Tensor | None:
    return getattr(mod, "bias", None)


def _layer(arch: str, layer) -> LayerWeights:
    if arch == "gpt_bigcode":
        a, m = layer.attn, layer.mlp
        return LayerWeights(
            a.c_attn.weight, bias_of(a.c_attn), a.c_proj.weight, bias_of(a.c_proj),
            m.c_fc.weight, bias_of(m.c_fc), m.c_proj.weight, bias_of(m.c_proj),
            norm_of(layer.ln_1), norm_of(layer.ln_2),
        )  # fmt: skip
    a, m = layer.self_attn, layer.mlp
    w_qkv, b_qkv = _stack(a.q_proj, a.k_proj, a.v_proj)
    w_up, b_up = _stack(m.gate_proj, m.up_proj)
    return LayerWeights(
        w_qkv, b_qkv, a.o_proj.weight, bias_of(a.o_proj),
        w_up, b_up, m.down_proj.weight, bias_of(m.down_proj),
        norm_of(layer.input_layernorm), norm_of(layer.post_attention_layernorm),
    )  # fmt: skip


def _stack(*linears) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One weight (and bias) for several Linears, whose parameters become views of it."""
    w = torch.cat([m.weight.detach() for m in linears])
    has_bias = [m.bias is not None for m in linears]
    b = torch.cat([m.bias.detach() for m in linears]) if all(has_bias) else None
    if any(has_bias) and b is None:
        raise ValueError("some stacked projections have a bias and some do not")
    row = 0
    for m in linears:
        n = m.weight.shape[0]
        m.weight.data = w[row : row + n]
        if b is not None:
            m.bias.data = b[row : row + n]
        row += n
    return w, b

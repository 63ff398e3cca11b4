# SPDX-License-Identifier: Apache-2.0
"""The L2 prefetch's launch arguments, and where it is on (the instruction itself needs sm_90:
tests/unit/test_kernel_resources.py compiles it, the GPU tests run it)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from lspilot.daemon.engine import l2_prefetch as L  # noqa: E402
from lspilot.daemon.engine.fused import PREFETCH_PLAN  # noqa: E402
from lspilot.daemon.engine.model import EngineModel  # noqa: E402
from tests.kernel_models import tiny_decoder  # noqa: E402


def covered(args: dict, programs: int, warps: int) -> set[int]:
    """The 16-byte units the kernel's warps ask for, by ``prefetch_l2``'s arithmetic."""
    units: set[int] = set()
    every = programs * warps
    for first in range(every):
        for i in range(-(-args["pf_bytes"] // (every * args["pf_chunk"]))):
            start = (first + i * every) * args["pf_chunk"]
            size = min(args["pf_chunk"], max(args["pf_bytes"] - start, 0)) // 16 * 16
            units.update(range(start // 16, (start + size) // 16))
    return units


@pytest.mark.parametrize(
    ("shape", "dtype", "programs", "warps"),
    [((4864 * 2, 896), torch.bfloat16, 32, 8), ((896, 896), torch.bfloat16, 144, 4),
     ((4864 * 2, 896), torch.bfloat16, 2, 8),  # a short context's attention: several each
     ((8, 100), torch.float32, 1, 1), ((3, 5), torch.float16, 600, 8)],
)  # fmt: skip
def test_the_warps_cover_the_whole_region_in_16_byte_chunks(shape, dtype, programs, warps):
    w = torch.zeros(shape, dtype=dtype)
    args = L.prefetch_args(w, programs, warps, dummy=w)
    nbytes = w.numel() * w.element_size()
    assert args["PF"] and args["pf_bytes"] == nbytes and args["pf_ptr"] is w
    assert args["pf_chunk"] % 16 == 0 and 256 <= args["pf_chunk"] <= L.MAX_CHUNK
    assert covered(args, programs, warps) == set(range(nbytes // 16))  # a tail < 16 B is left


def test_no_region_is_no_prefetch_and_a_strided_one_is_refused():
    w = torch.zeros(64, 64)
    assert L.prefetch_args(None, 8, 4, dummy=w)["PF"] is False
    with pytest.raises(ValueError, match="contiguous"):
        L.prefetch_args(w.t(), 8, 4, dummy=w)


def test_prefetch_is_off_here_and_a_bad_override_is_refused(monkeypatch):
    monkeypatch.setenv("LSPILOT_L2_PREFETCH", "1")
    assert L.l2_prefetch_ok(None) is False  # the interpreter, and no GPU
    fused = EngineModel(tiny_decoder("qwen2"), max_len=64, fused=True).fused
    assert fused.prefetch == {}
    assert set(fused._ahead(0).values()) == {None}
    monkeypatch.setenv("LSPILOT_L2_PREFETCH", "yes")
    with pytest.raises(ValueError, match="LSPILOT_L2_PREFETCH must be 0"):
        L.l2_prefetch_ok(None)


def test_each_layer_asks_for_its_next_products_weights():
    fused = EngineModel(tiny_decoder("qwen2"), max_len=64, fused=True).fused
    fused.prefetch = dict(PREFETCH_PLAN)  # the plan as a GPU runs it where it is on
    n = len(fused.layers)
    for i, lw in enumerate(fused.layers):
        ahead = fused._ahead(i)
        assert ahead["qkv"] is lw.w_o and ahead["attention"] is lw.w_up
        assert ahead["o"] is None and ahead["up"] is lw.w_down
        assert ahead["down"] is (fused.layers[i + 1].w_qkv if i + 1 < n else None)


def test_a_plan_can_ask_for_each_kernels_own_weights():
    fused = EngineModel(tiny_decoder("qwen2"), max_len=64, fused=True).fused
    fused.prefetch = {"qkv": "qkv", "o": "o", "up": "up", "down": "down"}
    lw = fused.layers[0]
    assert fused._ahead(0) == {"qkv": lw.w_qkv, "attention": None, "o": lw.w_o, "up": lw.w_up,
                               "down": lw.w_down}  # fmt: skip

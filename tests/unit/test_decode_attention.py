# SPDX-License-Identifier: Apache-2.0
"""Split-K decode attention on the CPU through Triton's interpreter, against plain torch, with
its first keys and values loaded before the wait for the previous kernel and after it.

The interpreter runs one kernel after another, so the early load cannot race the q/k/v kernel
here: that the newest key is taken as written is the GPU tests' part (the graphed step with
programmatic dependent launch against the serial one, ``test_fused_decode_cuda.py``).
"""

from __future__ import annotations

import math
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":  # set by tests/conftest.py before any import
    pytest.skip("needs Triton's interpreter (TRITON_INTERPRET=1)", allow_module_level=True)

from lspilot.daemon.engine.decode_attention import attention  # noqa: E402


def reference_attention(q, k_cache, v_cache, pos, scale):
    """q: [B, H, D]; row b (slot b) attends positions 0..pos[b] -> [B, H * D]."""
    B, H, D = q.shape
    G = H // k_cache.shape[1]
    out = []
    for b in range(B):
        n = int(pos[b]) + 1
        k = k_cache[b, :, :n].repeat_interleave(G, dim=0)  # [H, n, D]
        v = v_cache[b, :, :n].repeat_interleave(G, dim=0)
        w = torch.softmax(torch.einsum("hd,hnd->hn", q[b], k) * scale, dim=-1)
        out.append(torch.einsum("hn,hnd->hd", w, v).reshape(H * D))
    return torch.stack(out)


@pytest.mark.parametrize("block_l", [64, 32])
def test_split_attention_matches_torch_whether_or_not_keys_load_before_the_wait(block_l):
    # 3 rows at different lengths over 300 keys (splits of 64: the last ones of short rows hold
    # no keys); 32 keys a step makes each split two tiles, the first loaded early.
    g = torch.Generator().manual_seed(3)
    B, H, Hkv, D, M, n_keys = 3, 4, 2, 32, 320, 300
    q = torch.randn(B, H, D, generator=g)
    k_cache = torch.randn(B, Hkv, M + 1, D, generator=g)
    v_cache = torch.randn(B, Hkv, M + 1, D, generator=g)
    pos = torch.tensor([299, 5, 130])
    slots = torch.arange(B)
    scale = 1 / math.sqrt(D)
    want = reference_attention(q, k_cache, v_cache, pos, scale)
    outs = [
        attention(q, k_cache, v_cache, pos, slots, n_keys, scale, block_l=block_l, preload=p)
        for p in (True, False)
    ]
    assert torch.equal(outs[0], outs[1])
    assert torch.allclose(outs[0], want, atol=1e-5, rtol=1e-4)

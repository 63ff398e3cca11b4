# SPDX-License-Identifier: Apache-2.0
"""Split-K decode attention and the output product that merges its splits, on the CPU through
Triton's interpreter, against plain torch.

The fused step no longer launches a merge kernel: ``kernels.linear`` takes the unmerged splits
(``Splits``) and merges each input tile as it reads it. Here that product is checked against the
merge kernel followed by the plain product, at batch sizes that take the tensor-core tile (16
rows) and the multiply-and-sum one, input tiles narrower and wider than a head, splits that hold
no keys, and more splits than the loader merges (where ``linear`` merges first).
"""

from __future__ import annotations

import math
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":  # set by tests/conftest.py before any import
    pytest.skip("needs Triton's interpreter (TRITON_INTERPRET=1)", allow_module_level=True)

from lspilot.daemon.engine import kernels as K  # noqa: E402
from lspilot.daemon.engine.decode_attention import (  # noqa: E402
    Splits,
    attention_splits,
    merge,
)


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
    outs = []
    for preload in (True, False):
        s = attention_splits(
            q, k_cache, v_cache, pos, slots, n_keys, scale, block_l=block_l, preload=preload
        )
        assert s.part.shape[2] > 1
        outs.append(merge(s, torch.float32))
    assert torch.equal(outs[0], outs[1])
    assert torch.allclose(outs[0], want, atol=1e-5, rtol=1e-4)


def random_splits(B: int, H: int, S: int, D: int, seed: int) -> Splits:
    g = torch.Generator().manual_seed(seed)
    part = torch.randn(B, H, S, D, generator=g)
    lse = torch.randn(B, H, S, generator=g) * 3
    lse[0, :, S // 2 :] = float("-inf")  # row 0's later splits hold no keys
    part[0, :, S // 2 :] = 0.0
    return Splits(part, lse)


@pytest.mark.parametrize(
    "B, S, dot, block_k",
    [
        (1, 5, True, 128),  # one real row in a 16-row tensor-core tile, tile of 4 heads
        (2, 16, True, 16),  # tile narrower than a head
        (12, 3, True, 32),  # tile exactly one head
        (20, 2, True, 64),  # two 16-row tiles
        (3, 7, False, 64),  # multiply-and-sum rows
        (2, 80, True, 64),  # more splits than the loader merges: linear merges first
    ],
)
def test_output_product_merges_splits_as_the_merge_kernel(B, S, dot, block_k):
    H, D, N = 4, 32, 48
    splits = random_splits(B, H, S, D, seed=B + S)
    assert splits.merges_in_loader() == (S <= 64)
    w = torch.randn(N, H * D, generator=torch.Generator().manual_seed(9))
    tiles = K.Tiles.make(B, N, H * D, dot=dot, block_n=16, block_k=block_k, programs=8)
    got = K.linear(splits, w, accumulate=torch.ones(B, N), tiles=tiles)
    merged = merge(splits, torch.float32)
    want = K.linear(merged, w, accumulate=torch.ones(B, N), tiles=tiles)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-5)
    # and the merge itself against torch: softmax over the splits' log-sum-exp
    weights = torch.softmax(splits.lse, dim=-1)[..., None]  # [B, H, S, 1]
    assert torch.allclose(merged, (splits.part * weights).sum(2).reshape(B, H * D), atol=1e-5)
    assert torch.allclose(got, torch.ones(B, N) + merged @ w.T, atol=1e-4, rtol=1e-5)


def test_a_norm_on_splits_is_refused():
    splits = random_splits(2, 4, 3, 32, seed=0)
    with pytest.raises(ValueError, match="no norm"):
        K.linear(splits, torch.randn(8, 128), norm=K.NORM_RMS, norm_w=torch.ones(128))

# SPDX-License-Identifier: Apache-2.0
"""The Triton decode step against the eager one, on the CPU through Triton's interpreter.

The kernels (daemon/engine/kernels.py) run here exactly as written for the GPU, one program at
a time in NumPy, in float32. Each supported architecture is checked for the same logits and the
same KV-cache writes as the eager decode at a batch that takes the multiply-and-sum q/k/v tiles
(2 rows) and one that takes tensor-core tiles (12 rows); and one model generates through the
whole engine token-identical to ``model.generate``.
"""

from __future__ import annotations

import asyncio
import os

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":  # set by tests/conftest.py before any import
    pytest.skip("needs Triton's interpreter (TRITON_INTERPRET=1)", allow_module_level=True)

from lspilot.daemon.backends.base import SamplingParams, Sequence  # noqa: E402
from lspilot.daemon.engine import EngineBackend, UnsupportedModel  # noqa: E402
from lspilot.daemon.engine.model import EngineModel  # noqa: E402
from lspilot.daemon.engine.packed import PackedPrefill  # noqa: E402
from tests.kernel_models import VOCAB, greedy, tiny_decoder  # noqa: E402


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gpt_bigcode"])
@pytest.mark.parametrize("rows", [2, 12])
def test_fused_step_matches_eager_step(arch, rows):
    check_fused_step(arch, rows)


@pytest.mark.parametrize("dot", [False, True])
@pytest.mark.parametrize("arch", ["qwen2", "gpt_bigcode"])
def test_fused_step_with_preloaded_tiles_matches_eager_step(arch, dot):
    # Every product's first weight tile loaded before the wait, a deeper pipeline and small
    # tiles, so K takes several steps after the preloaded one (and down/o split over K).
    kw = {"dot": dot, "block_n": 16, "block_k": 16, "num_stages": 4, "preload": True}
    tile_kw = {
        "qkv": {**kw, "block_j": 16 if dot else 4},
        "o": {**kw, "programs": 8}, "down": {**kw, "programs": 8},
        "up": kw, "head": kw,
    }  # fmt: skip
    check_fused_step(arch, 2, tile_kw)


def check_fused_step(arch: str, rows: int, tile_kw: dict | None = None) -> None:
    """The fused step's logits and cache writes against the eager step's."""
    em = EngineModel(tiny_decoder(arch), max_len=256, fused=True)
    em.fused.tile_kw = tile_kw or {}
    em.allocate(16)
    S, L = 70, 128
    g = torch.Generator().manual_seed(rows)
    with torch.inference_mode():
        ids = torch.randint(0, VOCAB, (rows, S), generator=g)
        pos = torch.arange(S)[None].expand(rows, S).contiguous()
        em.prefill(ids, pos, pos, torch.arange(rows), em.key_pos(S), torch.full((rows,), S - 1))
        new = torch.randint(0, VOCAB, (rows, 1), generator=g)
        p = torch.tensor([[S - 9 * (i % 4)] for i in range(rows)])  # rows at different lengths
        want = em.decode(new, p, p, em.key_pos(L))
        k_want, v_want = em.cache.k.clone(), em.cache.v.clone()
        for b in range(rows):  # forget the new token's keys and values: the fused step writes them
            em.cache.k[:, b, :, p[b, 0]] = 0.0
            em.cache.v[:, b, :, p[b, 0]] = 0.0
        got = em.fused.decode(new, p, p, em.key_pos(L))
    assert torch.isfinite(got).all()
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert torch.allclose(em.cache.k, k_want, atol=1e-5)
    assert torch.allclose(em.cache.v, v_want, atol=1e-5)


def test_engine_with_fused_decode_matches_generate():
    model = tiny_decoder("qwen2")
    ids = torch.randint(0, VOCAB, (30,), generator=torch.Generator().manual_seed(3)).tolist()
    ref = greedy(model, ids, 6)

    async def run():
        be = EngineBackend(model, device="cpu", max_batch=2, max_len=128, fused=True)
        try:
            assert be.info.extra["fused_decode"] == "true"
            seq = Sequence("f", ids, SamplingParams(max_new_tokens=6))
            return [s.token_id async for s in be.generate(seq)]
        finally:
            await be.close()

    assert asyncio.run(run()) == ref


def test_fused_decode_refuses_what_it_cannot_run():
    cfg = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip  # head_dim 16: below the kernels' tile
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    with pytest.raises(UnsupportedModel, match="head_dim"):
        EngineModel(model, max_len=64, fused=True)
    # Without multi-query attention gpt_bigcode interleaves q, k, v per head in c_attn: the
    # fused step refuses it, and the packed prefill keeps the HF modules for it.
    mha = transformers.GPTBigCodeForCausalLM(transformers.GPTBigCodeConfig(
        vocab_size=VOCAB, n_embd=128, n_layer=1, n_head=4, multi_query=False,
    )).eval()  # fmt: skip
    with pytest.raises(UnsupportedModel, match="multi-query"):
        EngineModel(mha, max_len=64, fused=True)
    em = EngineModel(mha, max_len=64)
    em.allocate(1)
    assert not PackedPrefill(em, max_tokens=64, max_chunks=1, graphs=False).fast
    # The automatic choice is the eager step on the CPU (the interpreter is for tests only).
    assert EngineModel(model, max_len=64).fused is None
    assert EngineModel(tiny_decoder("llama"), max_len=64).fused is None


@pytest.mark.parametrize(
    "B, N, K, splittable",
    [
        pytest.param(2, 896, 4864, True, id="down-qwen0.5b"),
        pytest.param(2, 896, 896, True, id="o-qwen0.5b"),
        pytest.param(64, 2048, 8192, True, id="down-starcoder-b64"),
        pytest.param(2, 4864, 896, False, id="up-qwen0.5b"),
        pytest.param(8, 151936, 896, False, id="lm-head"),
    ],
)
def test_tiles_cover_the_inputs_in_whole_steps(B, N, K, splittable):
    from lspilot.daemon.engine.kernels import PROGRAMS, Tiles

    t = Tiles.choose(B, N, K, splittable=splittable)
    splits = -(-K // t.k_split)
    assert t.k_split % t.block_k == 0
    assert splits * t.k_split >= K > (splits - 1) * t.k_split
    assert t.block_m >= (16 if t.dot else min(B, 2))
    if not splittable:
        assert splits == 1  # an activation or a plain store needs the whole sum
    else:
        programs = -(-N // t.block_n) * -(-B // t.block_m) * splits
        assert programs <= 2 * PROGRAMS or splits == 1


def test_batches_above_fused_max_batch_take_the_eager_step():
    em = EngineModel(tiny_decoder("qwen2"), max_len=128, fused=True, fused_max_batch=2)
    em.allocate(4)
    g = torch.Generator().manual_seed(9)
    with torch.inference_mode():
        for rows, step in ((4, em.decode), (2, em.fused.decode)):
            ids = torch.randint(0, VOCAB, (rows, 1), generator=g)
            pos = torch.full((rows, 1), 3)
            want = step(ids, pos, pos, em.key_pos(64))
            got = em.decode_step(ids, pos, pos, em.key_pos(64))
            assert torch.equal(got, want)
        # The two steps differ in rounding, so the check above can tell which one ran.
        eager, fused = (f(ids, pos, pos, em.key_pos(64)) for f in (em.decode, em.fused.decode))
        assert not torch.equal(eager, fused)


def test_gpt_bigcode_takes_the_eager_step_above_8_rows_by_default():
    # Measured on the H200 (docs/performance.md): the fused step is slower there at 32 and 64.
    em = EngineModel(tiny_decoder("gpt_bigcode"), max_len=128, fused=True)
    em.allocate(12)
    ids = torch.randint(0, VOCAB, (12, 1), generator=torch.Generator().manual_seed(2))
    pos = torch.full((12, 1), 3)
    with torch.inference_mode():
        want = em.decode(ids, pos, pos, em.key_pos(64))
        assert torch.equal(em.decode_step(ids, pos, pos, em.key_pos(64)), want)
    assert EngineModel(tiny_decoder("qwen2"), max_len=64, fused=True).fused_max_batch > 64


def test_kernel_launch_mode_is_serial_here_and_a_bad_override_is_refused(monkeypatch):
    from lspilot.daemon.engine import pdl

    monkeypatch.setenv("LSPILOT_PDL", "2")
    assert pdl.pdl_mode(prefer=pdl.PDL_LATE) == pdl.PDL_OFF  # the interpreter
    assert EngineModel(tiny_decoder("qwen2"), max_len=64, fused=True).fused.pdl == pdl.PDL_OFF
    monkeypatch.delenv("LSPILOT_PDL")
    bigcode = EngineModel(tiny_decoder("gpt_bigcode"), max_len=64, fused=True).fused
    assert (bigcode.pdl, bigcode.pdl_by_op) == (pdl.PDL_OFF, {})  # no PDL for attention either
    monkeypatch.setenv("LSPILOT_PDL", "yes")
    with pytest.raises(ValueError, match="LSPILOT_PDL must be 0"):
        pdl.pdl_mode()

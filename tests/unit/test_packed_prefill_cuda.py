# SPDX-License-Identifier: Apache-2.0
"""The packed prefill compiled for a GPU and replayed from CUDA graphs (CI has neither: this
runs on the GPU machine, with ``TRITON_INTERPRET=0`` so the kernels compile)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
triton = pytest.importorskip("triton")
if not torch.cuda.is_available() or triton.knobs.runtime.interpret:
    pytest.skip("needs CUDA and compiled Triton (TRITON_INTERPRET=0)", allow_module_level=True)

from lspilot.daemon.engine.model import EngineModel  # noqa: E402
from lspilot.daemon.engine.packed import PackedPrefill  # noqa: E402
from tests.kernel_models import VOCAB, tiny_decoder  # noqa: E402


def test_packed_step_replayed_from_graphs_matches_the_step_run_directly():
    """The compiled kernel (its for loop, not the interpreter's while loop) and the graph path:
    consecutive steps of different buckets and chunk counts, replayed against run directly."""
    em = EngineModel(tiny_decoder("qwen2").cuda(), max_len=256)
    em.allocate(4)
    direct = PackedPrefill(em, max_tokens=256, max_chunks=4, graphs=False)
    graphed = PackedPrefill(em, max_tokens=256, max_chunks=4, graphs=True)
    g = torch.Generator().manual_seed(3)
    steps = [
        [(0, 0, 70), (1, 0, 9)],
        [(0, 70, 100), (2, 0, 1), (3, 0, 60)],
        [(1, 9, 5)],
    ]
    with torch.inference_mode():
        for step in steps:
            chunks = [
                (s, p, torch.randint(0, VOCAB, (n,), generator=g).tolist()) for s, p, n in step
            ]
            want = direct.run(chunks).clone()
            got = graphed.run(chunks)
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
            assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert len(graphed.graphs) == 3  # buckets 128, 256 and 64


@pytest.mark.parametrize("arch", ["qwen2", "gpt_bigcode"])
def test_fast_layer_compiled_matches_the_hf_modules(arch):
    """The fast layer's compiled kernels (norm, SiLU * up, rope + cache write) against the HF
    modules on the same chunks, float32: the same logits and the same cache writes."""
    em = EngineModel(tiny_decoder(arch).cuda(), max_len=256)
    em.allocate(4)
    packed = PackedPrefill(em, max_tokens=256, max_chunks=4, graphs=False)
    g = torch.Generator().manual_seed(5)
    chunks = [(0, 0, torch.randint(0, VOCAB, (70,), generator=g).tolist()),
              (2, 0, torch.randint(0, VOCAB, (9,), generator=g).tolist())]  # fmt: skip
    out = {}
    with torch.inference_mode():
        for fast in (False, True):
            em.cache.k.zero_()
            em.cache.v.zero_()
            packed.fast = fast
            out[fast] = packed.run(chunks).clone(), em.cache.k.clone(), em.cache.v.clone()
    (want, k_want, v_want), (got, k_got, v_got) = out[False], out[True]
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    real = slice(0, 256)  # the trash row holds whatever the padding tokens wrote
    assert torch.allclose(k_got[:, :, :, real], k_want[:, :, :, real], atol=1e-5)
    assert torch.allclose(v_got[:, :, :, real], v_want[:, :, :, real], atol=1e-5)


@pytest.mark.parametrize(
    "ahead, only_full", [(True, False), (True, True), (False, True)],
    ids=["lookahead", "into-full-steps", "plain"],
)  # fmt: skip
def test_streams_riding_on_the_devices_picks_in_graphed_steps_match_generate(ahead, only_full):
    """The prefill's lookahead on the GPU (its default there): graphed prefill steps launched
    before the last one's picks are read, the picks fed to the next step on the device, while
    the CUDA decode graphs run the streams between; float32 and the eager decode step (the
    fused one is compared by tolerance, not tokens), so every stream equals ``generate``'s
    greedy tokens."""
    import asyncio

    from lspilot.daemon.backends.base import SamplingParams, Sequence
    from lspilot.daemon.engine import EngineBackend
    from tests.kernel_models import collect, greedy

    model = tiny_decoder("qwen2").cuda()
    g = torch.Generator().manual_seed(27)
    docs = [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (12, 20, 200, 150)]
    news = (14, 9, 5, 4)

    async def run():
        be = EngineBackend(
            model, device="cuda", max_batch=4, max_len=256, prefill_chunk=16, fused=False,
            prefill_token_budget=64, prefill_rows=3, prefill_lookahead=ahead,
            prefill_lookahead_only_full=only_full,
        )  # fmt: skip
        try:
            seqs = [Sequence(str(i), d, SamplingParams(max_new_tokens=n))
                    for i, (d, n) in enumerate(zip(docs, news, strict=True))]  # fmt: skip
            got = await asyncio.gather(*(collect(be, s) for s in seqs))
            return got, be.stats()
        finally:
            await be.close()

    got, stats = asyncio.run(run())
    assert got == [greedy(model, d, n) for d, n in zip(docs, news, strict=True)]
    assert stats["prefill_graphs"] >= 1
    assert (stats["decode_rows_fed_on_device_total"] > 0) == ahead

# SPDX-License-Identifier: Apache-2.0
"""The packed prefill (``packed``, ``chunk_attention``) against the eager prefill and
``generate``, on the CPU through Triton's interpreter in float32.

Chunks of different slots, lengths and cached prefixes share one packed step; each must give
the logits and the cache writes of the same chunk prefilled alone through the eager path.
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
from lspilot.daemon.engine import EngineBackend  # noqa: E402
from lspilot.daemon.engine.chunk_attention import (  # noqa: E402
    BLOCK_M,
    block_table,
    blocks_for,
    chunk_attention,
)
from lspilot.daemon.engine.model import EngineModel  # noqa: E402
from lspilot.daemon.engine.packed import PackedPrefill  # noqa: E402
from tests.kernel_models import VOCAB, collect, greedy, tiny_decoder  # noqa: E402


def test_block_table_splits_chunks_into_blocks_and_pads():
    chunks = [(3, 10, BLOCK_M + 5), (1, 0, 2)]
    table = block_table(chunks, n_blocks=5, heavy_first=False)
    rows = [table[i : i + 4] for i in range(0, len(table), 4)]
    assert rows == [
        [0, BLOCK_M, 3, 10],
        [BLOCK_M, 5, 3, 10 + BLOCK_M],
        [BLOCK_M + 5, 2, 1, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
    # As shipped: the same blocks, the ones that see the most keys first, then the padding.
    heavy = block_table(chunks, n_blocks=5)
    assert [heavy[i : i + 4] for i in range(0, len(heavy), 4)] == [rows[i] for i in (1, 0, 2, 3, 4)]
    with pytest.raises(ValueError, match="blocks"):
        block_table([(0, 0, 3 * BLOCK_M)], n_blocks=2)


@pytest.mark.parametrize("fast", [True, False], ids=["fast-layer", "hf-modules"])
@pytest.mark.parametrize("arch", ["qwen2", "gpt_bigcode"])
def test_packed_step_matches_eager_prefill_of_each_chunk(arch, fast):
    em = EngineModel(tiny_decoder(arch), max_len=256)
    em.allocate(4)
    g = torch.Generator().manual_seed(7)
    cached = {1: 40, 2: 0, 3: 70}  # slot -> tokens already in the cache
    new = {1: 9, 2: 75, 3: 1}  # slot -> chunk length (75: two blocks of queries)
    with torch.inference_mode():
        for slot, n in cached.items():
            if n:
                ids = torch.randint(0, VOCAB, (1, n), generator=g)
                pos = torch.arange(n)[None]
                em.prefill(
                    ids, pos, pos, torch.tensor([slot]), em.key_pos(n), torch.tensor([n - 1])
                )
        chunks = {s: torch.randint(0, VOCAB, (n,), generator=g).tolist() for s, n in new.items()}
        base_k, base_v = em.cache.k.clone(), em.cache.v.clone()
        want = {}
        for slot, toks in chunks.items():  # each chunk alone through the eager path
            start, n = cached[slot], len(toks)
            pos = torch.arange(start, start + n)[None]
            want[slot] = em.prefill(
                torch.tensor([toks]), pos, pos, torch.tensor([slot]),
                em.key_pos(start + n), torch.tensor([n - 1]),
            )[0]  # fmt: skip
        k_want, v_want = em.cache.k.clone(), em.cache.v.clone()
        em.cache.k.copy_(base_k)
        em.cache.v.copy_(base_v)
        packed = PackedPrefill(em, max_tokens=128, max_chunks=4, graphs=False)
        assert packed.fast  # both architectures take the fast layer by default
        packed.fast = fast
        got = packed.run([(s, cached[s], t) for s, t in chunks.items()])
    assert got.shape == (3, VOCAB)
    for b, slot in enumerate(chunks):
        assert (got[b] - want[slot]).abs().max() <= 1e-4 * want[slot].abs().max()
        assert torch.equal(got[b].argmax(), want[slot].argmax())
    real = slice(0, 256)  # every position but the trash row, which padding tokens write
    assert torch.allclose(em.cache.k[:, :, :, real], k_want[:, :, :, real], atol=1e-5)
    assert torch.allclose(em.cache.v[:, :, :, real], v_want[:, :, :, real], atol=1e-5)


@pytest.mark.parametrize(
    "mask_all, heavy_first", [(False, False), (True, False), (False, True)],
    ids=["diagonal-masked", "all-masked", "heavy-blocks-first"],
)  # fmt: skip
def test_chunk_attention_against_torch(mask_all, heavy_first):
    # 3 query heads per KV head (not a power of two), chunks from position 0, after a cached
    # prefix (whole key tiles unmasked before the block's first query), of one token, and longer
    # than a block (70 > 64 queries); every tile masked, as the benchmark times it, and the
    # blocks in another order in the table, the same.
    g = torch.Generator().manual_seed(11)
    H, Hkv, D, M = 6, 2, 32, 256
    kc, vc = torch.randn(2, 3, Hkv, M + 1, D, generator=g).unbind(0)
    chunks = [(0, 0, 40), (2, 100, 70), (1, 5, 1)]
    T = sum(n for *_, n in chunks)
    q = torch.randn(T, H, D, generator=g)
    nb = blocks_for(T, len(chunks))
    meta = torch.tensor(block_table(chunks, nb, heavy_first=heavy_first)).view(nb, 4)
    got = chunk_attention(q, kc, vc, meta, 0.3, mask_all=mask_all).view(T, H, D)
    row = 0
    for slot, start, n in chunks:
        for t in range(n):
            p = start + t
            keys = kc[slot, :, : p + 1].repeat_interleave(H // Hkv, 0)  # [H, p + 1, D]
            vals = vc[slot, :, : p + 1].repeat_interleave(H // Hkv, 0)
            w = torch.softmax(q[row, :, None] @ keys.transpose(1, 2) * 0.3, dim=-1)
            torch.testing.assert_close(got[row], (w @ vals)[:, 0], atol=1e-5, rtol=1e-5)
            row += 1


def test_packed_step_refuses_more_than_it_holds():
    em = EngineModel(tiny_decoder("qwen2"), max_len=256)
    em.allocate(2)
    packed = PackedPrefill(em, max_tokens=64, max_chunks=2, graphs=False)
    with pytest.raises(ValueError, match="at most 64 tokens"):
        packed.run([(0, 0, [1] * 65)])
    with pytest.raises(ValueError, match="1..2 chunks"):
        packed.run([(0, 0, [1]), (1, 0, [1]), (0, 5, [1])])


def test_fed_chunks_take_their_token_from_an_earlier_pick_on_the_device():
    """``run(chunks, fed)``: a chunk's placeholder token replaced by an earlier step's greedy
    pick (``pick``) gives the logits of the same chunk with that token from the host; a pick
    from a step of many chunks feeds a step of few (its index past the small step's tokens), and
    the step computes the vocabulary product for its chunks' rows only."""
    from lspilot.daemon.engine.packed import Fed

    em = EngineModel(tiny_decoder("qwen2"), max_len=256)
    em.allocate(72)
    packed = PackedPrefill(em, max_tokens=128, max_chunks=72, graphs=False)
    g = torch.Generator().manual_seed(5)
    first = [(slot, 0, torch.randint(0, VOCAB, (1,), generator=g).tolist()) for slot in range(70)]
    with torch.inference_mode():
        logits = packed.run(first)  # 70 chunks: the 128-token bucket
        ids, ticket = packed.pick(logits)
        picked = packed.read(ticket, 70)
        assert picked == logits.argmax(-1).tolist()
        # Slot 69 goes on on its pick, at index 69 of that step: past the next step's 64 rows.
        nxt = [(3, 1, [7]), (69, 1, [0])]
        got = packed.run(nxt, Fed(ids, [(1, 69)])).clone()
        want = packed.run([(3, 1, [7]), (69, 1, [picked[69]])])
        assert got.shape == (2, VOCAB)
        assert torch.equal(got, want)
        assert packed._step(64).shape[0] == 72  # one row per chunk, not the fed rows' indices


def test_engine_with_packed_prefill_matches_generate_with_chunks_and_reuse():
    model = tiny_decoder("qwen2")
    g = torch.Generator().manual_seed(8)
    prompts = [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (37, 9, 70)]

    async def run():
        be = EngineBackend(
            model, device="cpu", max_batch=3, max_len=160, packed_prefill=True,
            prefill_chunk=16, prefill_token_budget=64, prefill_rows=3,
        )  # fmt: skip
        try:
            assert be.info.extra["packed_prefill"] == "true"
            got = await asyncio.gather(
                *(
                    collect(be, Sequence(str(i), p, SamplingParams(max_new_tokens=4)))
                    for i, p in enumerate(prompts)
                )
            )
            first = await collect(be, Sequence("a", prompts[2], SamplingParams(4), "doc"))
            edited = prompts[2][:-30] + [7, 8]  # an edit 30 tokens before the end
            seq = Sequence("b", edited, SamplingParams(max_new_tokens=4), cache_key="doc")
            again = await collect(be, seq)
            return got, first, again, seq.cached_tokens, be.stats()
        finally:
            await be.close()

    got, first, again, cached, stats = asyncio.run(run())
    assert got == [greedy(model, p, 4) for p in prompts]
    assert first == greedy(model, prompts[2], 4)
    assert again == greedy(model, prompts[2][:-30] + [7, 8], 4)
    assert cached == len(prompts[2]) - 30
    assert stats["prefill_steps_total"] >= 3  # 116 prompt tokens through a 64-token budget


def test_a_failing_packed_step_falls_back_to_the_padded_prefill_and_loses_nothing():
    model = tiny_decoder("qwen2")
    prompt = torch.randint(0, VOCAB, (40,), generator=torch.Generator().manual_seed(1)).tolist()

    async def run():
        be = EngineBackend(model, device="cpu", max_batch=2, max_len=96, packed_prefill=True)
        try:
            packed = be._sched.packed
            real_run = packed.run

            def broken(chunks, fed=None):
                real_run(chunks, fed)  # leave whatever KV a failing step might have written
                raise RuntimeError("injected: bucket capture failed")

            packed.run = broken
            first = await collect(be, Sequence("a", prompt, SamplingParams(max_new_tokens=4)))
            second = await collect(be, Sequence("b", prompt[:30], SamplingParams(4)))
            return first, second, be.stats(), be._sched.packed
        finally:
            await be.close()

    first, second, stats, packed_after = asyncio.run(run())
    assert first == greedy(model, prompt, 4)
    assert second == greedy(model, prompt[:30], 4)
    assert stats["packed_prefill_failures_total"] == 1
    assert packed_after is None  # the padded prefill took over for good


def test_decoding_rows_ride_in_the_prefill_step_and_match_generate():
    """A stream is decoding when a long prompt arrives: while that prompt is prefilled in several
    steps, the stream's tokens come from those steps instead of decode steps of their own (so
    fewer decode steps run), and both sequences stay token-identical to ``generate``, riding or
    not. The stream asks for log-probabilities, so its tokens go through ``sample``."""
    model = tiny_decoder("qwen2")
    g = torch.Generator().manual_seed(11)
    short, long = (torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (12, 90))

    async def run(ride: bool):
        be = EngineBackend(
            model, device="cpu", max_batch=2, max_len=160, packed_prefill=True,
            prefill_chunk=16, prefill_token_budget=32, ride_prefill=ride,
        )  # fmt: skip
        try:
            params = SamplingParams(max_new_tokens=10, logprobs=2)
            agen = be.generate(Sequence("a", short, params))
            a = [await anext(agen)]  # decoding from here on
            b_task = asyncio.create_task(collect(be, Sequence("b", long, SamplingParams(3))))
            a += [s async for s in agen]
            return a, await b_task, be.stats()
        finally:
            await be.close()

    results = {ride: asyncio.run(run(ride)) for ride in (True, False)}
    for a, b, _ in results.values():
        assert [s.token_id for s in a] == greedy(model, short, 10)
        assert all(len(s.top_logprobs) == 2 for s in a)
        assert b == greedy(model, long, 3)
    rode, alone = results[True][2], results[False][2]
    # 90 prompt tokens through a 32-token budget: at least three steps the stream can ride.
    assert rode["decode_rows_in_prefill_total"] >= 2
    assert alone["decode_rows_in_prefill_total"] == 0
    assert rode["decode_steps_total"] <= alone["decode_steps_total"] - 2


def test_a_failing_packed_step_with_riders_falls_back_and_loses_nothing():
    model = tiny_decoder("qwen2")
    g = torch.Generator().manual_seed(12)
    short, long = (torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (12, 60))

    async def run():
        be = EngineBackend(
            model, device="cpu", max_batch=2, max_len=128, packed_prefill=True,
            prefill_chunk=16, prefill_token_budget=32,
        )  # fmt: skip
        try:
            packed, sizes = be._sched.packed, []
            agen = be.generate(Sequence("a", short, SamplingParams(max_new_tokens=8)))
            a = [(await anext(agen)).token_id]

            def broken(chunks, fed=None):
                sizes.append(len(chunks))
                raise RuntimeError("injected: bucket capture failed")

            packed.run = broken  # the next step, with the stream riding, fails
            b = await collect(be, Sequence("b", long, SamplingParams(3)))
            a += [s.token_id async for s in agen]
            return a, b, be.stats(), be._sched.packed, sizes
        finally:
            await be.close()

    a, b, stats, packed_after, sizes = asyncio.run(run())
    assert sizes == [2]  # the failed step held the prompt's chunk and the stream riding
    assert a == greedy(model, short, 8)
    assert b == greedy(model, long, 3)
    assert stats["packed_prefill_failures_total"] == 1
    assert stats["decode_rows_in_prefill_total"] == 0  # the failed step's riders are not counted
    assert packed_after is None


def test_the_packed_prefill_stacks_the_weights_before_anything_is_captured():
    # Stacking re-points the HF modules' weights at new memory: done at construction, so a
    # decode graph captured before the first prefill step reads the memory that stays.
    em = EngineModel(tiny_decoder("qwen2"), max_len=128)
    em.allocate(2)
    q_proj = em.layers[0].self_attn.q_proj
    packed = PackedPrefill(em, max_tokens=64, max_chunks=2, graphs=False)
    before = q_proj.weight.data_ptr()
    with torch.inference_mode():
        packed.run([(0, 0, [1, 2, 3])])
    assert q_proj.weight.data_ptr() == before
    assert packed.fast

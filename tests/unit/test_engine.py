# SPDX-License-Identifier: Apache-2.0
"""The engine backend on the CPU: greedy output token-identical to ``model.generate``.

Tiny random fp32 models of each supported architecture, built in the test (no files). Covers
continuous batching (concurrent sequences each equal to its own ``generate``), chunked prefill,
prefix reuse, cancellation at the next step boundary, deadlines, token constraints, sampling and
log-probabilities. Most run twice, with the scheduler's lookahead (decode steps launched before
the previous step's tokens are read, on by default only with CUDA graphs) off and on.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lspilot.daemon.backends.base import SamplingParams, Sequence  # noqa: E402
from lspilot.daemon.engine import EngineBackend, UnsupportedModel, policy, scheduler  # noqa: E402
from lspilot.daemon.engine.graphs import DecodeIO, decode_and_pick  # noqa: E402
from lspilot.daemon.engine.model import EngineModel  # noqa: E402

VOCAB = 1000


def tiny_model(arch: str):
    torch.manual_seed(0)
    if arch == "qwen2":
        cfg = transformers.Qwen2Config(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
        )
        model = transformers.Qwen2ForCausalLM(cfg)
    elif arch == "llama":
        cfg = transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=1024,
            rope_scaling={"type": "linear", "factor": 2.0},
        )
        model = transformers.LlamaForCausalLM(cfg)
    elif arch == "gpt_bigcode":
        cfg = transformers.GPTBigCodeConfig(
            vocab_size=VOCAB,
            n_embd=64,
            n_layer=2,
            n_head=4,
            multi_query=True,
            n_positions=1024,
        )
        model = transformers.GPTBigCodeForCausalLM(cfg)
    else:
        raise ValueError(arch)
    # No EOS: the reference forces full length with min_new_tokens, which would otherwise also
    # mask the EOS logit and change the greedy choice.
    model.config.bos_token_id = model.config.eos_token_id = None
    model.generation_config.bos_token_id = model.generation_config.eos_token_id = None
    return model.eval()


def prompt(seed: int, n: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (n,), generator=g).tolist()


def reference(model, ids: list[int], n: int) -> list[int]:
    x = torch.tensor([ids], device=model.device)
    with torch.no_grad():
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
        )
    return out[0, len(ids) :].tolist()


async def collect(backend, seq: Sequence) -> list[int]:
    return [step.token_id async for step in backend.generate(seq)]


def greedy(ids, n, key="", rid="r") -> Sequence:
    return Sequence(rid, ids, SamplingParams(max_new_tokens=n), cache_key=key)


@pytest.fixture(scope="module", params=["qwen2", "llama", "gpt_bigcode"])
def model(request):
    return tiny_model(request.param)


@pytest.fixture(params=[False, True], ids=["plain", "lookahead"])
def lookahead(request):
    """Run the test with the scheduler's lookahead off and on (on the CPU it is off unless
    asked for: the default turns it on with CUDA graphs)."""
    return request.param


@pytest.fixture
async def backend(model, lookahead):
    be = EngineBackend(model, device="cpu", max_batch=4, max_len=256, lookahead=lookahead)
    yield be
    await be.close()


def looked_ahead(backend) -> float:
    return backend.stats()["decode_steps_lookahead_total"]


async def test_greedy_matches_generate(model, backend, lookahead, monkeypatch):
    calls = []

    def counted(logits, picks):
        calls.append(len(picks))
        return sample(logits, picks)

    sample = scheduler.sample
    monkeypatch.setattr(scheduler, "sample", counted)
    ids = prompt(1, 40)
    assert await collect(backend, greedy(ids, 24)) == reference(model, ids, 24)
    # The prefill's token is sampled on the host; every decode step picks its own on the device.
    assert calls == [1]
    assert (looked_ahead(backend) > 0) == lookahead


async def test_concurrent_sequences_each_match_generate(model, backend):
    prompts = [prompt(s, n) for s, n in [(2, 5), (3, 61), (4, 17), (5, 120), (6, 33)]]
    lengths = [20, 7, 30, 12, 16]
    # Five sequences on four slots: one waits, then joins the running batch.
    got = await asyncio.gather(
        *(
            collect(backend, greedy(p, n, rid=str(i)))
            for i, (p, n) in enumerate(zip(prompts, lengths, strict=True))
        )
    )
    for p, n, g in zip(prompts, lengths, got, strict=True):
        assert g == reference(model, p, n)


async def test_chunked_prefill_while_others_decode(model, lookahead):
    be = EngineBackend(
        model, device="cpu", max_batch=3, max_len=256, prefill_chunk=8, prefill_token_budget=16,
        lookahead=lookahead,
    )  # fmt: skip
    try:
        short, long_ = prompt(7, 6), prompt(8, 150)
        first = asyncio.ensure_future(collect(be, greedy(short, 40)))
        await asyncio.sleep(0.01)
        second = await collect(be, greedy(long_, 10))
        assert await first == reference(model, short, 40)
        assert second == reference(model, long_, 10)
        assert be.stats()["prefill_steps_total"] >= 150 / 16
    finally:
        await be.close()


def test_chunk_sizes_share_first_then_fill_the_budget_oldest_first():
    sizes = policy.chunk_sizes
    # 8, 5 and 8 first; the 11 tokens left of the 32-token budget go to the oldest prompt.
    assert sizes([30, 5, 20], chunk=8, budget=32, max_rows=4, fill=False) == [8, 5, 8]
    assert sizes([30, 5, 20], chunk=8, budget=32, max_rows=4, fill=True) == [19, 5, 8]
    assert sizes([30, 5, 20], chunk=8, budget=64, max_rows=4, fill=True) == [30, 5, 20]
    # the budget runs out before every row gets its share; rows beyond max_rows wait
    assert sizes([8, 8, 8], chunk=8, budget=12, max_rows=4, fill=True) == [8, 4]
    assert sizes([9, 9, 9], chunk=4, budget=100, max_rows=2, fill=True) == [9, 9]
    assert sizes([], chunk=8, budget=16, max_rows=4, fill=True) == []


def test_a_step_is_full_exactly_when_chunk_sizes_gives_out_its_budget():
    g = random.Random(5)
    for _ in range(500):
        pending = [g.randint(1, 40) for _ in range(g.randint(0, 8))]
        budget, rows, chunk = g.randint(1, 120), g.randint(1, 6), g.randint(1, 20)
        sizes = policy.chunk_sizes(pending, chunk=chunk, budget=budget, max_rows=rows, fill=True)
        full = policy.fills_step(pending, budget=budget, max_rows=rows)
        assert full == (sum(sizes) == budget), (pending, budget, rows, chunk)


def test_prefill_order_is_shortest_first_but_late_prompts_go_ahead():
    def req(pending: int, admitted: float):
        r = scheduler.Request(seq=None, loop=None, queue=None, t_admit=admitted)
        r.pending = list(range(pending))
        return r

    a, b, c, d = req(300, 9.0), req(20, 9.5), req(90, 9.8), req(500, 8.0)
    assert policy.prefill_order([a, b, c, d], now=10.0, max_wait_s=5.0) == [b, c, a, d]
    # d (2 s) and a (1 s) waited too long: oldest first, ahead of the short ones
    assert policy.prefill_order([a, b, c, d], now=10.0, max_wait_s=1.0) == [d, a, b, c]


@pytest.mark.parametrize("shortest_first", [True, False])
async def test_a_short_prompt_is_prefilled_before_a_long_one_that_came_first(model, shortest_first):
    # One prompt row per step of 16 tokens: the long prompt needs 10 steps.
    be = EngineBackend(
        model, device="cpu", max_batch=3, max_len=256, prefill_chunk=16, prefill_token_budget=16,
        prefill_rows=1, shortest_first=shortest_first, prompt_wait_max_s=1e9,
    )  # fmt: skip  # (no prompt counts as late, however slow this machine)
    order: list[str] = []

    async def first_token(name, p):
        async for _ in be.generate(greedy(p, 1, rid=name)):
            order.append(name)

    try:
        long_, short = prompt(8, 160), prompt(9, 12)
        await asyncio.gather(first_token("long", long_), first_token("short", short))
        assert order == (["short", "long"] if shortest_first else ["long", "short"])
    finally:
        await be.close()


async def test_prefix_reuse_counts_a_hit_and_keeps_output(model, backend):
    doc = prompt(9, 80)
    await collect(backend, greedy(doc, 5, key="file:///a.py"))
    edited = doc[:-1] + [(doc[-1] + 1) % VOCAB, 42, 43]  # an edit and two typed tokens
    seq = greedy(edited, 12, key="file:///a.py")
    assert await collect(backend, seq) == reference(model, edited, 12)
    stats = backend.stats()
    assert stats["prefix_cache_hits"] == 1
    assert stats["prefix_cache_misses"] == 1
    assert seq.cached_tokens == 79


async def test_prefix_reuse_from_a_busy_slot_copies_the_prefix(model, backend):
    doc = prompt(10, 60)
    running = greedy(doc, 200, key="doc")
    agen = backend.generate(running)
    await agen.__anext__()  # the first sequence holds its slot, still decoding
    follow = doc + [7, 8]
    seq = greedy(follow, 8, key="doc")
    assert await collect(backend, seq) == reference(model, follow, 8)
    assert seq.cached_tokens == 60
    await agen.aclose()


async def wait_idle(backend, timeout=5.0):
    t0 = time.monotonic()
    # A counter the worker thread updates: polled, there is no event to wait on.
    while backend.active_sequences() and time.monotonic() - t0 < timeout:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    assert backend.active_sequences() == 0


async def test_closing_the_stream_frees_the_slot_at_the_next_step(model, lookahead):
    be = EngineBackend(model, device="cpu", max_batch=1, max_len=256, lookahead=lookahead)
    try:
        seq = greedy(prompt(11, 20), 200)
        agen = be.generate(seq)
        for _ in range(5):
            await agen.__anext__()
        await agen.aclose()
        await wait_idle(be)
        assert seq.steps_after_cancel <= 1
        assert be.stats()["decode_steps_after_cancel_total"] <= 1
        # With lookahead, steps were in flight when the stream closed; they are dropped.
        assert (looked_ahead(be) > 0) == lookahead
        # The one slot is free again: a new sequence runs to completion.
        ids = prompt(12, 9)
        assert await collect(be, greedy(ids, 5)) == reference(model, ids, 5)
    finally:
        await be.close()


async def test_cancelled_flag_and_task_cancel_stop_the_sequence(model, backend):
    seq = greedy(prompt(13, 20), 200)
    got = []
    async for step in backend.generate(seq):
        got.append(step.token_id)
        if len(got) == 2:
            seq.cancelled = True  # the daemon's way; the stream ends at the next boundary
    assert len(got) < 200
    assert seq.steps_after_cancel <= 1

    seq2 = greedy(prompt(14, 20), 200)
    task = asyncio.ensure_future(collect(backend, seq2))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_idle(backend)
    assert seq2.steps_after_cancel <= 1


async def test_expired_deadline_ends_the_stream(model, backend):
    seq = greedy(prompt(15, 20), 200)
    seq.deadline = time.monotonic() - 1.0  # optional attribute, read with getattr
    assert await collect(backend, seq) == []
    await wait_idle(backend)


class FirstTokenOneOf:
    def __init__(self, ids):
        self.ids = ids

    def allowed_ids(self, generated):
        return None if generated else self.ids


async def test_token_constraint_restricts_the_first_token(model, backend):
    ids = prompt(16, 12)
    free = reference(model, ids, 1)[0]
    allowed = [t for t in (5, 6, 7) if t != free]
    seq = Sequence("c", ids, SamplingParams(max_new_tokens=4), constraint=FirstTokenOneOf(allowed))
    got = await collect(backend, seq)
    assert got[0] in allowed
    assert len(got) == 4


async def test_logprobs_are_the_models_own(model, backend):
    ids = prompt(17, 15)
    seq = Sequence("l", ids, SamplingParams(max_new_tokens=1, logprobs=3))
    steps = [s async for s in backend.generate(seq)]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    ref = torch.log_softmax(logits.float(), -1).topk(3)
    (step,) = steps
    assert [t for t, _ in step.top_logprobs] == ref.indices.tolist()
    assert [v for _, v in step.top_logprobs] == pytest.approx(ref.values.tolist(), abs=1e-4)
    assert step.token_id == ref.indices[0].item()
    assert step.logprob == pytest.approx(ref.values[0].item(), abs=1e-4)


async def test_seeded_sampling_is_reproducible(model, backend):
    ids = prompt(18, 10)
    params = SamplingParams(max_new_tokens=12, temperature=0.8, top_p=0.9, seed=1234)
    a = await collect(backend, Sequence("s1", ids, params))
    b = await collect(backend, Sequence("s2", ids, params))
    assert a == b
    assert len(a) == 12


async def test_stop_token_ends_the_stream(model, backend):
    ids = prompt(19, 30)
    ref = reference(model, ids, 10)
    stop = ref[3]
    seq = Sequence("t", ids, SamplingParams(max_new_tokens=10, stop_token_ids=frozenset({stop})))
    got = await collect(backend, seq)
    assert got == ref[: ref.index(stop) + 1]


def test_unsupported_architecture_is_refused():
    cfg = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=2)
    with pytest.raises(UnsupportedModel):
        EngineBackend(transformers.GPT2LMHeadModel(cfg), device="cpu")


async def test_stopping_at_max_len_is_the_same_with_and_without_lookahead(model, lookahead):
    be = EngineBackend(model, device="cpu", max_batch=2, max_len=64, lookahead=lookahead)
    try:
        ids = prompt(20, 40)
        got = await collect(be, greedy(ids, 100))
        # max_len positions hold the prompt and every token but the last, which is never fed.
        assert got == reference(model, ids, 64 - 40)
    finally:
        await be.close()


# -- lookahead ---------------------------------------------------------------------------------


@pytest.fixture
async def ahead(model):
    be = EngineBackend(model, device="cpu", max_batch=4, max_len=256, lookahead=True)
    yield be
    await be.close()


def stop_mid_stream(model, seed: int, n_prompt: int, n_new: int, at: int):
    """A prompt whose greedy continuation has a token first seen at index ``at`` or later (not
    the last), and a stop set that ends it there: (ids, stops, tokens kept, reference)."""
    for s in range(seed, seed + 100):
        ids = prompt(s, n_prompt)
        ref = reference(model, ids, n_new)
        for i in range(at, n_new - 1):
            if ref[i] not in ref[:i]:
                return ids, frozenset({ref[i]}), ref[: i + 1], ref
    raise AssertionError("no prompt stops mid-stream")  # the tiny models repeat themselves


def rows_ending_apart(model, stopping, plain):
    """Sequences that end at different steps, with what generate gives for each: ``stopping``
    rows (seed, prompt length, max new, stop at) end on a stop token, ``plain`` rows (seed,
    prompt length, max new) at their max_new_tokens."""
    seqs, expected = [], []
    for seed, n_prompt, n_new, at in stopping:
        ids, stops, want, _ = stop_mid_stream(model, seed, n_prompt, n_new, at=at)
        params = SamplingParams(max_new_tokens=n_new, stop_token_ids=stops)
        seqs.append(Sequence(f"stop{seed}", ids, params))
        expected.append(want)
    for seed, n_prompt, n_new in plain:
        ids = prompt(seed, n_prompt)
        seqs.append(greedy(ids, n_new, rid=str(seed)))
        expected.append(reference(model, ids, n_new))
    return seqs, expected


async def test_lookahead_rows_finishing_at_different_steps_each_match_generate(model, ahead):
    # Four rows decoded together end at different steps, two of them on a stop token, which
    # the scheduler cannot see coming: the step after it is already running.
    seqs, expected = rows_ending_apart(
        model, [(100, 33, 24, 3), (200, 50, 30, 8)], [(21, 7, 30), (23, 2, 9)]
    )
    got = await asyncio.gather(*(collect(ahead, s) for s in seqs))
    assert got == expected
    assert looked_ahead(ahead) > 0


async def test_lookahead_stop_token_mid_stream(model, ahead):
    ids, stops, want, _ = stop_mid_stream(model, 25, 30, 16, at=4)
    seq = Sequence("t", ids, SamplingParams(max_new_tokens=16, stop_token_ids=stops))
    assert await collect(ahead, seq) == want
    assert looked_ahead(ahead) > 0


async def test_lookahead_prefix_reuse_skips_the_discarded_token(model, ahead):
    doc, stops, want, ref = stop_mid_stream(model, 26, 50, 16, at=3)
    params = SamplingParams(max_new_tokens=16, stop_token_ids=stops)
    assert await collect(ahead, Sequence("a", doc, params, cache_key="doc")) == want
    assert looked_ahead(ahead) > 0
    # The step after the stop token ran and wrote KV for it; the slot must not count it, nor
    # the token that step picked (ref[len(want)]), which no step ever fed.
    follow = doc + ref[: len(want) + 1] + [42]
    seq = greedy(follow, 6, key="doc")
    assert await collect(ahead, seq) == reference(model, follow, 6)
    assert seq.cached_tokens == len(doc) + len(want) - 1


def test_decode_and_pick_feeds_the_next_step(model):
    em = EngineModel(model, 64)
    em.allocate(2)
    io = DecodeIO(em, 2)
    io.upload([(0, 17, 3)])  # slot 0 feeds token 17 at position 3; slot 1 is padding
    with torch.inference_mode():
        logits = decode_and_pick(em, io, 2, 8)
        ticket = io.fetch(2)
    picked = logits.argmax(-1).tolist()
    assert io.read(ticket, 2) == picked
    assert io.ids[:, 0].tolist() == picked
    assert io.pos[:, 0].tolist() == [4, 0]
    assert io.wpos[:, 0].tolist() == [4, em.max_len]  # padding still writes to the trash row


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("ahead", [False, True], ids=["plain", "lookahead"])
async def test_cuda_graphs_match_generate(model, ahead):
    """The CUDA-graph path: the captured step's own token choice and, looking ahead, its
    fed-back inputs (the default there), with rows ending at different steps."""
    gpu = tiny_model(model.config.model_type).cuda()
    be = EngineBackend(gpu, device="cuda", max_batch=4, max_len=256, fused=False, lookahead=ahead)
    try:
        assert be.info.extra["cuda_graphs"] == "true"
        seqs, expected = rows_ending_apart(gpu, [(30, 20, 24, 5)], [(31, 40, 30), (32, 3, 12)])
        got = await asyncio.gather(*(collect(be, s) for s in seqs))
        assert got == expected
        assert (looked_ahead(be) > 0) == ahead
    finally:
        await be.close()

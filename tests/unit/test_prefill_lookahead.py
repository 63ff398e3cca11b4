# SPDX-License-Identifier: Apache-2.0
"""The scheduler's prefill lookahead (``Scheduler._prefill_step``), on the CPU through Triton's
interpreter in float32: the next packed prefill step is launched before the host reads this
one's greedy tokens, and the rows whose token is unread ride in it on that token, fed on the
device. Every stream must stay token-identical to ``generate``, with lookahead or without, when
a stream stops on a token the host had not read, and when one is closed mid-flight.
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
from lspilot.daemon.engine.model import EngineModel  # noqa: E402
from lspilot.daemon.engine.policy import EngineConfig  # noqa: E402
from lspilot.daemon.engine.scheduler import Request, Scheduler  # noqa: E402
from tests.kernel_models import VOCAB, collect, greedy, tiny_decoder  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return tiny_decoder("qwen2")


def prompts(seed: int, *lengths: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


BUDGET = 32  # prompt tokens a step: a 90-token prompt takes several steps for others to ride


def engine(
    model, ahead: bool, max_batch: int = 3, decode_ahead: bool = False, only_full: bool = False
) -> EngineBackend:
    # ``decode_ahead``: the decode steps' lookahead too (on with CUDA graphs, off on the CPU).
    # ``only_full``: the shipped default, look ahead only into steps the waiting prompts fill;
    # off, every step looks ahead, which the tests of riding on unread picks want.
    return EngineBackend(
        model, device="cpu", max_batch=max_batch, max_len=192, packed_prefill=True,
        prefill_chunk=16, prefill_token_budget=BUDGET, prefill_rows=3, prefill_lookahead=ahead,
        prefill_lookahead_only_full=only_full, lookahead=decode_ahead,
    )  # fmt: skip


async def start(be, seq):
    """The stream of ``seq`` and its first token: decoding from here on."""
    agen = be.generate(seq)
    return agen, [(await anext(agen)).token_id]


@pytest.mark.parametrize("ahead", [True, False], ids=["lookahead", "plain"])
def test_rows_riding_on_the_devices_picks_match_generate(model, ahead):
    a, c, b = prompts(21, 12, 20, 90)

    async def run():
        be = engine(model, ahead)
        try:
            agen_a, got_a = await start(be, Sequence("a", a, SamplingParams(max_new_tokens=14)))
            agen_c, got_c = await start(be, Sequence("c", c, SamplingParams(max_new_tokens=9)))
            got_b = asyncio.create_task(collect(be, Sequence("b", b, SamplingParams(5))))
            got_a += [s.token_id async for s in agen_a]
            got_c += [s.token_id async for s in agen_c]
            return got_a, got_c, await got_b, be.stats()
        finally:
            await be.close()

    got_a, got_c, got_b, stats = asyncio.run(run())
    assert got_a == greedy(model, a, 14)
    assert got_c == greedy(model, c, 9)
    assert got_b == greedy(model, b, 5)
    assert stats["decode_rows_in_prefill_total"] >= 4  # both streams rode at least twice
    if ahead:
        assert stats["prefill_steps_lookahead_total"] >= 2
        assert stats["decode_rows_fed_on_device_total"] >= 2
    else:
        assert stats["prefill_steps_lookahead_total"] == 0
        assert stats["decode_rows_fed_on_device_total"] == 0


class Driven:
    """A scheduler stepped from the test instead of its thread: which step a prompt arrives
    before is then exact, whatever the machine's speed. Its packed steps are recorded as
    (tokens, fed on the device)."""

    def __init__(self, model, *, only_full: bool) -> None:
        cfg = EngineConfig(
            max_batch=3, max_len=192, prefill_chunk=16, prefill_token_budget=BUDGET,
            prefill_rows=3, packed_prefill=True, prefill_lookahead=True,
            prefill_lookahead_only_full=only_full, lookahead=False,
        )  # fmt: skip
        self.sched = Scheduler(EngineModel(model, cfg.max_len), cfg)
        self.loop = asyncio.new_event_loop()  # never run: tokens are read off the requests
        self.steps: list[tuple[int, bool]] = []
        real_run = self.sched.packed.run

        def spy(chunks, fed=None):
            self.steps.append((sum(len(t) for _, _, t in chunks), fed is not None))
            return real_run(chunks, fed)

        self.sched.packed.run = spy

    def submit(self, rid: str, prompt: list[int], max_new_tokens: int) -> Request:
        req = Request(Sequence(rid, prompt, SamplingParams(max_new_tokens)), self.loop, None)
        self.sched.submit(req)
        return req

    def step(self) -> None:
        sched = self.sched
        sched.waiting.extend(sched._inbox)
        sched._inbox.clear()
        with torch.inference_mode():
            sched._iteration()

    def run_until(self, done) -> None:
        for _ in range(400):
            if done():
                return
            self.step()
        raise AssertionError("the scheduler did not get there in 400 steps")

    def close(self) -> None:
        self.sched._outbox.clear()
        self.loop.close()


# (prompt length, tokens stream a has left when it arrives, steps fed on the device with
# lookahead only into full steps). BUDGET is 32 and the two streams ride in every step.
ARRIVALS = {
    # 30 of the prompt's tokens and the two rows fill each of its first two steps, its last 20
    # do not: only the second step is launched ahead.
    "80-tokens": (80, 50, [BUDGET]),
    # The 31 tokens left after the first step fill the next with the two rows on their picks;
    # the budget less the rows, not the whole budget.
    "61-tokens": (61, 50, [BUDGET]),
    # Stream a gets its last token from the first step, so only c rides in the next: 30 tokens
    # left do not fill its 31 and a prompt arriving meanwhile may take the room.
    "60-tokens-a-ending": (60, 1, []),
    # Stream a's last token comes from the second step, which it rides on the device: both its
    # tokens are unread when the third is chosen, which has room for a prompt again.
    "90-tokens-a-ending-on-the-device": (90, 2, [BUDGET]),
}


@pytest.mark.parametrize("case", list(ARRIVALS))
@pytest.mark.parametrize("only_full", [True, False], ids=["into-full-steps", "every-step"])
def test_looking_ahead_only_into_full_steps_leaves_room_for_arrivals(model, only_full, case):
    """A prompt arrives while two streams decode. Looking ahead only into full steps, just the
    steps its waiting tokens fill with the rows riding on their picks are launched ahead;
    every step, each of its steps after the first with rows to feed is. Every stream matches
    ``generate`` either way."""
    n, a_left, fed_when_full = ARRIVALS[case]
    a, c, b = prompts(27, 12, 20, n)
    a_new, c_new = 60, 80  # c still decodes after b's last step
    drv = Driven(model, only_full=only_full)
    try:
        ra, rc = drv.submit("a", a, a_new), drv.submit("c", c, c_new)
        drv.run_until(lambda: len(ra.generated) == a_new - a_left)
        drv.steps.clear()
        rb = drv.submit("b", b, 5)
        drv.run_until(lambda: rb.generated)
        steps = list(drv.steps)
        drv.run_until(lambda: len(ra.generated) + len(rc.generated) == a_new + c_new)
    finally:
        drv.close()
    assert (ra.generated, rc.generated, rb.generated) == (
        greedy(model, a, a_new),
        greedy(model, c, c_new),
        greedy(model, b, 5),
    )
    fed = [tokens for tokens, on_device in steps if on_device]
    assert steps[0] == (BUDGET, False)  # the prompt's first 30 tokens and the streams' rows
    if only_full:
        assert fed == fed_when_full
    else:
        assert fed == [t for t, _ in steps[1:]] and len(fed) == len(steps) - 1 >= 1


def test_a_stop_token_the_host_had_not_read_ends_the_stream_and_its_kv_is_not_counted(model):
    """The stream stops on a token that the next prefill step was already fed: that step's
    token for it is dropped, and the slot does not count the KV that step wrote, so the next
    request for the document reuses exactly the tokens it fed."""
    a, b = prompts(22, 14, 170)  # 170 prompt tokens: ~6 prefill steps for the stream to ride
    ref = greedy(model, a, 14)
    stop = next(t for i, t in enumerate(ref) if i >= 2 and t not in ref[:i])
    want = ref[: ref.index(stop) + 1]

    async def run():
        be = engine(model, True)
        sched, read_unread = be._sched, []
        emit = sched._emit_tokens

        # Tokens read while the next step had them (fed=True: only the prefill's lookahead here;
        # the decode steps' is off on the CPU).
        def spy(rows, steps, *, fed=False):
            if fed:
                pairs = zip(rows, steps, strict=True)
                read_unread.extend((r.seq.request_id, st.token_id) for r, st in pairs)
            return emit(rows, steps, fed=fed)

        sched._emit_tokens = spy
        try:
            params = SamplingParams(max_new_tokens=14, stop_token_ids=frozenset({stop}))
            agen_a, got_a = await start(be, Sequence("a", a, params, cache_key="doc"))
            got_b = asyncio.create_task(collect(be, Sequence("b", b, SamplingParams(4))))
            got_a += [s.token_id async for s in agen_a]
            await got_b
            follow = a + want + [42]
            seq = Sequence("f", follow, SamplingParams(max_new_tokens=5), cache_key="doc")
            again = await collect(be, seq)
            return got_a, await got_b, read_unread, follow, again, seq.cached_tokens
        finally:
            await be.close()

    got_a, got_b, read_unread, follow, again, cached = asyncio.run(run())
    assert got_a == want
    assert got_b == greedy(model, b, 4)
    assert ("a", stop) in read_unread  # the stop token was read with the next step fed on it
    assert again == greedy(model, follow, 5)
    # Every token of the prompt and the stream but the stop token's own KV, which no step fed.
    assert cached == len(a) + len(want) - 1


def test_closing_a_stream_with_a_prefill_step_in_flight_frees_its_slot(model):
    a, b, c = prompts(23, 12, 90, 30)

    async def run():
        be = engine(model, True, max_batch=2)
        try:
            agen_a, got_a = await start(be, Sequence("a", a, SamplingParams(max_new_tokens=40)))
            got_b = asyncio.create_task(collect(be, Sequence("b", b, SamplingParams(4))))
            while be.stats()["decode_rows_fed_on_device_total"] < 1:
                got_a.append((await anext(agen_a)).token_id)
            await agen_a.aclose()
            # Both slots were taken: this one needs the closed stream's.
            got_c = await collect(be, Sequence("c", c, SamplingParams(max_new_tokens=6)))
            return got_a, await got_b, got_c, be.stats()
        finally:
            await be.close()

    got_a, got_b, got_c, stats = asyncio.run(run())
    assert got_a == greedy(model, a, len(got_a))
    assert got_b == greedy(model, b, 4)
    assert got_c == greedy(model, c, 6)
    assert stats["cancelled_total"] == 1
    assert stats["decode_steps_after_cancel_total"] <= 1


@pytest.mark.parametrize("decode_ahead", [False, True], ids=["prefill-ahead", "both-ahead"])
def test_many_streams_arriving_stopping_and_closing_each_match_generate(model, decode_ahead):
    """Ten streams of mixed prompts through 4 slots with the lookahead on: they wait for slots,
    ride on each other's picks, stop on tokens the host had not read, and two close early;
    each stream gets exactly ``generate``'s tokens, up to where it ends."""
    g = torch.Generator().manual_seed(24)
    lengths = [int(n) for n in torch.randint(5, 80, (10,), generator=g)]
    docs = prompts(25, *lengths)
    refs = [greedy(model, d, 12) for d in docs]
    stops = {i: refs[i][6] for i in (1, 4, 7)}  # may stop earlier: the token may come sooner
    closes = {2: 3, 8: 5}  # stream -> tokens it takes before closing

    async def one(be, i):
        stop = frozenset({stops[i]}) if i in stops else frozenset()
        params = SamplingParams(max_new_tokens=12, stop_token_ids=stop)
        agen = be.generate(Sequence(str(i), docs[i], params, cache_key=f"d{i % 3}"))
        got = []
        async for s in agen:
            got.append(s.token_id)
            if len(got) == closes.get(i):
                break
        await agen.aclose()
        return got

    async def run():
        be = engine(model, True, max_batch=4, decode_ahead=decode_ahead)
        try:
            return await asyncio.gather(*(one(be, i) for i in range(10))), be.stats()
        finally:
            await be.close()

    got, stats = asyncio.run(run())
    for i, ref in enumerate(refs):
        want = ref[: ref.index(stops[i]) + 1] if i in stops else ref
        assert got[i] == want[: closes.get(i, len(want))], f"stream {i}"
    assert stats["prefill_steps_lookahead_total"] >= 1
    assert stats["decode_rows_fed_on_device_total"] >= 1
    assert stats["decode_steps_after_cancel_total"] <= 2  # at most one for each closed stream


def test_a_failing_packed_step_with_a_step_in_flight_falls_back_and_loses_nothing(model):
    a, b = prompts(26, 12, 90)

    async def run():
        be = engine(model, True, max_batch=2)
        try:
            packed = be._sched.packed
            real_run, fed_steps = packed.run, []

            def flaky(chunks, fed=None):
                # The step after the first one fed on the device fails: that one is unread.
                if fed_steps:
                    raise RuntimeError("injected: bucket capture failed")
                if fed is not None:
                    fed_steps.append(len(fed.rows))
                return real_run(chunks, fed)

            packed.run = flaky
            agen_a, got_a = await start(be, Sequence("a", a, SamplingParams(max_new_tokens=16)))
            got_b = asyncio.create_task(collect(be, Sequence("b", b, SamplingParams(4))))
            got_a += [s.token_id async for s in agen_a]
            return got_a, await got_b, be.stats(), be._sched.packed, fed_steps
        finally:
            await be.close()

    got_a, got_b, stats, packed_after, fed_steps = asyncio.run(run())
    assert fed_steps == [1]  # the stream rode on its unread pick once, then the step failed
    assert got_a == greedy(model, a, 16)
    assert got_b == greedy(model, b, 4)
    assert stats["packed_prefill_failures_total"] == 1
    assert packed_after is None

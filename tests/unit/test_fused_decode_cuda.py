# SPDX-License-Identifier: Apache-2.0
"""The fused decode step compiled for a GPU, captured in a CUDA graph, with each way of
launching its kernels (``pdl.pdl_mode``): programmatic dependent launch lets a kernel start
before the previous one ends, so a missing wait would read stale inputs. CI has no GPU: this
runs on the GPU machine with ``TRITON_INTERPRET=0``."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
triton = pytest.importorskip("triton")
if not torch.cuda.is_available() or triton.knobs.runtime.interpret:
    pytest.skip("needs CUDA and compiled Triton (TRITON_INTERPRET=0)", allow_module_level=True)

from lspilot.daemon.engine import pdl, step_ends  # noqa: E402
from lspilot.daemon.engine.model import EngineModel  # noqa: E402
from tests.kernel_models import VOCAB, tiny_decoder  # noqa: E402

MODES = [pdl.PDL_OFF]
if torch.cuda.get_device_capability()[0] >= 9:
    MODES += [pdl.PDL_EARLY, pdl.PDL_LATE, "mixed", "default"]
# "mixed": released late but for some kernels launched serially, so that boundaries of every kind
# (serial after PDL, PDL after serial) occur in one step (``FusedDecode.pdl_by_op``).
MIXED = {"qkv": pdl.PDL_OFF, "o": pdl.PDL_OFF, "down": pdl.PDL_OFF, "head": pdl.PDL_OFF}


def launch_as(fused, mode) -> None:
    """``mode``, or "default": as the fused step was built (gpt_bigcode: serial but attention)."""
    if mode != "default":
        fused.pdl = pdl.PDL_LATE if mode == "mixed" else mode
        fused.pdl_by_op = dict(MIXED) if mode == "mixed" else {}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", ["qwen2", "gpt_bigcode"])
@pytest.mark.parametrize("rows", [1, 12])
def test_graphed_fused_step_matches_the_step_launched_serially(arch, rows, mode):
    """The same kernels, so nearly the same numbers (split-K adds atomically, in any order):
    launched one after another outside a graph, against captured with ``mode`` and replayed.
    Each replay gets new tokens and is checked alone, the first one included: a kernel that read
    its inputs before the previous kernel had written them would read a stale or empty buffer.
    And the serial step against the eager one (float32 products in full precision)."""
    em = EngineModel(tiny_decoder(arch).cuda(), max_len=256, fused=True)
    em.allocate(16)
    S, L = 70, 128
    g = torch.Generator().manual_seed(rows)
    with torch.inference_mode():
        ids = torch.randint(0, VOCAB, (rows, S), generator=g).cuda()
        pos = torch.arange(S, device="cuda")[None].expand(rows, S).contiguous()
        slots = torch.arange(rows, device="cuda")
        em.prefill(ids, pos, pos, slots, em.key_pos(S), torch.full((rows,), S - 1).cuda())
        new = torch.zeros(rows, 1, dtype=torch.long, device="cuda")  # the graph's input
        p = torch.tensor([[S - 9 * (i % 4)] for i in range(rows)], device="cuda")
        key_pos = em.key_pos(L)

        def forget_new_token():  # the step under test writes the new token's keys and values
            for b in range(rows):
                em.cache.k[:, b, :, p[b, 0]] = 0.0
                em.cache.v[:, b, :, p[b, 0]] = 0.0

        launch_as(em.fused, mode)
        em.fused.decode(new, p, p, key_pos)  # compiles outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            got = em.fused.decode(new, p, p, key_pos)
        for _ in range(2):
            new.copy_(torch.randint(0, VOCAB, (rows, 1), generator=g))
            eager = em.decode(new, p, p, key_pos).clone()
            launch_as(em.fused, pdl.PDL_OFF)
            want = em.fused.decode(new, p, p, key_pos).clone()
            k_want, v_want = em.cache.k.clone(), em.cache.v.clone()
            forget_new_token()
            graph.replay()
            torch.cuda.synchronize()
            scale = want.abs().max()
            assert torch.isfinite(got).all()
            assert (got - want).abs().max() <= 1e-4 * scale
            assert torch.allclose(em.cache.k, k_want, atol=1e-4)
            assert torch.allclose(em.cache.v, v_want, atol=1e-4)
            assert (want - eager).abs().max() <= 1e-3 * eager.abs().max()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", ["qwen2", "gpt_bigcode"])
def test_graphed_pick_feeds_back_as_the_torch_tail(arch, mode):
    """``decode_and_pick`` with the greedy pick inside the vocabulary product and its feedback
    kernel, captured and replayed three steps in a row (each step's inputs are the previous
    one's picks), against the same steps with the torch tail. Slot 2 pads and must stay."""
    from lspilot.daemon.engine.graphs import DecodeIO, decode_and_pick

    em = EngineModel(tiny_decoder(arch).cuda(), max_len=256, fused=True)
    em.allocate(4)
    launch_as(em.fused, mode)
    io = DecodeIO(em, 4)
    io.upload([(0, 5, 3), (1, 17, 9), (3, 2, 40)])
    start = io.inputs.clone()
    B, L = 4, 64

    def run(pick):
        io.inputs.copy_(start)
        io.pick = pick
        step = lambda: decode_and_pick(em, io, B, L)  # noqa: E731
        with torch.inference_mode():
            step()  # compiles outside the capture
            io.inputs.copy_(start)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                logits = step()
            io.inputs.copy_(start)
            seen = []
            for _ in range(3):
                graph.replay()
                seen.append((logits.argmax(-1).clone(), io.next_ids.clone(), io.inputs.clone()))
        return seen

    pick = io.pick
    fused, torch_tail = run(pick), run(None)
    for (argmax, ids, inputs), (_, ids_t, inputs_t) in zip(fused, torch_tail, strict=True):
        assert torch.equal(ids[:B], argmax)
        assert torch.equal(ids[:B], ids_t[:B])
        assert torch.equal(inputs, inputs_t)
    assert fused[-1][2][2, 2, 0] == io.trash  # the padding row's write position
    assert torch.equal(fused[-1][2][1, :, 0], start[1, :, 0] + torch.tensor([3, 3, 0, 3]).cuda())
    assert torch.equal(pick.best, torch.full_like(pick.best, step_ends.PICK_EMPTY))


def test_gpt_bigcode_launches_only_attention_with_pdl_unless_a_mode_is_forced(monkeypatch):
    monkeypatch.delenv("LSPILOT_PDL", raising=False)
    fused = EngineModel(tiny_decoder("gpt_bigcode").cuda(), max_len=64, fused=True).fused
    hopper = torch.cuda.get_device_capability()[0] >= 9
    assert fused.pdl == pdl.PDL_OFF
    assert fused.pdl_by_op == ({"attention": pdl.PDL_LATE} if hopper else {})
    assert EngineModel(tiny_decoder("qwen2").cuda(), max_len=64, fused=True).fused.pdl_by_op == {}
    monkeypatch.setenv("LSPILOT_PDL", "0")
    fused = EngineModel(tiny_decoder("gpt_bigcode").cuda(), max_len=64, fused=True).fused
    assert fused.pdl == pdl.PDL_OFF and fused.pdl_by_op == {}

# SPDX-License-Identifier: Apache-2.0
"""The fused step's two ends, on the CPU through Triton's interpreter: the embedding, and the
greedy pick inside the vocabulary product with the small kernel that feeds it back.

Each is checked against plain torch: ``torch.argmax`` (first index on a tie) and the tail
``graphs.decode_and_pick`` runs after the eager step.
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":  # set by tests/conftest.py before any import
    pytest.skip("needs Triton's interpreter (TRITON_INTERPRET=1)", allow_module_level=True)

from lspilot.daemon.engine import kernels as K  # noqa: E402
from lspilot.daemon.engine import step_ends  # noqa: E402
from lspilot.daemon.engine.graphs import DecodeIO, decode_and_pick  # noqa: E402
from lspilot.daemon.engine.model import EngineModel  # noqa: E402
from tests.kernel_models import VOCAB, tiny_decoder  # noqa: E402


def test_embedding_adds_learned_positions_in_the_model_dtype():
    # float16: the interpreter rounds float32 to bfloat16 toward zero (the GPU to nearest).
    g = torch.Generator().manual_seed(1)
    wte = torch.randn(50, 40, generator=g).half()
    wpe = torch.randn(20, 40, generator=g).half()
    ids, pos = torch.tensor([7, 0, 49]), torch.tensor([3, 19, 0])
    assert torch.equal(step_ends.embed(ids, pos, wte), wte[ids].float())
    assert torch.equal(step_ends.embed(ids, pos, wte, wpe), (wte[ids] + wpe[pos]).float())


def test_pick_chooses_as_torch_argmax_and_feeds_the_inputs_back():
    # One-hot inputs, so row r's logits are column r of w: 100 of them over 7 programs (16
    # wide). Row 0's best value is tied across two programs (37 and 90: the first wins), row
    # 1's logits are all negative; row 2 pads (write position ``trash``) and must stay.
    g = torch.Generator().manual_seed(5)
    rows, N, E, trash = 4, 100, 8, 99
    x = torch.eye(3, E)
    w = torch.randn(N, E, generator=g)
    w[37, 0] = w[90, 0] = 10.0
    w[:, 1] = -w[:, 1].abs() - 1.0
    inputs = torch.zeros(3, rows, 1, dtype=torch.long)
    inputs[1, :, 0] = torch.tensor([10, 20, 30, 40])  # positions
    inputs[2, :, 0] = torch.tensor([10, 20, trash, 40])  # row 2 pads
    next_ids = torch.full((rows,), -1, dtype=torch.long)
    pick = step_ends.Pick(inputs, next_ids, trash)
    tiles = K.Tiles.make(3, N, E, dot=False, block_n=16, block_k=8)
    for step in range(2):  # the second launch starts from the state the first one left
        before = inputs.clone()
        logits = K.linear(x, w, out_dtype=torch.float32, tiles=tiles, pick=pick)
        step_ends.feedback(pick, 3)
        want = logits.argmax(-1)
        assert torch.equal(next_ids[:3], want), step
        if step == 0:
            assert next_ids[3] == -1  # rows past the step's are untouched
        assert torch.equal(inputs[0, :3, 0], want)
        real = (before[2, :3, 0] != trash).long()
        assert torch.equal(inputs[1, :3, 0], before[1, :3, 0] + real)
        assert torch.equal(inputs[2, :3, 0], before[2, :3, 0] + real)
        assert torch.equal(pick.best, torch.full((rows,), step_ends.PICK_EMPTY))
    assert want[0] == 37


def test_pick_in_the_vocabulary_products_shipped_tiles():
    # The tiles the vocabulary product ships with at batch <= 2 (256 wide, tensor-core rows)
    # over a vocabulary whose last tile is partial, with the best value of row 1 in that tile.
    g = torch.Generator().manual_seed(8)
    N, E = 700, 32
    x = torch.randn(2, E, generator=g)
    w = torch.randn(N, E, generator=g)
    w[650] = x[1] * 10.0  # row 1's best, in the third (partial) tile
    tiles = K.Tiles.choose(2, 151936, E)
    assert (tiles.block_n, tiles.dot) == (256, True)
    inputs = torch.zeros(3, 2, 1, dtype=torch.long)
    pick = step_ends.Pick(inputs, torch.zeros(2, dtype=torch.long), trash=99)
    logits = K.linear(x, w, out_dtype=torch.float32, tiles=tiles, pick=pick)
    step_ends.feedback(pick, 2)
    assert torch.allclose(logits, x @ w.T, atol=1e-4, rtol=1e-4)
    assert torch.equal(pick.next_ids, logits.argmax(-1))
    assert pick.next_ids[1] == 650


def test_pick_takes_nan_as_torch_argmax_does():
    # A NaN logit wins at its first index (torch.argmax); a row of NaN picks token 0, inside
    # the vocabulary, where no value would equal the NaN maximum.
    x = torch.eye(2, 8)
    tiles = K.Tiles.make(2, 100, 8, dot=False, block_n=16, block_k=8)
    for nan_rows in ([55, 97], slice(None)):
        w = torch.randn(100, 8, generator=torch.Generator().manual_seed(6))
        w[nan_rows] = float("nan")
        inputs = torch.zeros(3, 2, 1, dtype=torch.long)
        pick = step_ends.Pick(inputs, torch.zeros(2, dtype=torch.long), trash=99)
        logits = K.linear(x, w, out_dtype=torch.float32, tiles=tiles, pick=pick)
        step_ends.feedback(pick, 2)
        want = logits.argmax(-1)
        assert torch.equal(pick.next_ids, want)
        assert want.tolist() == ([55, 55] if nan_rows != slice(None) else [0, 0])


@pytest.mark.parametrize("arch", ["qwen2", "gpt_bigcode"])
def test_fused_step_picks_and_feeds_back_as_the_eager_tail(arch):
    em = EngineModel(tiny_decoder(arch), max_len=128, fused=True)
    em.allocate(4)
    io = DecodeIO(em, 4)
    assert io.pick is not None
    g = torch.Generator().manual_seed(7)
    io.upload([(0, 5, 3), (1, int(torch.randint(0, VOCAB, (1,), generator=g)), 9), (3, 2, 1)])
    start = io.inputs.clone()
    with torch.inference_mode():
        fused = decode_and_pick(em, io, 4, 64).clone()  # slot 2 is padding
        fused_ids, fused_inputs = io.next_ids.clone(), io.inputs.clone()
        io.inputs.copy_(start)
        io.pick, pick = None, io.pick  # the same fused step, then the torch tail
        eager = decode_and_pick(em, io, 4, 64)
    assert torch.equal(fused, eager)
    assert torch.equal(fused.argmax(-1), fused_ids)
    assert torch.equal(fused_inputs[1:], io.inputs[1:])  # positions: padding row stays
    assert torch.equal(fused_inputs[0, :, 0], fused_ids)
    assert fused_inputs[2, 2, 0] == io.trash
    assert torch.equal(pick.best[:4], torch.full((4,), step_ends.PICK_EMPTY))

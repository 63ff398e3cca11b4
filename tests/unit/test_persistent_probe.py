# SPDX-License-Identifier: Apache-2.0
"""The persistent-kernel probe's kernels (``bench/persistent_probe.py``) on the CPU through
Triton's interpreter, against torch.

The interpreter runs a grid's programs one after another, so a grid barrier can only meet with
one program: the persistent kernel runs here at G=1 (every barrier passes at once), the separate
kernels at several grid sizes (no barrier), on shapes that leave partial tiles, several tiles
per row block and several row blocks per program. With two programs the barrier cannot meet,
which checks the other half of the design: the wait gives up, says so, and the kernel ends.
That the barrier orders memory between programs is the GPU run's part (the barrier kernel's
value chain, and the persistent outputs against the separate ones).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":  # set by tests/conftest.py before any import
    pytest.skip("needs Triton's interpreter (TRITON_INTERPRET=1)", allow_module_level=True)

PROBE = Path(__file__).resolve().parents[2] / "bench" / "persistent_probe.py"


@pytest.fixture(scope="module")
def P():
    spec = importlib.util.spec_from_file_location("persistent_probe", PROBE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# Hidden 80 and intermediate 144 are no powers of two (masked input tails); 256-weight tiles
# make several input tiles per row and several row blocks per program.
TINY = dict(hidden=80, qkv=112, inter=144, layers=2)
ELEMS = 256


def tiny_model(P, seed=0):
    return P.Model.make(P.Shapes(**TINY), torch.float32, "cpu", seed=seed, max_programs=8)


@pytest.mark.parametrize("programs", [1, 3, 7])
def test_separate_kernels_match_torch(P, programs):
    m = tiny_model(P)
    got = P.run_separate(m, programs, P.PDL_OFF, elems=ELEMS)
    torch.testing.assert_close(got, P.reference(m), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "early, spin",
    [
        pytest.param(True, 0, id="tile-before-wait-atomic-poll"),
        pytest.param(False, 0, id="tile-after-wait-atomic-poll"),
        pytest.param(True, 1, id="tile-before-wait-volatile-poll"),
    ],
)
def test_persistent_kernel_at_one_program_matches_separate_and_torch(P, early, spin):
    m = tiny_model(P)
    separate = P.run_separate(m, 1, P.PDL_OFF, elems=ELEMS).clone()
    intermediates = (m.qkv.clone(), m.act.clone(), m.h.clone())
    m.clear()
    got = P.run_persistent(m, 1, early, spin, elems=ELEMS)
    assert m.err[0] == 0
    assert int(m.counter) == 4 * TINY["layers"] - 1  # a barrier after every product but the last
    # The same tile code over the same rows: the same float32 sums, in the same order.
    assert torch.equal(got, separate)
    for a, b in zip((m.qkv, m.act, m.h), intermediates, strict=True):
        assert torch.equal(a, b)
    torch.testing.assert_close(got, P.reference(m), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spin", [0, 1])
def test_barrier_kernel_passes_values_round_to_round(P, spin):
    rounds = 5
    buf = torch.full((rounds + 1, 1), -7.0)
    counter, err, smid = (torch.zeros(1, dtype=torch.int32) for _ in range(3))
    last = P.run_barrier(buf, counter, err, smid, 1, rounds, spin)
    assert last.tolist() == [float(rounds)]
    assert buf[:, 0].tolist() == [float(r) for r in range(rounds + 1)]
    assert err.tolist() == [0] and int(counter) == rounds


@pytest.mark.parametrize("spin", [0, 1])
def test_a_grid_that_cannot_meet_gives_up_and_says_so(P, spin):
    # Program 0 runs alone first and never sees program 1 arrive: its first wait gives up after
    # max_spin polls, and it passes its later barriers without waiting. Program 1 then finds
    # every count reached.
    rounds = 3
    buf = torch.zeros(rounds + 1, 2)
    counter = torch.zeros(1, dtype=torch.int32)
    err = torch.zeros(2, dtype=torch.int32)
    P.run_barrier(buf, counter, err, err.clone(), 2, rounds, spin, max_spin=4)
    assert err.tolist() == [1, 0]
    assert int(counter) == 2 * rounds

    m = tiny_model(P)
    P.run_persistent(m, 2, True, spin, elems=ELEMS, max_spin=4)
    assert m.err[:2].tolist() == [1, 0]


@pytest.mark.parametrize(
    "n, k, programs, mode, tiles",
    [
        pytest.param(1152, 896, 132, 0, (16, 256), id="qkv-9-rows-each"),
        pytest.param(896, 4864, 132, 1, (8, 512), id="down-7-rows-each"),
        pytest.param(4864, 896, 132, 2, (16, 128), id="gate-up-two-tiles-half-as-deep"),
        pytest.param(896, 896, 264, 1, (4, 1024), id="o-at-two-per-sm"),
        pytest.param(128, 128, 132, 1, (2, 128), id="fewer-rows-than-programs"),
    ],
)
def test_stage_tiles(P, n, k, programs, mode, tiles):
    assert P.stage_tiles(n, k, programs, mode) == tiles

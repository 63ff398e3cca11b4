# SPDX-License-Identifier: Apache-2.0
"""The decode step's tile choices compile for an H100/H200 (sm_90) within its shared memory.

The interpreter runs kernels without ever compiling them, and the GPU tests' tiny models never
reach the tiles of a real vocabulary, so a tile that does not fit would first fail on a user's
GPU. Triton compiles for sm_90 without one; each compile runs in a subprocess because this
process imports Triton in interpreter mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

SHARED_MAX = 232448  # bytes of shared memory a program may use on sm_90 (227 KiB)

COMPILE = textwrap.dedent(
    """
    import json, sys
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile
    from lspilot.daemon.engine import kernels as K

    B, N, E, dtype = 2, 151936, 896, sys.argv[1]
    elem = {"bf16": 2, "fp32": 4}[dtype]
    t = K.Tiles.choose(B, N, E, elem_bytes=elem)  # the vocabulary product's tiles
    const = dict(
        K=E, NORM=K.NORM_RMS, HAS_BIAS=False, ACT=K.ACT_NONE, ATOMIC=False, DOT=t.dot,
        BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k, K_SPLIT=t.k_split,
        BLOCK_KS=t.block_ks, PDL=2, PRELOAD=t.preload, PICK=True,
    )
    fn = K._linear_kernel
    ptrs = dict(x_ptr="*fp32", w_ptr="*" + dtype, b_ptr="*" + dtype, nw_ptr="*" + dtype,
                nb_ptr="*" + dtype, y_ptr="*fp32", best_ptr="*i64", eps="fp32")
    sig = {a: "constexpr" if a in const else ptrs.get(a, "i32") for a in fn.arg_names}
    src = ASTSource(fn, sig, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()})
    opts = {"num_warps": t.num_warps, "num_stages": t.num_stages, "launch_pdl": True}
    k = compile(src, target=GPUTarget("cuda", 90, 32), options=opts)
    print(json.dumps({"block_n": t.block_n, "shared": k.metadata.shared}))
    """
)


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_vocabulary_product_tiles_fit_in_shared_memory(dtype):
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    run = subprocess.run(
        [sys.executable, "-c", COMPILE, dtype], env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    if run.returncode != 0 and "ptxas" in run.stderr and "not found" in run.stderr:
        pytest.skip("Triton's CUDA tool chain is missing here")
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert 0 < got["shared"] <= SHARED_MAX, got
    assert got["block_n"] == (256 if dtype == "bf16" else 128)  # the measured choice for bf16

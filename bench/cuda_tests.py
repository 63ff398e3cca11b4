# SPDX-License-Identifier: Apache-2.0
"""Run the GPU-only tests on a bare GPU machine (nothing installed, the checkout as it is).

CI has no GPU, so these skip there; on the GPU machine: ``python3 bench/cuda_tests.py``. The
kernels compile (``TRITON_INTERPRET=0``) and run on the device; extra arguments go to pytest.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = [
    "tests/unit/test_fused_decode_cuda.py",
    "tests/unit/test_packed_prefill_cuda.py",
    "tests/unit/test_engine.py::test_cuda_graphs_match_generate",
]


def main() -> int:
    os.environ["TRITON_INTERPRET"] = "0"  # before anything imports triton
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    try:
        import lspilot.daemon  # noqa: F401
    except ImportError:
        import lspilot

        lspilot.__path__.append(str(ROOT))  # lspilot.daemon -> ./daemon, as pyproject maps it
    import pytest

    return pytest.main(["-q", "-rs", "-p", "no:cacheprovider", *FILES, *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())

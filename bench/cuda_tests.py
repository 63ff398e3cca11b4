# SPDX-License-Identifier: Apache-2.0
"""Run the GPU-only tests on a bare GPU machine (nothing installed, the checkout as it is).

CI has no GPU, so these skip there; on the GPU machine: ``python3 bench/cuda_tests.py``. The
kernels compile (``TRITON_INTERPRET=0``) and run on the device; extra arguments go to pytest.
The engine's async test needs pytest-asyncio: where the machine lacks it, bring its wheel
(pure Python) and set ``WHEELS`` to the folder holding it; without it that test is left out,
said so, rather than failing.
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
    import importlib
    import importlib.util

    import pytest

    files = list(FILES)
    if importlib.util.find_spec("pytest_asyncio") is None:
        wheels = os.environ.get("WHEELS")
        if wheels:  # a pure-Python wheel imports, and its pytest entry point loads, from its zip
            sys.path[:0] = [str(w) for w in sorted(Path(wheels).glob("*.whl"))]
            importlib.invalidate_caches()
        if importlib.util.find_spec("pytest_asyncio") is None:
            print("pytest-asyncio missing: leaving out", [f for f in files if "::" in f])
            files = [f for f in files if "::" not in f]
    return pytest.main(["-q", "-rfEs", "-p", "no:cacheprovider", *files, *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())

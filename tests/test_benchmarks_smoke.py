"""Every benchmark runs at tiny sizes with --benchmark-disable, so none of them rots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason="benchmarks/ is not beside tests/")
def test_benchmarks_smoke_run() -> None:
    env = dict(os.environ, PYSLICE_BENCH="smoke")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(BENCHMARKS),
            "--benchmark-disable",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=BENCHMARKS,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

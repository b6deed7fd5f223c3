"""``pyslice bench``: run the benchmarks of a source checkout and print the speed-up ratios."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pyslice.cli.common import add_command


def find_benchmarks(folder: str | None) -> Path:
    """The benchmarks/ folder: given, or in the current directory, or beside the package source
    (an editable install or a source checkout)."""
    candidates = (
        [Path(folder)]
        if folder
        else [Path.cwd() / "benchmarks", Path(__file__).resolve().parents[2] / "benchmarks"]
    )
    for candidate in candidates:
        if (candidate / "ratios.py").is_file():
            return candidate
    raise FileNotFoundError(
        "--benchmarks: no benchmarks/ folder found (they live in the source checkout, not in the "
        "installed package): run from the checkout or pass --benchmarks PATH"
    )


def run(args: argparse.Namespace) -> int:
    folder = find_benchmarks(args.benchmarks)
    for module in ("pytest", "pytest_benchmark"):
        if importlib.util.find_spec(module) is None:
            raise RuntimeError(f"pyslice bench needs {module}: pip install 'pyslice[bench]'")
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(args.json) if args.json else Path(tmp) / "benchmarks.json"
        command = [
            sys.executable,
            "-m",
            "pytest",
            str(folder),
            "-q",
            "-p",
            "no:cacheprovider",
            f"--benchmark-json={result}",
            "--rootdir",
            str(folder.parent),
        ]
        if args.k:
            command += ["-k", args.k]
        env = dict(os.environ)
        if args.smoke:
            env["PYSLICE_BENCH"] = "smoke"
        print("running: " + " ".join(command), flush=True)
        done = subprocess.run(command, env=env, cwd=folder.parent)
        if done.returncode != 0 or not result.is_file():
            raise RuntimeError(f"the benchmarks failed (pytest exit status {done.returncode})")
        spec = importlib.util.spec_from_file_location("pyslice_bench_ratios", folder / "ratios.py")
        ratios = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(ratios)
        data = json.loads(result.read_text())
        print(f"device: {data['machine_info'].get('pyslice_device', '?')}")
        for group, label, ratio, rate in ratios.ratios(str(result)):
            print(f"{group:34s} {label:58s} {ratio:8.2f}x  (pyslice {rate:.4g}/s)")
        if args.json:
            print(f"wrote {result}")
    return 0


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "bench", help="run the benchmarks (source checkout) and print speed-up ratios"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds, not minutes)")
    parser.add_argument("-k", default=None, help="pytest -k expression selecting benchmarks")
    parser.add_argument("--json", default=None, help="keep pytest-benchmark's JSON here")
    parser.add_argument("--benchmarks", default=None, help="the benchmarks/ folder")
    parser.set_defaults(handler=run)

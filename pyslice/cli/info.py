"""``pyslice info``: versions, compiled features, usable backends and devices, and why not."""

from __future__ import annotations

import argparse
import json
import platform
from typing import Any

import torch

from pyslice import __version__, _compiled, backends
from pyslice.cli.common import add_command


def info() -> dict[str, Any]:
    """What this installation has: versions, compiled features, backends per op and device."""
    try:
        import triton

        triton_version = triton.__version__
    except Exception as exc:
        triton_version = f"unavailable ({exc.__class__.__name__}: {exc})"
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [
            f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())
        ]
    return {
        "pyslice": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "triton": triton_version,
        "triton_interpret": backends.triton_interpreted(),
        "compiled": _compiled.build_info()
        if _compiled.is_available()
        else {"unavailable": _compiled.unavailable_reason()},
        "devices": devices,
        "backends": backends.report(),
    }


def run(args: argparse.Namespace) -> int:
    report = info()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    for key in ("pyslice", "python", "platform", "torch", "triton", "triton_interpret"):
        print(f"{key:17s} {report[key]}")
    print("compiled (pyslice._C):")
    for key, value in report["compiled"].items():
        print(f"  {key:24s} {value}")
    print("devices:", ", ".join(report["devices"]))
    print("backends:")
    for op, per_backend in report["backends"].items():
        print(f"  {op}")
        for name, per_device in per_backend.items():
            for device, status in per_device.items():
                print(f"    {name:10s} {device:5s} {status}")
    return 0


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "info", help="versions, compiled features, usable backends")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=run)

"""Print pyslice's speed-up over each baseline from a pytest-benchmark JSON file.

    python benchmarks/ratios.py results.json

Contestants in a group may time different amounts of work (OpenMM is timed on fewer
conformations than pyslice, say), so ratios compare throughputs: a benchmark's rate is its
``extra_info`` ``conformations_per_s`` / ``moves_per_s`` / ``chain_steps_per_s`` when given, else
``n`` or ``batch`` items per median second, else one item per median second.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

PYSLICE_BACKENDS = ("triton", "cuda", "cpu", "reference", "pyslice")


def _rate(bench: dict) -> float:
    info, median = bench["extra_info"], bench["stats"]["median"]
    for key in ("conformations_per_s", "moves_per_s", "chain_steps_per_s"):
        if key in info:
            return float(info[key])
    return float(info.get("n", info.get("batch", 1))) / median


def _contestant(bench: dict) -> str:
    backend = bench["extra_info"].get("backend")
    if backend is None:
        return "pyslice" if "pyslice" in bench["name"] else bench["name"]
    return backend


def ratios(path: str) -> list[tuple[str, str, float, float]]:
    """(group, label, speed-up, pyslice rate) for every baseline in every group."""
    with open(path) as handle:
        data = json.load(handle)
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        groups[bench["group"]][_contestant(bench)] = _rate(bench)
    rows = []
    for group, rates in groups.items():
        ours = {name: r for name, r in rates.items() if name in PYSLICE_BACKENDS}
        if not ours:
            continue
        best_name, best = max(ours.items(), key=lambda item: item[1])
        for name, rate in rates.items():
            if name not in ours:
                rows.append((group, f"pyslice[{best_name}] vs {name}", best / rate, best))
    return rows


def main() -> None:
    with open(sys.argv[1]) as handle:
        device = json.load(handle)["machine_info"].get("pyslice_device", "?")
    print(f"device: {device}")
    for group, label, ratio, rate in ratios(sys.argv[1]):
        print(f"{group:34s} {label:58s} {ratio:8.2f}x  (pyslice {rate:.4g}/s)")


if __name__ == "__main__":
    main()

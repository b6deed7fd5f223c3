"""Print pyslice's speed-up over each baseline from a pytest-benchmark JSON file.

python benchmarks/ratios.py results.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def ratios(path: str) -> list[tuple[str, str, float, float]]:
    with open(path) as handle:
        data = json.load(handle)
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        groups[bench["group"]][bench["extra_info"].get("backend", bench["name"])] = bench["stats"][
            "median"
        ]
    rows = []
    for group, times in groups.items():
        ours = {
            name: t
            for name, t in times.items()
            if name in ("triton", "cuda", "cpu", "reference", "pyslice")
        }
        if not ours:
            continue
        best_name, best = min(ours.items(), key=lambda item: item[1])
        for name, seconds in times.items():
            if name not in ours:
                rows.append((group, f"pyslice[{best_name}] vs {name}", seconds / best, best))
    return rows


def main() -> None:
    with open(sys.argv[1]) as handle:
        device = json.load(handle)["machine_info"].get("pyslice_device", "?")
    print(f"device: {device}")
    for group, label, ratio, seconds in ratios(sys.argv[1]):
        print(f"{group:28s} {label:60s} {ratio:8.2f}x  (pyslice {seconds * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()

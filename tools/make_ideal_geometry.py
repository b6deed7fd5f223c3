"""Regenerate pyslice/data/ideal_geometry.json, the ideal internal coordinates of every residue
variant (pyslice.geometry.templates), from amber14; print how far each template's built geometry
lies from amber's r0 / theta0.

    python tools/make_ideal_geometry.py            # write the shipped file
    python tools/make_ideal_geometry.py --check    # exit 1 if the shipped file differs (by > 1e-9)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from pyslice.geometry.ideal_geometry import compute_templates, same_templates, templates_json
from pyslice.geometry.templates import amber_deviations, load_templates

FORCEFIELD = ("amber14-all.xml",)
TARGET = Path(__file__).resolve().parents[1] / "pyslice" / "data" / "ideal_geometry.json"


def dumps(value: object, indent: str = "") -> str:
    """JSON with one line per innermost list (an atom's entry, a bond), for readable diffs."""
    inner = indent + " "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {dumps(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):
        return "[\n" + ",\n".join(inner + dumps(v, inner) for v in value) + "\n" + indent + "]"
    return json.dumps(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--out", type=Path, default=TARGET, help=f"default {TARGET}")
    args = parser.parse_args(argv)
    computed = compute_templates(FORCEFIELD)
    print("variant  max |bond - r0| nm  max |angle - theta0| deg  ring closure: bond nm, angle deg")
    for variant, t in computed.items():
        dev = amber_deviations(t, t.place())
        print(
            f"{variant:7s}  {dev['bond']:18.5f}  {math.degrees(dev['angle']):24.2f}  "
            f"{dev['closure_bond']:.5f}, {math.degrees(dev['closure_angle']):.2f}"
            + (f"  ({', '.join('-'.join(p) for p in t.closures)})" if t.closures else "")
        )
    text = dumps(templates_json(computed, FORCEFIELD)) + "\n"
    if args.check:
        same = args.out.is_file() and same_templates(computed, load_templates(str(args.out)))
        print(f"{args.out}: {'up to date' if same else 'DIFFERS from a fresh computation'}")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``pyslice`` command, one module per subcommand: ``sample`` (the main job), ``pack``,
``evaluate``, ``fit``, ``train ml`` / ``train era``, ``bench`` and ``info``.

Errors print one line on stderr and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pyslice import __version__
from pyslice.cli import bench, evaluate, fit, info, pack, sample, train
from pyslice.cli.common import DEFAULT_SEQUENCE, Parser

__all__ = ["DEFAULT_SEQUENCE", "build_parser", "main"]


def build_parser() -> Parser:
    parser = Parser(prog="pyslice", description="Boltzmann-exact side-chain ensembles of proteins.")
    parser.add_argument("--version", action="version", version=f"pyslice {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in (sample, pack, evaluate, fit, train, bench, info):
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pyslice`` command with ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        if args.debug:
            raise
        print(f"pyslice: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyslice: interrupted", file=sys.stderr)
        return 130

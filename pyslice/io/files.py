"""Files appear whole or not at all: every writer goes through :func:`atomic_write`.

A writer writes a hidden temporary file beside its target, ``.<name>.<random>.tmp``, and renames
it over the target. A process killed in between (SIGKILL, power loss) leaves the temporary file
behind; the next write of the same target removes such leftovers first."""

from __future__ import annotations

import contextlib
import glob
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "prepend_lines", "remove_stale_temporaries"]


def atomic_write(path: str | os.PathLike, mode: str, write: Callable[[IO], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it over ``path``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"path: folder {target.parent} does not exist")
    remove_stale_temporaries(target)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(tmp, "xb" if "b" in mode else "x") as file:
            write(file)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files an interrupted :func:`atomic_write` of ``path`` left behind;
    returns the paths removed."""
    target = Path(path)
    removed = []
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()
            removed.append(leftover)
    return removed


def prepend_lines(path: str | os.PathLike, lines: list[str]) -> None:
    """Put ``lines`` (e.g. PDB REMARK records) at the top of the text file ``path``, atomically."""
    body = "".join(f"{line}\n" for line in lines) + Path(path).read_text()
    atomic_write(path, "w", lambda file: file.write(body))

"""Which OpenMM force field a structure is built for: the one check of a ``forcefield`` argument
and the one (cached) loader of an ``openmm.app.ForceField``, shared by reading, ideal peptides and
the energy."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyslice import _checks

if TYPE_CHECKING:
    from openmm.app import ForceField

__all__ = ["DEFAULT_FORCEFIELD", "ForceFieldFiles", "forcefield_files", "load_forcefield"]

#: amber14 (proteins): the default everywhere; it has no water model.
DEFAULT_FORCEFIELD: tuple[str, ...] = ("amber14-all.xml",)

#: What a ``forcefield`` argument accepts: one OpenMM XML file name or path, or a sequence of them.
ForceFieldFiles = str | os.PathLike | Sequence[str | os.PathLike]


def forcefield_files(forcefield: object) -> tuple[str, ...]:
    """The OpenMM XML files of a ``forcefield`` argument as a tuple of str: a file name or path
    (str or PathLike), or a non-empty sequence of them."""
    if isinstance(forcefield, (str, os.PathLike)):
        forcefield = (forcefield,)
    if isinstance(forcefield, bytes) or not isinstance(forcefield, Sequence) or not forcefield:
        raise TypeError(
            f"forcefield must be a non-empty sequence of OpenMM XML file names, got {forcefield!r}"
        )
    files = tuple(os.fspath(f) if isinstance(f, os.PathLike) else f for f in forcefield)
    if not all(isinstance(f, str) for f in files):
        raise TypeError(f"forcefield must hold file names (str or PathLike), got {forcefield!r}")
    return files


def load_forcefield(forcefield: object) -> ForceField:
    """The ``openmm.app.ForceField`` of a ``forcefield`` argument (see :func:`forcefield_files`),
    loaded once per set of files: parsing amber14 takes about a second. Treat it as read-only."""
    return _load(forcefield_files(forcefield))


@functools.lru_cache(maxsize=8)
def _load(files: tuple[str, ...]) -> ForceField:
    from openmm.app import ForceField

    try:
        return ForceField(*files)
    except Exception as exc:  # OpenMM raises plain Exception/ValueError/OSError here
        raise ValueError(
            f"forcefield {files!r} could not be loaded: {_checks.exception_summary(exc)}"
        ) from None

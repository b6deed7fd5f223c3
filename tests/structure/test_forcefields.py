"""The one check of a ``forcefield`` argument and the one cached ForceField loader
(pyslice.structure.forcefields), shared by reading, ideal peptides and the energy."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyslice.structure.forcefields import DEFAULT_FORCEFIELD, forcefield_files, load_forcefield


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("amber14-all.xml", ("amber14-all.xml",)),
        (Path("amber14-all.xml"), ("amber14-all.xml",)),
        (["amber14-all.xml", Path("implicit/gbn2.xml")], ("amber14-all.xml", "implicit/gbn2.xml")),
        (("a.xml",), ("a.xml",)),
        (DEFAULT_FORCEFIELD, ("amber14-all.xml",)),
    ],
)
def test_forcefield_files_accepts_names_and_paths(value, expected) -> None:
    assert forcefield_files(value) == expected


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ((), "non-empty sequence"),
        ([], "non-empty sequence"),
        (None, "non-empty sequence"),
        (b"amber14-all.xml", "non-empty sequence"),
        ([1], "must hold file names"),
        (["amber14-all.xml", None], "must hold file names"),
    ],
)
def test_forcefield_files_rejects_the_rest(value, match) -> None:
    with pytest.raises(TypeError, match=match):
        forcefield_files(value)


def test_load_forcefield_is_cached_per_set_of_files() -> None:
    first = load_forcefield("amber14-all.xml")
    assert load_forcefield([Path("amber14-all.xml")]) is first
    assert load_forcefield(("amber14-all.xml", "implicit/gbn2.xml")) is not first
    with pytest.raises(ValueError, match="could not be loaded"):
        load_forcefield("no-such-forcefield.xml")

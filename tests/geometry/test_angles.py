"""The one home of angle maths (pyslice.geometry.angles): wrapping, dihedrals, atom placement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyslice.geometry.angles import dihedral, dihedral_numpy, place_atom, wrap_angle


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_wrap_angle_range_and_congruence(dtype) -> None:
    x = torch.linspace(-50.0, 50.0, 100_001, dtype=dtype)
    x = torch.cat([x, torch.tensor([-math.pi, math.pi, 3 * math.pi, -3 * math.pi], dtype=dtype)])
    w = wrap_angle(x)
    assert w.dtype == dtype
    assert bool((w >= -math.pi).all()) and bool((w < math.pi).all())
    # congruent modulo 2 pi: the difference is a whole number of turns
    turns = (x.double() - w.double()) / (2 * math.pi)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    assert float((turns - turns.round()).abs().max()) < tolerance
    # values already in range come back unchanged (bit for bit)
    inside = x[(x >= -math.pi) & (x < math.pi)]
    assert torch.equal(wrap_angle(inside), inside)


def test_place_atom_and_dihedral_invert_each_other() -> None:
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 3))
    for torsion in np.linspace(-math.pi, math.pi, 13, endpoint=False):
        d = place_atom(a, b, c, 0.153, math.radians(111.0), torsion)
        assert np.linalg.norm(d - c) == pytest.approx(0.153, abs=1e-12)
        cb, cd = b - c, d - c
        angle = math.acos(cb @ cd / (np.linalg.norm(cb) * np.linalg.norm(cd)))
        assert angle == pytest.approx(math.radians(111.0), abs=1e-10)
        points = np.stack([a, b, c, d])
        assert dihedral_numpy(points) == pytest.approx(
            math.remainder(torsion, 2 * math.pi), abs=1e-10
        )
        torch_value = dihedral(*(torch.from_numpy(p) for p in points))
        assert float(torch_value) == pytest.approx(float(dihedral_numpy(points)), abs=1e-14)


def test_dihedral_sign_convention() -> None:
    # IUPAC: looking down b -> c, a clockwise turn from a to d is positive.
    a = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.float64)
    c = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    d = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
    assert float(dihedral(a, b, c, d)) == pytest.approx(math.pi / 2)
    assert float(dihedral(a, b, c, torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64))) == (
        pytest.approx(-math.pi)
    )

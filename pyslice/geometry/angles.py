"""The one home of angle maths: wrapping to [-pi, pi), dihedral angles, and atom placement from
internal coordinates. Every other module calls these (the compiled kernels use the same
expressions, csrc/include/pyslice/*.h)."""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["dihedral", "dihedral_numpy", "place_atom", "wrap_angle"]

_PI = math.pi
_TWO_PI = 2.0 * math.pi


def wrap_angle(x: torch.Tensor) -> torch.Tensor:
    """Angles wrapped to [-pi, pi), float32 or float64, with the kernels' expression (so the torch
    references and the compiled paths wrap identically)."""
    r = x - _TWO_PI * torch.floor((x + _PI) / _TWO_PI)
    r = torch.where(r >= _PI, r - _TWO_PI, r)
    return torch.where(r < -_PI, r + _TWO_PI, r)


def dihedral(
    p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, p3: torch.Tensor
) -> torch.Tensor:
    """Dihedral angles of (p0, p1, p2, p3), IUPAC sign, in [-pi, pi).

    Each point is ``(..., 3)`` (broadcast together); returns ``(...)`` in their dtype. The
    atan2(|b2| b1 . (b2 x b3), (b1 x b2) . (b2 x b3)) form: accurate at every angle and
    differentiable away from collinear points (where the angle is undefined).
    """
    p0, p1, p2, p3 = torch.broadcast_tensors(p0, p1, p2, p3)
    b1 = p1 - p0
    b2 = p2 - p1
    b3 = p3 - p2
    n2 = torch.linalg.cross(b2, b3, dim=-1)
    y = torch.linalg.vector_norm(b2, dim=-1) * (b1 * n2).sum(-1)
    x = (torch.linalg.cross(b1, b2, dim=-1) * n2).sum(-1)
    angle = torch.atan2(y, x)
    # atan2 can return +pi; the convention is [-pi, pi).
    return torch.where(angle >= math.pi, angle - 2.0 * math.pi, angle)


def dihedral_numpy(points: np.ndarray) -> np.ndarray:
    """:func:`dihedral` for numpy arrays: ``points (..., 4, 3)`` -> ``(...)`` float64 radians."""
    p = torch.from_numpy(np.asarray(points, dtype=np.float64))
    return dihedral(p[..., 0, :], p[..., 1, :], p[..., 2, :], p[..., 3, :]).numpy()


def place_atom(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle: float, torsion: float
) -> np.ndarray:
    """Position of atom d from three placed atoms (NeRF): |cd| = ``bond``, angle bcd = ``angle``,
    dihedral abcd = ``torsion`` (radians). Arrays ``(..., 3)``; returns ``(..., 3)``."""
    bc = (c - b) / np.linalg.norm(c - b, axis=-1, keepdims=True)
    n = np.cross(b - a, bc)
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    m = np.cross(n, bc)
    return c + bond * (
        -math.cos(angle) * bc
        + math.sin(angle) * math.cos(torsion) * m
        + math.sin(angle) * math.sin(torsion) * n
    )

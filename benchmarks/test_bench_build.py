"""Side-chain building from chi angles: pyslice's batched builder against a per-conformation NeRF.

BPTI with hydrogens (892 atoms, 91 movable chis), a batch of random chi vectors (B = 1024 in full
mode). pyslice rebuilds the batch in one call (each backend usable here, float64 and float32); the
baseline is the textbook approach written plainly in numpy: for each conformation, for each
movable atom in topological order, NeRF (Parsons et al. 2005) places it from its three parents
with the reference bond length and angle and the torsion shifted by its chi's change. Both are
checked against each other before timing. Skips where the shared data is absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from bench_common import DEVICE, size, sync

from pyslice import backends
from pyslice.geometry.builder import SideChainBuilder

BATCH = size(1024, 8)
GROUP = f"build bpti+H B={BATCH}"


@dataclass
class NerfTables:
    """One row per movable atom, in placement order: the atom, its parents p1 (bonded), p2, p3,
    the reference bond length |x p1|, angle (x, p1, p2), torsion (x, p1, p2, p3) and the chi
    column whose bond is p2-p1 (-1 when no chi turns that torsion)."""

    atom: np.ndarray
    parents: np.ndarray  # (n, 3)
    length: np.ndarray
    angle: np.ndarray
    torsion: np.ndarray
    chi_column: np.ndarray


def _angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    u, v = a - b, c - b
    return float(np.arccos(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v)))


def _torsion(p0, p1, p2, p3) -> float:
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    return float(np.arctan2(np.linalg.norm(b2) * np.dot(b1, n2), np.dot(n1, n2)))


def nerf_tables(builder: SideChainBuilder, positions: np.ndarray) -> NerfTables:
    """Parents by breadth-first search from CB over each movable residue's side chain (CB's parent
    CA, CA's parent N): every movable atom comes after its parents."""
    residues = list(builder.topology.residues())
    bonded: dict[int, list[int]] = {}
    for a, b in builder.topology.bonds():
        bonded.setdefault(a.index, []).append(b.index)
        bonded.setdefault(b.index, []).append(a.index)
    column = {tuple(builder.chi_atoms[j, 1:3].tolist()): j for j in range(builder.n_chi)}
    rows = []
    for r in builder.movable_residues:
        names = {a.name: a.index for a in residues[r].atoms()}
        members = set(names.values())
        parent = {names["CA"]: names["N"], names["CB"]: names["CA"]}
        queue = [names["CB"]]
        for atom in queue:  # grows while it is read: breadth first
            for other in bonded[atom]:
                if other in members and other not in parent:
                    parent[other] = atom
                    queue.append(other)
        for x in queue[1:]:  # CB lies on the chi1 axis: it never moves
            p1 = parent[x]
            p2 = parent[p1]
            p3 = parent[p2]
            rows.append((x, p1, p2, p3, column.get((p2, p1), -1)))
    table = np.array(rows, dtype=np.int64)
    x, p1, p2, p3 = (positions[table[:, i]] for i in range(4))
    return NerfTables(
        atom=table[:, 0],
        parents=table[:, 1:4],
        length=np.linalg.norm(x - p1, axis=1),
        angle=np.array([_angle(*row) for row in zip(x, p1, p2)]),
        torsion=np.array([_torsion(*row) for row in zip(p3, p2, p1, x)]),
        chi_column=table[:, 4],
    )


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # np.cross is general (any shapes) and slow on single 3-vectors: spelled out instead.
    return np.array(
        [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]]
    )


def nerf_build(
    reference: np.ndarray, chi: np.ndarray, chi_ref: np.ndarray, t: NerfTables
) -> np.ndarray:
    """(B, N, 3) float64: one conformation at a time, one atom at a time."""
    out = np.empty((len(chi),) + reference.shape)
    along = -t.length * np.cos(t.angle)  # the new bond's component along the previous bond
    across = t.length * np.sin(t.angle)
    rows = list(zip(t.atom, t.parents[:, 0], t.parents[:, 1], t.parents[:, 2], along, across))
    for b in range(len(chi)):
        pos = reference.copy()
        delta = np.append(chi[b] - chi_ref, 0.0)  # column -1 reads the trailing 0
        torsions = t.torsion + delta[t.chi_column]
        for (x, p1, p2, p3, d0, r), torsion in zip(rows, torsions):
            a, b_, c = pos[p3], pos[p2], pos[p1]
            bc = c - b_
            bc /= np.sqrt(bc @ bc)
            n = _cross(b_ - a, bc)
            n /= np.sqrt(n @ n)
            pos[x] = (
                c + d0 * bc + (r * math.cos(torsion)) * _cross(n, bc) + (r * math.sin(torsion)) * n
            )
        out[b] = pos
    return out


@pytest.fixture(scope="module")
def bpti():
    from openmm import app

    from pyslice._data import data_dir

    root = data_dir()
    if root is None:
        pytest.skip("shared data not found: set PYSLICE_DATA to the folder with structures/")
    pdb = app.PDBFile(str(root / "structures" / "bpti.pdb"))
    positions = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(pdb.positions.unit))
    builder = SideChainBuilder(pdb.topology, torch.tensor(positions))
    gen = torch.Generator().manual_seed(0)
    chi = (torch.rand(BATCH, builder.n_chi, generator=gen, dtype=torch.float64) * 2 - 1) * np.pi
    return builder, positions, chi


def _check_against_nerf(built: torch.Tensor, bpti, atol: float) -> None:
    builder, positions, chi = bpti
    n = min(4, BATCH)
    tables = nerf_tables(builder, positions)
    expected = nerf_build(positions, chi[:n].numpy(), builder.chi_angles().numpy(), tables)
    np.testing.assert_allclose(built[:n].double().cpu().numpy(), expected, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_build_pyslice(benchmark, bpti, backend: str, dtype: torch.dtype) -> None:
    builder, _, chi = bpti
    chi = chi.to(DEVICE, dtype)
    impl = backends.select(
        "sidechain_build", chi.device, dtype, None if backend == "auto" else backend
    )
    if backend == "auto" and impl.backend == "reference":
        pytest.skip("no fast path here: the reference is benchmarked on its own")
    # Baselines are float64: ratios.py compares the float64 group; float32 is its own group.
    benchmark.group = GROUP if dtype == torch.float64 else f"{GROUP} float32"
    benchmark.extra_info.update(device=DEVICE, backend=impl.backend, batch=BATCH, dtype=str(dtype))
    _check_against_nerf(builder.build(chi, backend=impl.backend), bpti, atol=1e-4)

    def run():
        out = builder.build(chi, backend=impl.backend)
        sync()
        return out

    benchmark.pedantic(run, rounds=size(20, 1), iterations=1, warmup_rounds=1)


def test_build_numpy_nerf(benchmark, bpti) -> None:
    builder, positions, chi = bpti
    tables = nerf_tables(builder, positions)
    chi_np, chi_ref = chi.numpy(), builder.chi_angles().numpy()
    benchmark.group = GROUP
    benchmark.extra_info.update(device="cpu", backend="numpy NeRF loop", batch=BATCH)
    # Correct before timed: the same structures as pyslice's reference.
    reference = builder.build(chi[:4], backend="reference").numpy()
    np.testing.assert_allclose(
        nerf_build(positions, chi_np[:4], chi_ref, tables), reference, atol=1e-9
    )
    benchmark.pedantic(
        nerf_build, args=(positions, chi_np, chi_ref, tables), rounds=size(2, 1), iterations=1
    )

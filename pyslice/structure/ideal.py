"""Ideal peptides from a sequence: Engh & Huber backbone, pdbfixer side chains, OpenMM hydrogens,
then every atom but N, CA and C relaxed onto the force field's equilibrium bonds and angles.

:func:`ideal_peptide` is what ``Protein.from_sequence`` builds (see its docstring for the
geometry). Units: nm; angles in radians unless a name says degrees.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from pyslice import _checks
from pyslice.geometry.angles import place_atom
from pyslice.structure.forcefields import DEFAULT_FORCEFIELD, ForceFieldFiles, load_forcefield
from pyslice.structure.reading import read_structure
from pyslice.structure.residues import AMINO_ACIDS, BACKBONE, ONE_TO_THREE

if TYPE_CHECKING:
    from openmm.app import Topology

__all__ = ["backbone_angles", "check_sequence", "ideal_backbone", "ideal_peptide"]

# Engh & Huber (1991) backbone geometry (nm, degrees).
_N_CA, _CA_C, _C_N, _C_O = 0.1458, 0.1525, 0.1329, 0.1231
_N_CA_C, _CA_C_N, _C_N_CA, _CA_C_O = 111.2, 116.2, 121.7, 120.1
_HELIX = (-57.0, -47.0)
_EXTENDED = (180.0, 180.0)
# Proline's ring ties phi near -63 degrees; the presets use that value for every proline.
_PRO_PHI = -63.0
_PRO_PHI_TOLERANCE = 45.0
# The atoms of the ideal backbone, in the order of ideal_backbone's second axis.
_BACKBONE_ATOMS = ("N", "CA", "C", "O")


def ideal_peptide(
    seq: str,
    backbone: str | tuple[object, object] = "helix",
    *,
    ph: float = 7.0,
    forcefield: ForceFieldFiles = DEFAULT_FORCEFIELD,
) -> tuple[Topology, np.ndarray, tuple[str, ...]]:
    """The topology, ``(N, 3) float64`` positions (nm) and force-field files of an ideal
    single-chain peptide (arguments as ``Protein.from_sequence``)."""
    check_sequence(seq)
    phi, psi = backbone_angles(seq, backbone)
    backbone_xyz = ideal_backbone(phi, psi)
    text = _backbone_pdb(seq, backbone_xyz)
    topology, quantity, files = read_structure(
        io.StringIO(text), "pdb", ph=ph, forcefield=forcefield
    )
    positions = _checks.positions_tensor("positions", quantity, topology.getNumAtoms()).numpy()
    # The backbone went through PDB text (1e-4 nm): put back the exact positions.
    for atom in topology.atoms():
        if atom.name in _BACKBONE_ATOMS:
            positions[atom.index] = backbone_xyz[
                atom.residue.index, _BACKBONE_ATOMS.index(atom.name)
            ]
    return topology, _relax_to_equilibrium(topology, positions, files), files


def check_sequence(seq: object) -> str:
    """``seq`` when it is a str of at least two one-letter codes of the 20 standard amino acids."""
    if not isinstance(seq, str):
        raise TypeError(f"seq must be a str of one-letter codes, got {type(seq).__name__}")
    for i, letter in enumerate(seq):
        if letter not in ONE_TO_THREE:
            raise ValueError(
                f"seq: unknown one-letter code {letter!r} at position {i} (expected one of "
                f"{''.join(sorted(ONE_TO_THREE))})"
            )
    if len(seq) < 2:
        raise ValueError(
            f"seq must hold at least 2 residues (amber14 has no template for a lone "
            f"zwitterionic amino acid), got {len(seq)}"
        )
    return seq


def backbone_angles(seq: str, backbone: object) -> tuple[np.ndarray, np.ndarray]:
    """(phi, psi) in radians, ``(len(seq),)`` each, from a preset name or explicit values."""
    n = len(seq)
    is_pro = np.array([letter == "P" for letter in seq])
    if isinstance(backbone, str):
        presets = {"helix": _HELIX, "extended": _EXTENDED}
        if backbone not in presets:
            raise ValueError(
                f"backbone must be 'helix', 'extended' or a (phi, psi) pair in radians, "
                f"got {backbone!r}"
            )
        phi_deg, psi_deg = presets[backbone]
        phi = np.where(is_pro, math.radians(_PRO_PHI), math.radians(phi_deg))
        return phi, np.full(n, math.radians(psi_deg))
    if not isinstance(backbone, (tuple, list)) or len(backbone) != 2:
        raise ValueError(
            "backbone must be 'helix', 'extended' or a (phi, psi) pair in radians, "
            f"got {type(backbone).__name__}"
            + (f" of length {len(backbone)}" if isinstance(backbone, (tuple, list)) else "")
        )
    angles = []
    for label, value in zip(("phi", "psi"), backbone):
        tensor = _checks.as_float_tensor(f"backbone {label}", value, dtype=torch.float64)
        if tensor.ndim == 0:
            tensor = tensor.expand(n)
        if tuple(tensor.shape) != (n,):
            raise ValueError(
                f"backbone {label} must be a number or have shape ({n},) (one per residue), "
                f"got {tuple(tensor.shape)}"
            )
        _checks.require_finite(f"backbone {label}", tensor)
        angles.append(tensor.numpy().copy())
    phi, psi = angles
    for i in np.flatnonzero(is_pro):
        if i == 0:  # the first residue's phi does not exist
            continue
        off = math.degrees(math.remainder(phi[i] - math.radians(_PRO_PHI), 2 * math.pi))
        if abs(off) > _PRO_PHI_TOLERANCE:
            raise ValueError(
                f"backbone phi of proline {i} is {math.degrees(phi[i]):.1f} degrees; its ring "
                f"allows only about {_PRO_PHI:.0f} +- {_PRO_PHI_TOLERANCE:.0f}"
            )
    return phi, psi


def ideal_backbone(phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """``(n, 4, 3)`` N, CA, C, O positions (nm) of an ideal trans peptide with these angles."""
    rad = math.radians
    xyz = np.zeros((len(phi), 4, 3))
    angle = math.pi - rad(_N_CA_C)
    xyz[0, 1] = (_N_CA, 0.0, 0.0)
    xyz[0, 2] = xyz[0, 1] + _CA_C * np.array([math.cos(angle), math.sin(angle), 0.0])
    for i in range(len(phi)):
        if i > 0:
            n, ca, c = xyz[i - 1, :3]
            xyz[i, 0] = place_atom(n, ca, c, _C_N, rad(_CA_C_N), psi[i - 1])
            xyz[i, 1] = place_atom(ca, c, xyz[i, 0], _N_CA, rad(_C_N_CA), math.pi)
            xyz[i, 2] = place_atom(c, xyz[i, 0], xyz[i, 1], _CA_C, rad(_N_CA_C), phi[i])
        xyz[i, 3] = place_atom(*xyz[i, :3], _C_O, rad(_CA_C_O), psi[i] + math.pi)
    return xyz


def _backbone_pdb(seq: str, xyz: np.ndarray) -> str:
    """PDB text of the backbone atoms ``xyz (n, 4, 3)`` (nm) of chain A, numbered from 1."""
    lines = []
    for i, letter in enumerate(seq):
        for k, atom in enumerate(_BACKBONE_ATOMS):
            x, y, z = 10.0 * xyz[i, k]  # nm -> Angstrom
            lines.append(
                f"ATOM  {4 * i + k + 1:5d}  {atom:<3s} {ONE_TO_THREE[letter]} A{i + 1:4d}    "
                f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00           {atom[0]}"
            )
    lines += ["TER", "END"]
    return "\n".join(lines) + "\n"


def _relax_to_equilibrium(
    topology: Topology, positions: np.ndarray, files: tuple[str, ...]
) -> np.ndarray:
    """Positions (nm) minimised under the force field's bonds and angles only, N/CA/C held fixed."""
    import openmm
    from openmm import app, unit

    system = load_forcefield(files).createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    for k in reversed(range(system.getNumForces())):
        force = system.getForce(k)
        if not isinstance(force, (openmm.HarmonicBondForce, openmm.HarmonicAngleForce)):
            system.removeForce(k)
    for atom in topology.atoms():
        if atom.residue.name in AMINO_ACIDS and atom.name in BACKBONE:
            system.setParticleMass(atom.index, 0.0)
    platform = openmm.Platform.getPlatformByName("Reference")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
    context.setPositions(unit.Quantity(positions, unit.nanometer))
    openmm.LocalEnergyMinimizer.minimize(context, 1e-3, 0)
    state = context.getState(getPositions=True)
    return np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))

"""Side-chain packing: the lowest-energy side chains of a structure, the job FASPR or SCWRL4 do.

:func:`pack` searches with the sampler's parallel chains, then refines the best state found:

1. Start: every movable residue at the rotamer library's most probable rotamer for its backbone
   (the no-energy baseline that packing must beat).
2. Annealing: ``n_chains`` chains (the first at the start, the rest drawn from the proposal) run
   one-residue independence moves from the rotamer library mixed with residue random walks, at
   temperatures falling geometrically from ``t_high`` to ``t_low``; the lowest energy any chain
   reaches is kept.
3. Rotamer descent: residues are visited in turn, each set to whichever of its current angles and
   its library rotamers (component means) gives the lowest energy, until a sweep changes nothing
   (a discrete local minimum: no single-residue rotamer change lowers the energy).

Energies are those of the given :class:`~pyslice.ForceFieldEnergy` (one-residue changes scored by
exact energy differences). Randomness is the sampler's: the result is reproducible from ``seed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from pyslice import _checks
from pyslice.mcmc import Independence, RandomWalk, Sampler
from pyslice.proposals import MixtureProposal, Proposal

__all__ = ["PackResult", "keep_residues", "most_probable_rotamers", "pack", "residue_selection"]


@dataclass
class PackResult:
    """What :func:`pack` found.

    Attributes:
        protein: the packed structure (the input's topology, chain ids and numbering).
        chi: (n_chi,) float64 chi angles of the movable residues, radians.
        energy: its energy, kJ/mol; ``start_energy``: of the most-probable-rotamer start.
        stages: per annealing stage, the temperature, the lowest energy so far and the
            acceptance of each move; ``sweeps``: rotamer-descent sweeps and residues changed.
        seconds: wall time.
    """

    protein: Any
    chi: torch.Tensor
    energy: float
    start_energy: float
    stages: list[dict[str, Any]] = field(default_factory=list)
    sweeps: list[int] = field(default_factory=list)
    seconds: float = 0.0


def most_probable_rotamers(proposal: MixtureProposal) -> torch.Tensor:
    """(n_chi,) float64: every group (residue) at the mean of its most probable component.

    The means of pi-periodic columns describe the doubled angle, so they are halved."""
    best = proposal.logits.argmax(dim=1)  # (G,)
    component = best[proposal.group]  # (n_chi,)
    loc = proposal.loc.gather(1, component.unsqueeze(1)).squeeze(1)
    return torch.where(proposal.pi_periodic, 0.5 * loc, loc).to(torch.float64)


def _rotamer_candidates(proposal: MixtureProposal) -> torch.Tensor:
    """(K, n_chi) float64: column values of every component mean (halved where pi-periodic);
    -inf weight components give NaN rows per group, skipped by the caller."""
    loc = proposal.loc.T.to(torch.float64)  # (K, n_chi)
    loc = torch.where(proposal.pi_periodic, 0.5 * loc, loc)
    usable = torch.isfinite(proposal.logits)[:, None, :]  # (G, 1, K) -> per column below
    usable = usable.squeeze(1)[proposal.group].T  # (K, n_chi)
    return torch.where(usable, loc, torch.nan)


def _descend(
    energy_of: Callable[[torch.Tensor], torch.Tensor],
    chi: torch.Tensor,
    groups: torch.Tensor,
    candidates: torch.Tensor,
    max_sweeps: int,
) -> tuple[torch.Tensor, float, list[int]]:
    """Rotamer descent from ``chi`` (n_chi,): see the module docstring, step 3."""
    current = float(energy_of(chi[None])[0])
    sweeps = []
    n_groups = int(groups.max()) + 1
    for _ in range(max_sweeps):
        changed = 0
        for g in range(n_groups):
            columns = groups == g
            options = candidates[:, columns]
            options = options[~torch.isnan(options).any(1)]
            if options.shape[0] == 0:
                continue
            trial = chi.expand(options.shape[0], -1).clone()
            trial[:, columns] = options
            energies = energy_of(trial)
            k = int(torch.argmin(energies))
            if float(energies[k]) < current - 1e-9:
                chi, current, changed = trial[k].clone(), float(energies[k]), changed + 1
        sweeps.append(changed)
        if changed == 0:
            break
    return chi, current, sweeps


def pack(
    protein: Any,
    energy: Any = None,
    proposal: MixtureProposal | None = None,
    *,
    search_proposal: Proposal | None = None,
    n_chains: int = 64,
    steps_per_stage: int = 60,
    n_stages: int = 6,
    t_high: float = 1200.0,
    t_low: float = 300.0,
    max_sweeps: int = 8,
    seed: int = 0,
    progress: bool = False,
) -> PackResult:
    """Pack the side chains of ``protein``'s movable residues (see the module docstring).

    Args:
        protein: a :class:`~pyslice.Protein`; residues outside ``protein.movable`` keep their
            input side chains (make one with ``movable=`` to keep some fixed).
        energy: the :class:`~pyslice.ForceFieldEnergy` to minimise (default: the protein's).
        proposal: a MixtureProposal over the protein's chi columns (default: the shipped
            rotamer library's): the start and the rotamers of the descent.
        search_proposal: the proposal of the annealing's independence moves (default:
            ``proposal``; e.g. a transformer's).
        n_chains, steps_per_stage, n_stages, t_high, t_low: the annealing (t in kelvin).
        max_sweeps: at most this many rotamer-descent sweeps.
        seed: the random seed (results are reproducible from it).
        progress: print a line per stage.
    """
    start = time.perf_counter()
    n_chains = _checks.check_int("n_chains", n_chains, low=1)
    steps_per_stage = _checks.check_int("steps_per_stage", steps_per_stage, low=0)
    n_stages = _checks.check_int("n_stages", n_stages, low=1)
    t_high = _checks.check_float("t_high", t_high, positive=True)
    t_low = _checks.check_float("t_low", t_low, positive=True)
    if t_low > t_high:
        raise ValueError(f"t_low ({t_low}) must not exceed t_high ({t_high})")
    max_sweeps = _checks.check_int("max_sweeps", max_sweeps, low=0)
    if protein.n_chi == 0:
        raise ValueError("protein has no movable side chains with chi angles: nothing to pack")
    if energy is None:
        from pyslice.energy import ForceFieldEnergy

        energy = ForceFieldEnergy(protein)
    if proposal is None:
        from pyslice.models.rotamers import RotamerLibrary

        proposal = RotamerLibrary.default().proposal(protein, device=energy.device)
    if not isinstance(proposal, MixtureProposal):
        raise TypeError(f"proposal must be a MixtureProposal, got {type(proposal).__name__}")

    if search_proposal is None:
        search_proposal = proposal
    start_chi = most_probable_rotamers(proposal).to(energy.device)
    init = proposal.sample(n_chains, seed=seed).chi.to(torch.float64)
    init[0] = start_chi
    moves = [Independence(search_proposal, block=1), RandomWalk("residue", step_size=0.3)]
    sampler = Sampler(
        protein, energy, proposal, t_high, n_chains, moves, seed, init=init.to(energy.dtype)
    )
    start_energy = float(sampler.energy[0])
    best_chi, best_energy = sampler.chi[0].clone(), start_energy
    stages = []
    ratio = (t_low / t_high) ** (1.0 / max(n_stages - 1, 1))
    for stage in range(n_stages):
        sampler.temperature = t_high * ratio**stage
        ensemble = sampler.run(steps_per_stage, progress=False)
        k = int(torch.argmin(sampler.energy))
        if float(sampler.energy[k]) < best_energy:
            best_chi, best_energy = sampler.chi[k].clone(), float(sampler.energy[k])
        stages.append(
            {
                "temperature": sampler.temperature,
                "best_energy": best_energy,
                "acceptance": ensemble.acceptance,
            }
        )
        if progress:
            print(f"  annealing T = {sampler.temperature:7.1f} K: lowest U = {best_energy:.1f}")

    def energy_of(chi: torch.Tensor) -> torch.Tensor:
        positions = protein.build(chi.to(energy.dtype))
        return energy(positions)

    chi, final, sweeps = _descend(
        energy_of,
        best_chi.to(torch.float64),
        proposal.group,
        _rotamer_candidates(proposal).to(energy.device),
        max_sweeps,
    )
    if progress:
        print(f"  rotamer descent: {len(sweeps)} sweeps, {sum(sweeps)} changes, U = {final:.1f}")
    positions = protein.build(chi[None].to("cpu", torch.float64))[0]
    return PackResult(
        protein=protein.with_positions(positions),
        chi=chi.cpu(),
        energy=final,
        start_energy=start_energy,
        stages=stages,
        sweeps=sweeps,
        seconds=time.perf_counter() - start,
    )


def keep_residues(protein: Any, keep: Iterable[int]) -> Any:
    """The protein with the residues ``keep`` (topology indices) fixed: not movable."""
    keep = set(keep)
    movable = [r for r in protein.movable if r not in keep]
    return type(protein)(
        protein.topology, protein.positions, movable=movable, forcefield=protein.forcefield
    )


def residue_selection(protein: Any, text: str) -> list[int]:
    """Topology indices of the residues named by ``text``: comma-separated items ``CHAIN:NUM``,
    ``CHAIN:FIRST-LAST`` or ``NUM`` / ``FIRST-LAST`` (any chain), numbers as in the input file
    (insertion codes after the number, e.g. ``A:52A``). Unknown residues are a ValueError."""
    by_label: dict[tuple[str, str], int] = {}
    for residue in protein.topology.residues():
        label = f"{residue.id}{(residue.insertionCode or '').strip()}"
        by_label[(residue.chain.id, label)] = residue.index
    chains = sorted({chain for chain, _ in by_label})
    picked: list[int] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        chain, _, numbers = item.rpartition(":")
        wanted = [chain] if chain else chains
        first, dash, last = numbers.partition("-")
        found = []
        for c in wanted:
            if dash:
                try:
                    low, high = int(first), int(last)
                except ValueError:
                    raise ValueError(f"keep: bad residue range {item!r}") from None
                found += [
                    index
                    for (cc, label), index in by_label.items()
                    if cc == c and label.lstrip("-").isdigit() and low <= int(label) <= high
                ]
            elif (c, numbers) in by_label:
                found.append(by_label[(c, numbers)])
        if not found:
            raise ValueError(
                f"keep: no residue {item!r} in the structure (chains {', '.join(chains)})"
            )
        picked += found
    return sorted(set(picked))

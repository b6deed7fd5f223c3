"""The Sampler: thousands of parallel Metropolis-Hastings chains over side-chain chi angles.

Every step, one move (picked at random by weight, the same for all chains) proposes a candidate per
chain; the target scores it (a delta over the changed residues' atoms when only a few residues
move); the fused Metropolis step (:func:`pyslice.mcmc.metropolis_step`) accepts or rejects every
chain in place. Every move leaves exp(-U/kT) invariant, so their random mixture does too, and the
chains sample the Boltzmann distribution exactly (up to convergence, which ``Ensemble.rhat()``
and ``Ensemble.ess()`` measure).

Randomness is counter-based and keyed by (seed, stream, move, step): a run is reproducible from its
seed, and a run resumed from a checkpoint continues bit for bit as if never interrupted. Under
``torch.distributed`` (torchrun), ``n_chains`` are split over the ranks, rank r uses stream r, and
``run()`` gathers the ensemble on rank 0 (other ranks get None).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyslice import _checks
from pyslice._random import derive_seed
from pyslice.io.files import atomic_write
from pyslice.io.progress import ProgressBar
from pyslice.mcmc.ensemble import Ensemble
from pyslice.mcmc.interrupts import DeferredInterrupt, SamplingInterrupted
from pyslice.mcmc.moves import Independence, Move, MoveContext, RandomWalk
from pyslice.mcmc.record import RunRecord
from pyslice.mcmc.replicas import BOLTZMANN_KJ_PER_MOL_K, TemperatureLadder
from pyslice.mcmc.step import ChainState, metropolis_step
from pyslice.mcmc.targets import ChiTarget, ProteinTarget
from pyslice.proposals import Proposal, UniformProposal

__all__ = ["BOLTZMANN_KJ_PER_MOL_K", "Sampler", "SamplingInterrupted"]


_CHECKPOINT_FORMAT = "pyslice-checkpoint-1"
#: Steps between the run's synchronisation points (see Sampler._synchronise).
_SYNC_EVERY = 64
_MOVE_CHOICE, _METROPOLIS, _INIT, _SWAP = 0x6D6F7665, 0x6D657472, 0x696E6974, 0x73776170


class Sampler:
    """Parallel MCMC chains sampling side chains from exp(-U / kT).

    Args:
        protein: a :class:`~pyslice.Protein` (its movable residues' chi angles are sampled), or
            any :class:`~pyslice.mcmc.ChiTarget` (e.g. a FunctionTarget: an analytic energy of
            the angles; then ``energy`` must be None).
        energy: a :class:`~pyslice.ForceFieldEnergy` of the protein (default: amber14 on
            ``device``).
        proposal: the :class:`~pyslice.proposals.Proposal` of the default independence move
            (default: uniform angles, which needs no training data).
        temperature: kelvin, > 0 (default 300 K, or ``temperatures[0]``).
        n_chains: number of chains (in total, over all ranks when distributed), >= 1; with
            ``temperatures``, a multiple of their number (whole replica sets).
        moves: the moves with their weights (default: a residue random walk and a one-residue
            independence move from ``proposal``, equal weights).
        seed: 0 <= seed < 2^64.
        device: where chains live (default: the energy's device, else CPU).
        init: ``"reference"`` (every chain starts from the protein's own conformation),
            ``"proposal"`` (independent draws from ``proposal``: over-dispersed starts for R-hat),
            or a tensor (n_chi,) or (n_chains, n_chi) of angles.
        refresh_every: recompute the chains' full energies every this many steps (moves update
            them by differences; this keeps the reported energies free of round-off drift; the
            acceptance decisions never depend on it). None: never (energies stay running sums of
            the moves' differences).
        temperatures: a replica-exchange ladder (kelvin, increasing, the first the target; see
            :mod:`pyslice.mcmc.replicas`): the chains form sets of ``len(temperatures)``, one at
            each temperature, exchanging neighbouring temperatures exactly every ``swap_every``
            steps; ``run()`` returns the ensemble of the target temperature (one chain per set)
            and ``swap_rates`` the exchange acceptance of each pair.
        swap_every: steps between exchange attempts (alternating even and odd pairs).
    """

    def __init__(
        self,
        protein: Any,
        energy: Any = None,
        proposal: Proposal | None = None,
        temperature: float | None = None,
        n_chains: int = 1024,
        moves: Sequence[Move] | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
        *,
        init: str | torch.Tensor = "reference",
        refresh_every: int | None = 1000,
        temperatures: Sequence[float] | None = None,
        swap_every: int = 1,
    ) -> None:
        self.ladder: TemperatureLadder | None = None
        if temperatures is not None:
            if temperature is not None and temperature != temperatures[0]:
                raise ValueError(
                    f"temperature ({temperature}) must be temperatures[0] ({temperatures[0]}): "
                    "the ladder starts at the target temperature"
                )
            temperature = temperatures[0]
        self.temperature = 300.0 if temperature is None else temperature
        self.swap_every = _checks.check_int("swap_every", swap_every, low=1)
        total = _checks.check_int("n_chains", n_chains, low=1)
        self.seed = _checks.check_int("seed", seed, low=0, high=_checks.MAX_SEED)
        self.refresh_every = (
            None
            if refresh_every is None
            else _checks.check_int("refresh_every", refresh_every, low=1)
        )
        self.rank, self.world_size = _distributed_rank()
        if total < self.world_size:
            raise ValueError(
                f"n_chains ({total}) must be at least the number of ranks ({self.world_size})"
            )
        self.total_chains = total
        # Ranks split whole replica sets (a set's chains swap temperatures with each other).
        per_set = 1 if temperatures is None else len(temperatures)
        if total % per_set:
            raise ValueError(
                f"n_chains ({total}) must be a multiple of len(temperatures) ({per_set})"
            )
        sets = total // per_set
        if sets < self.world_size:
            raise ValueError(f"{sets} replica sets cannot be split over {self.world_size} ranks")
        first_set = self.rank * sets // self.world_size
        self.chain_offset = first_set * per_set
        self.n_chains = (self.rank + 1) * sets // self.world_size * per_set - self.chain_offset
        self.stream = self.rank

        self.target = _make_target(protein, energy, device)
        self.device = self.target.device
        if temperatures is not None:
            self.ladder = TemperatureLadder(temperatures, self.n_chains, first_set, self.device)
        if proposal is None:
            proposal = UniformProposal(
                self.target.n_chi, self.target.group, dtype=self.target.dtype, device=self.device
            )
        elif not isinstance(proposal, Proposal):
            raise TypeError(
                f"proposal must be a pyslice.proposals.Proposal, got {type(proposal).__name__}"
            )
        self.proposal = proposal
        if moves is None:
            moves = [RandomWalk("residue"), Independence(proposal, block=1)]
        self.moves = _check_moves(moves)
        context = MoveContext(
            self.target.n_chi,
            self.target.group,
            self.target.n_groups,
            self.device,
            self.target.dtype,
            chain_offset=self.chain_offset,
            n_chains=self.n_chains,
            all_reduce=_all_reduce if self.world_size > 1 else (lambda tensor: None),
        )
        for move in self.moves:
            move.bind(context)
        self._weights = np.array([m.weight for m in self.moves], dtype=np.float64)
        self._cumulative = np.cumsum(self._weights / self._weights.sum())

        self.step = 0
        chi = self._initial_chi(init)
        energy0, self._cache = self.target.energy(chi)
        n_latent = max(
            (m.proposal.n_latent for m in self.moves if hasattr(m, "proposal")), default=0
        )
        latent = torch.full((self.n_chains, n_latent), -1, dtype=torch.int64, device=self.device)
        self.state = ChainState.create(chi, energy0, latent=latent)
        self._stuck = self._any_stuck()
        self.steps_this_run = 0  # steps the last run() call made (a resumed run: its own)
        self.resumed_at = 0  # steps already done when the last run() call started

    # ------------------------------------------------------------------ set-up

    def _initial_chi(self, init: str | torch.Tensor) -> torch.Tensor:
        n, target = self.n_chains, self.target
        if isinstance(init, torch.Tensor):
            chi = init.to(self.device, target.dtype)
            if chi.shape == (target.n_chi,):
                chi = chi.expand(n, -1)
            elif chi.shape == (self.total_chains, target.n_chi):
                chi = chi[self.chain_offset : self.chain_offset + n]
            else:
                raise ValueError(
                    f"init must have shape ({target.n_chi},) or ({self.total_chains}, "
                    f"{target.n_chi}), got {tuple(init.shape)}"
                )
            _checks.require_finite("init", chi)
            return chi.contiguous().clone()
        if init == "reference":
            return target.reference_chi.expand(n, -1).contiguous().clone()
        if init == "proposal":
            key = derive_seed(self.seed, _INIT)
            draw = self.proposal.sample(n, seed=key, offset=self.chain_offset)
            return draw.chi.to(target.dtype).contiguous()
        raise ValueError(f"init must be 'reference', 'proposal' or a tensor, got {init!r}")

    def __repr__(self) -> str:
        moves = ", ".join(f"{m.name} (w={m.weight:g})" for m in self.moves)
        return (
            f"Sampler(n_chi={self.target.n_chi}, chains={self.n_chains}, "
            f"T={self.temperature} K, device={self.device}, moves: {moves})"
        )

    @property
    def temperature(self) -> float:
        """Kelvin. Settable between runs (an annealing schedule); every run samples exp(-U/kT) at
        the temperature it was started with."""
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        if getattr(self, "ladder", None) is not None:
            raise ValueError("temperature: a replica-exchange sampler's ladder is fixed")
        value = _checks.check_float("temperature", value, positive=True)
        self._temperature = value
        self.beta = 1.0 / (BOLTZMANN_KJ_PER_MOL_K * value)

    @property
    def n_recorded(self) -> int:
        """Chains of this process whose draws the ensemble holds (replica sets with a ladder)."""
        return self.n_chains if self.ladder is None else self.ladder.n_sets

    @property
    def swap_rates(self) -> list[float | None] | None:
        """Replica exchange: the acceptance of each neighbour pair's exchanges (None without a
        ladder; an entry is None before its first attempt)."""
        return None if self.ladder is None else self.ladder.swap_rates()

    @property
    def chi(self) -> torch.Tensor:
        """(n_chains, n_chi) current angles (this rank's chains)."""
        return self.state.chi

    @property
    def energy(self) -> torch.Tensor:
        """(n_chains,) float64 current energies, kJ/mol."""
        return self.state.energy

    # ------------------------------------------------------------------ one step

    def _pick_move(self, step: int) -> int:
        # The same move for every chain of every rank at this step (not keyed by the rank).
        u = derive_seed(self.seed, _MOVE_CHOICE, step) / 2.0**64
        return min(int(np.searchsorted(self._cumulative, u, side="right")), len(self.moves) - 1)

    def _step(self, warmup_progress: float | None) -> tuple[int, Any, torch.Tensor]:
        """Advance every chain by one step; returns (move index, candidate, accepted mask).

        The step never waits for the device (no host synchronisation): value checks of
        pyslice's own arrays are off (``_checks.internal_arrays``), problems are flagged on the
        device and raised by :meth:`_synchronise`."""
        with _checks.internal_arrays():
            return self._step_unchecked(warmup_progress)

    def _step_unchecked(self, warmup_progress: float | None) -> tuple[int, Any, torch.Tensor]:
        t = self.step
        if self.refresh_every is not None and t > 0 and t % self.refresh_every == 0:
            # Before the step, not after it: a refresh that fails (or is interrupted) then
            # leaves the state and step counter consistent, so a resume stays bit-identical.
            self._refresh_energy()
        index = self._pick_move(t)
        move = self.moves[index]
        candidate = move.propose(self.state.chi, derive_seed(self.seed, index, t))
        energy_new, cache_new = self.target.energy_new(
            self._cache, self.state.energy, candidate.chi, candidate.groups, full_rows=self._stuck
        )
        self.state.log_weight.copy_(candidate.log_weight)
        latent_new = None
        if candidate.latent is not None and self.state.latent.shape[1]:
            # The state holds the widest proposal's labels; narrower ones are padded with -1.
            pad = (0, self.state.latent.shape[1] - candidate.latent.shape[1])
            self.state.latent.copy_(torch.nn.functional.pad(candidate.latent, pad, value=-1))
            latent_new = torch.nn.functional.pad(candidate.latent_new, pad, value=-1)
        accepted = metropolis_step(
            self.state,
            candidate.chi,
            energy_new,
            candidate.log_weight_new,
            latent_new,
            beta=self.beta if self.ladder is None else self.ladder.beta,
            seed=derive_seed(self.seed, _METROPOLIS),
            step=t,
            chain_offset=self.chain_offset,
        )
        self._cache = self.target.accept(self._cache, cache_new, accepted)
        if warmup_progress is not None:
            move.adapt(candidate, accepted, warmup_progress)
        if self._stuck:  # waits for the device, but only while some chain is in a clash
            self._stuck = self._any_stuck()
        if self.ladder is not None and (t + 1) % self.swap_every == 0:
            parity = ((t + 1) // self.swap_every) % 2
            self.ladder.swap(self.state.energy, derive_seed(self.seed, _SWAP), t, parity)
        self.step = t + 1
        return index, candidate, accepted

    def _recorded_rows(self) -> torch.Tensor | None:
        """The chains whose state is recorded: all (None), or with a ladder the chain of each
        replica set that is at the target temperature now."""
        return None if self.ladder is None else self.ladder.chains_at(0)

    def _synchronise(self, run: RunRecord) -> None:
        """The points where a run waits for the device (every _SYNC_EVERY steps, at progress
        updates and checkpoints): problems the moves flagged are raised, recorded draws are
        copied to the host. Steps in between never wait."""
        for move in self.moves:
            move.check()
        run.flush()

    def _any_stuck(self) -> bool:
        """Whether some chain's energy is not finite (a host synchronisation)."""
        return not bool(torch.isfinite(self.state.energy).all())

    def _refresh_energy(self) -> None:
        energy, self._cache = self.target.energy(self.state.chi)
        self.state.energy.copy_(energy)
        self._stuck = self._any_stuck()

    # ------------------------------------------------------------------ run

    def run(
        self,
        n_steps: int,
        warmup: int = 0,
        thin: int = 1,
        progress: bool = True,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
    ) -> Ensemble | None:
        """Run ``warmup`` adaptation steps (not recorded), then ``n_steps`` steps recording every
        ``thin``-th state. Returns the :class:`Ensemble` (n_steps // thin draws per chain; on
        rank 0 when distributed, None on other ranks).

        ``checkpoint``: a file path. If it exists and holds this sampler's unfinished run with the
        same arguments, the run resumes from it (bit-identically to an uninterrupted run);
        otherwise a new run starts and writes it every ``checkpoint_every`` steps (default: about
        every 5% of the run), on Ctrl-C (then KeyboardInterrupt is re-raised) and on an error
        raised between steps. It is kept after the run finishes; delete it to start afresh.
        Distributed, every rank reads and writes its own file, ``checkpoint`` + ``.rank{r}``.

        SIGINT (Ctrl-C), SIGTERM (batch schedulers) and SIGHUP (a closed terminal) stop the run
        cleanly: the step under way is finished, the checkpoint written, and
        :class:`SamplingInterrupted` (a KeyboardInterrupt) raised, naming the signal and the
        checkpoint. After a call, ``steps_this_run`` counts the steps it made (a resumed run
        counts only its own) and ``resumed_at`` the steps that were already done.
        """
        n_steps = _checks.check_int("n_steps", n_steps, low=0)
        warmup = _checks.check_int("warmup", warmup, low=0)
        thin = _checks.check_int("thin", thin, low=1)
        total = warmup + n_steps
        if checkpoint_every is None:
            checkpoint_every = max(1, total // 20)
        checkpoint_every = _checks.check_int("checkpoint_every", checkpoint_every, low=1)
        path = None if checkpoint is None else Path(checkpoint)
        if path is not None and not path.parent.is_dir():
            raise FileNotFoundError(f"checkpoint: folder {path.parent} does not exist")
        n_draws = n_steps // thin
        run = RunRecord.empty(self, n_draws, dict(n_steps=n_steps, warmup=warmup, thin=thin))
        if path is not None and self._checkpoint_file(path).exists():
            run = self._load_checkpoint(path, run)

        self._stuck = self._any_stuck()  # the state may have been set since the last check
        bar = ProgressBar(total, self.total_chains, progress and self.rank == 0)
        bar.begin(run.done)
        self.steps_this_run = 0
        self.resumed_at = run.done
        with DeferredInterrupt() as interrupt:
            try:
                while run.done < total:
                    in_warmup = run.done < warmup
                    index, candidate, accepted = self._step(
                        run.done / warmup if in_warmup else None
                    )
                    if in_warmup:
                        run.count_warmup(index, accepted)
                    else:
                        run.count(index, candidate.groups, accepted, self.target.n_groups)
                        taken = run.done - warmup + 1
                        if taken % thin == 0 and taken // thin <= n_draws:
                            run.record(taken // thin - 1, self.state, self._recorded_rows())
                    run.done += 1
                    self.steps_this_run += 1
                    if run.done % _SYNC_EVERY == 0:
                        self._synchronise(run)
                    if path is not None and (run.done % checkpoint_every == 0):
                        self._synchronise(run)
                        self._save_checkpoint(path, run)
                    if interrupt.requested:
                        raise SamplingInterrupted(
                            interrupt.signum,
                            None if path is None else self._checkpoint_file(path),
                            run.done,
                            total,
                        )
                    if bar.due():
                        self._synchronise(run)
                        bar.update(
                            run.done,
                            "warm-up" if run.done <= warmup else "sampling",
                            run.progress_acceptance(),
                            float(self.state.energy.mean()),
                        )
            except BaseException:
                bar.close()
                if path is not None:
                    self._save_checkpoint(path, run)
                raise
        self._synchronise(run)
        if bar.enabled:
            phase = "sampling" if n_steps else "warm-up"
            bar.update(run.done, phase, run.progress_acceptance(), float(self.state.energy.mean()))
        bar.close()
        if self.refresh_every is not None:
            self._refresh_energy()
        if path is not None and run.done != run.saved_at:
            self._save_checkpoint(path, run)
        return self._gather(run.to_ensemble(self))

    def _gather(self, local: Ensemble) -> Ensemble | None:
        if self.world_size == 1:
            return local
        import torch.distributed as dist

        parts: list[Ensemble] | None = [None] * self.world_size if self.rank == 0 else None  # type: ignore[list-item]
        dist.gather_object(local, parts, dst=0)
        if self.rank != 0:
            return None
        return Ensemble.concatenate_chains(parts)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint_file(self, path: Path) -> Path:
        """This rank's file: ``path`` itself, or ``path.rank{r}`` when distributed."""
        return path if self.world_size == 1 else path.with_name(f"{path.name}.rank{self.rank}")

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "n_chains": self.n_chains,
            "total_chains": self.total_chains,
            "stream": self.stream,
            "n_chi": self.target.n_chi,
            "seed": self.seed,
            "temperature": self.temperature,
            "moves": [(type(m).__name__, m.name, m.weight) for m in self.moves],
            "dtype": str(self.target.dtype),
            "refresh_every": self.refresh_every,
            "temperatures": None if self.ladder is None else self.ladder.temperatures,
            "swap_every": self.swap_every,
        }

    def _save_checkpoint(self, path: Path, run: RunRecord) -> None:
        payload = {
            "format": _CHECKPOINT_FORMAT,
            "fingerprint": self._fingerprint(),
            "plan": run.plan,
            "run": run.state_dict(),
            "step": self.step,
            "state": {
                name: getattr(self.state, name).cpu()
                for name in ("chi", "energy", "log_weight", "latent", "accepted")
            },
            "moves": [m.state_dict() for m in self.moves],
            "ladder": None if self.ladder is None else self.ladder.state_dict(),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write(self._checkpoint_file(path), "wb", lambda file: file.write(buffer.getvalue()))
        run.saved_at = run.done

    def _load_checkpoint(self, path: Path, fresh: RunRecord) -> RunRecord:
        source = self._checkpoint_file(path)
        try:
            payload = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 (any unreadable file is the same user error)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(
                f"checkpoint: cannot read {source} (truncated or corrupt: {first}); delete it to "
                "start the run afresh"
            ) from None
        if not isinstance(payload, dict) or payload.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(
                f"checkpoint: {source} is not a pyslice checkpoint; delete it or pass another path"
            )
        mine = self._fingerprint()
        theirs = payload["fingerprint"]
        differs = [k for k in mine if mine[k] != theirs.get(k)]
        if differs:
            raise ValueError(
                f"checkpoint: {source} belongs to a different sampler ({', '.join(differs)} "
                "differ); delete it or pass another path"
            )
        if payload["plan"] != fresh.plan:
            raise ValueError(
                f"checkpoint: {source} was written by run({payload['plan']}), not run("
                f"{fresh.plan}); call run() with the same n_steps, warmup and thin to resume"
            )
        for name, value in payload["state"].items():
            getattr(self.state, name).copy_(value.to(self.device))
        for move, state in zip(self.moves, payload["moves"], strict=True):
            move.load_state_dict(state)
        if self.ladder is not None:
            self.ladder.load_state_dict(payload["ladder"])
        self.step = int(payload["step"])
        self._cache = self.target.cache_from_chi(self.state.chi)
        self._stuck = self._any_stuck()
        fresh.load_state_dict(payload["run"])
        return fresh


def _all_reduce(tensor: torch.Tensor) -> None:
    """Sum ``tensor`` over the ranks in place (the chains' process group)."""
    torch.distributed.all_reduce(tensor)


def _distributed_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _make_target(protein: Any, energy: Any, device: torch.device | str | None) -> ChiTarget:
    if isinstance(protein, ChiTarget):
        if energy is not None:
            raise ValueError("energy must be None when protein is a ChiTarget (it is the energy)")
        if device is not None and torch.device(device) != protein.device:
            raise ValueError(f"device {device} differs from the target's {protein.device}")
        return protein
    if not hasattr(protein, "builder") or not hasattr(protein, "topology"):
        raise TypeError(
            f"protein must be a pyslice.Protein or a ChiTarget, got {type(protein).__name__}"
        )
    if protein.n_chi == 0:
        raise ValueError("protein has no movable chi angles: nothing to sample")
    if device is not None:
        device = _checks.check_device("device", device)
    if energy is None:
        from pyslice.energy.forcefield import ForceFieldEnergy

        energy = ForceFieldEnergy(protein, device=device)
    elif device is not None and torch.device(device) != energy.device:
        raise ValueError(f"device {device} differs from the energy's device {energy.device}")
    return ProteinTarget(protein, energy)


def _check_moves(moves: Sequence[Move]) -> list[Move]:
    if isinstance(moves, Move):
        moves = [moves]
    moves = list(moves)
    if not moves:
        raise ValueError("moves must hold at least one move")
    for k, move in enumerate(moves):
        if not isinstance(move, Move):
            raise TypeError(f"moves[{k}] must be a pyslice.mcmc.Move, got {type(move).__name__}")
    if len({id(m) for m in moves}) != len(moves):
        raise ValueError("moves must not list the same Move object twice")
    return moves

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
import signal
import tempfile
import threading
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
from pyslice.mcmc.moves import Independence, Move, MoveContext, RandomWalk
from pyslice.mcmc.step import ChainState, metropolis_step
from pyslice.mcmc.targets import ChiTarget, ProteinTarget
from pyslice.proposals import Proposal, UniformProposal

__all__ = ["BOLTZMANN_KJ_PER_MOL_K", "Sampler", "SamplingInterrupted"]

#: Molar gas constant R = N_A k_B in kJ/(mol K) (CODATA 2018, as OpenMM uses).
BOLTZMANN_KJ_PER_MOL_K = 0.00831446261815324

_CHECKPOINT_FORMAT = "pyslice-checkpoint-1"
#: Steps between the run's synchronisation points (see Sampler._synchronise).
_SYNC_EVERY = 64
_MOVE_CHOICE, _METROPOLIS, _INIT = 0x6D6F7665, 0x6D657472, 0x696E6974


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
        temperature: kelvin, > 0.
        n_chains: number of chains (in total, over all ranks when distributed), >= 1.
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
    """

    def __init__(
        self,
        protein: Any,
        energy: Any = None,
        proposal: Proposal | None = None,
        temperature: float = 300.0,
        n_chains: int = 1024,
        moves: Sequence[Move] | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
        *,
        init: str | torch.Tensor = "reference",
        refresh_every: int | None = 1000,
    ) -> None:
        self.temperature = temperature
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
        self.chain_offset = self.rank * total // self.world_size
        self.n_chains = (self.rank + 1) * total // self.world_size - self.chain_offset
        self.stream = self.rank

        self.target = _make_target(protein, energy, device)
        self.device = self.target.device
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
        value = _checks.check_float("temperature", value, positive=True)
        self._temperature = value
        self.beta = 1.0 / (BOLTZMANN_KJ_PER_MOL_K * value)

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
            beta=self.beta,
            seed=derive_seed(self.seed, _METROPOLIS),
            step=t,
            chain_offset=self.chain_offset,
        )
        self._cache = self.target.accept(self._cache, cache_new, accepted)
        if warmup_progress is not None:
            move.adapt(candidate, accepted, warmup_progress)
        if self._stuck:  # waits for the device, but only while some chain is in a clash
            self._stuck = self._any_stuck()
        self.step = t + 1
        return index, candidate, accepted

    def _synchronise(self, run: _RunRecord) -> None:
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
        run = _RunRecord.empty(self, n_draws, dict(n_steps=n_steps, warmup=warmup, thin=thin))
        if path is not None and self._checkpoint_file(path).exists():
            run = self._load_checkpoint(path, run)

        self._stuck = self._any_stuck()  # the state may have been set since the last check
        bar = ProgressBar(total, self.total_chains, progress and self.rank == 0)
        bar.begin(run.done)
        self.steps_this_run = 0
        self.resumed_at = run.done
        with _DeferredInterrupt() as interrupt:
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
                            run.record(taken // thin - 1, self.state)
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
        }

    def _save_checkpoint(self, path: Path, run: _RunRecord) -> None:
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
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write(self._checkpoint_file(path), "wb", lambda file: file.write(buffer.getvalue()))
        run.saved_at = run.done

    def _load_checkpoint(self, path: Path, fresh: _RunRecord) -> _RunRecord:
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
        self.step = int(payload["step"])
        self._cache = self.target.cache_from_chi(self.state.chi)
        self._stuck = self._any_stuck()
        fresh.load_state_dict(payload["run"])
        return fresh


class _RunRecord:
    """What one run() accumulates: recorded draws, acceptance counts, steps done.

    Counts of accepted proposals stay on the chains' device and recorded draws wait there until
    :meth:`flush`, so that a step never waits for the device (issue: GPU runs without host
    synchronisation between the sampler's synchronisation points).
    """

    def __init__(self) -> None:
        self.plan: dict[str, int] = {}
        self.done = 0
        self.saved_at = -1
        self.recorded = 0
        self.chi = torch.empty(0)
        self.energy = torch.empty(0)
        self.proposed = np.zeros(0, dtype=np.int64)
        self.accepted = torch.empty(0)
        self.group_proposed = torch.empty(0)
        self.group_accepted = torch.empty(0)
        self.names: list[str] = []
        # Warm-up decisions, counted for the progress line only (not part of the ensemble).
        self.warmup_proposed = np.zeros(0, dtype=np.int64)
        self.warmup_accepted = torch.empty(0)
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    @classmethod
    def empty(cls, sampler: Sampler, n_draws: int, plan: dict[str, int]) -> _RunRecord:
        self = cls()
        self.plan = plan
        self.names = _unique_names([m.name for m in sampler.moves])
        n, n_chi, groups = sampler.n_chains, sampler.target.n_chi, sampler.target.n_groups
        n_moves, device = len(sampler.moves), sampler.device
        self.chi = torch.empty(n_draws, n, n_chi, dtype=torch.float32)
        self.energy = torch.empty(n_draws, n, dtype=torch.float64)
        self.proposed = np.zeros(n_moves, dtype=np.int64)
        self.accepted = torch.zeros(n_moves, dtype=torch.int64, device=device)
        self.warmup_proposed = np.zeros(n_moves, dtype=np.int64)
        self.warmup_accepted = torch.zeros(n_moves, dtype=torch.int64, device=device)
        self.group_proposed = torch.zeros(n_moves, groups, dtype=torch.int64, device=device)
        self.group_accepted = torch.zeros_like(self.group_proposed)
        return self

    def count(
        self, index: int, groups: torch.Tensor | None, accepted: torch.Tensor, n_groups: int
    ) -> None:
        n = accepted.shape[0]
        self.proposed[index] += n
        self.accepted[index] += accepted.sum()
        if groups is None:
            self.group_proposed[index] += n
            self.group_accepted[index] += accepted.sum()
            return
        # index_add with 0/1 weights instead of boolean indexing (no wait for the device).
        valid = (groups >= 0).to(torch.int64).flatten()
        rows = groups.clamp_min(0).flatten()
        hits = accepted.to(torch.int64).unsqueeze(1).expand_as(groups).flatten() * valid
        self.group_proposed[index].index_add_(0, rows, valid)
        self.group_accepted[index].index_add_(0, rows, hits)

    def count_warmup(self, index: int, accepted: torch.Tensor) -> None:
        self.warmup_proposed[index] += accepted.shape[0]
        self.warmup_accepted[index] += accepted.sum()

    def record(self, draw: int, state: ChainState) -> None:
        """Keep draw ``draw`` of the state (a device copy until :meth:`flush`)."""
        self.pending.append((draw, state.chi.detach().clone(), state.energy.detach().clone()))
        self.recorded = draw + 1

    def flush(self) -> None:
        """Copy the recorded draws kept on the device to the host arrays."""
        for draw, chi, energy in self.pending:
            self.chi[draw] = chi.to("cpu", torch.float32)
            self.energy[draw] = energy.to("cpu", torch.float64)
        self.pending.clear()

    @staticmethod
    def _rates(names: list[str], proposed: np.ndarray, accepted: torch.Tensor) -> dict[str, float]:
        counts = accepted.cpu().numpy()
        return {
            name: (a / p if p else float("nan"))
            for name, p, a in zip(names, proposed, counts, strict=True)
        }

    def acceptance(self) -> dict[str, float]:
        return self._rates(self.names, self.proposed, self.accepted)

    def progress_acceptance(self) -> dict[str, float]:
        """Acceptance for the progress line: of the recorded steps once there are any, of the
        warm-up before (NaN for a move not proposed yet)."""
        if self.proposed.sum() > 0:
            return self.acceptance()
        return self._rates(self.names, self.warmup_proposed, self.warmup_accepted)

    def state_dict(self) -> dict[str, Any]:
        self.flush()
        return {
            "done": self.done,
            "recorded": self.recorded,
            "chi": self.chi[: self.recorded].clone(),
            "energy": self.energy[: self.recorded].clone(),
            "proposed": torch.from_numpy(self.proposed.copy()),
            "accepted": self.accepted.cpu(),
            "group_proposed": self.group_proposed.cpu(),
            "group_accepted": self.group_accepted.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = int(state["done"])
        self.recorded = int(state["recorded"])
        self.chi[: self.recorded] = state["chi"]
        self.energy[: self.recorded] = state["energy"]
        self.proposed = state["proposed"].numpy().copy()
        device = self.group_proposed.device
        self.accepted = state["accepted"].to(device)
        self.group_proposed = state["group_proposed"].to(device)
        self.group_accepted = state["group_accepted"].to(device)
        self.saved_at = self.done

    def to_ensemble(self, sampler: Sampler) -> Ensemble:
        target = sampler.target
        group = target.group.cpu()
        chi_names = []
        for column in range(target.n_chi):
            previous = int((group[:column] == group[column]).sum())
            chi_names.append(f"{target.group_names[int(group[column])]} chi{previous + 1}")
        meta = {
            "seed": sampler.seed,
            "n_chains": sampler.total_chains,
            "moves": [
                {"name": name, "type": type(m).__name__, "weight": m.weight}
                for name, m in zip(self.names, sampler.moves, strict=True)
            ],
            **self.plan,
            "first_step": sampler.step - self.done,
        }
        return Ensemble(
            chi=self.chi[: self.recorded],
            energy=self.energy[: self.recorded],
            move_counts={
                name: (int(p), int(a))
                for name, p, a in zip(
                    self.names, self.proposed, self.accepted.cpu().tolist(), strict=True
                )
            },
            group_counts={
                name: torch.stack([self.group_proposed[k], self.group_accepted[k]]).cpu()
                for k, name in enumerate(self.names)
            },
            group_names=list(target.group_names),
            chi_group=group,
            chi_names=chi_names,
            pi_periodic=target.pi_periodic.cpu(),
            temperature=sampler.temperature,
            meta=meta,
            reference_pdb=_reference_pdb(target),
        )


class SamplingInterrupted(KeyboardInterrupt):
    """A run stopped by a signal (Ctrl-C's SIGINT, a batch scheduler's SIGTERM, a closed
    terminal's SIGHUP) after finishing its current step; the checkpoint, if any, was written.
    A KeyboardInterrupt, so code that catches Ctrl-C catches every such stop."""

    def __init__(self, signum: int, checkpoint: Path | None = None, done: int = 0, total: int = 0):
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.checkpoint = checkpoint
        self.done = done
        self.total = total
        where = f"; the run is saved in {checkpoint}" if checkpoint is not None else ""
        super().__init__(f"interrupted by {self.signal_name} after step {done} of {total}{where}")

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by this signal: 128 + its number."""
        return 128 + self.signum


#: Signals that stop a run cleanly (deferred to the end of the step); SIGHUP where it exists.
_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class _DeferredInterrupt:
    """Turns SIGINT, SIGTERM and SIGHUP into a flag checked between steps, so a step is never cut
    in half (the state and the recorded draws stay consistent and the checkpoint resumes
    bit-identically). A second signal of the same kind interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            for signum in _STOP_SIGNALS:
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum == signum:
            raise SamplingInterrupted(signum)
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


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
        device = _available_device(device)
    if energy is None:
        from pyslice.energy.forcefield import ForceFieldEnergy

        energy = ForceFieldEnergy(protein, device=device)
    elif device is not None and torch.device(device) != energy.device:
        raise ValueError(f"device {device} differs from the energy's device {energy.device}")
    return ProteinTarget(protein, energy)


def _available_device(device: torch.device | str) -> torch.device:
    """``device`` as a torch.device that exists here (a clear error for cuda without a GPU)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device}: no CUDA device is available here (use 'cpu')")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


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


def _unique_names(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        candidate, k = name, 2
        while candidate in out:
            candidate, k = f"{name}_{k}", k + 1
        out.append(candidate)
    return out


def _reference_pdb(target: ChiTarget) -> str | None:
    if not isinstance(target, ProteinTarget):
        return None
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "reference.pdb"
        target.protein.to_pdb(file)
        return file.read_text()

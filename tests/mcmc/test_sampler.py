"""The Sampler (pyslice.mcmc.sampler) with its moves, targets and Ensemble.

- exactness: every move kind (random walks, independence of all residues or of blocks, lifted with
  its own posterior or another conditional, a weighted mixture) keeps an analytic torus target
  exp(-U/kT) invariant: chi-square on a 2-D grid of the final states of 10000 chains that start
  from exact draws, at fixed seeds; deliberately wrong samplers fail the same test;
- peptides (GVG: VAL chi1; GLG: LEU chi1, chi2) against the Boltzmann distribution by quadrature
  of the same force field;
- checkpoints: an interrupted (Ctrl-C or error) and resumed run is bit-identical to an
  uninterrupted one; foreign checkpoints are refused;
- Ensemble diagnostics equal ArviZ; files round-trip; bad arguments raise errors naming them.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal

import arviz
import numpy as np
import pytest
import torch
from scipy import special, stats

from pyslice import (
    ChiTarget,
    Ensemble,
    ForceFieldEnergy,
    FunctionTarget,
    Independence,
    Lifted,
    MixtureProposal,
    Move,
    Proposal,
    Protein,
    RandomWalk,
    Sampler,
    UniformProposal,
)
from pyslice.mcmc.replicas import TemperatureLadder
from pyslice.mcmc.sampler import BOLTZMANN_KJ_PER_MOL_K, SamplingInterrupted
from pyslice.proposals import ProposalDraw

F64 = torch.float64
TWO_PI = 2.0 * math.pi
T = 300.0
KT = BOLTZMANN_KJ_PER_MOL_K * T
P_MIN = 1e-3  # p-value threshold; seeds are fixed, so a pass is a pass on every rerun


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These are many small tensor operations: one thread is faster, and far faster on a busy
    2-core machine (where a second OpenMP thread mostly waits)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _wrap(x: np.ndarray) -> np.ndarray:
    return np.remainder(x + math.pi, TWO_PI) - math.pi


# ==================================================================== the analytic torus target
# p(x1, x2) = sum_k w_k c_k: two products of von Mises densities and one correlated component
# (x1 uniform, x1 + x2 ~ vM(2.5, 2.5)), so the columns are dependent and the target multimodal.

WEIGHTS = (0.45, 0.35, 0.20)
PRODUCTS = ((1.0, 4.0, -2.0, 2.0), (-2.0, 3.0, 0.5, 5.0))  # (loc1, kappa1, loc2, kappa2)
SUM_LOC, SUM_KAPPA = 2.5, 2.5


def _vm_norm(kappa: float) -> float:
    return 1.0 / (TWO_PI * float(special.i0(kappa)))


def torus_density(x1, x2):
    """numpy or torch: the normalised target density."""
    lib = torch if isinstance(x1, torch.Tensor) else np
    total = 0.0
    for w, (l1, k1, l2, k2) in zip(WEIGHTS, PRODUCTS):
        total = total + w * _vm_norm(k1) * _vm_norm(k2) * lib.exp(
            k1 * lib.cos(x1 - l1) + k2 * lib.cos(x2 - l2)
        )
    correlated = _vm_norm(SUM_KAPPA) / TWO_PI * lib.exp(SUM_KAPPA * lib.cos(x1 + x2 - SUM_LOC))
    return total + WEIGHTS[2] * correlated


def torus_energy(chi: torch.Tensor) -> torch.Tensor:
    """U = -kT log p in kJ/mol, so exp(-U/kT) at T is p."""
    x = chi.to(F64)
    return -KT * torch.log(torus_density(x[:, 0], x[:, 1]))


def torus_draws(n: int, seed: int) -> torch.Tensor:
    """(n, 2) float64 exact independent draws from the target."""
    rng = np.random.default_rng(seed)
    component = rng.choice(3, size=n, p=WEIGHTS)
    x = np.empty((n, 2))
    for k, (l1, k1, l2, k2) in enumerate(PRODUCTS):
        m = component == k
        x[m, 0] = rng.vonmises(l1, k1, m.sum())
        x[m, 1] = rng.vonmises(l2, k2, m.sum())
    m = component == 2
    x[m, 0] = rng.uniform(-math.pi, math.pi, m.sum())
    x[m, 1] = rng.vonmises(SUM_LOC, SUM_KAPPA, m.sum()) - x[m, 0]
    return torch.from_numpy(_wrap(x))


def _cell_probabilities(density, bins: int, sub: int = 16) -> np.ndarray:
    """(bins, bins) probabilities of the cells of [-pi, pi)^2 (midpoint rule, sub^2 points per
    cell: the error is orders of magnitude below the sampling noise)."""
    m = bins * sub
    x = (np.arange(m) + 0.5) / m * TWO_PI - math.pi
    values = density(x[:, None], x[None, :])
    return values.reshape(bins, sub, bins, sub).sum((1, 3)) * (TWO_PI / m) ** 2


TORUS_BINS = 10
TORUS_CELLS = _cell_probabilities(torus_density, TORUS_BINS)


def chi_square_pvalue(chi: np.ndarray, probabilities: np.ndarray) -> float:
    """p-value of ``chi: (n, 2)`` binned on the grid of ``probabilities: (bins, bins)`` (cells
    expecting fewer than 5 counts pooled)."""
    bins = probabilities.shape[0]
    edges = np.linspace(-math.pi, math.pi, bins + 1)
    x = _wrap(np.asarray(chi, dtype=np.float64))
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], [edges, edges])
    assert counts.sum() == len(x)
    counts = counts.ravel()
    expected = probabilities.ravel() / probabilities.sum() * len(x)
    small = expected < 5
    if small.any():
        counts = np.append(counts[~small], counts[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    return float(stats.chisquare(counts, expected).pvalue)


def _joint(conditional: MixtureProposal | None = None) -> MixtureProposal:
    """One group over both columns, 3 components, deliberately unlike the target."""
    return MixtureProposal(
        torch.tensor([0, 0]),
        torch.tensor([[0.0, 0.5, -0.3]], dtype=F64),
        torch.tensor([[0.5, -1.5, 2.0], [1.0, 0.0, -2.0]], dtype=F64),
        torch.tensor([[1.0, 2.0, 0.5], [0.5, 3.0, 1.0]], dtype=F64),
        conditional=conditional,
    )


def _joint_other() -> MixtureProposal:
    return MixtureProposal(
        torch.tensor([0, 0]),
        torch.tensor([[0.3, 0.0, 0.0]], dtype=F64),
        torch.tensor([[1.0, -2.0, 0.0], [-2.0, 0.5, 2.5]], dtype=F64),
        torch.tensor([[2.0, 2.0, 0.1], [1.0, 3.0, 1.0]], dtype=F64),
    )


def _product(conditional: MixtureProposal | None = None) -> MixtureProposal:
    """One group per column, 2 components each; column 1 pi-periodic (a valid proposal for any
    target: its density f(2 x) is normalised on the circle)."""
    return MixtureProposal(
        torch.tensor([0, 1]),
        torch.tensor([[0.0, 0.4], [0.2, 0.0]], dtype=F64),
        torch.tensor([[1.2, -2.2], [-1.8, 0.7]], dtype=F64),
        torch.tensor([[2.0, 1.0], [1.5, 0.8]], dtype=F64),
        torch.tensor([False, True]),
        conditional=conditional,
    )


def _product_other() -> MixtureProposal:
    return MixtureProposal(
        torch.tensor([0, 1]),
        torch.tensor([[0.0, 0.0], [0.0, 0.5]], dtype=F64),
        torch.tensor([[0.0, 3.0], [1.0, -1.0]], dtype=F64),
        torch.tensor([[1.0, 1.0], [0.5, 2.0]], dtype=F64),
    )


class NoHastings(Independence):
    """WRONG on purpose: independence without the q(x)/q(x') factor."""

    def propose(self, chi, key):
        candidate = super().propose(chi, key)
        candidate.log_weight = torch.zeros_like(candidate.log_weight)
        candidate.log_weight_new = torch.zeros_like(candidate.log_weight_new)
        return candidate


class NoConditional(Lifted):
    """WRONG on purpose: lifted MH without r(k | x), i.e. w = -log q(k, x)."""

    def propose(self, chi, key):
        candidate = super().propose(chi, key)
        r = self.proposal.latent_log_prob
        candidate.log_weight = candidate.log_weight - r(chi, candidate.latent)
        candidate.log_weight_new = candidate.log_weight_new - r(candidate.chi, candidate.latent_new)
        return candidate


class StateDependentWalk(RandomWalk):
    """WRONG on purpose: the step size depends on the current state (10x larger where
    chi1 > 0) and the Hastings factor for that is missing."""

    def propose(self, chi, key):
        candidate = super().propose(chi, key)
        step = torch.remainder(candidate.chi - chi + math.pi, TWO_PI) - math.pi
        scale = torch.where(chi[:, :1] > 0, 2.0, 0.2).to(chi.dtype)
        candidate.chi = torch.remainder(chi + scale * step + math.pi, TWO_PI) - math.pi
        return candidate


TORUS_CASES = {
    # id: (target groups, moves)
    "random_walk_chi": ([0, 1], lambda: [RandomWalk("chi")]),
    "random_walk_residue": ([0, 0], lambda: [RandomWalk("residue")]),
    "independence_all": ([0, 0], lambda: [Independence(_joint())]),
    "independence_block": ([0, 1], lambda: [Independence(_product(), block=1)]),
    "lifted_own_posterior": ([0, 0], lambda: [Lifted(_joint())]),
    "lifted_conditional": ([0, 0], lambda: [Lifted(_joint(conditional=_joint_other()))]),
    "lifted_block": ([0, 1], lambda: [Lifted(_product(conditional=_product_other()), block=1)]),
    "weighted_mix": (
        [0, 0],
        lambda: [
            RandomWalk("chi", weight=2.0),
            RandomWalk("residue", weight=0.5),
            Independence(_product(), weight=1.0),  # proposal groups within the one residue
            Lifted(_joint(), weight=1.0),  # narrower labels than the independence proposal
            Independence(UniformProposal(2), weight=0.5),
        ],
    ),
}
WRONG_CASES = {
    "independence_without_q_ratio": ([0, 0], lambda: [NoHastings(_joint())]),
    "lifted_without_r": ([0, 0], lambda: [NoConditional(_joint())]),
    "random_walk_without_hastings": ([0, 1], lambda: [StateDependentWalk("chi")]),
}
N_TORUS = 10000


def _run_torus(group, moves, *, init=None, warmup=20, n_steps=20, seed=1, n_chains=N_TORUS):
    target = FunctionTarget(torus_energy, 2, group=torch.tensor(group))
    if init is None:
        init = torus_draws(n_chains, seed=100 + seed)
    sampler = Sampler(target, temperature=T, n_chains=n_chains, moves=moves, seed=seed, init=init)
    ensemble = sampler.run(n_steps, warmup=warmup, progress=False)
    return sampler, ensemble, init


def test_torus_oracle_is_consistent() -> None:
    """The test's own pieces agree: the density integrates to 1, the exact draws pass."""
    assert abs(TORUS_CELLS.sum() - 1.0) < 1e-12
    assert chi_square_pvalue(torus_draws(N_TORUS, seed=0).numpy(), TORUS_CELLS) > P_MIN


@pytest.mark.parametrize("case", list(TORUS_CASES))
def test_moves_keep_the_torus_target_invariant(case: str) -> None:
    """Chains started from exact draws must still be exact after warm-up and sampling."""
    group, moves = TORUS_CASES[case]
    # The mix has moves of weight 0.5 of 5: 60 recorded steps propose each with probability
    # 1 - 0.9^60 > 0.998 (20 steps, 1 - 0.9^20 = 0.88, left one unproposed for some seeds).
    n_steps = 60 if case == "weighted_mix" else 20
    sampler, ensemble, init = _run_torus(group, moves(), n_steps=n_steps)
    moved = (sampler.chi != init).any(1).double().mean()
    assert moved > 0.6, f"only {moved:.2f} of the chains moved"  # a no-op cannot pass
    for name, rate in ensemble.acceptance.items():
        assert 0.05 < rate < 0.98, (name, rate)
    p = chi_square_pvalue(ensemble.chi[-1].numpy(), TORUS_CELLS)
    assert p > P_MIN, f"{case}: chi-square p = {p:.2e}"


@pytest.mark.parametrize("case", list(WRONG_CASES))
def test_wrong_samplers_fail_the_torus_test(case: str) -> None:
    group, moves = WRONG_CASES[case]
    _, ensemble, _ = _run_torus(group, moves())
    p = chi_square_pvalue(ensemble.chi[-1].numpy(), TORUS_CELLS)
    assert p < P_MIN, f"{case}: a wrong sampler passed (p = {p:.2e})"


def test_mixture_of_moves_converges_from_a_bad_start() -> None:
    """From one improbable point, warm-up plus sampling reaches the target."""
    group, moves = TORUS_CASES["weighted_mix"]
    start = torch.tensor([-3.0, 2.6], dtype=F64)  # density 1e-3 of the largest
    x = (torch.arange(200, dtype=F64) + 0.5) / 200 * TWO_PI - math.pi
    lowest = float(torus_energy(torch.cartesian_prod(x, x)).min())
    assert float(torus_energy(start[None])) > lowest + 6 * KT
    _, ensemble, _ = _run_torus(group, moves(), init=start, warmup=40, n_steps=40, seed=2)
    p = chi_square_pvalue(ensemble.chi[-1].numpy(), TORUS_CELLS)
    assert p > P_MIN, p


# ==================================================================== peptides vs quadrature


@functools.cache
def _peptide(seq: str):
    """(protein, energy, Boltzmann weights on a grid of cell midpoints, grid size)."""
    protein = Protein.from_sequence(seq)
    energy = ForceFieldEnergy(protein)
    n = 720 if protein.n_chi == 1 else 180
    x = (torch.arange(n, dtype=F64) + 0.5) / n * TWO_PI - math.pi
    grid = x[:, None] if protein.n_chi == 1 else torch.cartesian_prod(x, x)
    u = energy(protein.build(grid)).to(F64)
    weights = torch.exp(-(u - u.min()) / KT)
    weights = (weights / weights.sum()).reshape((n,) * protein.n_chi).numpy()
    return protein, energy, weights, n


def _quadrature_cdf(weights: np.ndarray, column: int):
    marginal = weights if weights.ndim == 1 else weights.sum(axis=1 - column)
    n = marginal.shape[0]
    edges = np.linspace(-math.pi, math.pi, n + 1)
    cdf = np.concatenate([[0.0], np.cumsum(marginal)])
    return lambda x: np.interp(x, edges, cdf)


def _grid_mixture(weights: np.ndarray, cells: int = 18, kappa: float = 30.0) -> MixtureProposal:
    """A von Mises mixture proposal with a component at every coarse cell holding > 0.1% of
    the quadrature mass (close to, but not equal to, the target), plus a 10% uniform component:
    without heavy tails, chains that reach a minor minimum where q is ~1e-12 stay there for
    ages (independence MH needs p/q bounded), which a 200-step test sees as non-convergence."""
    d, n = weights.ndim, weights.shape[0]
    split = [size for _ in range(d) for size in (cells, n // cells)]
    mass = weights.reshape(split).sum(axis=tuple(range(1, 2 * d, 2)))
    centres = (np.arange(cells) + 0.5) / cells * TWO_PI - math.pi
    index = np.argwhere(mass > 1e-3)
    loc = torch.tensor(np.concatenate([centres[index.T], np.zeros((d, 1))], 1))
    kappa_all = torch.full_like(loc, kappa)
    kappa_all[:, -1] = 0.0
    logits = np.log(np.append(0.9 * mass[tuple(index.T)] / mass[tuple(index.T)].sum(), 0.1))
    return MixtureProposal(
        torch.zeros(d, dtype=torch.int64), torch.tensor(logits)[None], loc, kappa_all
    )


def _quadrature_draws(weights: np.ndarray, n: int, seed: int) -> torch.Tensor:
    """Approximate draws (a grid cell by its weight, uniform within it): a start near
    equilibrium for slowly mixing moves."""
    rng = np.random.default_rng(seed)
    size = weights.shape[0]
    flat = rng.choice(weights.size, size=n, p=weights.ravel())
    cell = np.stack(np.unravel_index(flat, weights.shape), 1)
    x = (cell + rng.uniform(size=cell.shape)) / size * TWO_PI - math.pi
    return torch.from_numpy(x)


@pytest.mark.parametrize(
    ("seq", "moves"),
    [("GVG", "default"), ("GVG", "mixture"), ("GLG", "default"), ("GLG", "mixture")],
)
def test_peptide_matches_quadrature(seq: str, moves: str) -> None:
    protein, energy, weights, n = _peptide(seq)
    init: str | torch.Tensor = "reference"
    if moves == "mixture":
        move_list = [RandomWalk("residue"), Independence(_grid_mixture(weights))]
    else:
        move_list = None  # residue random walk + one-residue uniform independence
        if seq == "GLG":  # uniform proposals mix LEU slowly: start near equilibrium instead
            init = _quadrature_draws(weights, 400, seed=1)
    sampler = Sampler(
        protein, energy, temperature=T, n_chains=400, moves=move_list, seed=3, init=init
    )
    ensemble = sampler.run(150, warmup=50, thin=50, progress=False)
    assert ensemble.chi.shape == (3, 400, protein.n_chi)
    # The final state of every chain: independent draws.
    final = ensemble.chi[-1].to(F64).numpy()
    for column in range(protein.n_chi):
        p = stats.kstest(final[:, column], _quadrature_cdf(weights, column)).pvalue
        assert p > P_MIN, (seq, moves, column, p)
    if protein.n_chi == 2:
        cells = weights.reshape(6, n // 6, 6, n // 6).sum((1, 3))
        p = chi_square_pvalue(final, cells)
        assert p > P_MIN, (seq, moves, p)
    # The energies the sampler reports are the force field's.
    built = energy(protein.build(ensemble.chi[-1].to(F64))).to(F64)
    torch.testing.assert_close(ensemble.energy[-1], built, rtol=0, atol=1e-2)


def test_peptide_test_rejects_a_wrong_temperature() -> None:
    """The quadrature comparison has power: GLG sampled at 400 K instead of 300 K fails it."""
    protein, energy, weights, n = _peptide("GLG")
    sampler = Sampler(
        protein,
        energy,
        temperature=400.0,
        n_chains=400,
        moves=[RandomWalk("residue"), Independence(_grid_mixture(weights))],
        seed=3,
    )
    final = sampler.run(150, warmup=50, thin=50, progress=False).chi[-1].to(F64).numpy()
    p_ks = min(stats.kstest(final[:, c], _quadrature_cdf(weights, c)).pvalue for c in range(2))
    p_grid = chi_square_pvalue(final, weights.reshape(6, n // 6, 6, n // 6).sum((1, 3)))
    assert min(p_ks, p_grid) < P_MIN, (p_ks, p_grid)


# ==================================================================== checkpoints


class CountingEnergy:
    """The torus energy; at call ``interrupt_at`` it sends this process ``signum`` (SIGINT: a
    Ctrl-C), at call ``raise_at`` it raises."""

    def __init__(
        self,
        interrupt_at: int | None = None,
        raise_at: int | None = None,
        signum: int = signal.SIGINT,
    ) -> None:
        self.calls = 0
        self.interrupt_at = interrupt_at
        self.raise_at = raise_at
        self.signum = signum

    def __call__(self, chi: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.interrupt_at:
            os.kill(os.getpid(), self.signum)
        if self.calls == self.raise_at:
            raise RuntimeError("energy failed")
        return torus_energy(chi)


PLAN = dict(n_steps=24, warmup=12, thin=2, progress=False)


def _checkpoint_sampler(energy, seed: int = 7, refresh_every: int | None = 1000) -> Sampler:
    target = FunctionTarget(energy, 2, group=torch.tensor([0, 0]))
    moves = [
        RandomWalk("chi"),
        RandomWalk("residue", weight=0.5),
        Independence(_product()),
        Lifted(_joint(conditional=_joint_other())),
    ]
    return Sampler(
        target,
        temperature=T,
        n_chains=64,
        moves=moves,
        seed=seed,
        init="proposal",
        refresh_every=refresh_every,
    )


def _assert_same_run(a: Sampler, ens_a: Ensemble, b: Sampler, ens_b: Ensemble) -> None:
    assert torch.equal(ens_a.chi, ens_b.chi)
    assert torch.equal(ens_a.energy, ens_b.energy)
    assert ens_a.move_counts == ens_b.move_counts
    assert ens_a.group_counts.keys() == ens_b.group_counts.keys()
    for name in ens_a.group_counts:
        assert torch.equal(ens_a.group_counts[name], ens_b.group_counts[name])
    assert ens_a.meta == ens_b.meta
    assert a.step == b.step
    for name in ("chi", "energy", "log_weight", "latent"):
        assert torch.equal(getattr(a.state, name), getattr(b.state, name)), name
    for move_a, move_b in zip(a.moves, b.moves):
        if isinstance(move_a, RandomWalk):
            assert torch.equal(move_a.step_size, move_b.step_size)
            assert move_a.adapt_steps == move_b.adapt_steps


@pytest.mark.parametrize(
    ("stop", "refresh_every"),
    [
        ("ctrl_c_in_warmup", 1000),
        ("ctrl_c_in_sampling", 1000),
        ("error_in_sampling", 1000),
        ("ctrl_c_in_sampling", 5),
        ("error_in_refresh", 5),
    ],
)
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, stop, refresh_every) -> None:
    reference = _checkpoint_sampler(CountingEnergy(), refresh_every=refresh_every)
    expected = reference.run(**PLAN)

    # Energy calls: 1 = the initial energies; step t (from 0) makes call t + 2, except that
    # refresh_every=5: step 0-4 calls 2-6, the refresh before step 5 call 7, step 5 call 8, ...,
    # the refresh before step 15 call 19.
    at = {
        "ctrl_c_in_warmup": 7,
        "ctrl_c_in_sampling": 23,
        "error_in_sampling": 23,
        "error_in_refresh": 19,
    }[stop]
    path = tmp_path / "run.ckpt"
    handler = signal.getsignal(signal.SIGINT)
    if stop.startswith("ctrl_c"):
        energy = CountingEnergy(interrupt_at=at)
        first = _checkpoint_sampler(energy, refresh_every=refresh_every)
        with pytest.raises(KeyboardInterrupt):
            first.run(**PLAN, checkpoint=path, checkpoint_every=4)
    else:
        energy = CountingEnergy(raise_at=at)
        first = _checkpoint_sampler(energy, refresh_every=refresh_every)
        with pytest.raises(RuntimeError, match="energy failed"):
            first.run(**PLAN, checkpoint=path, checkpoint_every=4)
    assert signal.getsignal(signal.SIGINT) is handler  # the Ctrl-C handler is restored
    assert path.exists()
    saved = torch.load(path, weights_only=True)
    if stop.startswith("ctrl_c") and refresh_every == 1000:
        # Ctrl-C is deferred: the step under way when it came (t = at - 2) was completed.
        assert saved["run"]["done"] == at - 1
    assert 0 < saved["run"]["done"] < PLAN["n_steps"] + PLAN["warmup"]

    resumed = _checkpoint_sampler(CountingEnergy(), refresh_every=refresh_every)
    got = resumed.run(**PLAN, checkpoint=path)
    _assert_same_run(reference, expected, resumed, got)

    # The finished checkpoint is kept: running again returns the same ensemble without steps.
    again = _checkpoint_sampler(CountingEnergy(), refresh_every=refresh_every)
    _assert_same_run(reference, expected, again, again.run(**PLAN, checkpoint=path))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_like_ctrl_c_and_resume_bit_identically(tmp_path, signum) -> None:
    reference = _checkpoint_sampler(CountingEnergy())
    expected = reference.run(**PLAN)
    path = tmp_path / "run.ckpt"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    first = _checkpoint_sampler(CountingEnergy(interrupt_at=23, signum=signum))
    with pytest.raises(SamplingInterrupted) as stopped:
        first.run(**PLAN, checkpoint=path, checkpoint_every=4)
    # the step under way was finished, the checkpoint written and named, the handlers restored
    assert stopped.value.signum == signum and stopped.value.exit_status == 128 + signum
    assert stopped.value.checkpoint == path and str(path) in str(stopped.value)
    assert signal.Signals(signum).name in str(stopped.value)
    assert isinstance(stopped.value, KeyboardInterrupt)
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    saved = torch.load(path, weights_only=True)
    assert saved["run"]["done"] == 22 == stopped.value.done
    resumed = _checkpoint_sampler(CountingEnergy())
    got = resumed.run(**PLAN, checkpoint=path)
    _assert_same_run(reference, expected, resumed, got)
    # the resumed call counts only the steps it made (throughput after a resume)
    total = PLAN["n_steps"] + PLAN["warmup"]
    assert (resumed.resumed_at, resumed.steps_this_run) == (22, total - 22)
    assert (reference.resumed_at, reference.steps_this_run) == (0, total)


def test_checkpointing_does_not_change_the_run(tmp_path) -> None:
    plain = _checkpoint_sampler(CountingEnergy())
    with_file = _checkpoint_sampler(CountingEnergy())
    _assert_same_run(
        plain,
        plain.run(**PLAN),
        with_file,
        with_file.run(**PLAN, checkpoint=tmp_path / "c.pt", checkpoint_every=1),
    )


def test_foreign_checkpoints_are_refused(tmp_path) -> None:
    path = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        _checkpoint_sampler(CountingEnergy(interrupt_at=10)).run(**PLAN, checkpoint=path)
    with pytest.raises(ValueError, match=r"different sampler \(seed differ"):
        _checkpoint_sampler(CountingEnergy(), seed=8).run(**PLAN, checkpoint=path)
    with pytest.raises(ValueError, match="refresh_every"):
        _checkpoint_sampler(CountingEnergy(), refresh_every=3).run(**PLAN, checkpoint=path)
    other_plan = dict(PLAN, n_steps=30)
    with pytest.raises(ValueError, match=r"run\(.*same n_steps, warmup and thin"):
        _checkpoint_sampler(CountingEnergy()).run(**other_plan, checkpoint=path)
    with pytest.raises(ValueError, match="thin"):
        _checkpoint_sampler(CountingEnergy()).run(**dict(PLAN, thin=3), checkpoint=path)
    not_ours = tmp_path / "other.pt"
    torch.save({"format": "something else"}, not_ours)
    with pytest.raises(ValueError, match="not a pyslice checkpoint"):
        _checkpoint_sampler(CountingEnergy()).run(**PLAN, checkpoint=not_ours)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="cannot read"):
        _checkpoint_sampler(CountingEnergy()).run(**PLAN, checkpoint=garbage)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        _checkpoint_sampler(CountingEnergy()).run(**PLAN, checkpoint=tmp_path / "no" / "c.pt")


class InterruptingForceField:
    """A ForceFieldEnergy that sends SIGINT at its ``interrupt_at``-th evaluation (full or
    delta); everything else is the wrapped energy's."""

    def __init__(self, inner, interrupt_at: int | None = None) -> None:
        self.inner = inner
        self.interrupt_at = interrupt_at
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _tick(self) -> None:
        self.calls += 1
        if self.calls == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)

    def __call__(self, positions):
        self._tick()
        return self.inner(positions)

    def delta(self, *args, **kwargs):
        self._tick()
        return self.inner.delta(*args, **kwargs)


def test_protein_checkpoint_resume_is_bit_identical(tmp_path) -> None:
    protein, energy, _, _ = _peptide("GVG")
    plan = dict(n_steps=16, warmup=8, progress=False)

    def make(interrupt_at=None) -> Sampler:
        return Sampler(
            protein,
            InterruptingForceField(energy, interrupt_at),
            temperature=T,
            n_chains=12,
            seed=5,
            init="proposal",
        )

    reference = make()
    expected = reference.run(**plan)
    path = tmp_path / "gvg.ckpt"
    with pytest.raises(KeyboardInterrupt):
        make(interrupt_at=15).run(**plan, checkpoint=path, checkpoint_every=5)
    resumed = make()
    got = resumed.run(**plan, checkpoint=path)
    _assert_same_run(reference, expected, resumed, got)
    assert got.reference_pdb is not None and "ATOM" in got.reference_pdb
    assert got.chi_names == ["VAL2 chi1"] and got.group_names == ["VAL2"]


# ==================================================================== diagnostics vs ArviZ


def _ensemble(chi: np.ndarray, energy: np.ndarray | None = None) -> Ensemble:
    draws, chains, n_chi = chi.shape
    if energy is None:
        energy = np.zeros((draws, chains))
    return Ensemble(
        chi=torch.as_tensor(chi, dtype=torch.float32),
        energy=torch.as_tensor(energy, dtype=F64),
        move_counts={"m": (10, 4)},
        group_counts={"m": torch.tensor([[10] * n_chi, [4] * n_chi])},
        group_names=[f"R{j}" for j in range(n_chi)],
        chi_group=torch.arange(n_chi),
        chi_names=[f"R{j} chi1" for j in range(n_chi)],
        pi_periodic=torch.zeros(n_chi, dtype=torch.bool),
        temperature=T,
    )


@pytest.fixture(scope="module")
def sampled() -> Ensemble:
    """A short real run: 6 chains of 200 draws, slow random walk (R-hat visibly above 1)."""
    target = FunctionTarget(torus_energy, 2)
    sampler = Sampler(
        target,
        temperature=T,
        n_chains=6,
        moves=[RandomWalk("chi", step_size=0.2, adapt=False)],
        seed=4,
        init="proposal",
    )
    return sampler.run(201, warmup=0, progress=False)  # odd: split R-hat drops a draw


def _by_chain(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """(draws, chains) -> ArviZ's (chain, draw)."""
    return np.ascontiguousarray(np.asarray(x, dtype=np.float64).T)


def test_rhat_and_ess_equal_arviz(sampled: Ensemble) -> None:
    chi = sampled.chi.to(F64).numpy()
    rhat = sampled.rhat(circular=False)
    assert rhat.shape == (2,)
    for j in range(2):
        assert rhat[j] == pytest.approx(float(arviz.rhat(_by_chain(chi[:, :, j]))), abs=1e-10)
        for kind in ("bulk", "tail", "mean"):
            got = sampled.ess(kind, circular=False)[j]
            want = float(arviz.ess(_by_chain(chi[:, :, j]), method=kind))
            assert got == pytest.approx(want, rel=1e-10), (j, kind)
        # Circular: the worse of sine and cosine.
        sin, cos = np.sin(chi[:, :, j]), np.cos(chi[:, :, j])
        want_rhat = max(float(arviz.rhat(_by_chain(s))) for s in (sin, cos))
        assert sampled.rhat()[j] == pytest.approx(want_rhat, abs=1e-10)
        for kind in ("bulk", "tail"):
            want = min(float(arviz.ess(_by_chain(s), method=kind)) for s in (sin, cos))
            assert sampled.ess(kind)[j] == pytest.approx(want, rel=1e-10)
    energy = sampled.energy.numpy()
    assert sampled.energy_rhat() == pytest.approx(float(arviz.rhat(_by_chain(energy))), abs=1e-10)
    assert sampled.energy_ess() == pytest.approx(float(arviz.ess(_by_chain(energy))), rel=1e-10)
    assert sampled.rhat().max() > 1.01  # slow chains are flagged (the comparison is not trivial)


def _ar_chains(centre: float, rho: float, seed: int, draws=1000, chains=4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.zeros((draws, chains))
    y[0] = rng.normal(0.0, 0.3, chains)
    for t in range(1, draws):
        y[t] = rho * y[t - 1] + math.sqrt(1 - rho**2) * rng.normal(0.0, 0.3, chains)
    return _wrap(centre + y)[:, :, None]


def test_circular_diagnostics_do_not_see_the_cut_at_pi() -> None:
    """Chains sitting at +-pi are judged as if they sat anywhere else on the circle.

    (Raw rank-normalised R-hat does not flag well-mixed chains at +-pi either: the wrap is a
    bijection, so equal circular distributions are equal raw ones. Its failure at the cut is the
    opposite one: the jumps between -pi and pi look like fast mixing and hide slow chains.)
    """
    # Well-mixed chains straddling +-pi are converged.
    iid = _ensemble(_ar_chains(math.pi, 0.0, seed=1))
    assert iid.rhat()[0] < 1.01
    # The same slowly mixing chains near 0 and near +-pi: the circular statistics agree,
    # whereas the raw angles jump between -pi and pi and overstate the ESS at the cut.
    at_zero = _ensemble(_ar_chains(0.0, 0.9, seed=2))
    at_pi = _ensemble(_ar_chains(math.pi, 0.9, seed=2))
    assert at_pi.rhat()[0] == pytest.approx(at_zero.rhat()[0], rel=1e-6)
    assert at_pi.ess()[0] == pytest.approx(at_zero.ess()[0], rel=1e-6)
    assert at_zero.rhat(circular=False)[0] == pytest.approx(at_zero.rhat()[0], rel=1e-3)
    assert at_pi.ess(circular=False)[0] > 2 * at_pi.ess()[0]
    # Chains in different places on either side of the cut are flagged.
    split = _ar_chains(math.pi, 0.0, seed=3)
    split[:, :2] = _wrap(split[:, :2] + 0.8)
    split[:, 2:] = _wrap(split[:, 2:] - 0.8)
    assert _ensemble(split).rhat()[0] > 1.5


def test_diagnostics_of_short_ensembles_are_nan_and_summary_is_json() -> None:
    for draws in (3, 0):  # too few draws, and none at all
        short = _ensemble(np.zeros((draws, 2, 1)))
        assert np.isnan(short.rhat()).all() and np.isnan(short.ess()).all()
        summary = short.summary()
        assert summary["rhat_max"] is None and summary["energy_rhat"] is None
        assert summary["converged"] is False and "too few draws" in summary["convergence_problems"]
        json.dumps(summary)


# ==================================================================== ensembles


def test_ensemble_save_load_round_trip(tmp_path, sampled: Ensemble) -> None:
    protein, energy, _, _ = _peptide("GVG")
    gvg = Sampler(protein, energy, n_chains=3, seed=1).run(6, progress=False)
    for ensemble in (sampled, gvg):
        path = tmp_path / "e.npz"
        ensemble.save(path)
        loaded = Ensemble.load(path)
        for name in ("chi", "energy", "chi_group", "pi_periodic"):
            a, b = getattr(ensemble, name), getattr(loaded, name)
            assert a.dtype == b.dtype and torch.equal(a, b), name
        assert loaded.move_counts == ensemble.move_counts
        assert loaded.group_counts.keys() == ensemble.group_counts.keys()
        for k in ensemble.group_counts:
            assert torch.equal(loaded.group_counts[k], ensemble.group_counts[k])
        for name in ("group_names", "chi_names", "temperature", "meta", "reference_pdb"):
            assert getattr(loaded, name) == getattr(ensemble, name), name
        assert loaded.summary() == ensemble.summary()
    assert gvg.reference_pdb is not None
    np.savez(tmp_path / "plain.npz", chi=np.zeros(3))
    with pytest.raises(ValueError, match="not a pyslice ensemble"):
        Ensemble.load(tmp_path / "plain.npz")
    # empty, truncated and text files: a ValueError naming the path, never a numpy traceback
    whole = (tmp_path / "e.npz").read_bytes()
    for name, content in (("empty", b""), ("half", whole[: len(whole) // 2]), ("text", b"hi")):
        (tmp_path / f"{name}.npz").write_bytes(content)
        with pytest.raises(ValueError, match=f"{name}.npz is not a pyslice ensemble"):
            Ensemble.load(tmp_path / f"{name}.npz")
    with pytest.raises(FileNotFoundError, match="no such file"):
        Ensemble.load(tmp_path / "missing.npz")


def test_concatenate_chains(sampled: Ensemble) -> None:
    parts = []
    for chains in (slice(0, 2), slice(2, 6)):
        part = _ensemble(sampled.chi[:, chains].numpy(), sampled.energy[:, chains].numpy())
        parts.append(part)
    whole = Ensemble.concatenate_chains(parts)
    assert torch.equal(whole.chi, sampled.chi) and torch.equal(whole.energy, sampled.energy)
    assert whole.move_counts == {"m": (20, 8)}
    assert torch.equal(whole.group_counts["m"], torch.tensor([[20, 20], [8, 8]]))
    assert whole.n_chains == 6 and whole.n_draws == sampled.n_draws
    with pytest.raises(ValueError, match="parts"):
        Ensemble.concatenate_chains([])


def test_summary_and_counts(sampled: Ensemble) -> None:
    summary = sampled.summary()
    text = json.dumps(summary)
    assert json.loads(text)["chains"] == 6
    assert summary["draws"] == 201 and summary["n_chi"] == 2
    assert [c["name"] for c in summary["per_chi"]] == ["group0 chi1", "group1 chi1"]
    assert summary["meta"]["seed"] == 4 and summary["meta"]["n_steps"] == 201
    # Group counts: each random-walk step on one chi touches exactly one group.
    proposed, accepted = sampled.move_counts["random_walk_chi"]
    counts = sampled.group_counts["random_walk_chi"]
    assert proposed == 6 * 201 and int(counts[0].sum()) == proposed
    assert int(counts[1].sum()) == accepted
    acceptance = sampled.group_acceptance["random_walk_chi"]
    assert acceptance.shape == (2,) and bool(((acceptance > 0) & (acceptance < 1)).all())
    assert "acceptance" in repr(sampled)


# ==================================================================== validation


class NaNProposal(Proposal):
    """Uniform draws whose log-density (``what="log_q"``) or angles (``what="chi"``) are NaN;
    ``where="current"``: NaN only for angles above 3 (never drawn, so only at the start)."""

    def __init__(self, what: str, where: str = "all") -> None:
        self.n_chi = 2
        self.group = torch.tensor([0, 0])
        self.what, self.where = what, where

    def _bad(self, chi: torch.Tensor) -> torch.Tensor:
        if self.where == "all":
            return torch.ones(chi.shape[0], dtype=torch.bool)
        return chi[:, 0] > 3.0

    def sample(self, n, *, seed, offset=0):
        gen = torch.Generator().manual_seed(seed & (2**63 - 1))
        chi = torch.rand(n, 2, generator=gen, dtype=F64) * 5.0 - 2.5
        if self.what == "chi":
            chi[0, 0] = math.nan
        return ProposalDraw(chi, self.log_prob(chi), torch.zeros(n, 0, dtype=torch.int64))

    def log_prob(self, chi, latent=None):
        out = torch.full((chi.shape[0],), -2 * math.log(5.0), dtype=F64)
        if self.what == "log_q":
            out[self._bad(chi)] = math.nan
        return out

    def sample_block(self, chi, block, *, seed, offset=0):
        raise NotImplementedError

    def block_log_prob(self, chi, block, latent=None):
        raise NotImplementedError


def _target(group=(0, 0)) -> FunctionTarget:
    return FunctionTarget(torus_energy, 2, group=torch.tensor(group))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(n_chains=0), ValueError, "n_chains"),
        (dict(n_chains=2.5), TypeError, "n_chains"),
        (dict(temperature=0.0), ValueError, "temperature"),
        (dict(temperature=-5.0), ValueError, "temperature"),
        (dict(temperature=math.nan), ValueError, "temperature"),
        (dict(temperature=math.inf), ValueError, "temperature"),
        (dict(temperature="300"), TypeError, "temperature"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed=2**64), ValueError, "seed"),
        (dict(refresh_every=0), ValueError, "refresh_every"),
        (dict(moves=[]), ValueError, "moves"),
        (dict(moves=[RandomWalk(), "walk"]), TypeError, r"moves\[1\]"),
        (dict(moves=[Independence(UniformProposal(3))]), ValueError, "n_chi"),
        (dict(proposal="uniform"), TypeError, "proposal"),
        (dict(init=torch.zeros(3)), ValueError, "init"),
        (dict(init=torch.zeros(5, 2)), ValueError, "init"),
        (dict(init=torch.tensor([math.nan, 0.0])), ValueError, "init"),
        (dict(init="random"), ValueError, "init"),
        (dict(energy=torus_energy), ValueError, "energy"),
    ],
)
def test_sampler_rejects_bad_arguments(kwargs, error, match) -> None:
    args = dict(temperature=T, n_chains=4, seed=0)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        Sampler(_target(), **args)


def test_sampler_on_cuda_without_a_gpu_is_a_clear_error() -> None:
    protein = Protein.from_sequence("GVG")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            Sampler(protein, device="cuda")
    with pytest.raises(ValueError, match="device must be"):
        Sampler(protein, device="banana")


def test_a_chain_starting_in_a_clash_leaves_it() -> None:
    """A chain whose current energy is +inf scores its proposals by full energies (inf - inf
    would be NaN, always rejected): the first finite proposal is accepted."""
    protein, energy, _, _ = _peptide("GVG")
    sampler = Sampler(
        protein, energy, temperature=T, n_chains=8, seed=2, moves=[RandomWalk("residue")]
    )
    sampler.state.energy[:4] = math.inf  # chains 0-3 "start in a clash"
    sampler.run(3, progress=False)
    assert bool(torch.isfinite(sampler.state.energy).all())
    assert bool((sampler.state.accepted[:4] >= 1).all())
    # their energies are now the true ones, not a running sum from +inf
    expected = energy(protein.build(sampler.state.chi.to(torch.float64)).to(energy.dtype))
    torch.testing.assert_close(sampler.state.energy, expected, rtol=1e-6, atol=1e-3)


def test_sampler_rejects_bad_protein_and_repeated_moves() -> None:
    with pytest.raises(TypeError, match="protein"):
        Sampler("GVG")
    with pytest.raises(ValueError, match="no movable chi"):
        Sampler(Protein.from_sequence("GG"))
    walk = RandomWalk()
    with pytest.raises(ValueError, match="same Move"):
        Sampler(_target(), n_chains=2, moves=[walk, walk])
    one = Sampler(_target(), n_chains=2, moves=walk)  # a single Move is accepted
    assert one.moves == [walk]
    with pytest.raises(ValueError, match="device"):
        Sampler(_target(), device="meta")
    with pytest.raises(ValueError, match="group spans several residues"):
        Sampler(_target(group=(0, 1)), n_chains=2, moves=[Independence(_joint())])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_steps=-1), "n_steps"),
        (dict(warmup=-1), "warmup"),
        (dict(thin=0), "thin"),
        (dict(checkpoint_every=0), "checkpoint_every"),
    ],
)
def test_run_rejects_bad_arguments(kwargs, match) -> None:
    sampler = Sampler(_target(), n_chains=2)
    args = dict(n_steps=2, progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sampler.run(**args)


@pytest.mark.parametrize(
    ("what", "where"), [("log_q", "all"), ("chi", "all"), ("log_q", "current")]
)
def test_bad_proposal_outputs_raise(what: str, where: str) -> None:
    init = torch.tensor([3.1, 0.0]) if where == "current" else "reference"
    sampler = Sampler(
        _target(), n_chains=4, moves=[Independence(NaNProposal(what, where))], init=init
    )
    with pytest.raises(ValueError, match=f"NaN in {what}|non-finite {what}"):
        sampler.run(3, progress=False)


def test_moves_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="scope"):
        RandomWalk("atom")
    with pytest.raises(ValueError, match="step_size"):
        RandomWalk(step_size=0.0)
    with pytest.raises(ValueError, match="target_acceptance"):
        RandomWalk(target_acceptance=1.0)
    with pytest.raises(ValueError, match="weight"):
        RandomWalk(weight=-1.0)
    with pytest.raises(TypeError, match="proposal"):
        Independence("uniform")
    with pytest.raises(ValueError, match="block"):
        Independence(UniformProposal(2), block=0)
    with pytest.raises(ValueError, match="latent"):
        Lifted(UniformProposal(2))
    with pytest.raises(RuntimeError, match="not bound"):
        RandomWalk().propose(torch.zeros(2, 2), 0)
    with pytest.raises(ValueError, match="energy must return"):
        Sampler(FunctionTarget(lambda chi: chi, 2))
    with pytest.raises(TypeError, match="energy"):
        FunctionTarget("U", 2)
    assert issubclass(FunctionTarget, ChiTarget) and issubclass(RandomWalk, Move)


# ==================================================================== reproducibility, adaptation


def _small(seed: int, **kwargs) -> Sampler:
    moves = [RandomWalk("chi"), Independence(_product(), block=1), Lifted(_product())]
    return Sampler(_target((0, 1)), temperature=T, n_chains=50, moves=moves, seed=seed, **kwargs)


def test_same_seed_same_ensemble_other_seed_other_ensemble() -> None:
    a = _small(11).run(20, warmup=10, progress=False)
    b = _small(11).run(20, warmup=10, progress=False)
    c = _small(12).run(20, warmup=10, progress=False)
    assert torch.equal(a.chi, b.chi) and torch.equal(a.energy, b.energy)
    assert a.move_counts == b.move_counts
    assert not torch.equal(a.chi, c.chi)
    # Chains differ from one another (each chain has its own random numbers).
    assert len({tuple(row) for row in a.chi[-1].tolist()}) == 50


def test_warmup_then_sampling_in_two_runs_is_one_run() -> None:
    """Keys follow the step counter: run(0, warmup=w) then run(n) equals run(n, warmup=w)."""
    one = _small(5)
    ens_one = one.run(30, warmup=15, progress=False)
    two = _small(5)
    two.run(0, warmup=15, progress=False)
    ens_two = two.run(30, progress=False)
    assert torch.equal(ens_one.chi, ens_two.chi)
    assert torch.equal(ens_one.energy, ens_two.energy)
    assert ens_one.meta["first_step"] == 0 and ens_two.meta["first_step"] == 15


def test_step_sizes_adapt_in_warmup_only() -> None:
    walk = RandomWalk("chi", step_size=0.05, target_acceptance=0.6)
    residue = RandomWalk("residue", step_size=3.0, target_acceptance=0.3, adapt=False)
    sampler = Sampler(
        _target((0, 1)),
        temperature=T,
        n_chains=2000,
        moves=[walk, residue],
        seed=2,
        init=torus_draws(2000, seed=9),
    )
    initial = walk.step_size.clone()
    sampler.run(0, warmup=50, progress=False)
    adapted = walk.step_size.clone()
    assert bool((adapted > 4 * initial).all()), adapted  # far too small a start grows
    torch.testing.assert_close(residue.step_size, torch.full((2,), 3.0, dtype=F64))  # fixed
    ensemble = sampler.run(100, progress=False)
    assert torch.equal(walk.step_size, adapted)  # frozen while sampling
    assert ensemble.acceptance["random_walk_chi"] == pytest.approx(0.6, abs=0.05)
    per_chi = ensemble.group_acceptance["random_walk_chi"]
    assert bool(((per_chi - 0.6).abs() < 0.1).all()), per_chi


def test_repr_and_metadata() -> None:
    sampler = _small(0)
    assert "random_walk_chi" in repr(sampler) and "chains=50" in repr(sampler)
    ensemble = sampler.run(4, warmup=2, thin=2, progress=False)
    assert ensemble.n_draws == 2 and ensemble.n_chains == 50 and ensemble.n_chi == 2
    assert ensemble.meta["n_steps"] == 4 and ensemble.meta["thin"] == 2
    assert [m["type"] for m in ensemble.meta["moves"]] == ["RandomWalk", "Independence", "Lifted"]
    assert sampler.energy.dtype == F64
    torch.testing.assert_close(sampler.energy, torus_energy(sampler.chi))


# ==================================================================== no host synchronisation


class SyncCounter:
    """Counts, while active, the tensor operations that make the host wait for the device on a
    GPU: truth values, item/int/float/tolist, copies to the CPU, nonzero and boolean-mask
    indexing (data-dependent shapes). On the CPU none of them waits, but the same code runs on
    CUDA tensors, so counting them here finds every synchronisation point of a step."""

    NAMES = ("__bool__", "item", "__int__", "__float__", "tolist", "cpu", "nonzero")

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.saved: dict[str, object] = {}

    def _wrap(self, name: str, original):
        def wrapper(tensor, *args, **kwargs):
            self.calls.append(name)
            return original(tensor, *args, **kwargs)

        return wrapper

    def _wrap_index(self, name: str, original):
        def wrapper(tensor, index, *args):
            keys = index if isinstance(index, tuple) else (index,)
            if any(isinstance(k, torch.Tensor) and k.dtype == torch.bool for k in keys):
                self.calls.append(f"{name} with a bool mask")
            return original(tensor, index, *args)

        return wrapper

    def __enter__(self) -> SyncCounter:
        for name in self.NAMES:
            self.saved[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self._wrap(name, self.saved[name]))
        for name in ("__getitem__", "__setitem__"):
            self.saved[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self._wrap_index(name, self.saved[name]))
        original_to = torch.Tensor.to
        self.saved["to"] = original_to

        def to(tensor, *args, **kwargs):
            target = kwargs.get("device", args[0] if args else None)
            if isinstance(target, (str, torch.device)) and torch.device(target).type == "cpu":
                self.calls.append("to(cpu)")
            return original_to(tensor, *args, **kwargs)

        torch.Tensor.to = to
        for name in ("nonzero", "unique", "masked_select", "argwhere"):  # torch.<name>(...)
            self.saved[f"torch.{name}"] = getattr(torch, name)
            setattr(torch, name, self._wrap(f"torch.{name}", getattr(torch, name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self.saved.items():
            if name.startswith("torch."):
                setattr(torch, name[len("torch.") :], original)
            else:
                setattr(torch.Tensor, name, original)


def test_a_sampler_step_never_waits_for_the_device() -> None:
    """Between the sampler's synchronisation points a step makes no host synchronisation: no
    .item(), bool(tensor), copy to the host or data-dependent shape (issue 19)."""
    from pyslice import RotamerLibrary

    protein = Protein.from_sequence("GVLKG")
    energy = ForceFieldEnergy(protein)
    library = RotamerLibrary.default().proposal(protein)
    moves = [
        RandomWalk("residue"),
        RandomWalk("chi"),
        Independence(library, block=1),  # block moves: energy differences
        Independence(library),  # all residues: full energies
        Lifted(library, block=2),
    ]
    sampler = Sampler(protein, energy, n_chains=16, seed=1, moves=moves, refresh_every=None)
    sampler.run(8, progress=False)  # warm up: backends chosen, tables cached
    with SyncCounter() as counter:
        for _ in range(40):
            sampler._step(None)
    assert sampler.step == 48 and len({sampler._pick_move(t) for t in range(8, 48)}) == 5
    assert counter.calls == [], sorted(set(counter.calls))
    # and the counter does count (a control): a truth value of a tensor is seen
    with SyncCounter() as counter:
        bool(sampler.energy.isfinite().all())
    assert counter.calls == ["__bool__"]


def test_compiled_backends_take_the_reference_sampler_s_decisions(monkeypatch) -> None:
    """The same run with every operation forced to the torch reference: the same chains (the
    randomness is counter-based and identical on every backend), energies to round-off."""
    from pyslice import RotamerLibrary

    protein = Protein.from_sequence("AVKF")
    library = RotamerLibrary.default().proposal(protein)

    def run() -> Ensemble:
        moves = [RandomWalk("residue"), Independence(library, block=1)]
        sampler = Sampler(protein, n_chains=6, seed=4, moves=moves, refresh_every=None)
        return sampler.run(12, progress=False)

    fast = run()
    monkeypatch.setenv("PYSLICE_BACKEND", "reference")
    reference = run()
    assert torch.equal(fast.chi, reference.chi)
    torch.testing.assert_close(fast.energy, reference.energy, rtol=1e-6, atol=1e-3)


# ==================================================================== replica exchange


LADDER = [T, 2.0 * T, 4.0 * T]


class AlwaysSwap(TemperatureLadder):
    """WRONG on purpose: neighbours always exchange temperatures (no Metropolis test)."""

    def swap(self, energy, seed, step, parity):
        super().swap(torch.zeros_like(energy), seed, step, parity)


class FlippedSwap(TemperatureLadder):
    """WRONG on purpose: the exchange criterion with the energy difference's sign flipped."""

    def swap(self, energy, seed, step, parity):
        super().swap(-energy, seed, step, parity)


def _replica_run(wrong: type | None = None, n_sets: int = 6000, steps: int = 30):
    target = FunctionTarget(torus_energy, 2, group=torch.tensor([0, 1]))
    moves = [RandomWalk("chi", step_size=0.4, adapt=False),
             Independence(UniformProposal(2, torch.tensor([0, 1])), block=1)]  # fmt: skip
    init = torus_draws(n_sets * len(LADDER), seed=7)  # exact at T: the hot chains must relax
    sampler = Sampler(target, n_chains=n_sets * len(LADDER), moves=moves, seed=5, init=init,
                      temperatures=LADDER)  # fmt: skip
    if wrong is not None:
        ladder = wrong(LADDER, sampler.n_chains, 0, sampler.device)
        sampler.ladder = ladder
    ensemble = sampler.run(steps, warmup=steps, progress=False)
    return sampler, ensemble


def test_replica_exchange_samples_the_target_temperature_exactly() -> None:
    sampler, ensemble = _replica_run()
    assert ensemble.chi.shape == (30, 6000, 2)  # one chain per replica set, at T_1
    rates = sampler.swap_rates
    assert len(rates) == 2 and all(0.05 < r < 0.99 for r in rates), rates
    assert ensemble.meta["temperatures"] == LADDER and ensemble.meta["swap_rates"] == rates
    # each set holds one chain at each temperature, and the exchanges did move the labels
    labels = sampler.ladder.label.view(-1, 3).sort(dim=1).values
    assert torch.equal(labels, torch.arange(3).expand(6000, 3))
    assert not torch.equal(sampler.ladder.label, torch.arange(3).repeat(6000))
    p = chi_square_pvalue(ensemble.chi[-1].numpy(), TORUS_CELLS)
    assert p > P_MIN, f"replica exchange: chi-square p = {p:.2e}"


@pytest.mark.parametrize("wrong", [AlwaysSwap, FlippedSwap])
def test_wrong_exchange_rules_fail_the_same_test(wrong: type) -> None:
    _, ensemble = _replica_run(wrong)
    p = chi_square_pvalue(ensemble.chi[-1].numpy(), TORUS_CELLS)
    assert p < P_MIN, f"{wrong.__name__} passed (p = {p:.2e})"


def test_replica_exchange_arguments_and_resume(tmp_path) -> None:
    target = FunctionTarget(torus_energy, 2)
    with pytest.raises(ValueError, match="multiple of len"):
        Sampler(target, n_chains=7, temperatures=LADDER)
    with pytest.raises(ValueError, match="increase strictly"):
        Sampler(target, n_chains=6, temperatures=[300.0, 300.0])
    with pytest.raises(ValueError, match="must be temperatures"):
        Sampler(target, n_chains=6, temperature=310.0, temperatures=LADDER)
    with pytest.raises(ValueError, match="ladder is fixed"):
        Sampler(target, n_chains=6, temperatures=LADDER).temperature = 400.0

    def make(energy) -> Sampler:
        return Sampler(FunctionTarget(energy, 2), n_chains=9, seed=2, temperatures=LADDER,
                       init="proposal")  # fmt: skip

    reference = make(CountingEnergy())
    expected = reference.run(20, warmup=4, progress=False)
    path = tmp_path / "re.ckpt"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during step 12
        make(CountingEnergy(interrupt_at=14)).run(
            20, warmup=4, progress=False, checkpoint=path, checkpoint_every=5
        )
    resumed = make(CountingEnergy())
    got = resumed.run(20, warmup=4, progress=False, checkpoint=path)
    assert torch.equal(got.chi, expected.chi) and torch.equal(got.energy, expected.energy)
    assert got.meta["swap_rates"] == expected.meta["swap_rates"]
    assert torch.equal(resumed.ladder.label, reference.ladder.label)

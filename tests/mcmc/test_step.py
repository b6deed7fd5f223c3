"""The fused Metropolis-Hastings step: every backend takes the reference's decisions, decisions
have the right probabilities, and an independence sampler built on it is exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from pyslice import _compiled
from pyslice.mcmc.step import ChainState, metropolis_step

BACKENDS = ["reference"] + (["cpu"] if _compiled.is_available() else [])
F64 = torch.float64


def _random_case(n: int, n_chi: int, n_latent: int, chi_dtype, energy_dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    energy = torch.randn(n, generator=gen, dtype=F64) * 3
    energy_new = energy + torch.randn(n, generator=gen, dtype=F64) * 2
    if n >= 8:  # edge cases: clashes, NaN proposals, equal energies
        energy[0], energy_new[0] = math.inf, 1.0  # a clash is left
        energy[1], energy_new[1] = 1.0, math.inf  # a clash is never entered
        energy[2], energy_new[2] = math.inf, math.inf  # NaN log-acceptance: reject
        energy_new[3] = math.nan
        energy_new[4] = energy[4]
    state = ChainState.create(
        torch.randn(n, n_chi, generator=gen).to(chi_dtype),
        energy.to(energy_dtype),
        torch.randn(n, generator=gen, dtype=F64).to(energy_dtype),
        torch.randint(0, 5, (n, n_latent), generator=gen),
    )
    proposal = (
        torch.randn(n, n_chi, generator=gen).to(chi_dtype),
        energy_new.to(energy_dtype),
        torch.randn(n, generator=gen, dtype=F64).to(energy_dtype),
        torch.randint(0, 5, (n, n_latent), generator=gen),
    )
    return state, proposal


def _copy(state: ChainState) -> ChainState:
    return ChainState(
        *(
            t.clone()
            for t in (state.chi, state.energy, state.log_weight, state.latent, state.accepted)
        )
    )


@pytest.mark.parametrize("n", [0, 1, 9, 4099])
@pytest.mark.parametrize(
    "dtypes",
    [(torch.float32, torch.float32), (torch.float32, F64), (F64, torch.float32), (F64, F64)],
)
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
def test_fast_path_takes_the_reference_decisions(backend, n, dtypes) -> None:
    state, proposal = _random_case(n, 5, 3, *dtypes)
    ref = _copy(state)
    got = metropolis_step(state, *proposal, beta=0.4, seed=77, step=12, backend=backend)
    expected = metropolis_step(ref, *proposal, beta=0.4, seed=77, step=12, backend="reference")
    assert torch.equal(got, expected)
    for name in ("chi", "latent", "accepted"):
        assert torch.equal(getattr(state, name), getattr(ref, name)), name
    for name in ("energy", "log_weight"):
        torch.testing.assert_close(
            getattr(state, name), getattr(ref, name), equal_nan=True, rtol=0, atol=0
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_cases_and_in_place_update(backend) -> None:
    state, proposal = _random_case(64, 4, 2, torch.float32, F64)
    before = _copy(state)
    accepted = metropolis_step(state, *proposal, beta=1.0, seed=1, step=0, backend=backend)
    assert accepted[0] and not accepted[1] and not accepted[2] and not accepted[3]
    assert accepted[4] or float(proposal[2][4] - before.log_weight[4]) < 0
    assert torch.equal(state.chi[accepted], proposal[0][accepted])
    assert torch.equal(state.chi[~accepted], before.chi[~accepted])
    assert torch.equal(state.latent[accepted], proposal[3][accepted])
    assert torch.equal(state.accepted, accepted.long())
    assert torch.isfinite(state.energy[3])  # a NaN proposal never enters the state


@pytest.mark.parametrize("backend", BACKENDS)
def test_acceptance_frequency_is_min_one_exp_log_ratio(backend) -> None:
    # Fixed log-acceptance per chain; fresh copies each step, so counts are binomial.
    log_accept = torch.tensor([-3.0, -1.0, -0.3, -0.05, 0.0, 2.0], dtype=F64)
    n_chains, n_steps = len(log_accept), 4000
    state0 = ChainState.create(torch.zeros(n_chains, 1), torch.zeros(n_chains, dtype=F64))
    counts = torch.zeros(n_chains)
    for step in range(n_steps):
        state = _copy(state0)
        counts += metropolis_step(
            state,
            torch.ones(n_chains, 1),
            -log_accept,
            beta=1.0,
            seed=5,
            step=step,
            backend=backend,
        ).double()
    p = torch.clamp(log_accept.exp(), max=1.0)
    for c, pi in zip(counts.tolist(), p.tolist()):
        if pi == 1.0:
            assert c == n_steps
        else:
            assert stats.binomtest(int(c), n_steps, pi).pvalue > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_independence_sampler_on_a_discrete_target_is_exact(backend) -> None:
    # States 0..7 with energies U (beta = 1) proposed from a mismatched q: w = -log q.
    gen = torch.Generator().manual_seed(3)
    energy_of = torch.rand(8, generator=gen, dtype=F64) * 3
    q = torch.softmax(torch.randn(8, generator=gen, dtype=F64), 0)
    n_chains, n_steps = 4000, 60
    start = torch.zeros(n_chains, dtype=torch.long)  # every chain starts in state 0
    state = ChainState.create(start[:, None].float(), energy_of[start], -torch.log(q[start]))
    for step in range(n_steps):
        k = torch.multinomial(q, n_chains, replacement=True, generator=gen)
        metropolis_step(
            state,
            k[:, None].float(),
            energy_of[k],
            -torch.log(q[k]),
            beta=1.0,
            seed=11,
            step=step,
            backend=backend,
        )
    counts = np.bincount(state.chi[:, 0].long().numpy(), minlength=8)
    target = torch.softmax(-energy_of, 0).numpy()
    assert stats.chisquare(counts, target * n_chains).pvalue > 1e-3
    # A sampler that forgot the proposal correction would sample q * p / Z instead: rejected.
    wrong = target * q.numpy() / (target * q.numpy()).sum()
    assert stats.chisquare(counts, wrong * n_chains).pvalue < 1e-3


def test_same_seed_same_decisions_and_steps_differ() -> None:
    state, proposal = _random_case(500, 3, 0, torch.float32, torch.float32)
    runs = []
    for seed, step in ((1, 0), (1, 0), (1, 1), (2, 0)):
        s = _copy(state)
        runs.append(metropolis_step(s, *proposal, beta=0.5, seed=seed, step=step))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2]) and not torch.equal(runs[0], runs[3])


def test_bad_arguments_name_the_problem() -> None:
    state, (chi, energy, weight, latent) = _random_case(10, 3, 1, torch.float32, torch.float32)
    with pytest.raises(ValueError, match="beta"):
        metropolis_step(state, chi, energy, beta=0.0, seed=0, step=0)
    with pytest.raises(ValueError, match="seed"):
        metropolis_step(state, chi, energy, beta=1.0, seed=-1, step=0)
    with pytest.raises(ValueError, match="step"):
        metropolis_step(state, chi, energy, beta=1.0, seed=0, step=2**63)
    with pytest.raises(ValueError, match="chi_new"):
        metropolis_step(state, chi[:5], energy, beta=1.0, seed=0, step=0)
    with pytest.raises(ValueError, match="latent_new"):
        metropolis_step(state, chi, energy, weight, latent[:, :0], beta=1.0, seed=0, step=0)
    with pytest.raises(TypeError, match="energy_new"):
        metropolis_step(state, chi, energy.numpy(), beta=1.0, seed=0, step=0)
    state.chi = state.chi.t().contiguous().t()
    with pytest.raises(ValueError, match="contiguous"):
        metropolis_step(state, chi, energy, beta=1.0, seed=0, step=0)

"""The fused Metropolis-Hastings step: every backend takes the reference's decisions, decisions
have the right probabilities, and an independence sampler built on it is exact.

The backends come from ``pyslice.backends`` through the fixtures of tests/conftest.py
(``metropolis_step_backend``, ``fast_metropolis_step_case``): every registered implementation,
the CUDA kernel included, on each device it runs on (GPU cases skip without a GPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from pyslice import _compiled, _native
from pyslice.mcmc.step import ChainState, metropolis_step

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


_FIELDS = ("chi", "energy", "log_weight", "latent", "accepted")


def _copy(state: ChainState, device: str | torch.device | None = None) -> ChainState:
    return ChainState(*(getattr(state, name).clone().to(device) for name in _FIELDS))


def _assert_same_state(state: ChainState, ref: ChainState) -> None:
    for name in ("chi", "latent", "accepted"):
        assert torch.equal(getattr(state, name).cpu(), getattr(ref, name).cpu()), name
    for name in ("energy", "log_weight"):
        torch.testing.assert_close(
            getattr(state, name).cpu(), getattr(ref, name).cpu(), equal_nan=True, rtol=0, atol=0
        )


@pytest.mark.parametrize("n", [0, 1, 9, 4099])
@pytest.mark.parametrize("energy_dtype", [torch.float32, F64], ids=["e32", "e64"])
def test_fast_path_takes_the_reference_decisions(
    fast_metropolis_step_case, n, energy_dtype
) -> None:
    backend, device, chi_dtype = fast_metropolis_step_case
    state, proposal = _random_case(n, 5, 3, chi_dtype, energy_dtype)
    ref = _copy(state)
    state = _copy(state, device)
    on_device = [t.to(device) for t in proposal]
    got = metropolis_step(state, *on_device, beta=0.4, seed=77, step=12, backend=backend)
    expected = metropolis_step(ref, *proposal, beta=0.4, seed=77, step=12, backend="reference")
    assert got.device.type == device
    assert torch.equal(got.cpu(), expected)
    _assert_same_state(state, ref)


def test_fast_path_strided_proposal(fast_metropolis_step_case) -> None:
    """A strided proposal (a transposed chi_new, every other energy) decides like its copy."""
    backend, device, chi_dtype = fast_metropolis_step_case
    state, (chi, energy, weight, latent) = _random_case(33, 4, 2, chi_dtype, F64, seed=3)
    wide_chi = torch.zeros(4, 66, dtype=chi_dtype)
    wide_chi[:, ::2] = chi.t()
    strided = (wide_chi[:, ::2].t(), energy.repeat_interleave(2)[::2], weight, latent)
    assert not strided[0].is_contiguous() and not strided[1].is_contiguous()
    ref = _copy(state)
    state = _copy(state, device)
    got = metropolis_step(
        state, *(t.to(device) for t in strided), beta=0.9, seed=4, step=2, backend=backend
    )
    expected = metropolis_step(
        ref, chi, energy, weight, latent, beta=0.9, seed=4, step=2, backend="reference"
    )
    assert torch.equal(got.cpu(), expected)
    _assert_same_state(state, ref)


def test_edge_cases_and_in_place_update(metropolis_step_backend) -> None:
    backend, device = metropolis_step_backend
    state, proposal = _random_case(64, 4, 2, torch.float32, F64)
    state = _copy(state, device)
    proposal = tuple(t.to(device) for t in proposal)
    before = _copy(state)
    accepted = metropolis_step(state, *proposal, beta=1.0, seed=1, step=0, backend=backend)
    accepted, state, before = accepted.cpu(), _copy(state, "cpu"), _copy(before, "cpu")
    proposal = tuple(t.cpu() for t in proposal)
    assert accepted[0] and not accepted[1] and not accepted[2] and not accepted[3]
    assert accepted[4] or float(proposal[2][4] - before.log_weight[4]) < 0
    assert torch.equal(state.chi[accepted], proposal[0][accepted])
    assert torch.equal(state.chi[~accepted], before.chi[~accepted])
    assert torch.equal(state.latent[accepted], proposal[3][accepted])
    assert torch.equal(state.accepted, accepted.long())
    assert torch.isfinite(state.energy[3])  # a NaN proposal never enters the state


def test_acceptance_frequency_is_min_one_exp_log_ratio(metropolis_step_backend) -> None:
    # Fixed log-acceptance per chain; fresh copies each step, so counts are binomial.
    backend, device = metropolis_step_backend
    log_accept = torch.tensor([-3.0, -1.0, -0.3, -0.05, 0.0, 2.0], dtype=F64, device=device)
    n_chains, n_steps = len(log_accept), 4000
    state0 = ChainState.create(
        torch.zeros(n_chains, 1, device=device), torch.zeros(n_chains, dtype=F64, device=device)
    )
    counts = torch.zeros(n_chains, dtype=F64, device=device)
    for step in range(n_steps):
        state = _copy(state0)
        counts += metropolis_step(
            state,
            torch.ones(n_chains, 1, device=device),
            -log_accept,
            beta=1.0,
            seed=5,
            step=step,
            backend=backend,
        ).double()
    p = torch.clamp(log_accept.exp(), max=1.0)
    for c, pi in zip(counts.cpu().tolist(), p.cpu().tolist()):
        if pi == 1.0:
            assert c == n_steps
        else:
            assert stats.binomtest(int(c), n_steps, pi).pvalue > 1e-3


def test_independence_sampler_on_a_discrete_target_is_exact(metropolis_step_backend) -> None:
    # States 0..7 with energies U (beta = 1) proposed from a mismatched q: w = -log q.
    backend, device = metropolis_step_backend
    gen = torch.Generator().manual_seed(3)
    energy_of = torch.rand(8, generator=gen, dtype=F64) * 3
    q = torch.softmax(torch.randn(8, generator=gen, dtype=F64), 0)
    n_chains, n_steps = 4000, 60
    start = torch.zeros(n_chains, dtype=torch.long)  # every chain starts in state 0
    state = ChainState.create(start[:, None].float(), energy_of[start], -torch.log(q[start]))
    state = _copy(state, device)
    for step in range(n_steps):
        k = torch.multinomial(q, n_chains, replacement=True, generator=gen)
        metropolis_step(
            state,
            k[:, None].float().to(device),
            energy_of[k].to(device),
            -torch.log(q[k]).to(device),
            beta=1.0,
            seed=11,
            step=step,
            backend=backend,
        )
    counts = np.bincount(state.chi[:, 0].long().cpu().numpy(), minlength=8)
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


needs_compiled = pytest.mark.skipif(not _compiled.is_available(), reason="needs pyslice._C")


# ---- the compiled binding re-checks the views it is given (csrc/bindings.h), never crashes


def step_arguments(n=4, n_chi=2, n_latent=0, dtype=torch.float32):
    return {
        "chi": torch.zeros(n, n_chi, dtype=dtype),
        "chi_new": torch.zeros(n, n_chi, dtype=dtype),
        "energy": torch.zeros(n, dtype=dtype),
        "energy_new": torch.zeros(n, dtype=dtype),
        "log_weight": torch.zeros(n, dtype=dtype),
        "log_weight_new": torch.zeros(n, dtype=dtype),
        "latent": torch.zeros(n, n_latent, dtype=torch.int64),
        "latent_new": torch.zeros(n, n_latent, dtype=torch.int64),
        "accepted_count": torch.zeros(n, dtype=torch.int64),
        "accepted": torch.zeros(n, dtype=torch.bool),
    }


def step(C, tensors, beta=None, seed=0, step_=0, chain_offset=0):
    n = tensors["chi"].shape[0]
    beta = torch.ones(n, dtype=F64) if beta is None else beta
    C.metropolis_step_cpu(
        *(_native.view(t) for t in tensors.values()), _native.view(beta), seed, step_, chain_offset
    )


@needs_compiled
def test_compiled_binding_rechecks_shapes_and_dtypes() -> None:
    C = _compiled.load()  # noqa: N806
    with pytest.raises(ValueError, match=r"energy_new must have shape \(B,\) with B = 4, got \(5,"):
        step(C, step_arguments() | {"energy_new": torch.zeros(5)})
    with pytest.raises(TypeError, match="energy_new must have dtype float64, got float32"):
        step(C, step_arguments() | {"energy": torch.zeros(4, dtype=torch.float64)})
    with pytest.raises(ValueError, match=r"latent_new must have shape \(B, L\) with B = 4, L = 2"):
        step(C, step_arguments(n_latent=2) | {"latent_new": torch.zeros(4, 1, dtype=torch.int64)})
    with pytest.raises(TypeError, match="accepted must have dtype bool"):
        step(C, step_arguments() | {"accepted": torch.zeros(4, dtype=torch.uint8)})
    with pytest.raises(ValueError, match="chi must be C-contiguous"):
        step(C, step_arguments() | {"chi": torch.zeros(2, 4).t()})
    # beta is per chain: a (B,) float64 view (its values are checked by metropolis_step)
    with pytest.raises(TypeError, match="beta must have dtype float64"):
        step(C, step_arguments(), beta=torch.ones(4))
    with pytest.raises(ValueError, match=r"beta must have shape \(B,\) with B = 4"):
        step(C, step_arguments(), beta=torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match=r"step must be an int in \[0, 2\*\*63\)"):
        step(C, step_arguments(), step_=2**63)
    with pytest.raises(ValueError, match=r"chain_offset must be an int in \[0, 2\*\*63\)"):
        step(C, step_arguments(), chain_offset=-1)


@needs_compiled
def test_compiled_state_may_be_its_own_proposal_but_not_overlap_it() -> None:
    C = _compiled.load()  # noqa: N806
    tensors = step_arguments(n_latent=3)
    tensors["latent"] = torch.arange(12).reshape(4, 3)
    tensors["latent_new"] = tensors["latent"]  # "keep the labels": the same view, allowed
    tensors["energy_new"] = torch.full((4,), -1e9)
    step(C, tensors)
    assert tensors["accepted"].all() and torch.equal(
        tensors["latent"], torch.arange(12).reshape(4, 3)
    )
    shifted = step_arguments(n=4, n_chi=2)
    wide = torch.zeros(5, 2)
    shifted["chi"], shifted["chi_new"] = wide[:4], wide[1:]
    with pytest.raises(ValueError, match="chi must not share memory with chi_new"):
        step(C, shifted)
    shared = step_arguments()
    shared["log_weight"] = shared["energy"]
    with pytest.raises(ValueError, match="log_weight must not share memory with energy"):
        step(C, shared)


# ---- uniforms in (0, 1), keyed by the global chain index, per-chain temperatures (issue 14)


def test_uniforms_are_never_zero_or_one() -> None:
    from pyslice._random import uniform_open

    words = torch.tensor([0, 1, 63, 64, 2**31, 2**32 - 1], dtype=torch.int64)
    u = uniform_open(words.repeat_interleave(6), words.repeat(6))
    assert bool((u > 0).all()) and bool((u < 1).all())
    assert float(u.min()) == 2.0**-53 and float(u.max()) == 1.0 - 2.0**-53
    assert u.unique().numel() == 16  # the top 26 bits of each word matter, the rest do not


def test_hopeless_proposals_are_never_accepted(metropolis_step_backend) -> None:
    """2^25 decisions at log a = -1e6 accept none: with u drawn on a 2^-24 grid including 0
    (log u = -inf) 31 of them were accepted; with u in (0, 1) (log u >= -36.7) none can be."""
    backend, device = metropolis_step_backend
    n, calls = 2**20, 32 if backend != "reference" else 8  # the torch reference: 2^23
    chi = torch.zeros(n, 1, device=device)
    energy = torch.zeros(n, dtype=F64, device=device)
    hopeless = torch.full((n,), 1e6, dtype=F64, device=device)  # beta 1: log a = -1e6
    total = 0
    for call in range(calls):
        state = ChainState.create(chi, energy)
        accepted = metropolis_step(state, chi, hopeless, beta=1.0, seed=call, step=call,
                                   backend=backend)  # fmt: skip
        total += int(accepted.sum())
    assert total == 0


def test_chains_are_keyed_by_their_global_index(metropolis_step_backend) -> None:
    """Chains split over processes (chain_offset) take the decisions of one process."""
    backend, device = metropolis_step_backend
    state, proposal = _random_case(10, 2, 1, torch.float32, F64, seed=3)
    whole = _copy(state, device)
    moved = tuple(t.to(device) for t in proposal)
    expected = metropolis_step(whole, *moved, beta=0.7, seed=9, step=5, backend=backend)
    parts = []
    for lo, hi in ((0, 4), (4, 10)):
        part = ChainState(*(getattr(state, f)[lo:hi].clone().to(device) for f in _FIELDS))
        rows = tuple(t[lo:hi].to(device) for t in proposal)
        parts.append(
            metropolis_step(
                part, *rows, beta=0.7, seed=9, step=5, chain_offset=lo, backend=backend
            )  # fmt: skip
        )
    assert torch.equal(torch.cat(parts), expected)


def test_per_chain_beta_equals_separate_steps(metropolis_step_backend) -> None:
    backend, device = metropolis_step_backend
    state, proposal = _random_case(12, 2, 0, torch.float32, F64, seed=4)
    betas = torch.tensor([0.2, 1.5, 0.7], dtype=F64).repeat(4).to(device)
    ladder = _copy(state, device)
    moved = tuple(t.to(device) for t in proposal)
    got = metropolis_step(ladder, *moved, beta=betas, seed=2, step=3, backend=backend)
    for k, beta in enumerate((0.2, 1.5, 0.7)):
        single = _copy(state, device)
        each = metropolis_step(single, *moved, beta=beta, seed=2, step=3, backend=backend)
        assert torch.equal(got[k::3], each[k::3])
    with pytest.raises(ValueError, match="beta must be finite and > 0"):
        metropolis_step(_copy(state, device), *moved, beta=betas * 0, seed=2, step=3)
    with pytest.raises(ValueError, match="beta must be a number or have shape"):
        metropolis_step(_copy(state, device), *moved, beta=betas[:3], seed=2, step=3)

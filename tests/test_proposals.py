"""Proposals (pyslice.proposals): exact densities against an independent numpy formula, sampling
against those densities (chi-square at fixed seeds), block draws, latent labels and validation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from pyslice.proposals import MixtureProposal, Proposal, UniformProposal, derive_seed

F64 = torch.float64
TWO_PI = 2.0 * math.pi
P_MIN = 1e-3  # chi-square p-value threshold (fixed seeds: a pass is a pass on every rerun)

# Three columns: group 0 = columns 0, 1 (one mixture over both), group 1 = column 2, pi-periodic.
# Group 1 has an unused component (-inf logit) and group 0 a uniform column (kappa 0).
GROUP = [0, 0, 1]
LOGITS = [[0.2, -0.5, 0.0], [0.0, 0.7, -math.inf]]
LOC = [[1.0, -2.0, 0.3], [-0.5, 2.5, 1.5], [0.8, -2.2, 0.0]]
KAPPA = [[2.0, 4.0, 0.0], [1.5, 3.0, 0.7], [2.5, 1.0, 9.0]]
PERIODIC = [False, False, True]


def _mixture(**kwargs) -> MixtureProposal:
    return MixtureProposal(
        torch.tensor(GROUP),
        torch.tensor(LOGITS, dtype=F64),
        torch.tensor(LOC, dtype=F64),
        torch.tensor(KAPPA, dtype=F64),
        torch.tensor(PERIODIC),
        **kwargs,
    )


def _other_mixture() -> MixtureProposal:
    """Same groups and K, different parameters: a conditional r(k | x) for lifted moves."""
    return MixtureProposal(
        torch.tensor(GROUP),
        torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.0, 0.0]]),
        torch.tensor([[0.0, 1.0, 2.0], [0.0, -1.0, 1.0], [0.5, 0.0, -0.5]]),
        torch.ones(3, 3),
        torch.tensor(PERIODIC),
    )


# ---------------------------------------------------------------- an independent numpy oracle


def _vm(x: np.ndarray, loc: float, kappa: float) -> np.ndarray:
    return np.exp(kappa * np.cos(x - loc)) / (TWO_PI * special.i0(kappa))


def _weights(logits: list[float]) -> np.ndarray:
    w = np.exp(np.array(logits) - np.max(logits))
    return w / w.sum()


def _density_group0(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    w = _weights(LOGITS[0])
    return sum(
        w[k] * _vm(x0, LOC[0][k], KAPPA[0][k]) * _vm(x1, LOC[1][k], KAPPA[1][k]) for k in range(3)
    )


def _density_group1(x2: np.ndarray) -> np.ndarray:
    """pi-periodic column: loc and kappa describe the doubled angle; density f(2x) on [-pi, pi)."""
    w = _weights(LOGITS[1])
    return sum(w[k] * _vm(2.0 * x2, LOC[2][k], KAPPA[2][k]) for k in range(3))


def _cell_probabilities(density, bins: int, dims: int, sub: int = 16) -> np.ndarray:
    """Probability of each cell of a bins^dims grid on [-pi, pi)^dims (midpoint rule, sub^dims
    points per cell: smooth periodic densities, error far below the sampling noise)."""
    m = bins * sub
    x = (np.arange(m) + 0.5) / m * TWO_PI - math.pi
    h = TWO_PI / m
    if dims == 1:
        return density(x).reshape(bins, sub).sum(1) * h
    values = density(x[:, None], x[None, :])
    return values.reshape(bins, sub, bins, sub).sum((1, 3)) * h * h


def _chi_square(samples: np.ndarray, probabilities: np.ndarray) -> float:
    """p-value of binned ``samples: (n,)`` or ``(n, 2)`` on [-pi, pi) against cell
    ``probabilities``; cells expecting fewer than 5 counts are pooled."""
    bins = probabilities.shape[0]
    edges = np.linspace(-math.pi, math.pi, bins + 1)
    samples = np.remainder(samples + math.pi, TWO_PI) - math.pi
    if samples.ndim == 1:
        counts, _ = np.histogram(samples, edges)
    else:
        counts, _, _ = np.histogram2d(samples[:, 0], samples[:, 1], [edges, edges])
    assert counts.sum() == len(samples)
    expected = probabilities.ravel() / probabilities.sum() * len(samples)
    counts = counts.ravel()
    small = expected < 5
    if small.any():
        counts = np.append(counts[~small], counts[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    observed = counts
    return float(stats.chisquare(observed, expected).pvalue)


# ---------------------------------------------------------------- densities


def test_log_prob_matches_numpy_formula() -> None:
    proposal = _mixture()
    gen = torch.Generator().manual_seed(0)
    chi = (torch.rand(500, 3, generator=gen, dtype=F64) * TWO_PI - math.pi).to(torch.float32)
    x = chi.to(F64).numpy()
    expected = np.log(_density_group0(x[:, 0], x[:, 1])) + np.log(_density_group1(x[:, 2]))
    got = proposal.log_prob(chi)
    assert got.dtype == F64 and got.shape == (500,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-10)


def test_marginal_is_logsumexp_of_joint_over_all_labels() -> None:
    proposal = _mixture()
    chi = torch.rand(64, 3) * TWO_PI - math.pi
    joints = []
    for k0, k1 in itertools.product(range(3), range(3)):
        latent = torch.tensor([[k0, k1]]).expand(64, 2)
        joints.append(proposal.log_prob(chi, latent))
    joint = torch.stack(joints)
    assert bool(torch.isneginf(joint[[2, 5, 8]]).all())  # group 1's unused component
    torch.testing.assert_close(torch.logsumexp(joint, 0), proposal.log_prob(chi))


@pytest.mark.parametrize("periodic", [False, True])
def test_one_column_density_integrates_to_one(periodic: bool) -> None:
    proposal = MixtureProposal(
        torch.tensor([0]),
        torch.tensor([[0.3, -0.2]]),
        torch.tensor([[2.0, -1.0]]),
        torch.tensor([[6.0, 0.5]]),
        torch.tensor([periodic]),
    )
    m = 4000
    x = (torch.arange(m, dtype=F64) + 0.5) / m * TWO_PI - math.pi
    total = proposal.log_prob(x[:, None]).exp().sum() * TWO_PI / m
    assert abs(float(total) - 1.0) < 1e-9
    if periodic:  # q(x) = q(x + pi)
        y = torch.linspace(-math.pi, 0.0, 101, dtype=F64)[:, None]
        torch.testing.assert_close(proposal.log_prob(y), proposal.log_prob(y + math.pi))


@pytest.mark.parametrize("group", [[0, 0], [0, 1]], ids=["joint", "product"])
def test_two_column_density_with_pi_periodic_column_integrates_to_one(group) -> None:
    n_groups = max(group) + 1
    proposal = MixtureProposal(
        torch.tensor(group),
        torch.tensor([[0.0, 1.0, -1.0]] * n_groups),
        torch.tensor([[1.0, -2.0, 0.3], [2.0, 0.0, -1.0]]),
        torch.tensor([[3.0, 1.0, 0.2], [5.0, 2.0, 8.0]]),
        torch.tensor([False, True]),
    )
    m = 400
    x = (torch.arange(m, dtype=F64) + 0.5) / m * TWO_PI - math.pi
    grid = torch.cartesian_prod(x, x)
    total = proposal.log_prob(grid).exp().sum() * (TWO_PI / m) ** 2
    assert abs(float(total) - 1.0) < 1e-9


# ---------------------------------------------------------------- sampling


def test_sample_log_q_is_the_joint_log_prob_with_its_labels() -> None:
    proposal = _mixture()
    draw = proposal.sample(2000, seed=11)
    assert draw.chi.shape == (2000, 3) and draw.chi.dtype == torch.float32
    assert draw.latent.shape == (2000, 2) and draw.latent.dtype == torch.int64
    assert draw.log_q.shape == (2000,) and draw.log_q.dtype == F64
    assert bool((draw.chi >= -math.pi).all()) and bool((draw.chi <= math.pi).all())
    assert bool((draw.latent >= 0).all()) and bool((draw.latent < 3).all())
    assert not bool((draw.latent[:, 1] == 2).any())  # the -inf component is never drawn
    torch.testing.assert_close(draw.log_q, proposal.log_prob(draw.chi, draw.latent))
    assert bool(torch.isfinite(draw.log_q).all())


def test_sample_is_reproducible_from_seed_and_offset() -> None:
    proposal = _mixture()
    a = proposal.sample(100, seed=3, offset=1)
    b = proposal.sample(100, seed=3, offset=1)
    assert torch.equal(a.chi, b.chi) and torch.equal(a.latent, b.latent)
    assert not torch.equal(a.chi, proposal.sample(100, seed=3, offset=2).chi)
    assert not torch.equal(a.chi, proposal.sample(100, seed=4, offset=1).chi)
    assert proposal.sample(0, seed=1).chi.shape == (0, 3)


def test_sampled_histograms_match_the_density() -> None:
    proposal = _mixture()
    draw = proposal.sample(20000, seed=5)
    x = draw.chi.to(F64).numpy()
    p_joint = _chi_square(x[:, :2], _cell_probabilities(_density_group0, 12, 2))
    p_periodic = _chi_square(x[:, 2], _cell_probabilities(_density_group1, 24, 1))
    assert p_joint > P_MIN, p_joint
    assert p_periodic > P_MIN, p_periodic
    # The labels follow the mixture weights.
    for g in range(2):
        counts = np.bincount(draw.latent[:, g].numpy(), minlength=3)
        w = _weights(LOGITS[g])
        keep = w > 0
        p = stats.chisquare(counts[keep], w[keep] * len(x)).pvalue
        assert p > P_MIN, (g, p)


def test_a_wrong_density_fails_the_histogram_test() -> None:
    """The chi-square check has power: pi-periodic draws scored as if not periodic fail it."""
    proposal = _mixture()
    x = proposal.sample(20000, seed=5).chi.to(F64).numpy()

    def unperiodic(x2: np.ndarray) -> np.ndarray:
        w = _weights(LOGITS[1])
        return sum(w[k] * _vm(x2, LOC[2][k], KAPPA[2][k]) for k in range(3))

    assert _chi_square(x[:, 2], _cell_probabilities(unperiodic, 24, 1)) < P_MIN


# ---------------------------------------------------------------- blocks


def _blocks(n: int) -> torch.Tensor:
    """Rows alternate: group 0's columns, group 1's column, everything."""
    block = torch.zeros(n, 3, dtype=torch.bool)
    block[0::3, :2] = True
    block[1::3, 2] = True
    block[2::3] = True
    return block


def test_block_sampling_changes_only_the_block() -> None:
    proposal = _mixture()
    n = 3000
    chi = proposal.sample(n, seed=1).chi
    block = _blocks(n)
    draw = proposal.sample_block(chi, block, seed=2)
    assert torch.equal(draw.chi[~block], chi[~block])
    assert bool((draw.chi[block] != chi[block]).all())
    in_block = torch.stack([block[:, 0], block[:, 2]], 1)  # (n, groups)
    assert bool((draw.latent[~in_block] == -1).all())
    assert bool((draw.latent[in_block] >= 0).all())
    # log_q is the block's joint log-density with its labels ...
    torch.testing.assert_close(draw.log_q, proposal.block_log_prob(draw.chi, block, draw.latent))
    # ... and the marginal block density is the product of the touched groups' marginals.
    x = draw.chi.to(F64).numpy()
    log0 = np.log(_density_group0(x[:, 0], x[:, 1]))
    log2 = np.log(_density_group1(x[:, 2]))
    expected = np.where(in_block[:, 0].numpy(), log0, 0.0) + np.where(in_block[:, 1], log2, 0.0)
    np.testing.assert_allclose(proposal.block_log_prob(draw.chi, block).numpy(), expected, 1e-9)
    # Complementary blocks add up to the full log-density; the full block is log_prob.
    full = proposal.log_prob(draw.chi)
    torch.testing.assert_close(
        proposal.block_log_prob(draw.chi, block)
        + proposal.block_log_prob(draw.chi, ~block)
        - proposal.block_log_prob(draw.chi, torch.zeros_like(block)),
        full,
    )
    torch.testing.assert_close(proposal.block_log_prob(draw.chi, torch.ones_like(block)), full)


def test_block_draws_follow_the_group_marginal() -> None:
    proposal = _mixture()
    n = 20000
    chi = torch.zeros(n, 3)
    block = torch.zeros(n, 3, dtype=torch.bool)
    block[:, 2] = True
    x = proposal.sample_block(chi, block, seed=9).chi.to(F64).numpy()
    assert _chi_square(x[:, 2], _cell_probabilities(_density_group1, 24, 1)) > P_MIN


# ---------------------------------------------------------------- latent labels


@pytest.mark.parametrize("conditional", [False, True], ids=["own", "conditional"])
def test_latent_log_prob_normalises_over_labels(conditional: bool) -> None:
    proposal = _mixture(conditional=_other_mixture() if conditional else None)
    chi = proposal.sample(50, seed=4).chi
    total = torch.zeros(50, dtype=F64)
    for k0, k1 in itertools.product(range(3), range(3)):
        latent = torch.tensor([[k0, k1]]).expand(50, 2)
        total += proposal.latent_log_prob(chi, latent).exp()
    torch.testing.assert_close(total, torch.ones(50, dtype=F64))
    # Over a block, only the block's groups count: summing group 0's labels gives 1.
    block = torch.zeros(50, 3, dtype=torch.bool)
    block[:, :2] = True
    total = sum(
        proposal.latent_log_prob(chi, torch.tensor([[k, 2]]).expand(50, 2), block).exp()
        for k in range(3)
    )
    torch.testing.assert_close(total, torch.ones(50, dtype=F64))


def test_own_posterior_is_bayes_rule() -> None:
    proposal = _mixture()
    chi = proposal.sample(40, seed=8).chi
    latent = torch.randint(0, 2, (40, 2), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        proposal.latent_log_prob(chi, latent),
        proposal.log_prob(chi, latent) - proposal.log_prob(chi),
    )


@pytest.mark.parametrize("conditional", [False, True], ids=["own", "conditional"])
def test_sample_latent_follows_latent_log_prob(conditional: bool) -> None:
    proposal = _mixture(conditional=_other_mixture() if conditional else None)
    n = 20000
    chi = torch.tensor([[0.5, 2.0, -1.0]]).expand(n, 3).contiguous()
    labels = proposal.sample_latent(chi, seed=6)
    assert labels.shape == (n, 2)
    for g in range(2):
        probs = []
        for k in range(3):
            latent = torch.zeros(1, 2, dtype=torch.int64)
            latent[0, g] = k
            block = torch.zeros(1, 3, dtype=torch.bool)
            block[0, torch.tensor(GROUP) == g] = True
            probs.append(float(proposal.latent_log_prob(chi[:1], latent, block).exp()))
        probs = np.array(probs)
        counts = np.bincount(labels[:, g].numpy(), minlength=3)
        keep = probs > 0
        assert counts[~keep].sum() == 0
        p = stats.chisquare(counts[keep], probs[keep] / probs[keep].sum() * n).pvalue
        assert p > P_MIN, (g, p)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(group=torch.tensor([0, 2, 2])), "group"),
        (dict(group=torch.tensor([[0, 0, 1]])), "group"),
        (dict(logits=torch.zeros(3, 3)), "logits"),
        (dict(logits=torch.tensor([[0.0, math.nan, 0.0], [0.0, 0.0, 0.0]])), "logits"),
        (dict(logits=torch.tensor([[math.inf, 0.0, 0.0], [0.0, 0.0, 0.0]])), "logits"),
        (dict(logits=torch.tensor([[-math.inf] * 3, [0.0, 0.0, 0.0]])), "logits"),
        (dict(loc=torch.zeros(3, 2)), "loc"),
        (dict(loc=torch.full((3, 3), math.nan)), "loc"),
        (dict(concentration=-torch.ones(3, 3)), "concentration"),
        (dict(concentration=torch.full((3, 3), math.inf)), "concentration"),
        (dict(pi_periodic=torch.tensor([True, False])), "pi_periodic"),
    ],
)
def test_mixture_rejects_bad_parameters(change, match) -> None:
    args = dict(
        group=torch.tensor(GROUP),
        logits=torch.tensor(LOGITS),
        loc=torch.tensor(LOC),
        concentration=torch.tensor(KAPPA),
        pi_periodic=torch.tensor(PERIODIC),
    )
    args.update(change)
    with pytest.raises(ValueError, match=match):
        MixtureProposal(**args)


def test_mixture_rejects_integer_parameters_and_bad_conditional() -> None:
    with pytest.raises(TypeError, match="loc"):
        MixtureProposal(
            torch.tensor(GROUP),
            torch.tensor(LOGITS),
            torch.zeros(3, 3, dtype=torch.int64),
            torch.tensor(KAPPA),
        )
    other_groups = MixtureProposal(
        torch.tensor([0, 1, 1]), torch.zeros(2, 3), torch.zeros(3, 3), torch.ones(3, 3)
    )
    with pytest.raises(ValueError, match="conditional"):
        _mixture(conditional=other_groups)
    other_k = MixtureProposal(
        torch.tensor(GROUP), torch.zeros(2, 2), torch.zeros(3, 2), torch.ones(3, 2)
    )
    with pytest.raises(ValueError, match="conditional"):
        _mixture(conditional=other_k)


def test_mixture_rejects_bad_inputs() -> None:
    proposal = _mixture()
    chi = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"chi must have shape \(n, 3\)"):
        proposal.log_prob(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="chi must be finite"):
        proposal.log_prob(torch.tensor([[0.0, math.nan, 0.0]]))
    with pytest.raises(TypeError, match="chi"):
        proposal.log_prob(torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="latent"):
        proposal.log_prob(chi, torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="latent"):
        proposal.latent_log_prob(chi, torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match="block"):
        proposal.sample_block(chi, torch.ones(4, 3), seed=0)
    with pytest.raises(ValueError, match="block"):
        proposal.block_log_prob(chi, torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="n must be"):
        proposal.sample(-1, seed=0)
    with pytest.raises(TypeError, match="n must be an int"):
        proposal.sample(2.0, seed=0)


# ---------------------------------------------------------------- uniform proposal


def test_uniform_proposal_basics() -> None:
    proposal = UniformProposal(3, torch.tensor([0, 0, 1]))
    assert isinstance(proposal, Proposal)
    assert proposal.n_chi == 3 and proposal.n_groups == 2 and proposal.n_latent == 0
    draw = proposal.sample(30000, seed=2)
    assert draw.chi.shape == (30000, 3) and draw.latent.shape == (30000, 0)
    assert bool((draw.chi >= -math.pi).all()) and bool((draw.chi < math.pi).all())
    torch.testing.assert_close(draw.log_q, torch.full((30000,), -3 * math.log(TWO_PI), dtype=F64))
    torch.testing.assert_close(proposal.log_prob(draw.chi), draw.log_q)
    x = draw.chi.to(F64).numpy()
    uniform = _cell_probabilities(lambda a, b: np.full(np.broadcast(a, b).shape, 1.0), 10, 2)
    assert _chi_square(x[:, :2], uniform) > P_MIN
    assert _chi_square(x[:, 2], np.full(20, 0.05)) > P_MIN
    # Blocks.
    block = _blocks(300)
    chi = torch.zeros(300, 3)
    out = proposal.sample_block(chi, block, seed=3)
    assert torch.equal(out.chi[~block], chi[~block])
    assert bool((out.chi[block] != 0).all())
    expected = -math.log(TWO_PI) * block.sum(1).to(F64)
    torch.testing.assert_close(out.log_q, expected)
    torch.testing.assert_close(proposal.block_log_prob(chi, block), expected)
    with pytest.raises(NotImplementedError):
        proposal.latent_log_prob(chi, torch.zeros(300, 0, dtype=torch.int64))
    # Default groups: one per column; validation.
    assert torch.equal(UniformProposal(4).group, torch.arange(4))
    with pytest.raises(ValueError, match="group"):
        UniformProposal(3, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="n_chi"):
        UniformProposal(-1)
    with pytest.raises(ValueError, match="chi must have shape"):
        proposal.log_prob(torch.zeros(5, 4))
    with pytest.raises(ValueError, match="n must be"):
        proposal.sample(-2, seed=0)
    uniform64 = UniformProposal(2, dtype=F64).sample(5, seed=0).chi
    assert uniform64.dtype == F64


# ---------------------------------------------------------------- derive_seed


def test_derive_seed_gives_distinct_reproducible_keys() -> None:
    keys = set()
    count = 0
    for seed in (0, 1, 2, 2**63, 2**64 - 1):
        for words in itertools.chain(
            [()],
            ((a,) for a in range(50)),
            itertools.product(range(10), range(10)),
            itertools.product(range(4), range(4), range(4)),
        ):
            key = derive_seed(seed, *words)
            assert 0 <= key < 2**64
            assert key == derive_seed(seed, *words)
            keys.add(key)
            count += 1
    assert len(keys) == count
    # The low 63 bits (what torch generators are seeded with) stay distinct too.
    assert len({k & (2**63 - 1) for k in keys}) == count
    # Word order and word count both matter.
    assert derive_seed(1, 2, 3) != derive_seed(1, 3, 2)
    assert derive_seed(1) != derive_seed(1, 0) != derive_seed(1, 0, 0)


def test_counter_based_draws_depend_on_the_global_chain_index_only() -> None:
    """Row i of a draw with offset o is chain o + i's draw: splitting the rows over processes
    (different offsets) reproduces one process's draw exactly."""
    from pyslice._random import normal, uniform

    mixture = MixtureProposal(
        torch.tensor([0, 0, 1]),
        torch.tensor([[0.0, 0.5], [0.3, 0.0]], dtype=torch.float64),
        torch.tensor([[1.0, -2.0], [0.5, 2.5], [-1.0, 1.5]], dtype=torch.float64),
        torch.tensor([[2.0, 3.0], [1.0, 4.0], [5.0, 0.5]], dtype=torch.float64),
    )
    for proposal in (UniformProposal(3), mixture):
        whole = proposal.sample(10, seed=42, offset=0)
        parts = [proposal.sample(4, seed=42, offset=0), proposal.sample(6, seed=42, offset=4)]
        if isinstance(proposal, UniformProposal):
            assert torch.equal(whole.chi, torch.cat([p.chi for p in parts]))
        assert torch.equal(whole.latent, torch.cat([p.latent for p in parts]))
    chains = torch.arange(100, 110)
    u = uniform(7, chains, 5)
    assert torch.equal(u[3:], uniform(7, chains[3:], 5))
    assert torch.equal(u[:, :3], uniform(7, chains, 3))  # a row's first values do not depend on n
    assert bool((u > 0).all()) and bool((u < 1).all())
    assert not torch.equal(u, uniform(8, chains, 5))
    z = normal(7, chains, 4)
    assert z.shape == (10, 4) and bool(torch.isfinite(z).all())


def test_block_by_groups_equals_block_by_columns() -> None:
    """MixtureProposal's O(block) group path gives the densities of the column-mask path, and
    its draws follow the block density (same columns changed, others bit for bit kept)."""
    proposal = MixtureProposal(
        torch.tensor([0, 0, 1, 2, 2, 2]),
        torch.tensor([[0.0, 0.5, -1.0], [0.3, 0.0, -math.inf], [0.1, 0.2, 0.3]], dtype=F64),
        torch.rand(6, 3, generator=torch.Generator().manual_seed(1), dtype=F64) * 6 - 3,
        torch.rand(6, 3, generator=torch.Generator().manual_seed(2), dtype=F64) * 5,
        torch.tensor([False, True, False, False, False, True]),
        conditional=None,
    )
    n = 9
    chi = (torch.rand(n, 6, generator=torch.Generator().manual_seed(3)) * 2 - 1) * math.pi
    groups = torch.tensor([[0, 2], [1, -1], [2, 0], [-1, 1], [0, 1], [2, -1], [1, 2], [0, -1],
                           [1, 0]])  # fmt: skip
    mask = proposal.columns_of_groups(groups)
    torch.testing.assert_close(
        proposal.groups_log_prob(chi, groups), proposal.block_log_prob(chi, mask)
    )
    latent = proposal.sample_latent(chi, seed=5)
    inside = proposal.group_mask(mask)
    block_latent = torch.where(inside, latent, -1)
    torch.testing.assert_close(
        proposal.groups_log_prob(chi, groups, block_latent),
        proposal.block_log_prob(chi, mask, block_latent),
    )
    torch.testing.assert_close(
        proposal.groups_latent_log_prob(chi, block_latent, groups),
        proposal.latent_log_prob(chi, block_latent, mask),
    )
    draw = proposal.sample_groups(chi, groups, seed=11, offset=4)
    assert torch.equal(draw.chi[~mask], chi[~mask]) and bool((draw.chi[mask] != chi[mask]).all())
    assert torch.equal(draw.latent >= 0, inside)
    torch.testing.assert_close(draw.log_q, proposal.block_log_prob(draw.chi, mask, draw.latent))
    labels = proposal.sample_latent_groups(chi, groups, seed=5)
    assert torch.equal(labels >= 0, inside)

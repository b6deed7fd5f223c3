"""VonMises / VonMisesMixture: densities, CDF, exact sampling, EM, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from pyslice import VonMises, VonMisesMixture
from pyslice.distributions import log_i0

KAPPAS = [0.0, 1e-4, 0.5, 3.0, 50.0, 1e3, 1e5]
F64 = torch.float64


def _wrap(x: np.ndarray, center: float = 0.0) -> np.ndarray:
    return (x - center + np.pi) % (2 * np.pi) - np.pi


def _vm_cdf(x: np.ndarray, kappa: float) -> np.ndarray:
    """scipy's CDF on [-pi, pi) about 0 (uniform for kappa = 0, which scipy does not accept)."""
    if kappa == 0.0:
        return (x + np.pi) / (2 * np.pi)
    return stats.vonmises.cdf(x, kappa)


# ---------------------------------------------------------------- densities


@pytest.mark.parametrize("kappa", KAPPAS + [1e6])
def test_log_prob_matches_scipy_float64(kappa: float) -> None:
    x = torch.linspace(-math.pi, math.pi, 401, dtype=F64)
    got = VonMises(torch.tensor(0.7, dtype=F64), torch.tensor(kappa, dtype=F64)).log_prob(x)
    if kappa == 0.0:
        expected = np.full(401, -math.log(2 * math.pi))
    else:
        expected = stats.vonmises.logpdf(x.numpy(), kappa, loc=0.7)
    finite = np.isfinite(expected)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got.numpy()[finite], expected[finite], rtol=1e-10, atol=1e-6)


def test_log_prob_float32_near_mode_at_large_kappa() -> None:
    # kappa (cos d - 1) in float32 would lose everything near the mode; the sin^2 form does not.
    kappa, d = 1e5, torch.tensor([0.0, 1e-4, 1e-3, 3e-3])
    got = VonMises(0.0, kappa).log_prob(d)
    expected = stats.vonmises.logpdf(d.double().numpy(), kappa)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=2e-5)


def test_log_i0_has_no_overflow() -> None:
    kappa = torch.tensor([0.0, 1.0, 700.0, 1e5, 1e8], dtype=F64)
    expected = np.log(special.i0e(kappa.numpy())) + kappa.numpy()
    np.testing.assert_allclose(log_i0(kappa).numpy(), expected, rtol=1e-14)


@pytest.mark.parametrize("kappa", KAPPAS)
def test_cdf_against_quadrature_and_scipy(kappa: float) -> None:
    loc = 0.4
    x = torch.tensor([-2.9, -1.0, 0.35, 0.4, 0.41, 0.5, 2.0, 3.5], dtype=F64)
    dist = VonMises(torch.tensor(loc, dtype=F64), torch.tensor(kappa, dtype=F64))
    got = dist.cdf(x).numpy()
    scale = 2 * np.pi * special.i0e(kappa)
    for xi, gi in zip(x.tolist(), got):
        turns = round((xi - loc) / (2 * np.pi))
        d = xi - loc - 2 * np.pi * turns
        exact = (
            integrate.quad(
                lambda t: np.exp(kappa * (np.cos(t) - 1.0)) / scale,
                -np.pi,
                d,
                points=[0.0] if d > 0 else None,
                epsabs=1e-14,
                epsrel=1e-13,
                limit=200,
            )[0]
            + turns
        )
        assert gi == pytest.approx(exact, abs=1e-9)
    if kappa > 0:  # scipy switches to a normal approximation (error ~3e-6) at kappa >= 50
        np.testing.assert_allclose(got, stats.vonmises.cdf(x.numpy(), kappa, loc=loc), atol=1e-5)


def test_mixture_log_prob_is_weighted_sum_and_normalised() -> None:
    mix = VonMisesMixture(
        torch.log(torch.tensor([0.2, 0.5, 0.3], dtype=F64)),
        torch.tensor([-2.0, 0.1, 2.5], dtype=F64),
        torch.tensor([4.0, 40.0, 0.5], dtype=F64),
    )
    x = torch.linspace(-math.pi, math.pi, 20001, dtype=F64)[:-1]
    expected = sum(
        w * stats.vonmises.pdf(x.numpy(), k, loc=m)
        for w, m, k in ((0.2, -2.0, 4.0), (0.5, 0.1, 40.0), (0.3, 2.5, 0.5))
    )
    np.testing.assert_allclose(mix.log_prob(x).exp().numpy(), expected, rtol=1e-10)
    assert float(mix.log_prob(x).exp().mean() * 2 * math.pi) == pytest.approx(1.0, abs=1e-9)


def test_pi_periodic_mixture_density_repeats_every_pi_and_integrates_to_one() -> None:
    mix = VonMisesMixture([0.0], [1.0], [5.0], pi_periodic=True)
    x = torch.linspace(-math.pi, 0.0, 1001, dtype=F64)
    np.testing.assert_allclose(
        mix.log_prob(x).numpy(), mix.log_prob(x + math.pi).numpy(), atol=1e-6
    )
    grid = torch.linspace(-math.pi, math.pi, 40001, dtype=F64)[:-1]
    assert float(mix.log_prob(grid).exp().mean() * 2 * math.pi) == pytest.approx(1.0, abs=1e-6)


def test_means() -> None:
    assert float(VonMises(4.0, 2.0).mean) == pytest.approx(4.0 - 2 * math.pi, abs=1e-6)
    mix = VonMisesMixture([0.0, 0.0], [0.5, -0.5], [10.0, 10.0])
    assert float(mix.mean) == pytest.approx(0.0, abs=1e-6)
    mix = VonMisesMixture([0.0, -math.inf], [0.5, -0.5], [10.0, 10.0])
    assert float(mix.mean) == pytest.approx(0.5, abs=1e-6)


# ---------------------------------------------------------------- sampling (reference path)


@pytest.mark.parametrize("kappa", KAPPAS)
def test_samples_pass_ks_against_scipy(kappa: float) -> None:
    draws = VonMises(1.0, kappa).sample(100_000, seed=11, backend="reference")
    assert draws.min() >= -math.pi and draws.max() < math.pi
    result = stats.kstest(_wrap(draws.double().numpy(), 1.0), lambda x: _vm_cdf(x, kappa))
    assert result.pvalue > 1e-3, result


@pytest.mark.parametrize("kappa", [9999.0, 1e4, 1e5])
def test_both_sides_of_the_wrapped_normal_switch_are_exact(kappa: float) -> None:
    # Below 1e4 exact Best-Fisher (cancellation-free, no acos near 1), at and above a wrapped
    # normal with matched mean resultant length. A float32 acos-based sampler fails this at 1e5:
    # its angles are quantised to ~sqrt(2 * 6e-8) ~ 3e-4 rad, a tenth of the spread.
    n = 400_000
    draws = VonMises(0.0, kappa).sample(n, seed=5, backend="reference").double().numpy()
    assert stats.kstest(draws, lambda x: stats.vonmises.cdf(x, kappa)).pvalue > 1e-3
    circular_variance = 1.0 - special.i1e(kappa) / special.i0e(kappa)
    measured = 1.0 - np.mean(np.cos(draws))
    assert measured == pytest.approx(circular_variance, rel=4 * math.sqrt(2.0 / n) + 1e-3)
    assert len(np.unique(draws)) > 0.9 * n  # no quantisation onto a coarse grid


def test_ks_has_power_against_a_slightly_wrong_concentration() -> None:
    # The same KS test rejects draws whose concentration is 5% off: the tests above can fail.
    draws = VonMises(0.0, 3.15).sample(100_000, seed=11, backend="reference").double().numpy()
    assert stats.kstest(draws, lambda x: stats.vonmises.cdf(x, 3.0)).pvalue < 1e-3


def test_mixture_component_frequencies_chi_square() -> None:
    weights = np.array([0.05, 0.15, 0.3, 0.5])
    centres = np.array([-2.5, -1.0, 0.5, 2.0])
    mix = VonMisesMixture(torch.log(torch.tensor(weights)), torch.tensor(centres), [400.0] * 4)
    draws = mix.sample(200_000, seed=3, backend="reference").double().numpy()
    nearest = np.abs(_wrap(draws[:, None] - centres[None, :])).argmin(axis=1)
    counts = np.bincount(nearest, minlength=4)
    assert stats.chisquare(counts, weights * len(draws)).pvalue > 1e-3
    wrong = np.array([0.06, 0.14, 0.3, 0.5])
    assert stats.chisquare(counts, wrong * len(draws)).pvalue < 1e-3


def test_empty_component_is_never_drawn() -> None:
    mix = VonMisesMixture([-math.inf, 0.0, -math.inf], [0.0, 2.0, -2.0], [500.0, 500.0, 500.0])
    draws = mix.sample(50_000, seed=1, backend="reference")
    assert (draws - 2.0).abs().max() < 0.5


def test_mixture_samples_pass_ks_against_mixture_cdf() -> None:
    w, m, k = np.array([0.25, 0.75]), np.array([-1.5, 1.0]), np.array([2.0, 12.0])
    mix = VonMisesMixture(torch.log(torch.tensor(w)), torch.tensor(m), torch.tensor(k))
    draws = mix.sample(100_000, seed=9, backend="reference").double().numpy()

    def cdf(x: np.ndarray) -> np.ndarray:
        # P(-pi <= X <= x): each component's CDF measured from -pi.
        return sum(
            wi * (stats.vonmises.cdf(x, ki, loc=mi) - stats.vonmises.cdf(-np.pi, ki, loc=mi))
            for wi, mi, ki in zip(w, m, k)
        )

    assert stats.kstest(draws, cdf).pvalue > 1e-3


def test_pi_periodic_samples() -> None:
    mix = VonMisesMixture([0.0], [0.8], [6.0], pi_periodic=True)
    draws = mix.sample(100_000, seed=2, backend="reference").double().numpy()
    doubled = _wrap(2.0 * draws, 0.8)
    assert stats.kstest(doubled, lambda x: stats.vonmises.cdf(x, 6.0)).pvalue > 1e-3
    upper = np.mean(np.abs(_wrap(draws - 0.4)) < np.pi / 2)  # the two half-turn copies
    assert upper == pytest.approx(0.5, abs=0.01)


def test_same_seed_same_samples_and_streams_differ() -> None:
    dist = VonMisesMixture([0.0, 1.0], [0.0, 2.0], [3.0, 0.5])
    a = dist.sample(1000, seed=42)
    assert torch.equal(a, dist.sample(1000, seed=42))
    assert not torch.equal(a, dist.sample(1000, seed=43))
    assert not torch.equal(a, dist.sample(1000, seed=42, offset=1))
    # A prefix of a longer draw is the shorter draw: elements depend only on (seed, offset, i).
    assert torch.equal(a, dist.sample(2000, seed=42)[:1000])
    torch.manual_seed(0)
    b = dist.sample(10)
    torch.manual_seed(0)
    assert torch.equal(b, dist.sample(10))


def test_seeds_above_32_bits() -> None:
    dist = VonMises(0.0, 2.0)
    a = dist.sample(100, seed=2**40 + 7)
    assert not torch.equal(a, dist.sample(100, seed=7))
    assert torch.equal(a, dist.sample(100, seed=2**40 + 7))


@pytest.mark.parametrize("sample_shape", [(), 0, 5, (2, 3), (0, 4)])
def test_sample_shapes(sample_shape) -> None:
    dist = VonMisesMixture(torch.zeros(4, 2, 3), torch.zeros(4, 2, 3), torch.ones(4, 2, 3))
    expected = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
    assert dist.sample(sample_shape, seed=0).shape == (*expected, 4, 2)
    single = VonMises(torch.zeros(3), torch.ones(3))
    assert single.sample(sample_shape, seed=0).shape == (*expected, 3)


def test_batched_parameters_use_their_own_row() -> None:
    dist = VonMises(torch.tensor([-2.0, 0.0, 2.5]), torch.tensor([1e3, 1e3, 1e3]))
    draws = dist.sample(2000, seed=1)
    np.testing.assert_allclose(draws.mean(0).numpy(), [-2.0, 0.0, 2.5], atol=0.01)


def test_float64_parameters_give_float64_samples() -> None:
    draws = VonMises(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64)).sample(4, seed=0)
    assert draws.dtype == F64


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("make", "error", "name"),
    [
        (lambda: VonMises(0.0, -1.0), ValueError, "concentration"),
        (lambda: VonMises(0.0, float("nan")), ValueError, "concentration"),
        (lambda: VonMises(0.0, float("inf")), ValueError, "concentration"),
        (lambda: VonMises(float("nan"), 1.0), ValueError, "loc"),
        (lambda: VonMises(torch.zeros(3), torch.ones(4)), ValueError, "loc"),
        (lambda: VonMises(torch.zeros(3, dtype=torch.int64), 1.0), TypeError, "loc"),
        (lambda: VonMises(0.0, torch.ones(2, dtype=torch.int32)), TypeError, "concentration"),
        (lambda: VonMises("a", 1.0), TypeError, "loc"),
        (
            lambda: VonMisesMixture(torch.zeros(2), torch.zeros(3), torch.ones(3)),
            ValueError,
            "logits",
        ),
        (lambda: VonMisesMixture([float("nan")], [0.0], [1.0]), ValueError, "logits"),
        (lambda: VonMisesMixture([-math.inf], [0.0], [1.0]), ValueError, "logits"),
        (lambda: VonMisesMixture(0.0, 0.0, 1.0), ValueError, "logits"),
        (lambda: VonMisesMixture([0.0], [0.0], [-2.0]), ValueError, "concentration"),
        (
            lambda: VonMisesMixture(torch.zeros(1, dtype=torch.long), [0.0], [1.0]),
            TypeError,
            "logits",
        ),
    ],
)
def test_bad_parameters_name_the_argument(make, error, name) -> None:
    with pytest.raises(error, match=name):
        make()


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 2**64}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"seed": True}, TypeError, "seed"),
        ({"offset": 2**32}, ValueError, "offset"),
        ({"sample_shape": (-1,)}, ValueError, "sample_shape"),
        ({"sample_shape": "3"}, TypeError, "sample_shape"),
        ({"backend": "fortran"}, ValueError, "backend"),
    ],
)
def test_bad_sample_arguments_name_the_argument(kwargs, error, name) -> None:
    with pytest.raises(error, match=name):
        VonMises(0.0, 1.0).sample(**kwargs)


def test_bad_angles_name_the_argument() -> None:
    dist = VonMises(0.0, 1.0)
    with pytest.raises(ValueError, match="x"):
        dist.log_prob(torch.tensor([0.0, float("nan")]))
    with pytest.raises(TypeError, match="x"):
        dist.log_prob(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="x"):
        dist.cdf(float("inf"))


# ---------------------------------------------------------------- EM


def _synthetic(seed: int = 0):
    truth = VonMisesMixture(
        torch.log(torch.tensor([0.2, 0.3, 0.5], dtype=F64)),
        torch.tensor([1.0, -2.0, 2.8], dtype=F64),
        torch.tensor([8.0, 20.0, 4.0], dtype=F64),
    )
    return truth, truth.sample((3, 6000), seed=seed)


def _match(fitted_loc: torch.Tensor, true_loc: torch.Tensor) -> torch.Tensor:
    """Distance of each true mean to its nearest fitted mean (wrapped)."""
    gap = torch.remainder(fitted_loc[:, None] - true_loc[None, :] + math.pi, 2 * math.pi) - math.pi
    return gap.abs().min(dim=0).values


def test_em_recovers_synthetic_mixtures_in_a_batch() -> None:
    truth, data = _synthetic()
    fit = VonMisesMixture.fit(data, 3, seed=0)
    assert fit.batch_shape == (3,) and fit.loc.dtype == F64
    assert bool(fit.fit_result.converged.all())
    for b in range(3):
        assert float(_match(fit.loc[b], truth.loc).max()) < 0.05
        order = torch.argsort(fit.loc[b])
        np.testing.assert_allclose(fit.probs[b][order].numpy(), [0.3, 0.2, 0.5], atol=0.03)


def test_em_log_likelihood_never_decreases() -> None:
    _, data = _synthetic(seed=1)
    for k in (2, 3, 5):
        fit = VonMisesMixture.fit(data, k, seed=k, n_init=2, tol=0.0, max_iter=60)
        history = fit.fit_result.log_likelihood
        steps = history[..., 1:] - history[..., :-1]
        assert float(steps.min()) >= -1e-9 * float(history.abs().max())


def test_em_single_component_equals_scipy_mle() -> None:
    data = VonMises(0.9, 6.0).sample(5000, seed=4).double()
    fit = VonMisesMixture.fit(data, 1, seed=0)
    kappa, loc, _ = stats.vonmises.fit(data.numpy(), fscale=1)
    assert float(fit.loc[0]) == pytest.approx(loc, abs=1e-6)
    assert float(fit.concentration[0]) == pytest.approx(kappa, rel=1e-5)


def test_em_weights_zero_drop_points() -> None:
    _, data = _synthetic(seed=2)
    clean = data[0, :3000]
    padded = torch.cat([clean, torch.full((500,), 0.3, dtype=F64)])
    weights = torch.cat([torch.ones(3000, dtype=F64), torch.zeros(500, dtype=F64)])
    a = VonMisesMixture.fit(clean, 3, seed=0)
    b = VonMisesMixture.fit(padded, 3, weights=weights, seed=0)
    np.testing.assert_allclose(torch.sort(a.loc).values, torch.sort(b.loc).values, atol=1e-6)


def test_em_pi_periodic_recovers_axial_modes() -> None:
    truth = VonMisesMixture([0.0, 0.0], [0.5, 2.5], [30.0, 10.0], pi_periodic=True)
    data = truth.sample(20_000, seed=1)
    fit = VonMisesMixture.fit(data, 2, pi_periodic=True, seed=1)
    assert fit.pi_periodic
    assert float(_match(fit.loc, truth.loc).max()) < 0.05
    plain = VonMisesMixture.fit(data, 2, seed=1)
    assert float(fit.log_prob(data).sum()) > float(plain.log_prob(data).sum())


def test_bic_chooses_the_true_number_of_components() -> None:
    _, data = _synthetic(seed=3)
    best, scores = VonMisesMixture.fit_bic(data, max_components=5, seed=0)
    assert scores.shape == (3, 5)
    assert (scores.argmin(-1) == 2).all()
    assert (torch.isfinite(best.logits).sum(-1) == 3).all()
    assert torch.isfinite(best.log_prob(data.T)).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"n_components": 0}, ValueError, "n_components"),
        ({"n_components": 2.0}, TypeError, "n_components"),
        ({"n_components": 2, "weights": -torch.ones(10)}, ValueError, "weights"),
        ({"n_components": 2, "weights": torch.ones(9)}, ValueError, "weights"),
        ({"n_components": 2, "weights": torch.zeros(10)}, ValueError, "weights"),
        ({"n_components": 2, "n_init": 0}, ValueError, "n_init"),
        ({"n_components": 2, "tol": -1.0}, ValueError, "tol"),
    ],
)
def test_em_bad_arguments(kwargs, error, name) -> None:
    with pytest.raises(error, match=name):
        VonMisesMixture.fit(torch.zeros(10), **kwargs)


def test_em_bad_data() -> None:
    with pytest.raises(ValueError, match="x"):
        VonMisesMixture.fit(torch.tensor([0.0, float("nan")]), 1)
    with pytest.raises(ValueError, match="x"):
        VonMisesMixture.fit(torch.zeros(0), 1)
    with pytest.raises(TypeError, match="x"):
        VonMisesMixture.fit(torch.zeros(5, dtype=torch.int64), 1)


@pytest.mark.parametrize("kappa", [1e-6, 0.05, 1.0, 50.0, 5000.0])
def test_best_fisher_angle_keeps_float32_precision_everywhere(kappa: float) -> None:
    # theta = acos(W) from float32 half-angle forms against float64 acos: including the tails
    # next to 0 and pi, where 1 - W or 1 + W alone would cancel.
    from pyslice import reference

    u = torch.cat([torch.linspace(0, 1, 4097)[:-1], 1.0 - torch.logspace(-7, -1, 50)])
    table = reference.mixture_table(torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor([[kappa]]))
    s_minus_1, s_plus_1 = table[3, 0, 0], table[4, 0, 0]
    _, theta = reference.best_fisher_try(
        u,
        torch.zeros_like(u),
        torch.full_like(u, kappa),
        s_minus_1.expand_as(u),
        s_plus_1.expand_as(u),
    )
    s = float(s_minus_1.double()) + 1.0
    # Same float32 half angle as the sampler (its rounding only perturbs u by ~6e-8).
    h = (u * (math.pi / 2)).double().numpy()
    z = np.cos(2.0 * h)
    exact = np.arccos(np.clip((1 + s * z) / (s + z), -1, 1))
    np.testing.assert_allclose(theta.double().numpy(), exact, rtol=2e-6, atol=1e-6)


def test_product_component_log_prob_is_the_sum_over_angles() -> None:
    from pyslice.distributions import product_component_log_prob, von_mises_log_density

    gen = torch.Generator().manual_seed(3)
    n, d, k = 7, 3, 4
    x = (torch.rand(n, d, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
    loc = (torch.rand(d, k, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
    kappa = torch.rand(d, k, generator=gen, dtype=torch.float64) * 20
    log_w = torch.log_softmax(torch.randn(k, generator=gen, dtype=torch.float64), 0)
    joint = product_component_log_prob(x, log_w, loc, kappa)
    assert joint.shape == (n, k)
    expected = log_w.clone().expand(n, k).clone()
    for j in range(d):
        for c in range(k):
            expected[:, c] += von_mises_log_density(x[:, j], loc[j, c], kappa[j, c])
    torch.testing.assert_close(joint, expected, rtol=0, atol=1e-12)
    # one angle: the mixture density equals VonMisesMixture's
    mixture = VonMisesMixture(log_w, loc[0], kappa[0])
    torch.testing.assert_close(
        torch.logsumexp(product_component_log_prob(x[:, :1], log_w, loc[:1], kappa[:1]), -1),
        mixture.log_prob(x[:, 0]),
        rtol=0,
        atol=1e-12,
    )

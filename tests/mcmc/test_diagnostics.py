"""Diagnostics equal ArviZ's on the same arrays (ArviZ: (chain, draw); pyslice: (draw, chain))."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from pyslice.mcmc import diagnostics

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # ArviZ announces its refactor on import
    az = pytest.importorskip("arviz")


def _ar1(rng: np.random.Generator, chains: int, draws: int, phi: float, shift=0.0) -> np.ndarray:
    """(draws, chains) AR(1) chains with autocorrelation phi; chain c offset by shift * c."""
    x = np.empty((draws, chains))
    x[0] = rng.normal(size=chains)
    noise = rng.normal(size=(draws, chains)) * np.sqrt(1 - phi**2)
    for t in range(1, draws):
        x[t] = phi * x[t - 1] + noise[t]
    return x + shift * np.arange(chains)


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "iid": rng.normal(size=(1000, 4)),
        "ar1-0.9": _ar1(rng, 4, 800, 0.9),
        "ar1-0.99-odd-draws": _ar1(rng, 3, 501, 0.99),
        "anticorrelated": _ar1(rng, 4, 400, -0.6),
        "not-converged": _ar1(rng, 4, 600, 0.5, shift=1.5),
        "ties": np.round(_ar1(rng, 4, 300, 0.7), 1),
        "heavy-tails": rng.standard_cauchy(size=(700, 2)),
        "short": rng.normal(size=(5, 2)),
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_rhat_equals_arviz(name: str) -> None:
    x = CASES[name]
    expected = az.rhat(x.T, method="rank")
    np.testing.assert_allclose(diagnostics.rhat(x), expected, rtol=1e-10)


@pytest.mark.parametrize("kind", ["bulk", "tail", "mean"])
@pytest.mark.parametrize("name", list(CASES))
def test_ess_equals_arviz(name: str, kind: str) -> None:
    x = CASES[name]
    expected = az.ess(x.T, method=kind)
    np.testing.assert_allclose(diagnostics.ess(x, kind=kind), expected, rtol=1e-10)


def test_batched_quantities_equal_one_at_a_time() -> None:
    stacked = np.stack([CASES["iid"][:300, :2], CASES["ar1-0.9"][:300, :2]], axis=-1)  # (300,2,2)
    stacked = np.stack([stacked, stacked[..., ::-1]], axis=-1)  # (300, 2, 2, 2)
    got_rhat, got_ess = diagnostics.rhat(stacked), diagnostics.ess(stacked, "tail")
    assert got_rhat.shape == got_ess.shape == (2, 2)
    for i in range(2):
        for j in range(2):
            one = stacked[:, :, i, j]
            assert got_rhat[i, j] == pytest.approx(float(az.rhat(one.T)), rel=1e-10)
            assert got_ess[i, j] == pytest.approx(float(az.ess(one.T, method="tail")), rel=1e-10)


def test_rhat_flags_unconverged_chains_and_ess_sees_autocorrelation() -> None:
    assert diagnostics.rhat(CASES["iid"]) < 1.01
    assert diagnostics.rhat(CASES["not-converged"]) > 1.1
    assert diagnostics.ess(CASES["ar1-0.9"]) < 0.2 * diagnostics.ess(CASES["iid"])


def test_edge_cases() -> None:
    constant = np.ones((100, 3))
    assert diagnostics.ess(constant) == 300
    with_nan = CASES["iid"].copy()
    with_nan[3, 1] = np.nan
    assert np.isnan(diagnostics.rhat(with_nan)) and np.isnan(diagnostics.ess(with_nan))
    assert np.isnan(diagnostics.rhat(np.zeros((3, 4))))  # fewer than 4 draws
    assert np.isnan(diagnostics.rhat(CASES["iid"][:, :1]))  # one chain: no R-hat
    assert np.isfinite(diagnostics.ess(CASES["iid"][:, :1]))  # ... but an ESS


def test_autocorrelation_of_ar1_decays_geometrically() -> None:
    x = _ar1(np.random.default_rng(3), 8, 4000, 0.8)
    acf = diagnostics.autocorrelation(torch.from_numpy(x), max_lag=5)
    assert acf.shape == (6,)
    np.testing.assert_allclose(acf, 0.8 ** np.arange(6), atol=0.05)
    expected = az.autocorr(x.T).mean(axis=0)[:6]
    np.testing.assert_allclose(acf, expected, rtol=1e-10)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="samples"):
        diagnostics.rhat(np.zeros(10))
    with pytest.raises(TypeError, match="samples"):
        diagnostics.ess(np.zeros((10, 2), dtype=bool))
    with pytest.raises(ValueError, match="kind"):
        diagnostics.ess(np.zeros((10, 2)), kind="median")
    with pytest.raises(ValueError, match="max_lag"):
        diagnostics.autocorrelation(np.zeros((10, 2)), max_lag=10)

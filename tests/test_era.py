"""ERA loss: exact formula, stability, and recovery of its known minimiser on a discrete problem."""

from __future__ import annotations

import math

import pytest
import torch

from pyslice.era import era_loss

F64 = torch.float64


def _bernoulli_kl(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def test_matches_the_bernoulli_kl_written_out() -> None:
    lp, lp2, lr, lr2, u, u2 = (
        torch.tensor([v], dtype=F64) for v in (-1.0, -2.5, -1.7, -1.2, 3.0, 1.0)
    )
    beta, gamma = 0.7, 0.4
    p = 1 / (1 + math.exp(-beta * (1.0 - 3.0)))
    q = 1 / (1 + math.exp(-((1 + gamma) * (-1.0 + 2.5) - gamma * (-1.7 + 1.2))))
    got = era_loss(lp, lp2, lr, lr2, u, u2, beta=beta, gamma=gamma)
    assert float(got) == pytest.approx(_bernoulli_kl(p, q), rel=1e-12)
    # Target first: swapping the roles of target and model gives a different number.
    assert float(got) != pytest.approx(_bernoulli_kl(q, p), rel=1e-3)


def test_gradient_is_q_minus_p_and_zero_at_agreement() -> None:
    logit = torch.tensor([0.3, -2.0, 5.0], dtype=F64, requires_grad=True)
    energy_gap = torch.tensor([1.0, -0.5, 2.0], dtype=F64)  # U(y') - U(y)
    zeros = torch.zeros(3, dtype=F64)
    loss = era_loss(logit, zeros, zeros, zeros, zeros, energy_gap, beta=1.0, reduction="sum")
    loss.backward()
    expected = torch.sigmoid(logit.detach()) - torch.sigmoid(energy_gap)
    torch.testing.assert_close(logit.grad, expected, rtol=1e-12, atol=1e-12)
    at_target = era_loss(
        energy_gap, zeros, zeros, zeros, zeros, energy_gap, beta=1.0, reduction="none"
    )
    torch.testing.assert_close(at_target, torch.zeros(3, dtype=F64), atol=1e-15, rtol=0)


def test_stable_for_huge_gaps() -> None:
    big = torch.tensor([1e6, -1e6], dtype=torch.float32)
    zeros = torch.zeros(2)
    loss = era_loss(big, zeros, zeros, zeros, zeros, -big, beta=1.0, reduction="none")
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_minimiser_is_the_tilted_boltzmann_distribution(gamma: float) -> None:
    # A categorical policy over 16 states with known energies; pairs drawn from pi_ref, so the
    # expected loss over all ordered pairs is sum_{y,y'} pi_ref(y) pi_ref(y') loss(y, y').
    gen = torch.Generator().manual_seed(0)
    n, beta = 16, 1.3
    energy = torch.rand(n, generator=gen, dtype=F64) * 4.0
    log_ref = torch.log_softmax(torch.randn(n, generator=gen, dtype=F64), 0)
    logits = torch.zeros(n, dtype=F64, requires_grad=True)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    i, j = i.flatten(), j.flatten()
    pair_weight = (log_ref[i] + log_ref[j]).exp()

    def expected_loss() -> torch.Tensor:
        logp = torch.log_softmax(logits, 0)
        per_pair = era_loss(
            logp[i],
            logp[j],
            log_ref[i],
            log_ref[j],
            energy[i],
            energy[j],
            beta=beta,
            gamma=gamma,
            reduction="none",
        )
        return (pair_weight * per_pair).sum()

    optimiser = torch.optim.LBFGS(
        [logits],
        max_iter=500,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimiser.zero_grad()
        loss = expected_loss()
        loss.backward()
        return loss

    for _ in range(5):
        optimiser.step(closure)
    fitted = torch.softmax(logits.detach(), 0)
    target = torch.softmax(-beta / (1 + gamma) * energy + gamma / (1 + gamma) * log_ref, 0)
    total_variation = 0.5 * (fitted - target).abs().sum()
    assert float(total_variation) < 1e-3
    # ... and it is not the reference nor (for gamma > 0) the plain Boltzmann distribution.
    boltzmann = torch.softmax(-beta * energy, 0)
    assert 0.5 * float((target - log_ref.exp()).abs().sum()) > 0.05
    if gamma > 0:
        assert 0.5 * float((target - boltzmann).abs().sum()) > 0.01


def test_bad_arguments() -> None:
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="beta"):
        era_loss(x, x, x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="gamma"):
        era_loss(x, x, x, x, x, x, beta=1.0, gamma=-1.0)
    with pytest.raises(ValueError, match="energy_y2"):
        era_loss(x, x, x, x, x, torch.tensor([0.0, float("nan"), 0.0]), beta=1.0)
    with pytest.raises(TypeError, match="logp_y"):
        era_loss(torch.zeros(3, dtype=torch.long), x, x, x, x, x, beta=1.0)
    with pytest.raises(ValueError, match="reduction"):
        era_loss(x, x, x, x, x, x, beta=1.0, reduction="max")

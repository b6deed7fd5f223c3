"""ERA loss: exact formula, stability, and recovery of its known minimiser on a discrete problem."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from pyslice.models.era import Policy, era_loss

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


# ------------------------------------------------------------------------------------ trainer


class CategoricalPolicy(Policy):
    """A policy over 16 discrete states (y = state index stored as a float tensor (n, 1))."""

    conditional = False

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone().to(F64))

    def log_prob(self, y: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return torch.log_softmax(self.logits, 0)[y[:, 0].long()]

    def sample(self, n: int, *, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed % 2**63)
        probs = torch.softmax(self.logits.detach(), 0)
        return torch.multinomial(probs, n, replacement=True, generator=gen).to(F64)[:, None]


@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_trainer_recovers_the_era_minimiser_on_a_discrete_problem(gamma: float) -> None:
    from pyslice.mcmc.sampler import BOLTZMANN_KJ_PER_MOL_K
    from pyslice.models.era import ERATrainer

    torch.manual_seed(0)
    energies = torch.linspace(0.0, 6.0, 16, dtype=F64)[torch.randperm(16)]
    ref_logits = 0.3 * torch.randn(16, dtype=F64)
    reference, model = CategoricalPolicy(ref_logits), CategoricalPolicy(ref_logits)
    beta = 1.0 / (BOLTZMANN_KJ_PER_MOL_K * 300.0)
    trainer = ERATrainer(
        model,
        reference,
        lambda y: energies[y[:, 0].long()],
        gamma=gamma,
        pairs=2048,
        lr=0.05,
        seed=1,
        log_every=100,
        scheduler=lambda t: 0.5 * (1 + math.cos(math.pi * t / 400)),
    )
    trainer.train(400)
    log_ref = torch.log_softmax(ref_logits, 0)
    target = torch.softmax(-beta / (1 + gamma) * energies + gamma / (1 + gamma) * log_ref, 0)
    got = torch.softmax(model.logits.detach(), 0)
    start = torch.softmax(ref_logits, 0)
    tv = 0.5 * float((got - target).abs().sum())
    assert tv < 0.01, tv
    assert 0.5 * float((start - target).abs().sum()) > 10 * tv
    assert trainer.history[-1].step == 400
    assert all(torch.equal(p, q) for p, q in zip(reference.parameters(), [ref_logits]))


def _gvg_problem():
    import pyslice
    from pyslice.mcmc.targets import ProteinTarget
    from pyslice.models.era import MixturePolicy
    from pyslice.proposals import MixtureProposal

    protein = pyslice.Protein.from_sequence("GVG")
    target = ProteinTarget(protein, pyslice.ForceFieldEnergy(protein, dtype=F64))
    grid = torch.linspace(-math.pi, math.pi, 721, dtype=F64)[:-1, None]
    beta = 1.0 / (0.00831446261815324 * 300.0)
    log_p = -beta * target.energy(grid)[0]
    log_p = log_p - torch.logsumexp(log_p, 0) - math.log(2 * math.pi / 720)
    k = 3
    loc = torch.deg2rad(torch.tensor([[60.0, 180.0, -60.0]], dtype=F64))
    start = MixtureProposal(torch.tensor([0]), torch.zeros(1, k), loc, torch.full((1, k), 4.0))
    return target, grid, log_p, MixturePolicy(start), MixturePolicy(start)


def _kl_both(policy, grid, log_p) -> tuple[float, float]:
    log_q = policy.log_prob(grid).detach()
    dx = 2 * math.pi / grid.shape[0]
    return (
        float((log_p.exp() * (log_p - log_q)).sum() * dx),
        float((log_q.exp() * (log_q - log_p)).sum() * dx),
    )


def test_era_moves_a_mixture_toward_the_boltzmann_distribution_of_gvg() -> None:
    from pyslice.models.era import ERATrainer, independence_acceptance

    target, grid, log_p, reference, model = _gvg_problem()
    before = _kl_both(reference, grid, log_p)
    trainer = ERATrainer(
        model,
        reference,
        target,
        pairs=256,
        lr=0.05,
        seed=0,
        log_every=50,
        scheduler=lambda t: 0.5 * (1 + math.cos(math.pi * t / 200)),
    )
    history = trainer.train(200)
    after = _kl_both(model, grid, log_p)
    # KL(model || Boltzmann) falls more than 5x; KL(Boltzmann || model) more than 2x (ERA weighs
    # pairs by the reference, many of them in the tails, so the sharp well's width comes last).
    assert after[1] < before[1] / 5, (before, after)
    assert after[0] < before[0] / 2, (before, after)
    # As an independence proposal the aligned model is accepted far more often than the start.
    with torch.no_grad():
        chi = reference.sample(512, seed=9)
        log_w = -trainer.beta * target.energy(chi)[0] - reference.log_prob(chi)
    assert history[-1].acceptance > 2 * independence_acceptance(log_w)
    assert history[-1].mean_energy < float(target.energy(chi)[0].mean())


def test_era_aligns_the_shipped_transformer_with_gvg() -> None:
    # The transformer as an unconditional ERA policy (whole side-chain sets from the backbone):
    # the same quadrature reference as the mixture test above.
    import copy

    from pyslice.models.era import ERATrainer
    from pyslice.models.transformer import SideChainTransformer, TransformerPolicy

    target, grid, log_p, _, _ = _gvg_problem()
    protein = target.protein
    model = SideChainTransformer.default()
    reference = TransformerPolicy(model, protein)
    policy = TransformerPolicy(copy.deepcopy(model), protein)
    before = _kl_both(reference, grid.float(), log_p)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny forward passes: a thread team costs more than it saves
    try:
        ERATrainer(policy, reference, target, pairs=256, lr=3e-3, seed=0, log_every=50).train(100)
    finally:
        torch.set_num_threads(threads)
    after = _kl_both(policy, grid.float(), log_p)
    # measured: KL(model || Boltzmann) 33.4 -> 3.1, KL(Boltzmann || model) 3.8 -> 0.9
    assert after[1] < before[1] / 5, (before, after)
    assert after[0] < before[0] / 2, (before, after)
    # the reference is untouched (ERA trains a separate copy)
    assert _kl_both(reference, grid.float(), log_p) == before


def test_era_trainer_resumes_bit_identically(tmp_path) -> None:
    from pyslice.models.era import ERATrainer

    def trainer_for(model, reference, target):
        return ERATrainer(model, reference, target, pairs=32, lr=0.05, seed=3, log_every=2)

    target, _, _, reference, model = _gvg_problem()
    straight = trainer_for(model, reference, target)
    straight.train(6)
    path = tmp_path / "era.pt"
    target2, _, _, reference2, first = _gvg_problem()
    trainer_for(first, reference2, target2).train(3, checkpoint=path, checkpoint_every=1)
    _, _, _, reference3, resumed = _gvg_problem()
    again = trainer_for(resumed, reference3, target2)
    again.train(6, checkpoint=path, checkpoint_every=1)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [vars(e) for e in straight.history] == [vars(e) for e in again.history]


def test_era_trainer_drops_pairs_with_a_non_finite_energy() -> None:
    from pyslice.models.era import ERATrainer

    target, _, _, reference, model = _gvg_problem()
    seen = []

    def clashing(chi: torch.Tensor) -> torch.Tensor:
        energy = target.energy(chi)[0]
        energy = torch.where(chi[:, 0] > 2.0, math.inf, energy)  # a "clash" region
        seen.append(int((~torch.isfinite(energy)).sum()))
        return energy

    trainer = ERATrainer(model, reference, clashing, pairs=64, lr=0.05, seed=1, log_every=2)
    history = trainer.train(4)
    assert sum(seen) > 0  # some draws did land in the region
    assert all(math.isfinite(entry.loss) for entry in history)
    assert all(math.isfinite(entry.median_energy) for entry in history)


def test_era_trainer_rejects_bad_arguments() -> None:
    from pyslice.models.era import ERATrainer

    target, _, _, reference, model = _gvg_problem()
    with pytest.raises(ValueError, match="reference_model"):
        ERATrainer(model, model, target)
    with pytest.raises(ValueError, match="temperature"):
        ERATrainer(model, reference, target, temperature=0.0)
    with pytest.raises(ValueError, match="gamma"):
        ERATrainer(model, reference, target, gamma=-1.0)
    with pytest.raises(TypeError, match="energy"):
        ERATrainer(model, reference, 3.0)
    with pytest.raises(TypeError, match="model"):
        ERATrainer(object(), reference, target)

    class SameWeights(Policy):  # another policy object around the same parameters
        conditional = False

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def log_prob(self, chi, condition=None):
            return self.inner.log_prob(chi)

        def sample(self, n, *, seed):
            return self.inner.sample(n, seed=seed)

    with pytest.raises(ValueError, match="reference_model"):
        ERATrainer(model, SameWeights(model), target)
    with pytest.raises(ValueError, match="eval_contexts"):
        ERATrainer(model, reference, target, eval_contexts=0)


def test_trainer_takes_policies_of_one_declared_kind() -> None:
    from pyslice.models.era import ERATrainer, MixturePolicy

    target, _, _, reference, model = _gvg_problem()

    class DuckTyped(torch.nn.Module):  # the right methods, but not a declared Policy
        def __init__(self, inner):
            super().__init__()
            self.inner = copy.deepcopy(inner)
            self.sample, self.log_prob = self.inner.sample, self.inner.log_prob

    with pytest.raises(TypeError, match="model must be a pyslice.models.era.Policy"):
        ERATrainer(DuckTyped(model), reference, target)

    class Conditional(MixturePolicy):  # declares the other kind
        conditional = True

    with pytest.raises(ValueError, match="kind"):
        ERATrainer(model, Conditional(reference.proposal()), target)
    # A subclass that does not declare its kind cannot be made.
    with pytest.raises(TypeError, match="conditional"):

        class Undeclared(Policy):
            def log_prob(self, chi, condition=None):
                return chi.sum(1)

        Undeclared()
    # An unconditional policy takes no condition.
    with pytest.raises(ValueError, match="condition"):
        model.log_prob(torch.zeros(2, 1, dtype=F64), torch.ones(2, 1, dtype=torch.bool))
    # The draws of the other kind are not there.
    with pytest.raises(NotImplementedError, match="sample"):
        model.sample_grouped(2, 2, seed=0)


def test_mixture_policy_log_prob_is_its_proposals() -> None:
    _, grid, _, _, model = _gvg_problem()
    with torch.no_grad():
        model.loc.add_(0.3)  # away from the start, so the live parameters are what is scored
    log_q = model.log_prob(grid)
    torch.testing.assert_close(log_q.detach(), model.proposal().log_prob(grid), rtol=0, atol=0)
    log_q.sum().backward()
    assert model.loc.grad is not None and float(model.loc.grad.abs().sum()) > 0


def test_independence_acceptance_estimator() -> None:
    from pyslice.models.era import independence_acceptance

    # q = p: every proposal accepted.
    assert independence_acceptance(torch.zeros(100, dtype=F64)) == pytest.approx(1.0)
    # Three draws: x ~ p by the self-normalised weights, x' one of the *other* draws.
    lw = torch.tensor([0.0, math.log(3.0), math.log(0.5)], dtype=F64)  # p/q up to a constant
    w = torch.softmax(lw, 0)
    exact = sum(
        float(w[i]) * 0.5 * min(1.0, math.exp(float(lw[j] - lw[i])))
        for i in range(3)
        for j in range(3)
        if j != i
    )
    assert independence_acceptance(lw) == pytest.approx(exact)
    # One draw holds all of p's weight: the true acceptance is ~0. A draw proposed against
    # itself (accepted with ratio 1) must not count, or the estimate would be floored at 1/n.
    lw = torch.full((32,), -1000.0, dtype=F64)
    lw[0] = 0.0
    assert independence_acceptance(lw) < 1e-100
    # a clash (-inf) is a proposal that is never accepted: it lowers the estimate
    with_clash = torch.tensor([0.0, 0.0, -math.inf], dtype=F64)
    assert independence_acceptance(with_clash) == pytest.approx(0.5)
    assert math.isnan(independence_acceptance(torch.tensor([0.0], dtype=F64)))

"""SideChainTransformer and its proposal: exact densities, sampling, conditioning, files,
maximum-likelihood training with exact resume, and exact MCMC with the proposal.

Most tests use a small randomly initialised model whose output heads are scaled up (peaked,
strongly context-dependent mixtures) on peptides built from sequence; the shipped model is checked
on bpti where the shared data is present.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from pyslice import Protein
from pyslice.mcmc.moves import Candidate, Independence, Lifted
from pyslice.mcmc.sampler import BOLTZMANN_KJ_PER_MOL_K, Sampler
from pyslice.mcmc.targets import FunctionTarget
from pyslice.models.transformer import (
    ProteinRecord,
    SideChainTransformer,
    TransformerPolicy,
    TransformerProposal,
    evaluate_nll,
    record_from_protein,
    records_from_ensemble,
    train_ml,
)

TWO_PI = 2.0 * math.pi


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small batched forward passes: on a loaded 2-core machine a thread team costs more than
    # it saves (10x here). Restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(seed: int = 0, scale: float = 0.6, **kwargs) -> SideChainTransformer:
    torch.manual_seed(seed)
    config = dict(d_model=32, n_heads=2, n_layers=2, d_ff=64, n_components=4)
    config.update(kwargs)
    model = SideChainTransformer(**config)
    with torch.no_grad():
        for head in model.heads:
            head.weight.normal_(0.0, scale)
    return model.eval()


@pytest.fixture(scope="module")
def peptide() -> Protein:
    # Columns: VAL1 chi1 | LEU2 chi1, chi2 | PHE3 chi1, chi2 (pi-periodic).
    return Protein.from_sequence("AVLFA")


@pytest.fixture(scope="module")
def proposal(peptide: Protein) -> TransformerProposal:
    return _model().proposal(peptide)


def _block(proposal: TransformerProposal, n: int, group: int) -> torch.Tensor:
    return (proposal.group == group).expand(n, -1).clone()


def _grid(m: int) -> torch.Tensor:
    return -math.pi + (torch.arange(m, dtype=torch.float64) + 0.5) * (TWO_PI / m)


def _context(proposal: TransformerProposal, seed: int = 1) -> torch.Tensor:
    return proposal.sample(1, seed=seed).chi


def _grid_log_q(proposal: TransformerProposal, context: torch.Tensor, group: int, m: int):
    """log q of the group's chis on an m^C grid (other columns from ``context``)."""
    columns = torch.nonzero(proposal.group == group).flatten().tolist()
    axes = torch.meshgrid(*([_grid(m)] * len(columns)), indexing="ij")
    chi = context.expand(axes[0].numel(), -1).clone()
    for c, axis in zip(columns, axes, strict=True):
        chi[:, c] = axis.reshape(-1).to(chi.dtype)
    log_q = proposal.block_log_prob(chi, _block(proposal, chi.shape[0], group))
    return log_q.reshape(*([m] * len(columns))), columns


@pytest.mark.parametrize("group", [0, 1, 2], ids=["VAL-1chi", "LEU-2chi", "PHE-2chi-periodic"])
def test_block_density_integrates_to_one(proposal: TransformerProposal, group: int) -> None:
    context = _context(proposal)
    m = 256 if group == 0 else 128
    log_q, columns = _grid_log_q(proposal, context, group, m)
    integral = float(torch.exp(log_q).sum()) * (TWO_PI / m) ** len(columns)
    assert integral == pytest.approx(1.0, abs=2e-4)
    # The density is not flat (the test would be vacuous otherwise).
    assert float(log_q.max() - log_q.min()) > 2.0


@pytest.mark.parametrize("residue", [2, 3], ids=["LEU", "PHE"])
def test_full_density_integrates_to_one(peptide: Protein, residue: int) -> None:
    # The all-masked q of a protein with one movable residue (the others fixed, no chi context).
    single = Protein(peptide.topology, peptide.positions, movable=[residue])
    proposal = _model().proposal(single)
    assert proposal.n_chi == 2 and proposal.n_groups == 1
    m = 128
    axes = torch.meshgrid(_grid(m), _grid(m), indexing="ij")
    chi = torch.stack([a.reshape(-1) for a in axes], -1).float()
    log_q = proposal.log_prob(chi)
    assert float(torch.exp(log_q).sum()) * (TWO_PI / m) ** 2 == pytest.approx(1.0, abs=2e-4)
    # The all-masked density is the block density with every group in the block.
    everything = torch.ones_like(chi, dtype=torch.bool)
    # (equal up to float32 round-off: the forward pass ran in batches of different sizes)
    torch.testing.assert_close(proposal.block_log_prob(chi, everything), log_q, rtol=0, atol=1e-5)


def _cell_probabilities(log_q: torch.Tensor, bins: int) -> np.ndarray:
    m = log_q.shape[0]
    sub = m // bins
    p = torch.exp(log_q - torch.logsumexp(log_q.reshape(-1), 0))
    if log_q.dim() == 1:
        return p.reshape(bins, sub).sum(1).numpy()
    return p.reshape(bins, sub, bins, sub).sum((1, 3)).reshape(-1).numpy()


def _chi_square_p(samples: np.ndarray, probs: np.ndarray, bins: int) -> float:
    edges = np.linspace(-math.pi, math.pi, bins + 1)
    if samples.ndim == 1:
        counts, _ = np.histogram(samples, edges)
    else:
        counts, _, _ = np.histogram2d(samples[:, 0], samples[:, 1], [edges, edges])
        counts = counts.reshape(-1)
    expected = probs * counts.sum()
    keep = expected > 5
    observed = np.append(counts[keep], counts[~keep].sum())
    expected = np.append(expected[keep], expected[~keep].sum())
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    return float(stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue)


@pytest.mark.parametrize("group", [0, 1, 2], ids=["VAL-1chi", "LEU-2chi", "PHE-2chi-periodic"])
def test_block_samples_follow_the_density(proposal: TransformerProposal, group: int) -> None:
    context = _context(proposal, seed=2)
    n = 20_000
    draw = proposal.sample_block(context.expand(n, -1), _block(proposal, n, group), seed=5)
    log_q, columns = _grid_log_q(proposal, context, group, 128)
    bins = 16 if len(columns) == 1 else 8
    samples = draw.chi[:, columns].double().numpy().squeeze()
    p = _chi_square_p(samples, _cell_probabilities(log_q, bins), bins)
    assert p > 1e-3
    # A negative control: the same samples against a slightly shifted density fail.
    shifted = torch.roll(log_q, shifts=3, dims=0)
    assert _chi_square_p(samples, _cell_probabilities(shifted, bins), bins) < 1e-6


def test_full_samples_follow_the_column_marginal(proposal: TransformerProposal) -> None:
    n = 20_000
    draw = proposal.sample(n, seed=11)
    for column in (0, 4):  # VAL chi1 and PHE chi2 (pi-periodic)
        x = _grid(256)
        log_p = proposal.column_log_prob(x, column)
        assert float(torch.exp(log_p).sum()) * TWO_PI / 256 == pytest.approx(1.0, abs=2e-4)
        p = _chi_square_p(draw.chi[:, column].double().numpy(), _cell_probabilities(log_p, 16), 16)
        assert p > 1e-3


def test_block_sampling_leaves_others_and_scores_consistently(
    proposal: TransformerProposal,
) -> None:
    n = 64
    chi = proposal.sample(n, seed=3).chi
    block = torch.zeros(n, proposal.n_chi, dtype=torch.bool)
    block[: n // 2] = proposal.group == 1
    block[n // 2 :] = (proposal.group == 0) | (proposal.group == 2)
    draw = proposal.sample_block(chi, block, seed=4)
    assert torch.equal(draw.chi[~block], chi[~block])
    assert not torch.equal(draw.chi[block], chi[block])
    assert ((draw.chi >= -math.pi) & (draw.chi < math.pi)).all()
    # Labels inside the block only; log_q is the joint with them, block_log_prob the same.
    groups = proposal.group_mask(block)
    assert ((draw.latent >= 0) == groups).all()
    joint = proposal.block_log_prob(draw.chi, block, draw.latent)
    torch.testing.assert_close(joint, draw.log_q, rtol=0, atol=1e-12)
    # The marginal is the log-sum over every label combination of the block.
    marginal = proposal.block_log_prob(draw.chi, block)
    k = proposal.n_components
    row = 0  # block = group 1 only: one label
    labels = draw.latent[row : row + 1].expand(k, -1).clone()
    labels[:, 1] = torch.arange(k)
    enumerated = proposal.block_log_prob(draw.chi[row : row + 1].expand(k, -1), block[:k], labels)
    assert float(torch.logsumexp(enumerated, 0)) == pytest.approx(float(marginal[row]), abs=1e-10)
    # The same call twice (cached or not) gives bit-identical values; a different seed differs.
    again = proposal.sample_block(chi, block, seed=4)
    assert torch.equal(again.chi, draw.chi) and torch.equal(again.log_q, draw.log_q)
    assert not torch.equal(proposal.sample_block(chi, block, seed=5).chi, draw.chi)


def test_full_sample_log_q_and_latents(proposal: TransformerProposal) -> None:
    draw = proposal.sample(32, seed=7)
    torch.testing.assert_close(proposal.log_prob(draw.chi, draw.latent), draw.log_q)
    assert (proposal.log_prob(draw.chi) >= draw.log_q - 1e-12).all()
    # r(k | x) is normalised: sum over one group's labels of exp(latent_log_prob) = 1.
    k = proposal.n_components
    block = _block(proposal, k, 2)
    posteriors = []
    for row in range(draw.chi.shape[0]):
        labels = draw.latent[row : row + 1].expand(k, -1).clone()
        labels[:, 2] = torch.arange(k)
        log_r = proposal.latent_log_prob(draw.chi[row : row + 1].expand(k, -1), labels, block)
        assert float(torch.logsumexp(log_r, 0)) == pytest.approx(0.0, abs=1e-10)
        posteriors.append(torch.exp(log_r))
    # sample_latent follows it (on the draw whose posterior is the most spread out).
    entropy = torch.stack([-(p * torch.log(p.clamp_min(1e-300))).sum() for p in posteriors])
    row = int(entropy.argmax())
    expected = posteriors[row].numpy()
    n = 20_000
    latent = proposal.sample_latent(draw.chi[row : row + 1].expand(n, -1), seed=9)
    counts = np.bincount(latent[:, 2].numpy(), minlength=k)
    keep = expected * n > 5
    assert keep.sum() >= 2
    expected = expected[keep] * counts[keep].sum() / expected[keep].sum()
    assert stats.chisquare(counts[keep], expected).pvalue > 1e-3


def test_conditioning_uses_context_but_not_the_masked_values(peptide: Protein) -> None:
    proposal = _model(scale=1.0).proposal(peptide)
    chi = proposal.sample(1, seed=0).chi
    block = _block(proposal, 1, 1)  # LEU masked
    base = proposal.block_log_prob(chi, block)
    # Change an unmasked residue (VAL chi1): the LEU density changes.
    other = chi.clone()
    other[0, 0] = other[0, 0] + 2.0 if other[0, 0] < 0 else other[0, 0] - 2.0
    assert abs(float(proposal.block_log_prob(other, block) - base)) > 1e-3
    # The model's output for a masked token ignores that token's own chi input.
    model = proposal.model
    static = proposal._static
    tokens = torch.zeros(2, static.h.shape[1], 4)
    tokens[:, 1, 0], tokens[:, 3, :2] = 0.3, torch.tensor([1.0, -2.0])
    tokens[1, 2, :2] = torch.tensor([2.5, -0.7])  # row 1: a different value for the LEU token
    tokens[0, 2, :2] = torch.tensor([-1.0, 0.4])
    known = torch.tensor([[False, True, False, True, False]]).expand(2, -1)
    want = torch.tensor([[False, False, True, False, False]]).expand(2, -1)
    with torch.no_grad():
        out = model.run(static.expand(2), tokens, known, want)
    assert torch.equal(out.logits[0], out.logits[1]) and torch.equal(out.loc[0], out.loc[1])
    # ... whereas the same change as *known* context changes the VAL token's mixture.
    known_leu = torch.tensor([[False, False, True, True, False]]).expand(2, -1)
    want_val = torch.tensor([[False, True, False, False, False]]).expand(2, -1)
    with torch.no_grad():
        out = model.run(static.expand(2), tokens, known_leu, want_val)
    assert not torch.allclose(out.logits[0], out.logits[1])


def test_one_forward_pass_per_independence_step(peptide: Protein) -> None:
    proposal = _model().proposal(peptide)
    calls = []
    forward = proposal._forward
    proposal._forward = lambda chi, masked: calls.append(1) or forward(chi, masked)
    move = Independence(proposal, block=1)
    target = FunctionTarget(lambda x: torch.zeros(x.shape[0]), proposal.n_chi, group=proposal.group)
    sampler = Sampler(target, proposal=proposal, n_chains=16, moves=[move], seed=0)
    calls.clear()
    sampler.run(3, progress=False)
    assert len(calls) == 3


def test_save_load_round_trip(tmp_path, peptide: Protein) -> None:
    model = _model(seed=3)
    model.provenance = {"note": "test"}
    path = tmp_path / "model.pt"
    model.save(path)
    loaded = SideChainTransformer.load(path)
    assert loaded.config == model.config and loaded.provenance == {"note": "test"}
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    a, b = model.proposal(peptide), loaded.proposal(peptide)
    da, db = a.sample(16, seed=1), b.sample(16, seed=1)
    assert torch.equal(da.chi, db.chi) and torch.equal(da.log_q, db.log_q)
    block = _block(a, 16, 1)
    assert torch.equal(a.block_log_prob(da.chi, block), b.block_log_prob(da.chi, block))
    # Half precision: smaller file, the weights rounded.
    model.save(tmp_path / "half.pt", half=True)
    half = SideChainTransformer.load(tmp_path / "half.pt")
    assert (tmp_path / "half.pt").stat().st_size < path.stat().st_size
    w = model.static_proj.weight
    torch.testing.assert_close(half.static_proj.weight, w.half().float(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="not a pyslice transformer"):
        torch.save({"format": "other"}, tmp_path / "bad.pt")
        SideChainTransformer.load(tmp_path / "bad.pt")


# ------------------------------------------------------------------ training


def _synthetic(n_proteins: int, length: int, seed: int) -> list[ProteinRecord]:
    """Chains along x whose chi1 follows its predecessor's (+120 degrees): context matters."""
    gen = torch.Generator().manual_seed(seed)
    records = []
    for p in range(n_proteins):
        i = torch.arange(length, dtype=torch.float32)
        ca = torch.stack([0.38 * i, 0.1 * torch.sin(i), 0.1 * torch.cos(i)], -1)
        n_at = ca + torch.tensor([-0.1, 0.1, 0.0])
        c_at = ca + torch.tensor([0.1, 0.1, 0.0])
        aa = torch.tensor([19, 15, 10])[torch.randint(3, (length,), generator=gen)]  # V S L
        chi = torch.zeros(length, 4)
        start = float(torch.rand(1, generator=gen)) * TWO_PI
        for r in range(length):
            chi[r, 0] = start + r * TWO_PI / 3 + 0.15 * float(torch.randn(1, generator=gen))
            chi[r, 1] = chi[r, 0] + math.pi + 0.2 * float(torch.randn(1, generator=gen))
        chi = torch.remainder(chi + math.pi, TWO_PI) - math.pi
        chi[aa != 10, 1] = 0.0
        records.append(
            ProteinRecord(
                name=f"synthetic{p}",
                aa=aa,
                chain=torch.zeros(length, dtype=torch.int64),
                position=torch.arange(length),
                backbone=torch.stack([n_at, ca, c_at], 1),
                phi=torch.full((length,), -1.0),
                psi=torch.full((length,), -0.7),
                chi=chi,
                has_chi=torch.ones(length, dtype=torch.bool),
                chi_ok=torch.ones(length, dtype=torch.bool),
            )
        )
    return records


def _small(seed: int = 0) -> SideChainTransformer:
    torch.manual_seed(seed)
    return SideChainTransformer(
        d_model=32, n_heads=2, n_layers=2, d_ff=64, n_components=4, dropout=0.1
    )


def test_train_ml_decreases_the_loss() -> None:
    data = _synthetic(8, 16, seed=0)
    model = _small()
    before = evaluate_nll(model, data, mask_rate=0.3)
    history = train_ml(
        model, data, steps=80, batch_size=4, lr=3e-3, seed=0, warmup=10, log_every=20, log=None
    )
    after = evaluate_nll(model, data, mask_rate=0.3)
    assert after < before - 0.5
    assert history["loss"][-1] < history["loss"][0]
    assert not model.training


def test_train_ml_resumes_bit_identically(tmp_path) -> None:
    data = _synthetic(6, 12, seed=1)
    kwargs = dict(steps=30, batch_size=3, lr=3e-3, seed=4, warmup=5, log_every=10,
                  checkpoint_every=10, val_dataset=data[:2], val_every=15)  # fmt: skip
    straight = _small()
    history = train_ml(straight, data, checkpoint=tmp_path / "a.pt", log=None, **kwargs)

    class Stop(Exception):
        pass

    def crash(message: str) -> None:
        if message.startswith("step 20/"):
            raise Stop

    with pytest.raises(Stop):
        train_ml(_small(), data, checkpoint=tmp_path / "b.pt", log=crash, **kwargs)
    assert torch.load(tmp_path / "b.pt", weights_only=True)["step"] == 10
    resumed = _small(seed=99)  # its own weights are replaced by the checkpoint's
    messages = []
    history_b = train_ml(resumed, data, checkpoint=tmp_path / "b.pt", log=messages.append, **kwargs)
    assert messages[0].startswith("resumed from")
    for (k, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    assert history_b == history
    # A checkpoint of different settings is refused.
    with pytest.raises(ValueError, match="different training run"):
        train_ml(_small(), data, checkpoint=tmp_path / "b.pt", log=None, **{**kwargs, "seed": 5})


# ------------------------------------------------------------------ exact MCMC


BETA_ONE_K = 1.0 / BOLTZMANN_KJ_PER_MOL_K  # temperature at which beta = 1 mol/kJ


def _energy(x: torch.Tensor) -> torch.Tensor:
    v, l1, l2 = x[:, 0], x[:, 1], x[:, 2]
    return (
        1.5 * torch.cos(3.0 * (v - 0.3))
        + 1.2 * torch.cos(l1 + v)
        + torch.cos(2.0 * l2 - 0.5)
        + 0.8 * torch.cos(l1 - l2 + 1.0)
    ).to(torch.float64)


def _marginals(m: int = 64) -> list[np.ndarray]:
    g = _grid(m)
    axes = torch.meshgrid(g, g, g, indexing="ij")
    x = torch.stack([a.reshape(-1) for a in axes], -1)
    p = torch.exp(-_energy(x)).reshape(m, m, m)
    p = p / p.sum()
    return [p.sum((1, 2)).numpy(), p.sum((0, 2)).numpy(), p.sum((0, 1)).numpy()]


class _Uncorrected(Independence):
    """A wrong sampler: independence proposals accepted without the q(x)/q(x') factor."""

    def propose(self, chi: torch.Tensor, key: int) -> Candidate:
        c = super().propose(chi, key)
        zero = torch.zeros_like(c.log_weight)
        return Candidate(c.chi, c.groups, zero, zero)


@pytest.fixture(scope="module")
def avla() -> TransformerProposal:
    return _model(seed=5, scale=0.6).proposal(Protein.from_sequence("AVLA"))


def _exact_draws(n: int, seed: int) -> torch.Tensor:
    """n exact draws from exp(-_energy) by rejection from uniform angles."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    bound = 4.5 + 1e-9  # max of -_energy is < 4.5 (sum of the amplitudes)
    while sum(len(o) for o in out) < n:
        x = (torch.rand(100_000, 3, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
        keep = torch.rand(100_000, generator=gen, dtype=torch.float64) < torch.exp(
            -_energy(x) - bound
        )
        out.append(x[keep])
    return torch.cat(out)[:n]


def _final_states(proposal: TransformerProposal, moves, seed: int, steps: int = 30) -> np.ndarray:
    """Chains started at exact draws of the target: a correct kernel keeps them there."""
    target = FunctionTarget(_energy, proposal.n_chi, group=proposal.group, dtype=torch.float32)
    n = 4000
    sampler = Sampler(
        target, proposal=proposal, temperature=BETA_ONE_K, n_chains=n, moves=moves,
        seed=seed, init=_exact_draws(n, seed).float(),
    )  # fmt: skip
    ensemble = sampler.run(steps, progress=False)
    assert min(ensemble.acceptance.values()) > 0.02  # the chains do move
    return ensemble.chi[-1].double().numpy()


def _worst_p(samples: np.ndarray, marginals: list[np.ndarray], bins: int = 16) -> float:
    ps = []
    for c, marginal in enumerate(marginals):
        probs = marginal.reshape(bins, -1).sum(1)
        ps.append(_chi_square_p(samples[:, c], probs, bins))
    return min(ps)


@pytest.mark.parametrize("kind", ["independence", "lifted"])
def test_mh_with_the_transformer_keeps_the_exact_marginals(avla, kind: str) -> None:
    move = Independence if kind == "independence" else Lifted
    moves = [move(avla, block=1), move(avla)]
    samples = _final_states(avla, moves, seed=1)
    marginals = _marginals()
    # multiple tests (3 marginals): each p > 1e-3 at a fixed seed
    assert _worst_p(samples, marginals) > 1e-3


def test_the_uncorrected_sampler_fails_the_same_test(avla) -> None:
    samples = _final_states(avla, [_Uncorrected(avla, block=1), _Uncorrected(avla)], seed=1)
    assert _worst_p(samples, _marginals()) < 1e-6


# ------------------------------------------------------------------ the shipped model


def test_default_model_on_bpti(data_dir) -> None:
    model = SideChainTransformer.default()
    assert model.provenance.get("training")
    protein = Protein.from_pdb(data_dir / "structures" / "bpti.pdb")
    proposal = model.proposal(protein)
    assert proposal.n_chi == protein.n_chi and proposal.n_latent == proposal.n_groups
    draw = proposal.sample(8, seed=0)
    assert torch.isfinite(draw.log_q).all()
    torch.testing.assert_close(proposal.log_prob(draw.chi, draw.latent), draw.log_q)
    native = protein.chi_angles().unsqueeze(0)
    # The native side chains are far more probable under the model than uniform angles.
    assert float(proposal.log_prob(native)) > -protein.n_chi * math.log(TWO_PI) + 50.0
    block = _block(proposal, 1, 3)
    assert math.isfinite(float(proposal.block_log_prob(native, block)))


# ------------------------------------------------------------------ the ERA policy


def _conditional_policy(peptide: Protein, sizes=(1, 2)) -> TransformerPolicy:
    model = _model()
    contexts = model.proposal(peptide).sample(6, seed=3).chi
    return TransformerPolicy(model, peptide, block_sizes=list(sizes), contexts=contexts)


def test_policy_log_prob_is_the_proposals_and_differentiable(peptide: Protein) -> None:
    policy = _conditional_policy(peptide)
    chi, masked = policy.sample_grouped(4, 3, seed=4)
    proposal = policy.proposal()
    block = masked[:, proposal.group]
    log_q = policy.log_prob(chi, masked)
    # (float32 forward passes of different batch sizes: equal to round-off)
    torch.testing.assert_close(
        log_q.detach(), proposal.block_log_prob(chi, block), rtol=0, atol=1e-5
    )
    log_q.sum().backward()
    # the rows of a group share one forward pass
    batches = []
    run = policy.model.run
    policy.model.run = lambda static, *a: batches.append(static.h.shape[0]) or run(static, *a)
    policy.log_prob(chi, masked)
    del policy.model.run
    assert batches == [4]
    grads = [p.grad for p in policy.model.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    unconditional = TransformerPolicy(_model(), peptide)
    x = unconditional.sample(5, seed=1)
    torch.testing.assert_close(
        unconditional.log_prob(x).detach(), proposal.log_prob(x), rtol=0, atol=1e-5
    )


def test_policy_groups_share_a_context_and_a_block(peptide: Protein) -> None:
    policy = _conditional_policy(peptide, sizes=(1, 2))
    n_groups, size = 8, 5
    chi, masked = policy.sample_grouped(n_groups, size, seed=7)
    assert chi.shape == (n_groups * size, policy.n_chi)
    columns = masked[:, policy.group]
    chi_g, masked_g, columns_g = (t.view(n_groups, size, -1) for t in (chi, masked, columns))
    assert bool((masked_g == masked_g[:, :1]).all())
    assert set(masked_g[:, 0].sum(1).tolist()) <= {1, 2}
    for g in range(n_groups):
        outside = ~columns_g[g, 0]
        rows = chi_g[g][:, outside]
        assert bool((rows == rows[:1]).all())  # one context per group
        matches = (policy.contexts[:, outside] == rows[:1]).all(1)
        assert bool(matches.any())  # taken from the pool
        inside = chi_g[g][:, columns_g[g, 0]]
        assert bool((inside != inside[:1]).any())  # independent draws of the block
    again, _ = policy.sample_grouped(n_groups, size, seed=7)
    assert torch.equal(chi, again)


def test_policy_group_draws_follow_the_block_density(peptide: Protein) -> None:
    policy = _conditional_policy(peptide, sizes=(1,))
    n = 20_000
    chi, masked = policy.sample_grouped(1, n, seed=12)
    (group,) = torch.nonzero(masked[0]).flatten().tolist()
    context = chi[:1]
    log_q, columns = _grid_log_q(policy.proposal(), context, group, 128)
    bins = 16 if len(columns) == 1 else 8
    samples = chi[:, columns].double().numpy().squeeze()
    assert _chi_square_p(samples, _cell_probabilities(log_q, bins), bins) > 1e-3
    shifted = torch.roll(log_q, shifts=3, dims=0)
    assert _chi_square_p(samples, _cell_probabilities(shifted, bins), bins) < 1e-6


def test_policy_rejects_bad_arguments(peptide: Protein) -> None:
    model = _model()
    contexts = torch.zeros(2, peptide.n_chi)
    with pytest.raises(TypeError, match="model"):
        TransformerPolicy(object(), peptide)
    with pytest.raises(ValueError, match="contexts"):
        TransformerPolicy(model, peptide, block_sizes=[1])
    with pytest.raises(ValueError, match="contexts"):
        TransformerPolicy(model, peptide, contexts=contexts)
    with pytest.raises(ValueError, match="contexts"):
        TransformerPolicy(model, peptide, block_sizes=[1], contexts=torch.zeros(2, 1))
    with pytest.raises(ValueError, match="block_sizes"):
        TransformerPolicy(model, peptide, block_sizes=[0], contexts=contexts)
    with pytest.raises(ValueError, match="block_sizes"):
        TransformerPolicy(model, peptide, block_sizes=[], contexts=contexts)
    policy = TransformerPolicy(model, peptide, block_sizes=[1], contexts=contexts)
    with pytest.raises(ValueError, match="sample_grouped"):
        policy.sample(3, seed=0)
    with pytest.raises(TypeError, match="masked"):
        policy.log_prob(contexts, torch.ones(2, policy.n_groups))
    with pytest.raises(ValueError, match="masked"):
        policy.log_prob(contexts, torch.ones(2, 1, dtype=torch.bool))


# ------------------------------------------------------------------ energy-filtered sampler data


@pytest.fixture(scope="module")
def sampled(peptide: Protein):
    import pyslice

    sampler = Sampler(peptide, pyslice.ForceFieldEnergy(peptide), n_chains=8, seed=0)
    return sampler.run(12, warmup=4, progress=False)


def test_records_from_ensemble_keep_the_low_energy_draws(peptide: Protein, sampled) -> None:
    chi = sampled.chi.reshape(-1, sampled.n_chi)
    energy = sampled.energy.reshape(-1).to(torch.float64)
    records = records_from_ensemble(peptide, sampled, keep_fraction=0.5, name="pep")
    threshold = torch.quantile(energy, 0.5)
    assert len(records) == int((energy <= threshold).sum())
    base, token_of_residue = record_from_protein(peptide)
    tokens = token_of_residue[peptide.chi_index[:, 0]]
    for record in records:
        i = int(record.name.split("#")[1])
        assert float(energy[i]) <= float(threshold)
        torch.testing.assert_close(record.chi[tokens, peptide.chi_index[:, 1]], chi[i].float())
        assert torch.equal(record.chi_ok, base.has_chi)
        assert torch.equal(record.backbone, base.backbone)
    cut = float(energy.min()) + 1e-6  # the lowest draw (held by a chain for a few steps)
    lowest = records_from_ensemble(peptide, sampled, energy_cut=cut)
    assert len(lowest) == int((energy <= cut).sum()) < len(records)
    picked = records_from_ensemble(peptide, sampled, max_records=5, seed=3)
    assert len(picked) == 5
    assert [r.name for r in picked] == [
        r.name for r in records_from_ensemble(peptide, sampled, max_records=5, seed=3)
    ]


def test_records_from_ensemble_rejects_bad_arguments(peptide: Protein, sampled) -> None:
    with pytest.raises(TypeError, match="ensemble"):
        records_from_ensemble(peptide, object())
    with pytest.raises(ValueError, match="ensemble"):
        records_from_ensemble(Protein.from_sequence("AVA"), sampled)
    with pytest.raises(ValueError, match="residues"):  # same chi count, other residues
        records_from_ensemble(Protein.from_sequence("AVLYA"), sampled)
    with pytest.raises(ValueError, match="keep_fraction"):
        records_from_ensemble(peptide, sampled, keep_fraction=1.5)
    with pytest.raises(ValueError, match="keep_fraction"):
        records_from_ensemble(peptide, sampled, keep_fraction=0.0)
    with pytest.raises(ValueError, match="max_records"):
        records_from_ensemble(peptide, sampled, max_records=0)
    with pytest.raises(ValueError, match="energy_cut"):
        records_from_ensemble(peptide, sampled, energy_cut=math.nan)


def test_fine_tuning_on_sampled_draws_raises_their_likelihood(peptide: Protein, sampled) -> None:
    records = records_from_ensemble(peptide, sampled)
    model = _small()
    before = evaluate_nll(model, records, mask_rate=0.3)
    train_ml(model, records, steps=60, batch_size=4, lr=3e-3, seed=0, warmup=10, log=None)
    assert evaluate_nll(model, records, mask_rate=0.3) < before - 0.5

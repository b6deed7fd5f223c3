"""Every fast sampling path (C++, Triton, CUDA) against the torch reference: the fixture
``fast_vonmises_sample_backend`` (tests/conftest.py) holds each implementation that
``pyslice.backends`` registers for op vonmises_sample, on each device it runs on.

The paths draw the same Philox streams and evaluate the same float32 expressions, so draws agree
element by element up to the last bits of sin/cos/log (tolerance 2e-5 rad; a rejection decision
that flips at the boundary would show up as a large difference and is allowed for at most 0.1% of
draws). Each path's own draws must also pass a KS test against scipy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from pyslice import VonMises, VonMisesMixture, reference

ANGLE_TOL = 2e-5


def _assert_agree(fast: torch.Tensor, ref: torch.Tensor) -> None:
    assert fast.shape == ref.shape and fast.dtype == ref.dtype
    gap = torch.remainder(fast.double() - ref.double() + math.pi, 2 * math.pi) - math.pi
    close = gap.abs() <= ANGLE_TOL
    assert float(close.double().mean()) >= 0.999 if close.numel() else True, (
        f"{int((~close).sum())} of {close.numel()} draws differ; max {float(gap.abs().max()):.2e}"
    )


def _mixture(device: str) -> VonMisesMixture:
    # One of each path: uniform (kappa 0), Best-Fisher (small and large), wrapped normal, an empty
    # component, and rows of different shapes.
    logits = torch.tensor([[0.0, -1.0, 0.5, -math.inf, 0.2], [1.0, 0.0, -0.5, 0.3, -2.0]])
    loc = torch.tensor([[0.0, 1.0, -2.0, 3.0, 2.5], [-3.1, 0.3, 1.7, -0.9, 3.1]])
    kappa = torch.tensor([[0.0, 0.7, 35.0, 5.0, 2e4], [1e-9, 1e3, 9999.0, 3.0, 1e5]])
    return VonMisesMixture(logits, loc, kappa).to(device)


@pytest.mark.parametrize("pi_periodic", [False, True])
def test_fast_path_matches_reference_draw_for_draw(
    fast_vonmises_sample_backend, pi_periodic: bool
) -> None:
    backend, device = fast_vonmises_sample_backend
    mix = _mixture(device)
    mix.pi_periodic = pi_periodic
    fast = mix.sample(3000, seed=123, offset=5, backend=backend)
    ref = mix.sample(3000, seed=123, offset=5, backend="reference")
    assert fast.device.type == device
    _assert_agree(fast.cpu(), ref.cpu())


@pytest.mark.parametrize("n", [0, 1, 7, 1023, 1025])
def test_fast_path_sizes(fast_vonmises_sample_backend, n: int) -> None:
    backend, device = fast_vonmises_sample_backend
    dist = VonMises(torch.tensor([0.5], device=device), torch.tensor([4.0], device=device))
    fast = dist.sample(n, seed=9, backend=backend)
    assert fast.shape == (n, 1)
    _assert_agree(fast.cpu(), dist.sample(n, seed=9, backend="reference").cpu())


def test_fast_path_non_contiguous_parameters(fast_vonmises_sample_backend) -> None:
    backend, device = fast_vonmises_sample_backend
    base = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)).to(device)
    loc = base.t()[:, ::2]  # (4, 3), strided
    kappa = base.abs().t()[:, 1::2] * 10
    logits = base.t()[:, :3].flip(-1)
    assert not loc.is_contiguous()
    mix = VonMisesMixture(logits, loc, kappa)
    contiguous = VonMisesMixture(logits.contiguous(), loc.contiguous(), kappa.contiguous())
    a = mix.sample(500, seed=1, backend=backend)
    assert torch.equal(a, contiguous.sample(500, seed=1, backend=backend))
    _assert_agree(a.cpu(), mix.sample(500, seed=1, backend="reference").cpu())


def test_fast_path_is_reproducible_and_seed_sensitive(fast_vonmises_sample_backend) -> None:
    backend, device = fast_vonmises_sample_backend
    dist = _mixture(device)
    a = dist.sample(2000, seed=2**33 + 5, backend=backend)
    assert torch.equal(a, dist.sample(2000, seed=2**33 + 5, backend=backend))
    assert not torch.equal(a, dist.sample(2000, seed=5, backend=backend))
    assert not torch.equal(a, dist.sample(2000, seed=2**33 + 5, offset=1, backend=backend))


@pytest.mark.parametrize("kappa", [0.0, 0.5, 50.0, 1e5])
def test_fast_path_samples_pass_ks(fast_vonmises_sample_backend, kappa: float) -> None:
    backend, device = fast_vonmises_sample_backend
    n = 20_000 if backend == "triton" and device == "cpu" else 200_000
    dist = VonMises(torch.tensor(-1.0, device=device), torch.tensor(kappa, device=device))
    draws = dist.sample(n, seed=17, backend=backend).double().cpu().numpy()
    centred = (draws + 1.0 + np.pi) % (2 * np.pi) - np.pi
    if kappa == 0.0:
        result = stats.kstest(centred, lambda x: (x + np.pi) / (2 * np.pi))
    else:
        result = stats.kstest(centred, lambda x: stats.vonmises.cdf(x, kappa))
    assert result.pvalue > 1e-3, result


def test_component_table_fields_are_consistent() -> None:
    table = reference.mixture_table(
        torch.tensor([[0.0, 0.0, -math.inf]]), torch.zeros(1, 3), torch.tensor([[1.0, 1e4, 0.0]])
    )
    assert table.shape == (6, 1, 3) and table.dtype == torch.float32
    cdf, _, _, s_minus_1, s_plus_1, sigma = table[:, 0]
    assert cdf.tolist() == [0.5, 1.0, 1.0]
    # Best-Fisher: s = (1 + rho^2) / (2 rho) with numpy's rho for kappa = 1.
    r = 1 + math.sqrt(1 + 4.0)
    rho = (r - math.sqrt(2 * r)) / 2.0
    s = (1 + rho * rho) / (2 * rho)
    assert float(s_minus_1[0]) == pytest.approx(s - 1, rel=1e-6)
    assert float(s_plus_1[0]) == pytest.approx(s + 1, rel=1e-6)
    assert float(sigma[1]) ** 2 == pytest.approx(1e-4 + 0.5e-8, rel=1e-5)


def test_reference_philox_known_answers() -> None:
    def words(counter, key):
        c = [torch.tensor([v], dtype=torch.int64) for v in counter]
        return [int(w) for w in reference.philox4x32_10(*c, *key)]

    assert words((0, 0, 0, 0), (0, 0)) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert words((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2) == [
        0x408F276D,
        0x41C83B0E,
        0xA20BC7C6,
        0x6D5451FD,
    ]
    assert words((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0)) == [
        0xD16CFE09,
        0x94FDCCEB,
        0x5001E420,
        0x24126EA1,
    ]


@pytest.mark.triton
def test_triton_philox_known_answers() -> None:
    from pyslice.kernels import philox

    device = "cuda" if torch.cuda.is_available() else "cpu"
    counters = torch.tensor(
        [[0, 0, 0, 0], [0xFFFFFFFF] * 4, [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344]],
        dtype=torch.int64,
        device=device,
    )
    got = [
        philox.philox(counters[i : i + 1], *key)[0].tolist()
        for i, key in enumerate([(0, 0), (0xFFFFFFFF, 0xFFFFFFFF), (0xA4093822, 0x299F31D0)])
    ]
    assert got == [
        [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8],
        [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD],
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
    ]

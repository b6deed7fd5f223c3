"""Draw from a von Mises mixture with pyslice's fused sampler and fit it back by EM.

    python examples/mixture_demo.py [--samples N] [--fit-samples N] [--components K] [--seed S]
                                    [--device D] [--backend B] [--out FILE.npz]

The mixture is chi1-like: gauche+, trans and gauche- rotamers. The script prints the sampling speed,
the backend that drew, and the fitted weights, means and concentrations beside the true ones.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from pyslice import VonMisesMixture, backends

# gauche+, trans, gauche- (degrees), their weights and concentrations.
DEGREES = (62.0, -177.0, -65.0)
WEIGHTS = (0.12, 0.33, 0.55)
CONCENTRATIONS = (18.0, 25.0, 30.0)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--fit-samples", type=int, default=100_000)
    parser.add_argument("--components", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", choices=backends.BACKENDS, default=None)
    parser.add_argument("--out", default=None, help="write draws and the fit to this .npz")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    truth = VonMisesMixture(
        torch.log(torch.tensor(WEIGHTS)),
        torch.deg2rad(torch.tensor(DEGREES)),
        torch.tensor(CONCENTRATIONS),
    ).to(device)
    truth.sample(16, seed=args.seed, backend=args.backend)  # warm up (Triton compiles once)
    synchronize(device)
    start = time.perf_counter()
    draws = truth.sample(args.samples, seed=args.seed, backend=args.backend)
    synchronize(device)
    elapsed = time.perf_counter() - start
    impl = backends.select("vonmises_sample", device, torch.float32, args.backend)
    print(
        f"drew {args.samples:,} angles on {device} with the {impl.backend} backend "
        f"in {elapsed:.3f} s ({args.samples / max(elapsed, 1e-12):.3e} draws/s)"
    )

    start = time.perf_counter()
    fitted = VonMisesMixture.fit(draws[: args.fit_samples], args.components, seed=args.seed)
    result = fitted.fit_result
    print(
        f"EM fit of {args.components} components to {min(args.samples, args.fit_samples):,} "
        f"angles: {result.n_iter} iterations, converged={bool(result.converged)}, "
        f"{time.perf_counter() - start:.3f} s"
    )
    print(f"{'':10s}{'weight':>8s}{'mean (deg)':>12s}{'kappa':>9s}")
    for name, mixture in (("true", truth), ("fitted", fitted)):
        for k in torch.argsort(mixture.loc.cpu()).tolist():
            print(
                f"{name:10s}{float(mixture.probs[k]):8.3f}"
                f"{math.degrees(float(mixture.loc[k])):12.1f}"
                f"{float(mixture.concentration[k]):9.2f}"
            )
    if args.out:
        np.savez(
            args.out,
            angles=draws.cpu().numpy(),
            fitted_logits=fitted.logits.cpu().numpy(),
            fitted_loc=fitted.loc.cpu().numpy(),
            fitted_concentration=fitted.concentration.cpu().numpy(),
        )
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

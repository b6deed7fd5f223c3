"""The ``pyslice`` command.

Commands: ``sample`` (the main job: Boltzmann-sample the side chains of a structure, or of a
built-in peptide when none is given, and write the ensemble, structures, a trajectory, a summary
and a report), ``info`` (versions, compiled features, usable backends and devices, and why the
others are not) and ``mixture`` (draw from a von Mises mixture and fit it back by EM). Errors
print one line on stderr and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import torch

from pyslice import __version__, _compiled, backends
from pyslice.distributions import VonMisesMixture

# A chi1-like default: gauche+, trans, gauche- rotamers (degrees), weights and concentrations.
DEFAULT_MIXTURE_DEGREES = (62.0, -177.0, -65.0)
DEFAULT_MIXTURE_WEIGHTS = (0.12, 0.33, 0.55)
DEFAULT_MIXTURE_CONCENTRATIONS = (18.0, 25.0, 30.0)

#: The built-in input of ``pyslice sample``: a 15-residue peptide with 14 different side-chain
#: types (36 chi angles), built as an ideal alpha helix with charged termini.
DEFAULT_SEQUENCE = "EKLFWVQDYRSTKMH"


def info() -> dict:
    """What this installation has: versions, compiled features, backends per op and device."""
    try:
        import triton

        triton_version = triton.__version__
    except Exception as exc:
        triton_version = f"unavailable ({exc.__class__.__name__}: {exc})"
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [
            f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())
        ]
    return {
        "pyslice": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "triton": triton_version,
        "triton_interpret": backends.triton_interpreted(),
        "compiled": _compiled.build_info()
        if _compiled.is_available()
        else {"unavailable": _compiled.unavailable_reason()},
        "devices": devices,
        "backends": backends.report(),
    }


def _print_info(args: argparse.Namespace) -> int:
    report = info()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    for key in ("pyslice", "python", "platform", "torch", "triton", "triton_interpret"):
        print(f"{key:17s} {report[key]}")
    print("compiled (pyslice._C):")
    for key, value in report["compiled"].items():
        print(f"  {key:24s} {value}")
    print("devices:", ", ".join(report["devices"]))
    print("backends:")
    for op, per_backend in report["backends"].items():
        print(f"  {op}")
        for name, per_device in per_backend.items():
            for device, status in per_device.items():
                print(f"    {name:10s} {device:5s} {status}")
    return 0


def _run_mixture(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available")
    truth = VonMisesMixture(
        torch.log(torch.tensor(DEFAULT_MIXTURE_WEIGHTS)),
        torch.deg2rad(torch.tensor(DEFAULT_MIXTURE_DEGREES)),
        torch.tensor(DEFAULT_MIXTURE_CONCENTRATIONS),
    ).to(device)
    truth.sample(16, seed=args.seed, backend=args.backend)  # warm up (Triton compiles once)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    draws = truth.sample(args.samples, seed=args.seed, backend=args.backend)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    impl = backends.select("vonmises_sample", device, torch.float32, args.backend)
    print(
        f"drew {args.samples:,} angles on {device} with the {impl.backend} backend "
        f"in {elapsed:.3f} s ({args.samples / max(elapsed, 1e-12):.3e} draws/s)"
    )

    start = time.perf_counter()
    fitted = VonMisesMixture.fit(draws[: args.fit_samples], args.components, seed=args.seed)
    elapsed = time.perf_counter() - start
    result = fitted.fit_result
    print(
        f"EM fit of {args.components} components to {min(args.samples, args.fit_samples):,} "
        f"angles: {result.n_iter} iterations, converged={bool(result.converged)}, "
        f"{elapsed:.3f} s"
    )
    print(f"{'':10s}{'weight':>8s}{'mean (deg)':>12s}{'kappa':>9s}")
    for name, mixture in (("true", truth), ("fitted", fitted)):
        order = torch.argsort(mixture.loc.cpu())
        for k in order.tolist():
            print(
                f"{name:10s}{float(mixture.probs[k]):8.3f}"
                f"{math.degrees(float(mixture.loc[k])):12.1f}"
                f"{float(mixture.concentration[k]):9.2f}"
            )
    if args.out:
        import numpy as np

        np.savez(
            args.out,
            angles=draws.cpu().numpy(),
            fitted_logits=fitted.logits.cpu().numpy(),
            fitted_loc=fitted.loc.cpu().numpy(),
            fitted_concentration=fitted.concentration.cpu().numpy(),
        )
        print(f"wrote {args.out}")
    return 0


def _load_structure(args: argparse.Namespace):
    from pyslice.structure import Protein

    forcefield = tuple(args.forcefield)
    if args.structure is None:
        print(f"input: built-in peptide {DEFAULT_SEQUENCE} (ideal helix)")
        return Protein.from_sequence(DEFAULT_SEQUENCE, forcefield=forcefield)
    path = Path(args.structure)
    if not path.is_file():
        raise FileNotFoundError(f"STRUCTURE: no such file: {path}")
    return Protein.from_file(path, forcefield=forcefield)


def _make_proposal(kind: str, protein, device: torch.device, model: str | None = None):
    if kind == "uniform":
        return None  # the Sampler's default
    if kind == "library":
        from pyslice.rotamers import RotamerLibrary

        return RotamerLibrary.default().proposal(protein, device=device)
    from pyslice.transformer import SideChainTransformer

    if model is not None:
        return SideChainTransformer.load(model).proposal(protein, device=device)
    return SideChainTransformer.default().proposal(protein, device=device)


def _run_sample(args: argparse.Namespace) -> int:
    from pyslice.energy import ForceFieldEnergy
    from pyslice.report import write_outputs
    from pyslice.sampler import Sampler

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    protein = _load_structure(args)
    print(
        f"structure: {protein.n_residues} residues, {protein.n_atoms} atoms, "
        f"{protein.n_chi} chi angles in {len(protein.movable)} movable residues"
    )
    energy = ForceFieldEnergy(protein, forcefield=tuple(args.forcefield), device=device)
    if args.model is not None:
        if args.proposal != "transformer":
            raise ValueError("--model: a transformer file needs --proposal transformer")
        if not Path(args.model).is_file():
            raise FileNotFoundError(f"--model: no such file: {args.model}")
    proposal = _make_proposal(args.proposal, protein, device, args.model)
    sampler = Sampler(
        protein,
        energy,
        proposal=proposal,
        temperature=args.temperature,
        n_chains=args.chains,
        seed=args.seed,
        device=device,
    )
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        print(f"resuming from {checkpoint}")
    start = time.perf_counter()
    try:
        ensemble = sampler.run(
            args.steps,
            warmup=args.warmup,
            thin=args.thin,
            progress=not args.quiet,
            checkpoint=checkpoint,
        )
    except KeyboardInterrupt:
        print(
            f"pyslice: interrupted; the run is saved in {checkpoint}: run the same command again "
            "to resume it",
            file=sys.stderr,
        )
        return 130
    elapsed = time.perf_counter() - start
    chain_steps = (args.steps + args.warmup) * args.chains
    extra = {
        "input": args.structure or f"built-in peptide {DEFAULT_SEQUENCE}",
        "proposal": args.proposal,
        "forcefield": list(args.forcefield),
        "device": str(device),
        "seconds": elapsed,
        "chain_steps_per_second": chain_steps / max(elapsed, 1e-12),
    }
    paths = write_outputs(ensemble, protein, out, proposal=sampler.proposal, extra=extra)
    checkpoint.unlink(missing_ok=True)
    summary = ensemble.summary()
    acc = ", ".join(f"{k} {v:.3f}" for k, v in ensemble.acceptance.items())
    print(f"sampled {ensemble.n_draws} draws x {ensemble.n_chains} chains in {elapsed:.1f} s")
    print(f"acceptance: {acc}")

    def fmt(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    print(
        f"R-hat max {fmt(summary['rhat_max'], '.3f')}, bulk ESS min "
        f"{fmt(summary['ess_bulk_min'], '.0f')}, mean energy "
        f"{fmt(summary['energy_mean'], '.1f')} kJ/mol"
    )
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _run_fit(args: argparse.Namespace) -> int:
    from pyslice.rotamers import RotamerLibrary

    out = Path(args.out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out: folder {out.parent} does not exist")
    start = time.perf_counter()
    library = RotamerLibrary.fit(
        args.data,
        seed=args.seed,
        max_components=args.max_components,
        residue_types=args.residues,
        progress=not args.quiet,
    )
    library.save(out)
    print(library)
    print(f"fitted in {time.perf_counter() - start:.0f} s; wrote {out}")
    return 0


def _run_train(args: argparse.Namespace) -> int:
    options = list(args.options)
    if options[:1] == ["--"]:
        options = options[1:]
    if args.era:
        from pyslice.era import main as align_transformer

        return align_transformer(options)
    from pyslice.transformer import main as train_transformer

    return train_transformer(options)


def _find_benchmarks(folder: str | None) -> Path:
    """The benchmarks/ folder: given, or in the current directory, or beside the package source
    (an editable install or a source checkout)."""
    candidates = (
        [Path(folder)]
        if folder
        else [Path.cwd() / "benchmarks", Path(__file__).resolve().parent.parent / "benchmarks"]
    )
    for candidate in candidates:
        if (candidate / "ratios.py").is_file():
            return candidate
    raise FileNotFoundError(
        "--benchmarks: no benchmarks/ folder found (they live in the source checkout, not in the "
        "installed package): run from the checkout or pass --benchmarks PATH"
    )


def _run_bench(args: argparse.Namespace) -> int:
    import importlib.util
    import os
    import subprocess
    import tempfile

    folder = _find_benchmarks(args.benchmarks)
    for module in ("pytest", "pytest_benchmark"):
        if importlib.util.find_spec(module) is None:
            raise RuntimeError(f"pyslice bench needs {module}: pip install 'pyslice[bench]'")
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(args.json) if args.json else Path(tmp) / "benchmarks.json"
        command = [
            sys.executable,
            "-m",
            "pytest",
            str(folder),
            "-q",
            "-p",
            "no:cacheprovider",
            f"--benchmark-json={result}",
            "--rootdir",
            str(folder.parent),
        ]
        if args.k:
            command += ["-k", args.k]
        env = dict(os.environ)
        if args.smoke:
            env["PYSLICE_BENCH"] = "smoke"
        print("running: " + " ".join(command), flush=True)
        done = subprocess.run(command, env=env, cwd=folder.parent)
        if done.returncode != 0 or not result.is_file():
            raise RuntimeError(f"the benchmarks failed (pytest exit status {done.returncode})")
        spec = importlib.util.spec_from_file_location("pyslice_bench_ratios", folder / "ratios.py")
        ratios = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(ratios)
        data = json.loads(result.read_text())
        print(f"device: {data['machine_info'].get('pyslice_device', '?')}")
        for group, label, ratio, rate in ratios.ratios(str(result)):
            print(f"{group:34s} {label:58s} {ratio:8.2f}x  (pyslice {rate:.4g}/s)")
        if args.json:
            print(f"wrote {result}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), like every other pyslice error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def add_parser_with_debug(self, sub, name: str, **kwargs) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, **kwargs)
        parser.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyslice", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pyslice {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p_sample = parser.add_parser_with_debug(
        sub,
        "sample",
        help="Boltzmann-sample side chains (built-in peptide when no STRUCTURE is given)",
    )
    p_sample.add_argument(
        "structure",
        nargs="?",
        default=None,
        metavar="STRUCTURE",
        help="PDB or PDBx/mmCIF file (default: a built-in peptide)",
    )
    p_sample.add_argument("--chains", type=_positive_int, default=256)
    p_sample.add_argument(
        "--steps",
        type=_non_negative_int,
        default=500,
        help="recorded steps after warm-up (default 500)",
    )
    p_sample.add_argument(
        "--warmup",
        type=_non_negative_int,
        default=200,
        help="adaptation steps, not recorded (default 200)",
    )
    p_sample.add_argument("--thin", type=_positive_int, default=1)
    p_sample.add_argument("--temperature", type=float, default=300.0, help="kelvin")
    p_sample.add_argument(
        "--proposal", choices=("uniform", "library", "transformer"), default="uniform"
    )
    p_sample.add_argument(
        "--forcefield",
        nargs="+",
        default=["amber14-all.xml"],
        help="OpenMM force-field XML files (default amber14-all.xml)",
    )
    p_sample.add_argument(
        "--model",
        default=None,
        help="transformer file for --proposal transformer (default: the shipped model; e.g. one "
        "aligned by pyslice train --era)",
    )
    p_sample.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p_sample.add_argument("--seed", type=int, default=0)
    p_sample.add_argument("--out", default="pyslice-out", help="output folder")
    p_sample.add_argument("--quiet", action="store_true", help="no progress bar")
    p_sample.set_defaults(handler=_run_sample)

    p_fit = parser.add_parser_with_debug(
        sub, "fit", help="fit the backbone-dependent rotamer library by EM from the open data"
    )
    p_fit.add_argument(
        "--data", default=None, help="data folder (default: $PYSLICE_DATA or ../shared/data)"
    )
    p_fit.add_argument("--out", default="rotamer_library.npz", help="output file (.npz)")
    p_fit.add_argument(
        "--residues",
        nargs="+",
        default=None,
        metavar="RES",
        help="residue types to fit (default: all 18 with chi angles)",
    )
    p_fit.add_argument("--max-components", type=_positive_int, default=48)
    p_fit.add_argument("--seed", type=int, default=0)
    p_fit.add_argument("--quiet", action="store_true")
    p_fit.set_defaults(handler=_run_fit)

    p_train = parser.add_parser_with_debug(
        sub,
        "train",
        help="train the side-chain transformer by maximum likelihood, or with --era align it "
        "with a structure's Boltzmann distribution (options: pyslice train [--era] -- --help)",
    )
    p_train.add_argument(
        "--era", action="store_true", help="ERA fine-tuning from energies (python -m pyslice.era)"
    )
    p_train.add_argument(
        "options",
        nargs=argparse.REMAINDER,
        help="options of python -m pyslice.transformer (after --)",
    )
    p_train.set_defaults(handler=_run_train)

    p_bench = parser.add_parser_with_debug(
        sub, "bench", help="run the benchmarks (source checkout) and print speed-up ratios"
    )
    p_bench.add_argument("--smoke", action="store_true", help="tiny sizes (seconds, not minutes)")
    p_bench.add_argument("-k", default=None, help="pytest -k expression selecting benchmarks")
    p_bench.add_argument("--json", default=None, help="keep pytest-benchmark's JSON here")
    p_bench.add_argument("--benchmarks", default=None, help="the benchmarks/ folder")
    p_bench.set_defaults(handler=_run_bench)

    from pyslice.metrics import add_evaluate_parser

    add_evaluate_parser(sub)

    p_info = parser.add_parser_with_debug(
        sub, "info", help="versions, compiled features, usable backends"
    )
    p_info.add_argument("--json", action="store_true", help="machine-readable output")
    p_info.set_defaults(handler=_print_info)

    p_mix = parser.add_parser_with_debug(
        sub,
        "mixture",
        help="draw from a von Mises mixture (built-in default) and fit it back by EM",
    )
    p_mix.add_argument("--samples", type=_positive_int, default=1_000_000)
    p_mix.add_argument(
        "--fit-samples",
        type=_positive_int,
        default=100_000,
        help="how many of the draws EM fits (default 100000)",
    )
    p_mix.add_argument("--components", type=_positive_int, default=3)
    p_mix.add_argument("--seed", type=int, default=0)
    p_mix.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p_mix.add_argument("--backend", choices=backends.BACKENDS, default=None)
    p_mix.add_argument("--out", default=None, help="write draws and the fit to this .npz")
    p_mix.set_defaults(handler=_run_mixture)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        if args.debug:
            raise
        print(f"pyslice: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyslice: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Prove and measure every GPU path of pyslice in one command (issue 19).

On a CUDA machine, from the repository root::

    python3 benchmarks/gpu_check.py --out $OUT

in at most ~8 minutes (``--budget``, 460 s by default): installs the wheels carried in ``.whl/``
(OpenMM with its CUDA platform, pdbfixer, arviz; ``tools/fetch_device_wheels.sh`` fills it on a
machine with PyPI, with the structures the GPU steps read under ``.whl/data``), builds pyslice with
CUDA for the present GPU only, runs ``python -m pyslice info`` and ``pytest -m gpu``, then the
benchmarks at GPU sizes (``PYSLICE_BENCH=gpu``), each against its baselines in the same run. Every
step has a time limit; a step that fails or runs out of time is recorded and the next one runs.
After every step the summary and the merged pytest-benchmark JSON are rewritten, so whatever was
measured survives even if the whole command is killed. The last thing printed is a short table
(steps, the issue's targets, speed-ups over each baseline).

Files (``<slug>`` from the GPU's name, e.g. ``nvidia-h200``; ``<date>`` UTC, YYYY-MM-DD):
``gpu-<slug>-<date>.json`` (summary) and ``gpu-<slug>-<date>-benchmarks.json`` (pytest-benchmark;
``python benchmarks/ratios.py`` reads it) in ``--out`` and in ``benchmarks/results/``;
``gpu-check.log`` (every step's full output) in ``--out``.

``--dry-run`` checks the script itself on any machine in seconds: the plan of steps and commands,
that every benchmark file exists and collects at the GPU preset (and the tests with ``-m gpu``),
that the wheels in ``.whl/`` would install (or that their absence is handled), and writes a sample
summary whose every status is 'dry-run' and which holds no numbers, into ``--out`` only.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "pyslice-gpu-check/1"
SUMMARY_STATUSES = ("running", "complete", "partial", "dry-run")
STEP_STATUSES = ("ok", "failed", "timeout", "skipped", "dry-run")
DEFAULT_BUDGET_S = 460.0
RESERVE_S = 15.0  # kept back at the end for the merge, the summary and the table
MIN_STEP_S = 10.0  # a step with less time left than this is skipped, not started
KILL_GRACE_S = 15.0  # after SIGINT (pytest still writes its benchmark JSON), then SIGKILL
DEVICE_PYTHON_TAG = "cp312"  # the GPU machine's Python (KINDS.md)
WHEELS_SOFT_LIMIT = 40 * 2**20  # what tools/fetch_device_wheels.sh aims for
CARRY_LIMIT = 64 * 2**20  # the device tool carries at most this much, working tree included
DATA_MARKER = Path("structures") / "bpti.pdb"
LOG_NAME = "gpu-check.log"
# extra_info "backend" values that are pyslice's own (the rest are baselines), as in ratios.py.
PYSLICE_BACKENDS = ("triton", "cuda", "cpu", "reference", "pyslice")
PIP_INSTALL = ("-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check")


@dataclass(frozen=True)
class Step:
    """A step of the run: its time limit and the time it is expected to take (seconds); for a
    benchmark step the file, and whether it needs openmm and the structures."""

    name: str
    budget_s: float
    expected_s: float
    file: str | None = None
    needs_openmm: bool = False
    optional: bool = False  # a benchmark file that may be absent (another branch adds it)

    def result(self, status: str, note: str = "", command: str | None = None) -> StepResult:
        return StepResult(self.name, status, 0.0, self.budget_s, self.expected_s, command, note)


SETUP_STEPS = (
    Step("env", 30, 5),
    Step("wheels", 90, 15),
    Step("build", 240, 90),
    Step("build-fallback", 120, 0),  # only when the CUDA build fails: C++ only, Triton still runs
    Step("info", 30, 5),
    Step("pytest-gpu", 150, 90),
)
BENCH_STEPS = (
    Step("bench-vonmises", 75, 40, "benchmarks/test_bench_vonmises.py"),
    Step("bench-energy", 90, 45, "benchmarks/test_bench_energy.py", needs_openmm=True),
    Step("bench-sampler", 75, 40, "benchmarks/test_bench_sampler.py", needs_openmm=True),
    Step("bench-attention", 90, 60, "benchmarks/test_bench_attention.py"),
    Step("bench-implicit", 60, 30, "benchmarks/test_bench_implicit.py", True, optional=True),
    Step("bench-build", 60, 30, "benchmarks/test_bench_build.py", needs_openmm=True),
)
STEP_NAMES = tuple(s.name for s in SETUP_STEPS + BENCH_STEPS)
# Collected at PYSLICE_BENCH=gpu, these show the sizes the targets need (the dry run checks;
# attention's CUDA cases are collected only where CUDA is present).
TARGET_TEST_IDS = (
    "benchmarks/test_bench_vonmises.py::test_sample_pyslice[100000000]",
    "benchmarks/test_bench_energy.py::test_energy_pyslice[bpti]",
    "benchmarks/test_bench_energy.py::test_energy_openmm[CUDA-bpti]",
    "benchmarks/test_bench_energy.py::test_delta_pyslice[bpti]",
    "benchmarks/test_bench_sampler.py::test_sampler_pyslice[4096]",
)
# Sizes the targets' groups need, read off the benchmark modules at PYSLICE_BENCH=gpu by the dry
# run: (module, constant, the value it must be or hold).
TARGET_SIZES = (
    ("test_bench_vonmises", "SAMPLE_SIZES", 100_000_000),
    ("test_bench_energy", "BATCH", 4096),
    ("test_bench_sampler", "CHAINS", 4096),
)

# ------------------------------------------------------------------------------------- targets

# (target, benchmark group, unit, threshold, extra_info key of pyslice's rate or None)
RATE_TARGETS = (
    ("von Mises mixture draws, n=1e8", "sample K=8 n=1e+08", "draws/s", 1e10, None),
    ("bpti full energies, B=4096", "energy bpti B=4096", "conformations/s", 5e5, None),
    ("Sampler bpti, 4096 chains", "sampler bpti random-walk chains=4096", "residue-moves/s", 1e6,
     "residue_moves_per_s"),
)  # fmt: skip
OPENMM_CUDA_RATIO = 50.0  # bpti energies, B = 4096, against OpenMM's CUDA platform
ATTENTION_GROUP = re.compile(
    r"^attention (forward|forward\+backward) bfloat16 B=4096 H=4 S=(64|128|256) D=64( ragged)?$"
)


def _rate(bench: dict) -> float:
    """Items per second: extra_info's own rate where the benchmark gives one, else n (or batch)
    per median second, else one per median second (the rule of benchmarks/ratios.py)."""
    info, median = bench.get("extra_info", {}), bench["stats"]["median"]
    for key in ("conformations_per_s", "moves_per_s", "chain_steps_per_s"):
        if key in info:
            return float(info[key])
    return float(info.get("n", info.get("batch", 1))) / median


def _groups(benchmarks: Iterable[dict]) -> dict[str, dict[str, dict]]:
    """group -> contestant (extra_info's backend, else 'pyslice' or the test name) -> benchmark."""
    groups: dict[str, dict[str, dict]] = collections.defaultdict(dict)
    for bench in benchmarks:
        name = bench.get("extra_info", {}).get("backend")
        if name is None:
            name = "pyslice" if "pyslice" in bench["name"] else bench["name"]
        groups[bench.get("group") or bench["name"]][str(name)] = bench
    return groups


def _best_pyslice(entries: dict[str, dict]) -> tuple[str, float] | None:
    ours = {name: _rate(b) for name, b in entries.items() if name in PYSLICE_BACKENDS}
    return max(ours.items(), key=lambda item: item[1]) if ours else None


def compute_ratios(benchmarks: list[dict]) -> list[dict[str, Any]]:
    """pyslice's fastest contestant against every baseline of its group, by throughput."""
    rows = []
    for group, entries in _groups(benchmarks).items():
        best = _best_pyslice(entries)
        for name, bench in entries.items():
            if best is not None and name not in PYSLICE_BACKENDS:
                ratio = best[1] / _rate(bench)
                rows.append({"group": group, "pyslice": best[0], "baseline": name, "ratio": ratio,
                             "pyslice_rate": best[1]})  # fmt: skip
    return rows


def _target(
    name: str, target: str, unit: str, measured: float | None, threshold: float, note: str
) -> dict[str, Any]:
    met = None if measured is None else bool(measured >= threshold)
    return {"name": name, "target": target, "unit": unit, "measured": measured,
            "threshold": threshold, "met": met, "note": note}  # fmt: skip


def evaluate_targets(benchmarks: list[dict]) -> list[dict[str, Any]]:
    """The issue-19 targets: what was measured (None where its benchmark did not run) and whether
    it is met (None when not measured)."""
    groups = _groups(benchmarks)
    out = []
    for name, group, unit, threshold, key in RATE_TARGETS:
        entries = groups.get(group, {})
        best = _best_pyslice(entries)
        rate = None if best is None else best[1]
        if best is not None and key is not None:
            rate = float(entries[best[0]]["extra_info"].get(key, rate))
        note = f"pyslice[{best[0]}]" if best else f"no group '{group}'"
        out.append(_target(name, f">= {threshold:.0e} /s", unit, rate, threshold, note))

    entries = groups.get(RATE_TARGETS[1][1], {})
    best, cuda = _best_pyslice(entries), entries.get("openmm-CUDA")
    ratio = best[1] / _rate(cuda) if best and cuda else None
    note = "no OpenMM CUDA baseline ran" if cuda is None else f"OpenMM CUDA {_rate(cuda):.3g}/s"
    target = f">= {OPENMM_CUDA_RATIO:.0f}x"
    out.append(_target("bpti energies vs OpenMM CUDA", target, "x", ratio, OPENMM_CUDA_RATIO, note))

    attention = sorted(g for g in groups if ATTENTION_GROUP.match(g))
    target = ">= 1.0x best SDPA"
    for group in attention:
        mode, seq, ragged = ATTENTION_GROUP.match(group).groups()
        entries = groups[group]
        sdpa = {n: b["stats"]["median"] for n, b in entries.items() if n.startswith("sdpa-")}
        ours = entries.get("triton")
        ratio = min(sdpa.values()) / ours["stats"]["median"] if sdpa and ours else None
        note = f"best SDPA: {min(sdpa, key=sdpa.get)}" if sdpa else "no SDPA backend ran"
        name = f"attention {mode} S={seq}{ragged or ''}"
        out.append(_target(name, target, "x", ratio, 1.0, note))
    if not attention:
        note = "no attention group at GPU sizes"
        out.append(_target("attention vs best SDPA, S=64/128/256", target, "x", None, 1.0, note))
    return out


# -------------------------------------------------------------------------------------- naming


def device_slug(name: str) -> str:
    """'NVIDIA H200' -> 'nvidia-h200': lower case, every run of other than a-z0-9 as one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown-device"


def result_names(device_name: str, date: datetime.date) -> dict[str, str]:
    """The file names of one run: summary and pytest-benchmark JSON, log."""
    stem = f"gpu-{device_slug(device_name)}-{date.isoformat()}"
    return {"summary": f"{stem}.json", "benchmarks": f"{stem}-benchmarks.json", "log": LOG_NAME}


# -------------------------------------------------------------------------------------- wheels

_WHEEL = re.compile(
    r"^(?P<dist>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)"
    r"\.whl$"
)


@dataclass
class WheelPlan:
    """What the step 'wheels' does with the carried folder."""

    folder: Path
    wheels: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    total_bytes: int = 0
    data_dir: Path | None = None

    def install_command(self, python: str) -> list[str] | None:
        # Into the interpreter's own site-packages, not --target: OpenMM's CUDA plugin finds
        # cudart/nvrtc/cufft through a RUNPATH relative to it (site-packages/nvidia/cu13/lib,
        # where torch's CUDA wheels put them). --no-index: the GPU machine reaches no registry.
        if not self.wheels:
            return None
        return [python, *PIP_INSTALL, "--no-compile", *map(str, self.wheels)]


def _tag_problem(py: str, abi: str, plat: str, python_tag: str) -> str | None:
    """Why a wheel with these tags does not install on CPython ``python_tag`` on Linux x86_64."""
    minor = int(python_tag[3:])  # cp312 -> 12
    fits = False
    for p in py.split("."):
        for a in abi.split("."):
            if a == "none":
                fits |= p in ("py3", f"py3{minor}", python_tag)
            elif a == "abi3":  # the stable ABI: built for this minor version or an older one
                fits |= p.startswith("cp3") and p[3:].isdigit() and int(p[3:]) <= minor
            else:
                fits |= p == a == python_tag
    if not fits:
        return f"tags {py}-{abi} do not fit {python_tag}"
    if not any(p == "any" or (p.endswith("x86_64") and "linux" in p) for p in plat.split(".")):
        return f"platform {plat} is not Linux x86_64"
    return None


def _version_key(version: str) -> tuple:
    return tuple(int(x) if x.isdigit() else -1 for x in re.split(r"[.+-]", version))


def plan_wheels(folder: Path, python_tag: str = DEVICE_PYTHON_TAG) -> WheelPlan:
    """Inspect the carried folder: wheels that install on ``python_tag``, Linux x86_64, are real
    zip files, one version of each distribution (two stop pip: the newest is kept); the
    structures under ``data/``."""
    plan = WheelPlan(folder=folder)
    if not folder.is_dir():
        plan.notes.append(
            f"{folder} is absent: OpenMM-dependent steps run only where openmm is "
            "installed (tools/fetch_device_wheels.sh fills it)"
        )
        return plan
    plan.total_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    by_dist: dict[str, dict[str, Path]] = collections.defaultdict(dict)
    for path in sorted(folder.glob("*.whl")):
        match = _WHEEL.match(path.name)
        why = "not a wheel file name" if match is None else None
        why = why or _tag_problem(match["py"], match["abi"], match["plat"], python_tag)
        if why is None and not zipfile.is_zipfile(path):
            why = "not a zip archive (a truncated download?)"
        if why is not None:
            plan.problems.append(f"{path.name}: {why}")
            continue
        by_dist[re.sub(r"[-_.]+", "_", match["dist"].lower())][match["version"]] = path
    for dist, versions in by_dist.items():
        newest = max(versions, key=_version_key)
        if len(versions) > 1:
            plan.problems.append(f"{dist}: several versions {sorted(versions)}; {newest} is used")
        plan.wheels.append(versions[newest])
    if not plan.wheels:
        plan.notes.append(
            f"no wheels in {folder}: OpenMM-dependent steps run only where openmm is installed"
        )
    size = f"{folder} holds {plan.total_bytes / 2**20:.1f} MiB"
    if plan.total_bytes > CARRY_LIMIT:
        plan.problems.append(f"{size}: over the {CARRY_LIMIT / 2**20:.0f} MiB the device carries")
    elif plan.total_bytes > WHEELS_SOFT_LIMIT:
        plan.notes.append(f"{size} (aim: under {WHEELS_SOFT_LIMIT / 2**20:.0f})")
    if (folder / "data" / DATA_MARKER).is_file():
        plan.data_dir = folder / "data"
    return plan


def find_data_dir(plan: WheelPlan) -> Path | None:
    """The structures the GPU steps read: carried (.whl/data), $PYSLICE_DATA, ../shared/data."""
    for candidate in (
        plan.data_dir,
        os.environ.get("PYSLICE_DATA"),
        ROOT.parent / "shared" / "data",
        ROOT / "shared" / "data",
    ):
        if candidate and (Path(candidate) / DATA_MARKER).is_file():
            return Path(candidate).resolve()
    return None


# -------------------------------------------------------------------------------------- probes
# Small programs run by the device's Python; each prints one line "PROBE <json>".

PROBE_ENV = r"""
import importlib.metadata as md, importlib.util, json, os, platform, shutil, subprocess, sys
import sysconfig
out = {"python": platform.python_version(), "cpus": os.cpu_count(), "packages": {}, "modules": {},
       "site_packages": sysconfig.get_paths()["purelib"]}
for name in ("torch", "triton", "numpy", "scipy", "scikit-learn", "pytest", "pytest-benchmark",
             "pytest-xdist", "pytest-timeout", "scikit-build-core", "pybind11", "cmake", "ninja",
             "openmm", "openmm-cuda-13", "pdbfixer", "arviz", "pyslice"):
    try:
        out["packages"][name] = md.version(name)
    except md.PackageNotFoundError:
        out["packages"][name] = None
for module in ("xdist", "pytest_timeout", "pytest_benchmark"):
    out["modules"][module] = importlib.util.find_spec(module) is not None
nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc"
                                if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
out["nvcc"] = nvcc
if nvcc:
    run = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=20)
    out["nvcc_version"] = (run.stdout.strip().splitlines() or [""])[-1]
if shutil.which("nvidia-smi"):
    query = ("name,driver_version,memory.total,clocks.sm,clocks.mem,clocks.max.sm,"
             "temperature.gpu,power.draw")
    run = subprocess.run(["nvidia-smi", "--query-gpu=" + query, "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20)
    out["nvidia_smi"] = dict(zip(query.split(","), (v.strip() for v in run.stdout.split(","))))
try:
    import torch
    out["torch_cuda"] = torch.version.cuda
    out["cuda_available"] = torch.cuda.is_available()
    if out["cuda_available"]:
        p = torch.cuda.get_device_properties(0)
        out["device"] = {"name": p.name, "capability": list(torch.cuda.get_device_capability(0)),
                         "memory_gib": round(p.total_memory / 2**30, 1),
                         "multiprocessors": p.multi_processor_count,
                         "count": torch.cuda.device_count()}
except Exception as exc:
    out["torch_error"] = f"{type(exc).__name__}: {exc}"
print("PROBE " + json.dumps(out))
"""

PROBE_OPENMM = r"""
import json
out = {}
try:
    import openmm
    Platform = openmm.Platform
    out["openmm"] = openmm.__version__
    count = Platform.getNumPlatforms()
    out["platforms"] = [Platform.getPlatform(i).getName() for i in range(count)]
    out["cuda_platform"] = "CUDA" in out["platforms"]
    out["plugin_failures"] = [str(f).splitlines()[0] for f in Platform.getPluginLoadFailures()]
except Exception as exc:
    out["openmm_error"] = f"{type(exc).__name__}: {exc}"
for name in ("pdbfixer", "arviz"):
    try:
        out[name] = getattr(__import__(name), "__version__", "?")
    except Exception as exc:
        out[name + "_error"] = f"{type(exc).__name__}: {exc}"
print("PROBE " + json.dumps(out))
"""

PROBE_SIZES = r"""
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
out = {}
for module, name in zip(sys.argv[2::2], sys.argv[3::2]):
    try:
        out[module + "." + name] = getattr(importlib.import_module(module), name)
    except BaseException as exc:  # pytest.importorskip raises a BaseException
        out[module + "." + name] = f"{type(exc).__name__}: {exc}"
print("PROBE " + json.dumps(out))
"""

PROBE_PYSLICE = r"""
import json
out = {}
try:
    import pyslice
    from pyslice import _compiled
    out["file"] = pyslice.__file__
    out["build_info"] = _compiled.build_info()
    out["cuda_compiled"] = _compiled.cuda_compiled()
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
print("PROBE " + json.dumps(out, default=str))
"""


def parse_probe(lines: Iterable[str]) -> dict[str, Any] | None:
    for line in reversed(list(lines)):
        if line.startswith("PROBE "):
            return json.loads(line.removeprefix("PROBE "))
    return None


_COUNTS = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)")


def parse_pytest(lines: Iterable[str]) -> dict[str, Any]:
    """The counts of pytest's last summary line and what failed (its -rfE lines)."""
    lines = list(lines)
    counts: dict[str, int] = {}
    for line in reversed(lines):
        found = _COUNTS.findall(line)
        if found and " in " in line:
            counts = {("errors" if k.startswith("error") else k): int(n) for n, k in found}
            break
    failures = [line.split(" - ")[0] for line in lines if line.startswith(("FAILED ", "ERROR "))]
    # Where a run stopped at its time limit was: pytest prints "path:line: KeyboardInterrupt".
    stopped = [line for line in lines if line.endswith(": KeyboardInterrupt")]
    return {"counts": counts, "failures": failures[:40], "stopped_in": stopped[-1:] or None}


# -------------------------------------------------------------------------------------- runner


@dataclass
class StepResult:
    name: str
    status: str
    wall_s: float = 0.0
    budget_s: float = 0.0
    expected_s: float = 0.0
    command: str | None = None
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Completed:
    returncode: int | None  # None: stopped at its time limit
    lines: list[str]
    wall_s: float


def shell_text(command: list[str], env: dict[str, str] | None = None) -> str:
    """The command as one would type it (for the plan and the log)."""
    words = [f"{k}={v}" for k, v in (env or {}).items()]
    words += [c if re.fullmatch(r"[\w@%+=:,./-]+", c) else repr(c) for c in command]
    return " ".join(words)


def run_command(
    command: list[str],
    *,
    timeout_s: float,
    env: dict[str, str],
    cwd: Path,
    log: Callable[[str], None],
    tail: int = 400,
) -> Completed:
    """Run ``command`` in its own process group, each output line to ``log``. At ``timeout_s``:
    SIGINT to the group (pytest then still reports, and pytest-benchmark writes its JSON), after
    KILL_GRACE_S SIGKILL."""
    start = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    kept: collections.deque[str] = collections.deque(maxlen=tail)

    def pump() -> None:
        for line in proc.stdout or ():
            kept.append(line.rstrip("\n"))
            log(kept[-1])

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    returncode: int | None = None
    try:
        returncode = proc.wait(timeout=max(timeout_s, 0.1))
    except subprocess.TimeoutExpired:
        for sig, grace in ((signal.SIGINT, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=grace)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
    reader.join(timeout=5.0)
    return Completed(returncode, list(kept), time.monotonic() - start)


@dataclass
class Context:
    """The state of one run, shared by the steps."""

    args: argparse.Namespace
    out: Path
    work: Path  # per-step benchmark JSON files
    plan: WheelPlan
    data_dir: Path | None
    started: float
    log_file: Any = None
    python: str = sys.executable
    env_probe: dict[str, Any] = field(default_factory=dict)
    openmm_probe: dict[str, Any] = field(default_factory=dict)
    pyslice_probe: dict[str, Any] = field(default_factory=dict)
    results: list[StepResult] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)  # for every child, once set

    @property
    def dry(self) -> bool:
        return bool(self.args.dry_run)

    @property
    def openmm_ok(self) -> bool:
        return "openmm" in self.openmm_probe and "pdbfixer" in self.openmm_probe

    @property
    def pyslice_installed(self) -> bool:
        return bool(self.pyslice_probe) and "error" not in self.pyslice_probe

    def log(self, line: str) -> None:
        if self.log_file is not None:
            self.log_file.write(line + "\n")
            self.log_file.flush()

    def say(self, text: str) -> None:
        """To stdout and the log (the full output of the steps goes to the log only)."""
        if text:
            print(text, flush=True)
            self.log(text)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env, **(extra or {})}
        # Children import the installed pyslice, never the source folder in the working directory
        # (it has no compiled module); PYTHONSAFEPATH reaches pytest-xdist's workers too.
        env["PYTHONSAFEPATH"] = "1"
        # Settings that would measure something else: interpreted Triton, a forced backend.
        for name in ("TRITON_INTERPRET", "PYSLICE_BACKEND", "PYSLICE_DISABLE_COMPILED"):
            env.pop(name, None)
        if self.data_dir is not None:
            env["PYSLICE_DATA"] = str(self.data_dir)
        return env

    def time_left(self) -> float:
        return self.started + self.args.budget - RESERVE_S - time.monotonic()

    def probe(self, program: str, timeout_s: float = 60) -> dict[str, Any]:
        done = run_command(
            [self.python, "-c", program],
            timeout_s=timeout_s,
            env=self.env(),
            cwd=ROOT,
            log=self.log,
        )
        return parse_probe(done.lines) or {"error": "the probe printed nothing"}


def _run(
    ctx: Context, step: Step, command: list[str], env: dict[str, str] | None = None, note: str = ""
) -> tuple[StepResult, Completed | None]:
    """Run one step's command within its limit and the run's budget (only plan it when dry)."""
    result = step.result("dry-run", note=note, command=shell_text(command, env))
    if ctx.dry:
        return result, None
    limit = min(step.budget_s, ctx.time_left())
    if limit < MIN_STEP_S:
        result.status, result.note = "skipped", f"out of time ({max(limit, 0):.0f} s left)"
        return result, None
    ctx.say(f"--- {step.name}: {result.command}  [limit {limit:.0f} s]")
    done = run_command(command, timeout_s=limit, env=ctx.env(env), cwd=ROOT, log=ctx.log)
    result.wall_s = done.wall_s
    if done.returncode is None:
        result.status, result.note = "timeout", f"stopped at its limit of {limit:.0f} s"
    elif done.returncode != 0:
        result.status, result.note = "failed", f"exit status {done.returncode}"
    else:
        result.status = "ok"
    return result, done


def _tail(done: Completed | None, n: int) -> str:
    return "" if done is None else "\n".join("    " + line[:200] for line in done.lines[-n:])


def _missing(ctx: Context, step: Step, *, openmm: bool = False) -> StepResult | None:
    """A 'skipped' result when what the step needs is missing (never in a dry run)."""
    missing = []
    if not ctx.pyslice_installed:
        missing.append("pyslice is not installed (the build failed)")
    if openmm and not ctx.openmm_ok:
        missing.append("openmm or pdbfixer does not import (carry .whl: fetch_device_wheels.sh)")
    if openmm and ctx.data_dir is None:
        missing.append("no structures (.whl/data or PYSLICE_DATA)")
    if ctx.dry or not missing:
        return None
    return step.result("skipped", note="; ".join(missing))


def step_env(ctx: Context, step: Step) -> StepResult:
    """The device's facts (GPU, versions, pytest plugins); the probe is this script's own code,
    so the dry run runs it too."""
    result = step.result("dry-run", command=shell_text([ctx.python, "-c", "PROBE_ENV"]))
    start = time.monotonic()
    ctx.env_probe = result.detail = ctx.probe(PROBE_ENV, step.budget_s)
    if not ctx.dry:
        result.wall_s = time.monotonic() - start
        device = ctx.env_probe.get("device")
        result.status = "ok" if device else "failed"
        result.note = device["name"] if device else ctx.env_probe.get("torch_error", "no CUDA GPU")
    return result


def _install_beside(ctx: Context, step: Step, command: list[str]) -> StepResult:
    """When site-packages does not take the wheels: install them into a folder of their own, on
    PYTHONPATH, and show the loader torch's CUDA libraries, which OpenMM's CUDA plugin otherwise
    finds by a RUNPATH relative to site-packages."""
    site = ctx.work / "site"
    result, _ = _run(ctx, step, [*command, "--target", str(site)])
    if result.status == "ok":
        cuda_libs = Path(ctx.env_probe.get("site_packages", "")) / "nvidia" / "cu13" / "lib"
        for name, path in (("PYTHONPATH", site), ("LD_LIBRARY_PATH", cuda_libs)):
            ctx.extra_env[name] = os.pathsep.join(filter(None, [str(path), os.environ.get(name)]))
        result.note = "installed with --target: site-packages refused them"
    return result


def step_wheels(ctx: Context, step: Step) -> StepResult:
    plan = ctx.plan
    command = plan.install_command(ctx.python)
    if command is None:
        status = "dry-run" if ctx.dry else "skipped"
        result = step.result(status, note="; ".join(plan.notes))
    else:
        result, _ = _run(ctx, step, command)
        if result.status == "failed":
            first = result.note
            result = _install_beside(ctx, step, command)
            if result.status != "ok":
                result.note = f"{first}; with --target too: {result.note}"
    result.detail = {
        "wheels": [w.name for w in plan.wheels],
        "problems": plan.problems,
        "megabytes": round(plan.total_bytes / 1e6, 1),
        "data_dir": str(ctx.data_dir) if ctx.data_dir else None,
    }
    notes = [result.note]
    if not ctx.dry:
        ctx.openmm_probe = result.detail["openmm"] = ctx.probe(PROBE_OPENMM)
        if ctx.openmm_ok:
            cuda = "yes" if ctx.openmm_probe.get("cuda_platform") else "NO"
            notes.append(f"openmm {ctx.openmm_probe['openmm']}, CUDA platform: {cuda}")
        else:
            notes.append("openmm or pdbfixer does not import: OpenMM steps are skipped")
    if ctx.data_dir is None:
        notes.append("no structures (.whl/data, PYSLICE_DATA): steps that read bpti are skipped")
    result.note = "; ".join(n for n in notes if n)
    return result


def _build_command(ctx: Context, build_dir: str) -> list[str]:
    # Not editable: the wheel's layout (kernels/ as pyslice.kernels) is what the tests import.
    # A build folder of its own: a rerun on a still-warm machine recompiles only what changed.
    return [
        ctx.python,
        *PIP_INSTALL,
        "--no-build-isolation",
        "-v",
        f"--config-settings=build-dir={build_dir}",
        ".",
    ]


def _after_build(ctx: Context, result: StepResult, done: Completed | None) -> StepResult:
    if done is None:
        return result
    ctx.pyslice_probe = result.detail = ctx.probe(PROBE_PYSLICE)
    if result.status == "ok" and not ctx.pyslice_installed:
        result.status, result.note = "failed", f"pyslice does not import: {ctx.pyslice_probe}"
    if result.status != "ok":
        ctx.say(_tail(done, 25))
    return result


def step_build(ctx: Context, step: Step) -> StepResult:
    device = ctx.env_probe.get("device")
    archs = "".join(map(str, device["capability"])) if device else "<capability of cuda:0>"
    cpus = str(ctx.env_probe.get("cpus") or os.cpu_count() or 1)
    env = {"PYSLICE_CUDA": "ON", "PYSLICE_CUDA_ARCHS": archs, "CMAKE_BUILD_PARALLEL_LEVEL": cpus}
    nvcc = ctx.env_probe.get("nvcc")
    if nvcc and not shutil.which("nvcc"):
        env["CUDACXX"] = nvcc  # found off the PATH: tell CMake where
    result, done = _run(ctx, step, _build_command(ctx, "build/gpu-check"), env)
    result = _after_build(ctx, result, done)
    if result.status == "ok" and not ctx.pyslice_probe.get("cuda_compiled"):
        result.status, result.note = "failed", "pyslice._C was built without its CUDA kernels"
    return result


def step_build_fallback(ctx: Context, step: Step) -> StepResult | None:
    """C++ only (PYSLICE_CUDA=OFF), run only when the CUDA build did not install pyslice: the
    Triton kernels and the torch paths on the GPU are then still tested and measured."""
    if not ctx.dry and ctx.pyslice_installed:
        return None
    cpus = str(ctx.env_probe.get("cpus") or os.cpu_count() or 1)
    env = {"PYSLICE_CUDA": "OFF", "CMAKE_BUILD_PARALLEL_LEVEL": cpus}
    command = _build_command(ctx, "build/gpu-check-nocuda")
    result, done = _run(ctx, step, command, env, note="only when the CUDA build fails")
    return _after_build(ctx, result, done)


def step_info(ctx: Context, step: Step) -> StepResult:
    skipped = _missing(ctx, step)
    if skipped:
        return skipped
    result, done = _run(ctx, step, [ctx.python, "-m", "pyslice", "info"])
    if result.status not in ("ok", "dry-run"):
        ctx.say(_tail(done, 15))
    return result


def _pytest(ctx: Context, target: str, per_test_s: int) -> list[str]:
    command = [ctx.python, "-m", "pytest", target, "-q", "-rfEs", "-p", "no:cacheprovider"]
    if ctx.env_probe.get("modules", {}).get("pytest_timeout"):
        command.append(f"--timeout={per_test_s}")
    return command


def _after_pytest(ctx: Context, result: StepResult, done: Completed | None) -> None:
    if done is None:
        return
    result.detail.update(parse_pytest(done.lines))
    counts = ", ".join(f"{v} {k}" for k, v in result.detail["counts"].items())
    result.note = "; ".join(x for x in (result.note, counts) if x)
    if result.status != "ok":
        ctx.say("\n".join("    " + f[:200] for f in result.detail["failures"][:12]))


def step_pytest_gpu(ctx: Context, step: Step) -> StepResult:
    skipped = _missing(ctx, step)
    if skipped:
        return skipped
    command = _pytest(ctx, "tests", 120) + ["-m", "gpu"]
    if ctx.env_probe.get("modules", {}).get("xdist"):
        # Tests, not timings: four processes share the GPU and compile Triton kernels in parallel.
        command += ["-n", "4"]
    result, done = _run(ctx, step, command)
    _after_pytest(ctx, result, done)
    return result


def step_bench(ctx: Context, step: Step) -> StepResult:
    assert step.file is not None
    if not (ROOT / step.file).is_file():
        result = step.result("skipped", note=f"{step.file} is absent")
        result.detail["absent"] = step.optional
        return result
    skipped = _missing(ctx, step, openmm=step.needs_openmm)
    if skipped:
        return skipped
    json_path = ctx.work / f"{step.name}.json"
    command = _pytest(ctx, step.file, 240) + [
        f"--benchmark-json={json_path}",
        "--benchmark-columns=min,median,max,rounds",
    ]
    result, done = _run(ctx, step, command, {"PYSLICE_BENCH": "gpu"})
    _after_pytest(ctx, result, done)
    if done is not None:
        result.detail["benchmark_json"] = json_path.is_file()
        if result.status == "timeout" and result.detail["stopped_in"]:
            result.note += f"; stopped in {result.detail['stopped_in'][0]}"
    return result


STEP_FUNCTIONS: dict[str, Callable[[Context, Step], StepResult | None]] = {
    "env": step_env,
    "wheels": step_wheels,
    "build": step_build,
    "build-fallback": step_build_fallback,
    "info": step_info,
    "pytest-gpu": step_pytest_gpu,
}


# -------------------------------------------------------------------------------------- output


def merge_benchmarks(paths: Iterable[Path]) -> dict[str, Any] | None:
    """One pytest-benchmark document: the first file's machine and commit info, every file's
    benchmarks (a file cut short by a kill is left out; the others are kept)."""
    merged: dict[str, Any] | None = None
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if merged is None:
            merged = {k: v for k, v in data.items() if k != "benchmarks"} | {"benchmarks": []}
        merged["benchmarks"].extend(data.get("benchmarks", []))
    return merged


def _git() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


SUMMARY_KEYS = {
    "schema": str,
    "status": str,
    "created": str,
    "dry_run": bool,
    "device": dict,
    "versions": dict,
    "git": dict,
    "budget_s": (int, float),
    "wall_s": (int, float),
    "steps": list,
    "files": dict,
    "targets": list,
    "ratios": list,
}
STEP_KEYS = {f.name for f in dataclasses.fields(StepResult)}
TARGET_KEYS = {"name", "target", "unit", "measured", "threshold", "met", "note"}


def validate_summary(summary: dict[str, Any]) -> list[str]:
    """What is wrong with a summary document (nothing when it follows the schema)."""
    problems = [
        f"{key!r}: missing or not {kind}"
        for key, kind in SUMMARY_KEYS.items()
        if not isinstance(summary.get(key), kind)
    ]
    if problems:
        return problems
    if summary["schema"] != SCHEMA:
        problems.append(f"schema is {summary['schema']!r}, not {SCHEMA!r}")
    if summary["status"] not in SUMMARY_STATUSES:
        problems.append(f"status {summary['status']!r} is not one of {SUMMARY_STATUSES}")
    for step in summary["steps"]:
        if set(step) != STEP_KEYS or step["status"] not in STEP_STATUSES:
            problems.append(f"step {step.get('name')!r}: keys {sorted(step)}, {step.get('status')}")
    for target in summary["targets"]:
        if set(target) != TARGET_KEYS:
            problems.append(f"target {target.get('name')!r}: keys {sorted(target)}")
    if summary["dry_run"]:
        measured = [t["name"] for t in summary["targets"] if t["measured"] is not None]
        if measured or summary["ratios"] or summary["status"] != "dry-run":
            problems.append(f"a dry run holds measurements: {measured or 'ratios'}")
        if any(s["status"] not in ("dry-run", "skipped") for s in summary["steps"]):
            problems.append("a dry run holds a step that ran")
    return problems


def build_summary(
    ctx: Context, status: str, names: dict[str, str], benchmarks: dict[str, Any] | None
) -> dict[str, Any]:
    benches = (benchmarks or {}).get("benchmarks", [])
    probe = ctx.env_probe
    device = dict(probe.get("device") or {"name": None})
    device["slug"] = device_slug(device["name"]) if device["name"] else None
    device["nvidia_smi"] = probe.get("nvidia_smi")
    # What the wheels step installed (the environment probe ran before it).
    installed = {
        k: ctx.openmm_probe[k] for k in ("openmm", "pdbfixer", "arviz") if k in ctx.openmm_probe
    }
    versions = {
        "python": probe.get("python"),
        "torch_cuda": probe.get("torch_cuda"),
        "nvcc": probe.get("nvcc_version"),
        **(probe.get("packages") or {}),
        **installed,
        "openmm_platforms": ctx.openmm_probe.get("platforms"),
        "pyslice_build": ctx.pyslice_probe.get("build_info"),
    }
    git = _git()
    git["commit"] = ctx.args.commit or git["commit"]
    steps = [dataclasses.asdict(r) | {"wall_s": round(r.wall_s, 1)} for r in ctx.results]
    return {
        "schema": SCHEMA,
        "status": status,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dry_run": ctx.dry,
        "device": device,
        "versions": versions,
        "git": git,
        "budget_s": ctx.args.budget,
        "wall_s": round(time.monotonic() - ctx.started, 1),
        "steps": steps,
        "files": names | {"benchmark_count": len(benches)},
        "targets": evaluate_targets(benches),
        "ratios": compute_ratios(benches),
    }


def write_outputs(ctx: Context, status: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The summary and the merged benchmark JSON into --out (and benchmarks/results/ unless dry
    or --no-results); atomic writes, so a kill mid-write leaves the previous version."""
    device = "dry-run" if ctx.dry else (ctx.env_probe.get("device") or {}).get("name", "no-gpu")
    names = result_names(device, datetime.datetime.now(datetime.timezone.utc).date())
    benchmarks = merge_benchmarks(sorted(ctx.work.glob("bench-*.json")))
    summary = build_summary(ctx, status, names, benchmarks)
    for problem in validate_summary(summary):  # a bug of this script: say so, write anyway
        ctx.say(f"!!! summary does not follow {SCHEMA}: {problem}")
    folders = [ctx.out]
    if not ctx.dry and not ctx.args.no_results and ctx.env_probe.get("device"):
        folders.append(ROOT / "benchmarks" / "results")
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for key, data in (("summary", summary), ("benchmarks", benchmarks)):
            if data is not None:
                temporary = folder / (names[key] + ".tmp")
                temporary.write_text(json.dumps(data, indent=1, default=str) + "\n")
                temporary.replace(folder / names[key])
    return summary, names


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if unit == "x" else f"{value:.3g}"


def table(summary: dict[str, Any]) -> str:
    """The short report printed last (the device tool returns only the end of the output)."""
    d, v = summary["device"], summary["versions"]
    cc = ".".join(map(str, d.get("capability") or [])) or "-"
    lines = [
        "=" * 100,
        f"pyslice GPU check, {summary['status']}: {d.get('name')} (cc {cc}), torch {v.get('torch')}"
        f" (CUDA {v.get('torch_cuda')}), triton {v.get('triton')}, openmm {v.get('openmm')}; "
        f"{summary['wall_s']:.0f} s of {summary['budget_s']:.0f}",
        f"{'step':16} {'status':8} {'wall s':>7} {'limit':>6}  note",
    ]
    for s in summary["steps"]:
        note = s["note"].replace("\n", " ")[:66]
        lines.append(
            f"{s['name']:16} {s['status']:8} {s['wall_s']:7.1f} {s['budget_s']:6.0f}  {note}"
        )
    lines.append(f"{'target':38} {'measured':>10} {'unit':16} {'target':18} met")
    for t in summary["targets"]:
        met = {True: "YES", False: "no", None: "-"}[t["met"]]
        lines.append(
            f"{t['name'][:38]:38} {_number(t['measured'], t['unit']):>10} "
            f"{t['unit'][:16]:16} {t['target'][:18]:18} {met}"
        )
    if summary["ratios"]:
        lines.append(f"{'group: pyslice best vs baseline':56} {'baseline':22} {'ratio':>9}")
    for r in summary["ratios"]:
        lines.append(f"{r['group'][:56]:56} {r['baseline'][:22]:22} {r['ratio']:8.2f}x")
    files = summary["files"]
    lines.append(
        f"files: {files['summary']}, {files['benchmarks']} "
        f"({files['benchmark_count']} benchmarks), {files['log']}"
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- dry run


def dry_run_checks(ctx: Context) -> list[str]:
    """Collect the benchmark files at the GPU preset and the tests with -m gpu (in parallel);
    what is wrong (nothing when all is well)."""
    problems = []
    files = []
    for step in BENCH_STEPS:
        if (ROOT / str(step.file)).is_file():
            files.append(str(step.file))
        elif not step.optional:
            problems.append(f"{step.name}: {step.file} does not exist")
    collect = [ctx.python, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    commands = {
        "benchmarks (PYSLICE_BENCH=gpu)": (collect + files, ctx.env({"PYSLICE_BENCH": "gpu"})),
        "tests -m gpu": (collect + ["-m", "gpu", "tests"], ctx.env()),
    }
    done: dict[str, Completed] = {}

    def collect_one(key: str) -> None:
        command, env = commands[key]
        done[key] = run_command(command, timeout_s=300, env=env, cwd=ROOT, log=ctx.log, tail=10**5)

    threads = [threading.Thread(target=collect_one, args=(key,)) for key in commands]
    for thread in threads:
        thread.start()
    names = [x for module, name, _ in TARGET_SIZES for x in (module, name)]
    probe = [ctx.python, "-c", PROBE_SIZES, str(ROOT / "benchmarks"), *names]
    # Meanwhile, the sizes the targets need, read off the benchmark modules.
    sized = run_command(probe, timeout_s=300, env=ctx.env({"PYSLICE_BENCH": "gpu"}), cwd=ROOT,
                        log=ctx.log)  # fmt: skip
    sizes = parse_probe(sized.lines) or {}
    for module, name, want in TARGET_SIZES:
        got = sizes.get(f"{module}.{name}")
        ctx.say(f"  {module}.{name} at the gpu preset: {got}")
        if not (got == want or (isinstance(got, list) and want in got)):
            problems.append(f"{module}.{name} is {got!r} at PYSLICE_BENCH=gpu, not {want}")
    for thread in threads:
        thread.join()
    for key, completed in done.items():
        ids = [line for line in completed.lines if "::" in line and not line.startswith(" ")]
        ctx.say(
            f"collect {key}: exit {completed.returncode}, {len(ids)} tests in "
            f"{completed.wall_s:.1f} s"
        )
        if completed.returncode != 0:
            problems.append(f"collecting {key} failed: " + " | ".join(completed.lines[-8:]))
        if key.startswith("benchmarks"):
            for file in files:
                count = sum(1 for i in ids if i.startswith(file + "::"))
                ctx.say(f"  {file}: {count} benchmarks")
                if count == 0:
                    problems.append(f"{file}: no benchmark collected")
            problems += [
                f"{i} is not collected at PYSLICE_BENCH=gpu"
                for i in TARGET_TEST_IDS
                if i not in ids
            ]
        elif not ids:
            problems.append("pytest -m gpu selects no test")
    return problems


# ---------------------------------------------------------------------------------------- main


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for results and the log")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the plan, collection, wheels and naming; run nothing",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET_S,
        help=f"seconds for the whole run (default {DEFAULT_BUDGET_S:.0f})",
    )
    parser.add_argument(
        "--wheels",
        type=Path,
        default=ROOT / ".whl",
        help="the carried wheels, with data/ (default: .whl/)",
    )
    parser.add_argument(
        "--steps",
        default=None,
        help=f"only these steps (comma-separated) of: {', '.join(STEP_NAMES)}",
    )
    parser.add_argument("--commit", default=None, help="the commit measured (default: git's)")
    parser.add_argument(
        "--no-results",
        action="store_true",
        help="write into --out only, not into benchmarks/results/",
    )
    args = parser.parse_args(argv)
    if args.steps is not None:
        args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
        unknown = sorted(set(args.steps) - set(STEP_NAMES))
        if unknown:
            parser.error(f"--steps: unknown {unknown}; choose from {', '.join(STEP_NAMES)}")
    if args.budget <= RESERVE_S + MIN_STEP_S:
        parser.error(f"--budget must exceed {RESERVE_S + MIN_STEP_S:.0f} s, got {args.budget}")
    return args


def _run_steps(ctx: Context) -> None:
    for step in SETUP_STEPS + BENCH_STEPS:
        # env always runs (every step needs the device's facts); an unselected build or wheels
        # step still probes what is installed.
        if ctx.args.steps is not None and step.name not in ctx.args.steps and step.name != "env":
            if step.name == "build" and not ctx.dry:
                ctx.pyslice_probe = ctx.probe(PROBE_PYSLICE)
            if step.name == "wheels" and not ctx.dry:
                ctx.openmm_probe = ctx.probe(PROBE_OPENMM)
            continue
        function = STEP_FUNCTIONS.get(step.name, step_bench)
        try:
            result = function(ctx, step)
        except Exception as exc:  # noqa: BLE001 - a bug in one step must not lose the others
            result = step.result("failed", f"gpu_check error: {type(exc).__name__}: {exc}")
        if result is None:
            continue
        ctx.results.append(result)
        if not ctx.dry:
            ctx.say(f"--- {step.name}: {result.status} in {result.wall_s:.1f} s; {result.note}")
            write_outputs(ctx, "running")
            if step.name == "env" and result.status != "ok":
                ctx.say("no CUDA GPU here: nothing to measure (--dry-run checks the script)")
                return


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started = time.monotonic()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_wheels(args.wheels.resolve())
    work = Path(tempfile.mkdtemp(prefix="pyslice-gpu-check-"))
    ctx = Context(
        args=args, out=out, work=work, plan=plan, data_dir=find_data_dir(plan), started=started
    )
    with open(out / LOG_NAME, "w") as ctx.log_file:
        mode = "DRY RUN: nothing is built or timed" if ctx.dry else f"budget {args.budget:.0f} s"
        ctx.say(f"pyslice GPU check ({mode}); repository {ROOT}; results to {out}")
        for line in plan.problems + plan.notes:
            ctx.say(f"wheels: {line}")
        _run_steps(ctx)
        if ctx.dry:
            problems = plan.problems + dry_run_checks(ctx)
            ctx.say("plan (step, limit s, expected s, command):")
            for r in ctx.results:
                note = f"  # {r.note}" if r.note else ""
                ctx.say(
                    f"  {r.name:16} {r.budget_s:5.0f} {r.expected_s:5.0f}  {r.command or '-'}{note}"
                )
            ctx.say(
                f"expected {sum(r.expected_s for r in ctx.results):.0f} s in all; no step "
                f"starts after {args.budget - RESERVE_S - MIN_STEP_S:.0f} s"
            )
            sample = result_names("NVIDIA H200", datetime.date(2026, 1, 31))
            ctx.say(f"results are named like {sample['summary']}, {sample['benchmarks']}")
            summary, names = write_outputs(ctx, "dry-run")
            problems += validate_summary(summary)
            ctx.say(table(summary))
            for problem in problems:
                ctx.say(f"PROBLEM: {problem}")
            verdict = "FAILED" if problems else "ok"
            ctx.say(f"dry run {verdict}; sample summary: {out / names['summary']}")
            exit_code = 1 if problems else 0
        else:
            # A benchmark file that another branch has not added yet is nothing missed.
            done = all(r.status == "ok" or r.detail.get("absent") for r in ctx.results)
            final = "complete" if done else "partial"
            summary, _ = write_outputs(ctx, final)
            ctx.say(table(summary))
            exit_code = 1 if any(r.status in ("failed", "timeout") for r in ctx.results) else 0
    shutil.rmtree(work, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())

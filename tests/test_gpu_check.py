"""benchmarks/gpu_check.py, the one GPU command (issue 19), checked without a GPU: its dry run,
the names of its results, its summary schema, the wheels it installs, how it stops a step at its
time limit, and how it turns benchmark numbers into the issue's targets."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
pytestmark = pytest.mark.skipif(
    not (BENCHMARKS / "gpu_check.py").is_file(), reason="benchmarks/ is not beside tests/"
)
gpu_check = pytest.importorskip("gpu_check")  # benchmarks/ is on pytest's pythonpath

# What the device tool brings back: names of letters, digits, '.', '_' and '-' only.
DEVICE_FILE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def _wheel(folder: Path, name: str) -> Path:
    """A real (tiny) zip file named like a wheel."""
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("METADATA", "Name: x\n")
    return path


@pytest.fixture
def carried(tmp_path: Path) -> Path:
    """A .whl folder as tools/fetch_device_wheels.sh leaves it: wheels and data/structures."""
    folder = tmp_path / "whl"
    folder.mkdir()
    for name in (
        "openmm-8.6.1-cp312-cp312-manylinux_2_34_x86_64.whl",
        "openmm_cuda_13-8.6.1-py3-none-manylinux_2_34_x86_64.whl",
        "pdbfixer-1.12.0-py3-none-any.whl",
        "arviz-0.23.4-py3-none-any.whl",
    ):
        _wheel(folder, name)
    structures = folder / "data" / "structures"
    structures.mkdir(parents=True)
    (structures / "bpti.pdb").write_text("END\n")
    return folder


# ----------------------------------------------------------------------------------- naming


def test_results_are_named_by_device_and_date() -> None:
    names = gpu_check.result_names("NVIDIA H200", datetime.date(2026, 12, 2))
    assert names == {
        "summary": "gpu-nvidia-h200-2026-12-02.json",
        "benchmarks": "gpu-nvidia-h200-2026-12-02-benchmarks.json",
        "log": "gpu-check.log",
    }
    assert gpu_check.device_slug("NVIDIA GeForce RTX 4090 (PCIe)") == "nvidia-geforce-rtx-4090-pcie"
    assert gpu_check.device_slug("???") == "unknown-device"
    odd = gpu_check.result_names("Tesla V100-SXM2-16GB / MIG 1g.5gb", datetime.date(2026, 1, 2))
    assert all(DEVICE_FILE_NAME.match(name) for name in odd.values())


# ----------------------------------------------------------------------------------- wheels


def test_no_wheel_folder_means_nothing_to_install(tmp_path: Path) -> None:
    for folder in (tmp_path / "absent", tmp_path):
        plan = gpu_check.plan_wheels(folder)
        assert plan.install_command(sys.executable) is None
        assert not plan.problems
        assert plan.notes and "openmm" in plan.notes[0].lower()
        assert plan.data_dir is None


def test_carried_wheels_are_installed_into_the_interpreter_offline(carried: Path) -> None:
    plan = gpu_check.plan_wheels(carried)
    assert not plan.problems
    command = plan.install_command("/opt/python3")
    assert command[:3] == ["/opt/python3", "-m", "pip"]
    assert {"--no-index", "--no-deps"} <= set(command)
    # Not --target: OpenMM's CUDA plugin finds the CUDA libraries relative to site-packages.
    assert "--target" not in command
    assert sorted(Path(c).name for c in command if c.endswith(".whl")) == sorted(
        p.name for p in carried.glob("*.whl")
    )
    assert plan.data_dir == carried / "data"


def test_wheels_that_cannot_install_on_the_device_are_reported_and_left_out(
    carried: Path,
) -> None:
    bad = [
        "numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl",  # another Python
        "scipy-1.14.0-cp312-cp312-macosx_14_0_arm64.whl",  # another platform
        "pandas-2.2.0-cp312-cp312-manylinux_2_17_aarch64.whl",  # another processor
    ]
    for name in bad:
        _wheel(carried, name)
    (carried / "truncated-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    _wheel(carried, "pdbfixer-1.9.0-py3-none-any.whl")  # a second version: pip would stop
    _wheel(carried, "cffi-1.17.0-cp38-abi3-manylinux_2_17_x86_64.whl")  # stable ABI: fits
    plan = gpu_check.plan_wheels(carried)
    installed = {p.name for p in plan.wheels}
    assert not installed & set(bad) and "truncated-1.0-py3-none-any.whl" not in installed
    assert "pdbfixer-1.12.0-py3-none-any.whl" in installed  # the newest of the two
    assert "pdbfixer-1.9.0-py3-none-any.whl" not in installed
    assert "cffi-1.17.0-cp38-abi3-manylinux_2_17_x86_64.whl" in installed
    text = "\n".join(plan.problems)
    for name in bad + ["truncated-1.0-py3-none-any.whl"]:
        assert name in text
    assert "pdbfixer" in text and "several versions" in text


# ---------------------------------------------------------------------------------- targets


def _bench(group: str, backend: str, median: float, **info: float) -> dict:
    return {"group": group, "name": f"test_x[{backend}]", "stats": {"median": median},
            "extra_info": {"backend": backend, **info}}  # fmt: skip


def test_targets_and_ratios_from_benchmark_numbers() -> None:
    benchmarks = [
        # 1e8 draws in 5 ms: 2e10/s, met.
        _bench("sample K=8 n=1e+08", "triton", 5e-3, n=100_000_000),
        _bench("sample K=8 n=1e+08", "numpy", 10.0, n=100_000_000),
        # 4096 conformations: 4e5/s (not met); OpenMM CUDA 2e3/s: 200x (met).
        _bench("energy bpti B=4096", "cuda", 1.0, conformations_per_s=4e5),
        _bench("energy bpti B=4096", "openmm-CUDA", 1.0, conformations_per_s=2e3),
        _bench("energy bpti B=4096", "openmm-CPU", 1.0, conformations_per_s=1e3),
        # triton 2 ms against flash 3 ms and math 9 ms: 1.5x the best SDPA.
        _bench("attention forward bfloat16 B=4096 H=4 S=128 D=64", "triton", 2e-3, batch=4096),
        _bench("attention forward bfloat16 B=4096 H=4 S=128 D=64", "sdpa-flash", 3e-3, batch=4096),
        _bench("attention forward bfloat16 B=4096 H=4 S=128 D=64", "sdpa-math", 9e-3, batch=4096),
    ]
    targets = {t["name"]: t for t in gpu_check.evaluate_targets(benchmarks)}
    draws = targets["von Mises mixture draws, n=1e8"]
    assert draws["measured"] == pytest.approx(2e10) and draws["met"] is True
    energy = targets["bpti full energies, B=4096"]
    assert energy["measured"] == pytest.approx(4e5) and energy["met"] is False
    versus = targets["bpti energies vs OpenMM CUDA"]
    assert versus["measured"] == pytest.approx(200.0) and versus["met"] is True
    attention = targets["attention forward S=128"]
    assert attention["measured"] == pytest.approx(1.5) and attention["met"] is True
    assert "sdpa-flash" in attention["note"]
    sampler = targets["Sampler bpti, 4096 chains"]  # never ran: nothing claimed
    assert sampler["measured"] is None and sampler["met"] is None

    ratios = {(r["group"], r["baseline"]): r["ratio"] for r in gpu_check.compute_ratios(benchmarks)}
    assert ratios[("energy bpti B=4096", "openmm-CPU")] == pytest.approx(400.0)
    assert ratios[("sample K=8 n=1e+08", "numpy")] == pytest.approx(2000.0)
    assert ("energy bpti B=4096", "cuda") not in ratios  # pyslice is not its own baseline


def test_targets_without_any_benchmark_claim_nothing() -> None:
    targets = gpu_check.evaluate_targets([])
    assert targets and all(t["measured"] is None and t["met"] is None for t in targets)


def test_the_schema_check_rejects_a_summary_that_lies() -> None:
    good = {
        "schema": gpu_check.SCHEMA, "status": "dry-run", "created": "2026-01-01T00:00:00+00:00",
        "dry_run": True, "device": {}, "versions": {}, "git": {}, "budget_s": 460.0,
        "wall_s": 1.0, "steps": [], "files": {}, "targets": gpu_check.evaluate_targets([]),
        "ratios": [],
    }  # fmt: skip
    assert gpu_check.validate_summary(good) == []
    assert gpu_check.validate_summary({k: v for k, v in good.items() if k != "targets"})
    assert gpu_check.validate_summary(good | {"status": "finished"})
    numbers = [dict(t, measured=1.0) for t in good["targets"]]
    assert gpu_check.validate_summary(good | {"targets": numbers})  # a dry run measures nothing
    ran = [{"name": "build", "status": "ok", "wall_s": 1.0, "budget_s": 1.0, "expected_s": 1.0,
            "command": "x", "note": "", "detail": {}}]  # fmt: skip
    assert gpu_check.validate_summary(good | {"steps": ran})


def test_pytest_summary_lines_are_read() -> None:
    lines = [
        "FAILED tests/test_attention.py::test_cuda[bf16] - AssertionError: 0.3 > 0.04",
        "ERROR tests/energy/test_forcefield.py::test_x - RuntimeError: CUDA",
        "/repo/benchmarks/test_bench_energy.py:140: KeyboardInterrupt",
        "3 failed, 120 passed, 7 skipped, 1016 deselected, 1 error in 81.20s (0:01:21)",
    ]
    parsed = gpu_check.parse_pytest(lines)
    assert parsed["counts"] == {"failed": 3, "passed": 120, "skipped": 7, "deselected": 1016,
                                "errors": 1}  # fmt: skip
    assert parsed["failures"] == [
        "FAILED tests/test_attention.py::test_cuda[bf16]",
        "ERROR tests/energy/test_forcefield.py::test_x",
    ]
    assert parsed["stopped_in"] == ["/repo/benchmarks/test_bench_energy.py:140: KeyboardInterrupt"]


# ----------------------------------------------------------------------------------- runner


def test_a_step_past_its_limit_is_stopped_and_what_it_printed_is_kept(tmp_path: Path) -> None:
    program = "import time; print('started', flush=True); time.sleep(60)"
    logged: list[str] = []
    done = gpu_check.run_command([sys.executable, "-c", program], timeout_s=1.0,
                                 env=dict(os.environ), cwd=tmp_path, log=logged.append)  # fmt: skip
    assert done.returncode is None  # stopped, not finished
    assert done.wall_s < 10  # SIGINT ended it well before SIGKILL was due
    assert "started" in done.lines and "started" in logged


def test_without_a_gpu_the_real_run_stops_at_once_and_says_why(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the real run would build and measure")
    out = tmp_path / "out"
    code = gpu_check.main(["--out", str(out), "--no-results", "--wheels", str(tmp_path / "no")])
    assert code == 1
    (summary_path,) = out.glob("gpu-*.json")
    summary = json.loads(summary_path.read_text())
    assert gpu_check.validate_summary(summary) == []
    assert [s["name"] for s in summary["steps"]] == ["env"]
    assert summary["steps"][0]["status"] == "failed"
    assert summary["status"] == "partial"
    assert "no CUDA GPU" in (out / "gpu-check.log").read_text()


# ----------------------------------------------------------------------------------- dry run


def test_dry_run_plans_collects_and_writes_a_sample_summary(tmp_path: Path, carried: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--dry-run", "--out", str(out),
         "--wheels", str(carried)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    text = done.stdout
    # The plan: the wheels installed offline, the CUDA build for this GPU, pytest -m gpu and every
    # benchmark file at the GPU preset.
    assert re.search(r"wheels .* -m pip install --no-index --no-deps .*openmm-8\.6\.1", text)
    assert "PYSLICE_CUDA=ON PYSLICE_CUDA_ARCHS=" in text and "CMAKE_BUILD_PARALLEL_LEVEL=" in text
    assert re.search(r"pytest-gpu .* -m pytest tests .* -m gpu", text)
    for step in gpu_check.BENCH_STEPS:
        if (BENCHMARKS.parent / str(step.file)).is_file():
            assert re.search(rf"{step.name} .*PYSLICE_BENCH=gpu .*{step.file}", text), step.name
    assert re.search(r"collect benchmarks \(PYSLICE_BENCH=gpu\): exit 0, [1-9]\d* tests", text)
    assert re.search(r"collect tests -m gpu: exit 0, [1-9]\d* tests", text)
    # The sizes the targets are stated at.
    assert "test_bench_energy.BATCH at the gpu preset: 4096" in text
    assert re.search(r"test_bench_vonmises.SAMPLE_SIZES at the gpu preset: \[.*100000000", text)
    assert re.search(r"test_bench_sampler.CHAINS at the gpu preset: \[.*4096", text)
    assert "dry run ok" in text and "PROBLEM" not in text

    files = sorted(p.name for p in out.iterdir())
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    assert files == ["gpu-check.log", f"gpu-dry-run-{today}.json"]  # no benchmark file: no numbers
    summary = json.loads((out / f"gpu-dry-run-{today}.json").read_text())
    assert gpu_check.validate_summary(summary) == []
    assert summary["status"] == "dry-run" and summary["dry_run"] is True
    assert {s["status"] for s in summary["steps"]} <= {"dry-run", "skipped"}
    assert [s["name"] for s in summary["steps"]] == list(gpu_check.STEP_NAMES)
    assert all(t["measured"] is None and t["met"] is None for t in summary["targets"])
    assert summary["ratios"] == [] and summary["files"]["benchmark_count"] == 0
    wheels = next(s for s in summary["steps"] if s["name"] == "wheels")
    assert len(wheels["detail"]["wheels"]) == 4 and wheels["detail"]["data_dir"]

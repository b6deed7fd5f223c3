"""The pyslice command: info, the default main job, clean errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyslice import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_info_reports_versions_build_and_backends(capsys) -> None:
    assert cli.main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pyslice"] and report["torch"]
    assert "compiled" in report and "backends" in report
    statuses = report["backends"]["vonmises_sample"]
    assert statuses["reference"]["cpu"] == "usable"
    assert cli.main(["info"]) == 0
    assert "vonmises_sample" in capsys.readouterr().out


def test_python_dash_m_pyslice_info_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pyslice", "info"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "backends:" in done.stdout


def test_mixture_demo_recovers_its_mixture(tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("mixture_demo", EXAMPLES / "mixture_demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    out = tmp_path / "draws.npz"
    assert demo.main(["--samples", "40000", "--fit-samples", "20000", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "converged=True" in text
    saved = np.load(out)
    assert saved["angles"].shape == (40000,)
    fitted = np.sort(np.degrees(saved["fitted_loc"]))
    np.testing.assert_allclose(fitted, np.sort(demo.DEGREES), atol=3.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "--chains", "0"],
        ["sample", "--device", "cuda:7"]
        if not __import__("torch").cuda.is_available()
        else ["sample", "--device", "banana"],
        ["nonsense-command"],
    ],
)
def test_bad_options_exit_2_with_one_line(argv) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pyslice", *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip()


# --------------------------------------------------------------------------- pyslice sample

SMALL_RUN = ["--chains", "8", "--steps", "12", "--warmup", "4", "--quiet"]
OUTPUT_FILES = ("ensemble.npz", "structures.pdb", "trajectory.dcd", "summary.json", "report.png")


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _check_outputs(out, n_draws: int, n_chains: int) -> dict:
    from pyslice import Ensemble
    from pyslice.io.report import REPORT_SIZE

    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    assert not (out / "checkpoint.pt").exists()
    assert not list(out.glob(".*.tmp")), "temporary files left behind"
    ensemble = Ensemble.load(out / "ensemble.npz")
    assert ensemble.chi.shape[:2] == (n_draws, n_chains)
    assert _png_size(out / "report.png") == REPORT_SIZE
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["acceptance"]) == set(ensemble.acceptance)
    pdb = (out / "structures.pdb").read_text()
    models = pdb.count("\nMODEL")
    assert models == len(summary["structures"]) >= 2
    assert summary["structures"][0]["kind"] == "lowest_energy"
    assert summary["structures"][0]["energy"] == pytest.approx(float(ensemble.energy.min()))
    # REMARK lines say which model is which, with energies and populations
    remarks = [line for line in pdb.splitlines() if line.startswith("REMARK 999")]
    assert "MODEL 1: lowest-energy draw" in remarks[1]
    assert "MODEL 2: cluster representative 1" in remarks[3] and "% of draws" in remarks[3]
    assert all(len(line) <= 80 for line in remarks)
    assert summary["converged"] in (True, False) and "convergence_problems" in summary
    return summary


def test_sample_default_peptide_writes_every_file(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    # leftovers of an atomic write killed in an earlier run of this output are removed
    (out / ".ensemble.npz.0123456789ab.tmp").write_bytes(b"partial")
    (out / ".checkpoint.pt.ba9876543210.tmp").write_bytes(b"partial")
    assert cli.main(["sample", *SMALL_RUN, "--out", str(out)]) == 0
    summary = _check_outputs(out, 12, 8)
    assert summary["input"].startswith("built-in peptide")
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "writing the outputs" in captured.out
    # 12 draws of 8 chains cannot pass R-hat <= 1.05 with bulk ESS >= 100: it says so
    assert summary["converged"] is False
    assert "NOT CONVERGED" in captured.err and "--steps" in captured.err


def test_sample_is_reproducible_from_its_seed(tmp_path) -> None:
    from pyslice import Ensemble

    runs = []
    for name in ("a", "b"):
        assert cli.main(["sample", *SMALL_RUN, "--seed", "5", "--out", str(tmp_path / name)]) == 0
        runs.append(Ensemble.load(tmp_path / name / "ensemble.npz"))
    assert np.array_equal(runs[0].chi.numpy(), runs[1].chi.numpy())
    assert np.array_equal(runs[0].energy.numpy(), runs[1].energy.numpy())


def test_sample_bpti(tmp_path, data_dir) -> None:
    out = tmp_path / "bpti"
    structure = str(data_dir / "structures" / "bpti.pdb")
    argv = ["sample", structure, "--chains", "4", "--steps", "6", "--warmup", "2", "--quiet"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    summary = _check_outputs(out, 6, 4)
    assert summary["n_chi"] > 50


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "/no/such/file.pdb"], "no such file"),
        (["sample", "--temperature", "-5"], "temperature"),
        (["sample", "--proposal", "nonsense"], "--proposal"),
        (["sample", "--steps", "-1"], "--steps"),
    ],
)
def test_sample_bad_inputs_exit_2_with_one_line(argv, message, tmp_path) -> None:
    # (one subprocess run: the whole path, interpreter start and exit status included)
    done = subprocess.run(
        [sys.executable, "-m", "pyslice", *argv, "--out", str(tmp_path / "o"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr
    assert message in done.stderr
    assert len(lines) <= 2  # argparse prints usage + one error line; our handler one line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "banana"], "--device: must be 'cpu', 'cuda' or 'cuda:N'"),
        (["--steps", "0"], "--steps: expected a whole number >= 1, got 0"),
        (["--chains", "abc"], "--chains: expected a whole number >= 1, got 'abc'"),
        (["--seed", "-3"], "--seed: expected a whole number >= 0"),
        (["--out", ""], "--out: expected a folder name"),
        (["--out", "{file}"], "exists and is not a folder"),
    ],
)
def test_sample_option_errors_name_the_option(argv, message, tmp_path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    argv = [a.replace("{file}", str(afile)) for a in argv]
    with pytest.raises(SystemExit) as exited:
        cli.main(["sample", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "_int" not in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["text", "npz", "missing"])
def test_sample_bad_model_file_fails_before_reading_the_structure(kind, tmp_path, capsys) -> None:
    model = tmp_path / f"model.{kind}"
    if kind == "text":
        model.write_text("not a model\n")
    elif kind == "npz":
        np.savez(model, weights=np.zeros(3))
        model = tmp_path / "model.npz.npz"
    argv = ["sample", "/no/such/structure.pdb", "--proposal", "transformer", "--model"]
    assert cli.main([*argv, str(model), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyslice: error: --model")
    assert len(err.splitlines()) == 1
    assert "structure.pdb" not in err  # the option was checked first


def test_sample_corrupt_checkpoint_says_what_to_do_and_restart_discards_it(
    tmp_path, capsys
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"\x00garbage")
    assert cli.main(["sample", *SMALL_RUN, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and "--restart" in err and "corrupt" in err
    assert cli.main(["sample", *SMALL_RUN, "--out", str(out), "--restart"]) == 0
    _check_outputs(out, 12, 8)


def test_sample_sigterm_saves_a_checkpoint_and_exits_143(tmp_path) -> None:
    import signal
    import time

    out = tmp_path / "run"
    argv = ["sample", "--chains", "4", "--steps", "4000", "--warmup", "0", "--quiet"]
    process = subprocess.Popen(
        [sys.executable, "-m", "pyslice", *argv, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        # the first checkpoint (5% of the run) means sampling is under way
        while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.2)
        assert (out / "checkpoint.pt").exists()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM" in err and "checkpoint.pt" in err and "resume" in err
    assert "Traceback" not in err
    assert (out / "checkpoint.pt").exists() and not list(out.glob(".*.tmp"))


def test_sample_malformed_structure_exits_2(tmp_path) -> None:
    bad = tmp_path / "bad.pdb"
    bad.write_text("this is not a PDB file\n")
    done = subprocess.run(
        [sys.executable, "-m", "pyslice", "sample", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_bench_smoke_prints_ratio_table(tmp_path, capsys) -> None:
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "benchmarks"
    result = tmp_path / "bench.json"
    argv = ["bench", "--smoke", "-k", "sample and K", "--benchmarks", str(folder)]
    assert cli.main([*argv, "--json", str(result)]) == 0
    out = capsys.readouterr().out
    assert "device:" in out and "x  (pyslice" in out
    assert json.loads(result.read_text())["benchmarks"]


def test_bench_without_a_checkout_exits_2(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pyslice", "bench", "--benchmarks", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "benchmarks" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("proposal", ["library", "transformer"])
def test_sample_with_a_trained_proposal(tmp_path, proposal: str) -> None:
    out = tmp_path / proposal
    assert cli.main(["sample", *SMALL_RUN, "--proposal", proposal, "--out", str(out)]) == 0
    summary = _check_outputs(out, 12, 8)
    assert summary["proposal"] == proposal


def test_train_forwards_options(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["train", "ml", "--help"])
    assert exited.value.code == 0
    assert "--steps" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        cli.main(["train", "era", "--help"])
    assert exited.value.code == 0
    assert "--blocks" in capsys.readouterr().out
    # each kind parses its own options: one of the other kind is a usage error
    for argv in (["train", "ml", "--blocks", "1"], ["train", "era", "--sampled", "a", "b"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err


ERA_RUN = [
    "--context-chains", "8", "--context-steps", "4", "--pairs", "8", "--eval-samples", "16",
    "--eval-contexts", "2", "--log-every", "2", "--blocks", "1", "4", "--threads", "1",
]  # fmt: skip


def test_train_era_aligns_resumes_and_feeds_sample(tmp_path, capsys, monkeypatch) -> None:
    import pyslice.models.transformer.align
    from pyslice.models.transformer import SideChainTransformer

    out, checkpoint = tmp_path / "era.pt", tmp_path / "era.ckpt"
    common = [*ERA_RUN, "--out", str(out), "--checkpoint", str(checkpoint)]
    assert cli.main(["train", "era", *common, "--steps", "2"]) == 0
    first = SideChainTransformer.load(out)
    assert [e["step"] for e in first.provenance["era"]["history"]] == [2]

    # resumed from the checkpoint (its context states too: no new random-walk run), two more steps
    def no_new_contexts(*args, **kwargs):
        raise AssertionError("contexts must come from the checkpoint")

    monkeypatch.setattr(pyslice.models.transformer.align, "sampler_contexts", no_new_contexts)
    assert cli.main(["train", "era", *common, "--steps", "4"]) == 0
    # another block setting does not silently continue that run
    assert cli.main(["train", "era", *common, "--steps", "6", "--blocks", "2"]) == 2
    captured = capsys.readouterr()
    assert "checkpoint" in captured.err
    assert "wrote" in captured.out  # from the runs before
    model = SideChainTransformer.load(out)
    era = model.provenance["era"]
    assert [e["step"] for e in era["history"]] == [2, 4]
    assert era["structure"].startswith("built-in peptide")
    assert era["command"].startswith("pyslice train era ") and "--blocks 1 4" in era["command"]
    assert era["settings"]["block_sizes"] == [1, 4] and era["settings"]["steps"] == 4
    assert model.provenance["base"] == SideChainTransformer.default().provenance
    changed = [
        not torch.equal(a, b)
        for a, b in zip(model.parameters(), SideChainTransformer.default().parameters())
    ]
    assert any(changed)
    # the aligned model drives the sampler
    sample_out = tmp_path / "sample"
    args = ["sample", *SMALL_RUN, "--proposal", "transformer", "--model", str(out)]
    assert cli.main([*args, "--out", str(sample_out)]) == 0
    assert cli.main(["sample", *SMALL_RUN, "--model", str(out)]) == 2
    assert "--model" in capsys.readouterr().err


def test_train_fine_tunes_on_energy_filtered_samples(tmp_path, capsys) -> None:
    from pathlib import Path

    import pyslice
    from pyslice.models.transformer import SideChainTransformer

    run = tmp_path / "run"
    assert cli.main(["sample", *SMALL_RUN, "--out", str(run)]) == 0
    structure = tmp_path / "peptide.pdb"
    pyslice.Protein.from_sequence(cli.DEFAULT_SEQUENCE).to_pdb(structure)
    shipped = Path(pyslice.__file__).parent / "data" / "transformer.pt"
    out = tmp_path / "tuned.pt"
    options = [
        "--init", str(shipped), "--no-structures", "--keep-fraction", "0.5", "--steps", "3",
        "--batch-size", "2", "--threads", "1", "--out", str(out),
        "--sampled", str(structure), str(run / "ensemble.npz"),
    ]  # fmt: skip
    assert cli.main(["train", "ml", *options]) == 0
    assert "draws kept" in capsys.readouterr().out
    model = SideChainTransformer.load(out)
    assert model.provenance["base"] == SideChainTransformer.default().provenance
    assert 0 < model.provenance["train_records"] < 12 * 8  # the lower-energy half
    # the recorded command line reproduces the run
    command = model.provenance["command"]
    assert command.startswith("pyslice train ml ") and "--keep-fraction 0.5" in command
    assert f"--sampled {structure} {run / 'ensemble.npz'}" in command
    assert "--no-structures" in command and "--threads" in command
    assert cli.main(["train", "ml", "--no-structures", "--out", str(out)]) == 2
    assert "--sampled" in capsys.readouterr().err


def test_train_era_rejects_bad_blocks(tmp_path, capsys) -> None:
    out = tmp_path / "era.pt"
    assert cli.main(["train", "era", "--blocks", "-1", "--out", str(out)]) == 2
    assert "--blocks" in capsys.readouterr().err
    assert not out.exists()

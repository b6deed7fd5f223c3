"""The pyslice command: info, the default main job, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pyslice import cli


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


def test_mixture_default_job_recovers_the_builtin_mixture(tmp_path, capsys) -> None:
    out = tmp_path / "draws.npz"
    code = cli.main(["mixture", "--samples", "40000", "--fit-samples", "20000", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "converged=True" in text
    saved = np.load(out)
    assert saved["angles"].shape == (40000,)
    fitted = np.sort(np.degrees(saved["fitted_loc"]))
    np.testing.assert_allclose(fitted, np.sort(cli.DEFAULT_MIXTURE_DEGREES), atol=3.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["mixture", "--samples", "0"],
        ["mixture", "--device", "cuda:7"]
        if not __import__("torch").cuda.is_available()
        else ["mixture", "--backend", "nonsense"],
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

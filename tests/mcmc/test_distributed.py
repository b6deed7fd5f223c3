"""Scale-out: the Sampler on two gloo ranks (two CPU processes launched the way torchrun launches
them: RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment, OMP_NUM_THREADS=1).

The two-rank run must equal, bit for bit, the same run on one rank, and two single-process runs
that each play one rank (the sampler reads its rank from
``pyslice.mcmc.sampler._distributed_rank``, patched here) concatenated over chains: chains are
split n_chains * r // world .. n_chains * (r + 1) // world, every random number is keyed by the
chain's global index (never by the rank), and ``run()`` gathers the ensemble on rank 0 (None
elsewhere). A distributed run with a
checkpoint that is cut short resumes from its per-rank files and finishes as if never stopped.

The worker is this file run as a script (``python test_distributed.py WORKDIR``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch

import pyslice
from pyslice.mcmc import sampler as sampler_module
from pyslice.mcmc.ensemble import Ensemble
from pyslice.mcmc.sampler import Sampler
from pyslice.mcmc.targets import FunctionTarget

WORLD = 2
TOTAL = 7  # uneven on purpose: rank 0 runs 3 chains, rank 1 runs 4
N_CHI, GROUP = 3, [0, 0, 1]
MU = torch.tensor([1.0, -2.0, 2.5], dtype=torch.float64)
RUN = dict(n_steps=40, warmup=10, thin=2, progress=False)
# Emulated ranks (one process playing one rank) have no process group to pool their warm-up
# statistics over: they are compared with real ranks on runs without adaptation.
FIXED_RUN = dict(n_steps=20, warmup=0, thin=2, progress=False)
CHECKPOINT_RUN = dict(n_steps=30, warmup=0, checkpoint_every=4, progress=False)
FAIL_AT_STEP = 13  # the interrupted run raises inside this step (0-based)
PEPTIDE, PEPTIDE_CHAINS = "AVKF", 5
PEPTIDE_RUN = dict(n_steps=6, warmup=2, progress=False)
TIMEOUT_S = 180
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "distributed_sampling.py"


def _energy(chi: torch.Tensor) -> torch.Tensor:
    """Two wells per angle, kJ/mol (a few kT deep at 300 K)."""
    return (-4.0 * torch.cos(chi - MU) - 2.0 * torch.cos(2.0 * chi)).sum(-1)


class _Counting:
    """The energy, counting its calls; raises once the call budget is spent (an injected error)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, chi: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("injected failure")
        return _energy(chi)


def _function_sampler(energy=_energy) -> Sampler:
    target = FunctionTarget(energy, N_CHI, group=torch.tensor(GROUP))
    # init="proposal": the starting points come from each rank's own stream too
    return Sampler(target, n_chains=TOTAL, seed=11, init="proposal", refresh_every=None)


def _peptide_sampler() -> Sampler:
    return Sampler(pyslice.Protein.from_sequence(PEPTIDE), n_chains=PEPTIDE_CHAINS, seed=3)


# ------------------------------------------------------------------ the worker (one rank)


def _worker(workdir: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(seconds=TIMEOUT_S))
    rank = dist.get_rank()
    out: dict = {}
    sampler = _function_sampler()
    out["layout"] = (sampler.rank, sampler.world_size, sampler.n_chains, sampler.chain_offset,
                     sampler.stream)  # fmt: skip
    out["function"] = sampler.run(**RUN)
    out["function_fixed"] = _function_sampler().run(**FIXED_RUN)

    checkpoint = workdir / "run.ckpt"
    # Calls: 1 for the initial energies, then one per step; the call of step FAIL_AT_STEP raises.
    try:
        _function_sampler(_Counting(fail_after=1 + FAIL_AT_STEP)).run(
            **CHECKPOINT_RUN, checkpoint=checkpoint
        )
        out["interrupted"] = False
    except RuntimeError as exc:
        out["interrupted"] = str(exc) == "injected failure"
    dist.barrier()  # both ranks have written their checkpoints
    out["files_after_interruption"] = sorted(p.name for p in workdir.glob("run.ckpt*"))
    counting = _Counting()
    out["resumed"] = _function_sampler(counting).run(**CHECKPOINT_RUN, checkpoint=checkpoint)
    out["resumed_calls"] = counting.calls

    out["peptide"] = _peptide_sampler().run(**PEPTIDE_RUN)
    torch.save(out, workdir / f"rank{rank}.pt")
    dist.destroy_process_group()


# ------------------------------------------------------------------ the launcher and fixtures


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: list[str], workdir: Path, world: int) -> list[subprocess.CompletedProcess]:
    """Start ``world`` ranks of ``python args`` with torchrun's environment; wait for them all."""
    port = str(_free_port())
    procs = []
    for rank in range(world):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank),
                   LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                   OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")  # fmt: skip
        procs.append(
            subprocess.Popen(
                [sys.executable, *args],
                env=env,
                cwd=workdir,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    done = []
    try:
        for proc in procs:
            stdout, _ = proc.communicate(timeout=TIMEOUT_S)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout))
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        logs = [p.communicate()[0] for p in procs]
        pytest.fail(f"distributed run timed out after {TIMEOUT_S} s:\n" + "\n".join(logs))
    return done


def _need_gloo() -> None:
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this torch build")
    if not dist.is_gloo_available():
        pytest.skip("torch.distributed has no gloo backend in this torch build")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """What each of the two ranks returned (the worker ran once for every test here)."""
    _need_gloo()
    workdir = tmp_path_factory.mktemp("distributed")
    done = _launch([str(Path(__file__).resolve()), str(workdir)], workdir, WORLD)
    for rank, proc in enumerate(done):
        assert proc.returncode == 0, f"rank {rank} failed:\n{proc.stdout[-6000:]}"
    return [torch.load(workdir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _as_rank(monkeypatch, rank: int, make) -> Sampler:
    """A single-process sampler that plays ``rank`` of WORLD (returns its own part from run())."""
    with monkeypatch.context() as patch:
        patch.setattr(sampler_module, "_distributed_rank", lambda: (rank, WORLD))
        sampler = make()
    sampler._gather = lambda local: local  # type: ignore[method-assign]
    return sampler


def _emulated(monkeypatch, make, **run) -> Ensemble:
    parts = [_as_rank(monkeypatch, r, make).run(**run) for r in range(WORLD)]
    return Ensemble.concatenate_chains(parts)


def _assert_identical(got: Ensemble, expected: Ensemble) -> None:
    assert torch.equal(got.chi, expected.chi)
    assert torch.equal(got.energy, expected.energy)
    assert got.move_counts == expected.move_counts
    assert got.group_counts.keys() == expected.group_counts.keys()
    for name, counts in expected.group_counts.items():
        assert torch.equal(got.group_counts[name], counts), name
    assert got.meta == expected.meta
    assert got.chi_names == expected.chi_names
    assert got.reference_pdb == expected.reference_pdb


# ------------------------------------------------------------------ tests


def test_chains_are_split_over_ranks(ranks) -> None:
    layouts = [r["layout"] for r in ranks]
    # (rank, world, n_chains, chain_offset, stream)
    assert layouts == [(0, 2, 3, 0, 0), (1, 2, 4, 3, 1)]


def test_only_rank_zero_gets_the_ensemble(ranks) -> None:
    for key in ("function", "function_fixed", "resumed", "peptide"):
        assert isinstance(ranks[0][key], Ensemble), key
        assert ranks[1][key] is None, key


def test_gathered_ensemble(ranks) -> None:
    ensemble = ranks[0]["function"]
    draws = RUN["n_steps"] // RUN["thin"]
    assert ensemble.chi.shape == (draws, TOTAL, N_CHI)
    assert ensemble.energy.shape == (draws, TOTAL)
    assert ensemble.meta["n_chains"] == TOTAL
    # every chain-step after warm-up is counted once, on whichever rank ran it
    assert sum(p for p, _ in ensemble.move_counts.values()) == TOTAL * RUN["n_steps"]
    # the energies are those of the angles (no chain got another's energy in the gather)
    flat = ensemble.chi.reshape(-1, N_CHI).double()
    torch.testing.assert_close(ensemble.energy.reshape(-1), _energy(flat), rtol=0, atol=1e-5)
    # disjoint streams: the ranks' chains differ from the first draw on (init="proposal")
    assert not torch.equal(ensemble.chi[:, :3], ensemble.chi[:, 3:6])
    assert len({tuple(c) for c in ensemble.chi[0].tolist()}) == TOTAL


def test_two_ranks_equal_two_emulated_ranks_bit_for_bit(ranks, monkeypatch) -> None:
    expected = _emulated(monkeypatch, _function_sampler, **FIXED_RUN)
    _assert_identical(ranks[0]["function_fixed"], expected)


def test_two_ranks_equal_one_rank_bit_for_bit(ranks) -> None:
    """Chains are keyed by their global index: splitting them over ranks changes nothing."""
    _assert_identical(ranks[0]["function"], _function_sampler().run(**RUN))
    _assert_identical(ranks[0]["peptide"], _peptide_sampler().run(**PEPTIDE_RUN))


def test_distributed_checkpoint_resumes(ranks, monkeypatch) -> None:
    for rank in ranks:
        assert rank["interrupted"] is True
        # one file per rank, none under the bare name
        assert rank["files_after_interruption"] == ["run.ckpt.rank0", "run.ckpt.rank1"]
    # resumed, not restarted: 1 (initial energies) + 1 (cache from the checkpoint) + the steps
    # left + 1 (the final refresh is off: refresh_every=None); a restart would call 1 + 30
    left = CHECKPOINT_RUN["n_steps"] - FAIL_AT_STEP
    assert [r["resumed_calls"] for r in ranks] == [2 + left] * WORLD
    expected = _emulated(monkeypatch, _function_sampler, **CHECKPOINT_RUN)
    _assert_identical(ranks[0]["resumed"], expected)


def test_protein_two_ranks(ranks) -> None:
    ensemble = ranks[0]["peptide"]
    assert ensemble.chi.shape[:2] == (PEPTIDE_RUN["n_steps"], PEPTIDE_CHAINS)
    assert ensemble.chi_names and ensemble.reference_pdb is not None


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PYSLICE_SLOW") != "1", reason="slow: set PYSLICE_SLOW=1")
@pytest.mark.skipif(not EXAMPLE.is_file(), reason="examples/ is not beside tests/")
def test_example_runs_under_torchrun(tmp_path) -> None:
    """The example, launched by torchrun itself (about 10 s on 2 cores: three interpreters)."""
    _need_gloo()
    out = tmp_path / "ensemble.npz"
    port = str(_free_port())
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={port}", str(EXAMPLE),
               "--chains", "4", "--steps", "4", "--warmup", "0", "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    ensemble = Ensemble.load(out)
    assert ensemble.chi.shape[:2] == (4, 4)
    assert "rank 1/2: chains 2..3 of 4, stream 1" in done.stdout


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))

"""Sample side chains on several processes (or GPUs) at once with torch.distributed.

    torchrun --nproc_per_node=2 examples/distributed_sampling.py
    torchrun --nproc_per_node=2 examples/distributed_sampling.py \
        --pdb ../shared/data/structures/bpti.pdb --chains 256 --steps 200 --out bpti.npz

Every process (rank) runs its share of the ``--chains`` chains with its own random stream (stream =
rank); ``Sampler.run`` gathers the ensemble on rank 0 and returns None on the others. Processes
talk over gloo on CPUs and NCCL on GPUs (one GPU per process: LOCAL_RANK picks it). The default
target is a small ideal peptide (no data files needed); ``--pdb`` samples a real protein.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import timedelta

import torch
import torch.distributed as dist

import pyslice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pdb", help="PDB file to sample (default: an ideal --sequence)")
    parser.add_argument("--sequence", default="GVKFG", help="peptide when no --pdb is given")
    parser.add_argument("--chains", type=int, default=16, help="chains over all ranks")
    parser.add_argument("--steps", type=int, default=50, help="recorded steps per chain")
    parser.add_argument("--warmup", type=int, default=20, help="adaptation steps per chain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even with GPUs")
    parser.add_argument("--out", help="write the ensemble (.npz) here (rank 0)")
    args = parser.parse_args()

    if "RANK" not in os.environ:
        parser.error("run me under torchrun, e.g. torchrun --nproc_per_node=2 " + __file__)
    cuda = torch.cuda.is_available() and not args.cpu
    device = None
    if cuda:  # one GPU per process; NCCL's gather_object uses the current device
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=10))
    try:
        rank = dist.get_rank()
        if args.pdb:
            protein = pyslice.Protein.from_pdb(args.pdb)
        else:
            protein = pyslice.Protein.from_sequence(args.sequence)
        sampler = pyslice.Sampler(protein, n_chains=args.chains, seed=args.seed, device=device)
        first = sampler.chain_offset
        print(
            f"rank {rank}/{sampler.world_size}: chains {first}..{first + sampler.n_chains - 1} "
            f"of {sampler.total_chains}, stream {sampler.stream}, {sampler.device}",
            flush=True,
        )
        ensemble = sampler.run(args.steps, warmup=args.warmup, progress=rank == 0)
        if rank == 0:
            assert ensemble is not None
            print(ensemble)
            summary = ensemble.summary()
            keys = ("chains", "draws", "acceptance", "rhat_max", "ess_bulk_min", "energy_mean")
            print(json.dumps({k: summary[k] for k in keys}, indent=1))
            if args.out:
                ensemble.save(args.out)
                print(f"wrote {args.out}")
        else:
            assert ensemble is None  # only rank 0 holds the gathered ensemble
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""Microsoft's process set-up names (`add_gpu_params`, `parse_gpu`) over traincore.Processes,
which documents the launchers (torchrun, torch.distributed.launch, Open MPI)."""
import argparse
import os


def add_gpu_params(parser: argparse.ArgumentParser):
    g = parser.add_argument_group("processes (the launcher sets them)")
    g.add_argument("--platform", default="local", type=str,
                        choices=["local", "k8s", "philly", "azure"],
                        help="launcher environment; all use torch.distributed "
                             "(k8s also reads OMPI_COMM_WORLD_* variables)")
    g.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int,
                        default=int(os.environ.get("LOCAL_RANK", 0)),
                        help="set by the launcher (torch.distributed.launch / torchrun)")
    g.add_argument("--rank", default=0, type=int, help="global rank (set from the environment)")
    g.add_argument("--device", default=0, help="set from the environment")
    g.add_argument("--world_size", default=0, type=int, help="set from the environment")
    g.add_argument("--random_seed", default=10, type=int, help="random seed")


def parse_gpu(args):
    """Fill args.rank / local_rank / world_size / device / distributed (and args.procs) and start
    the process group if the launcher started several processes."""
    import torch                                   # here, so that --help needs no torch

    from traincore import Processes
    torch.manual_seed(args.random_seed)
    procs = Processes(args.local_rank, mpi=args.platform == "k8s")
    args.procs = procs
    args.rank, args.local_rank, args.world_size = procs.rank, procs.local_rank, procs.world
    args.device, args.distributed = procs.device, procs.distributed
    if procs.main:
        print(f"rank {procs.rank} local_rank {procs.local_rank} world_size {procs.world} "
              f"device {procs.device} backend {procs.backend}")
    return args


def cleanup(args):
    procs = getattr(args, "procs", None)
    if procs is not None:
        procs.close()

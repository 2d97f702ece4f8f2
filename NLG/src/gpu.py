"""Process setup for one or many processes, from the launcher's environment.

Single process: `python src/gpt2_ft.py ...` (no process group).
One machine, N processes (either launcher works; both set RANK / WORLD_SIZE / LOCAL_RANK):
    torchrun --nproc_per_node=N src/gpt2_ft.py ...
    python -m torch.distributed.launch --nproc_per_node=N src/gpt2_ft.py ...   (passes --local-rank)
Several machines (plain torch.distributed; run on every node, node_rank 0..M-1):
    torchrun --nnodes=M --node_rank=$NODE_RANK --nproc_per_node=N \
             --master_addr=$HEAD_NODE_IP --master_port=29500 src/gpt2_ft.py ...
  or with a rendezvous backend: torchrun --nnodes=M --nproc_per_node=N \
             --rdzv_backend=c10d --rdzv_endpoint=$HEAD_NODE_IP:29500 --rdzv_id=$JOB_ID ...
`--platform k8s` also reads Open MPI's OMPI_COMM_WORLD_* variables (mpirun launches).
Backend: NCCL when CUDA is available, gloo on CPU.
"""
import argparse
import datetime
import os

import torch
import torch.distributed as dist


def add_gpu_params(parser: argparse.ArgumentParser):
    parser.add_argument("--platform", default="local", type=str,
                        choices=["local", "k8s", "philly", "azure"],
                        help="launcher environment; all use torch.distributed "
                             "(k8s also reads OMPI_COMM_WORLD_* variables)")
    parser.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int,
                        default=int(os.environ.get("LOCAL_RANK", 0)),
                        help="set by the launcher (torch.distributed.launch / torchrun)")
    parser.add_argument("--rank", default=0, type=int, help="global rank (set from the environment)")
    parser.add_argument("--device", default=0, help="set from the environment")
    parser.add_argument("--world_size", default=0, type=int, help="set from the environment")
    parser.add_argument("--random_seed", default=10, type=int, help="random seed")


def parse_gpu(args):
    """Fill args.rank / local_rank / world_size / device and start the process group if needed."""
    torch.manual_seed(args.random_seed)
    env = os.environ
    if args.platform == "k8s" and "OMPI_COMM_WORLD_SIZE" in env:
        env.setdefault("WORLD_SIZE", env["OMPI_COMM_WORLD_SIZE"])
        env.setdefault("RANK", env["OMPI_COMM_WORLD_RANK"])
        env.setdefault("LOCAL_RANK", env["OMPI_COMM_WORLD_LOCAL_RANK"])
    world_size = int(env.get("WORLD_SIZE", 1))
    if "LOCAL_RANK" in env:
        args.local_rank = int(env["LOCAL_RANK"])
    args.rank = int(env.get("RANK", 0))
    args.world_size = world_size
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(args.local_rank % torch.cuda.device_count())
        args.device = torch.device("cuda", torch.cuda.current_device())
    else:
        args.device = torch.device("cpu")
    args.distributed = world_size > 1
    if args.distributed and not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in env:
                raise RuntimeError(f"WORLD_SIZE={world_size} but {var} is not set: start the "
                                   f"processes with torchrun (see gpu.py)")
        dist.init_process_group(backend="nccl" if cuda else "gloo",
                                timeout=datetime.timedelta(minutes=30),
                                **({"device_id": args.device} if cuda else {}))
    if args.rank == 0:
        print(f"rank {args.rank} local_rank {args.local_rank} world_size {args.world_size} "
              f"device {args.device} backend "
              f"{dist.get_backend() if args.distributed else 'none (single process)'}")
    return args


def distributed_sync(args):
    if getattr(args, "distributed", False):
        dist.barrier()


def all_reduce_sum(tensor, args):
    """In-place sum over ranks (a no-op in a single process)."""
    if getattr(args, "distributed", False):
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj, args):
    if not getattr(args, "distributed", False):
        return [obj]
    out = [None] * args.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, args, src=0):
    if not getattr(args, "distributed", False):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def cleanup(args):
    if getattr(args, "distributed", False) and dist.is_initialized():
        dist.destroy_process_group()

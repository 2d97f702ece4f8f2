"""This process's place among the launcher's processes, and the collectives the trainers use.

Single process: `python src/gpt2_ft.py ...` (no process group).
One machine, N processes (both launchers set RANK / WORLD_SIZE / LOCAL_RANK):
    torchrun --nproc_per_node=N src/gpt2_ft.py ...
    python -m torch.distributed.launch --nproc_per_node=N src/gpt2_ft.py ...  (adds --local-rank)
Several machines: torchrun --nnodes=M --node_rank=R --master_addr=HEAD --master_port=29500 ...
Open MPI (`mpirun`, `--platform k8s`): OMPI_COMM_WORLD_* stand in for the torch variables.
Backend: NCCL when CUDA is available, gloo on CPU. The collectives below are no-ops without a
process group, so the same code runs in one process.
"""
import datetime
import os
from typing import Any, List, Optional

import torch
import torch.distributed as dist


class Processes:
    def __init__(self, local_rank: Optional[int] = None, mpi: bool = False):
        env = os.environ
        if mpi and "OMPI_COMM_WORLD_SIZE" in env:
            env.setdefault("WORLD_SIZE", env["OMPI_COMM_WORLD_SIZE"])
            env.setdefault("RANK", env["OMPI_COMM_WORLD_RANK"])
            env.setdefault("LOCAL_RANK", env["OMPI_COMM_WORLD_LOCAL_RANK"])
        self.world = int(env.get("WORLD_SIZE", 1))
        self.rank = int(env.get("RANK", 0))
        # the environment wins over --local_rank (torchrun sets only the environment)
        self.local_rank = int(env.get("LOCAL_RANK", local_rank or 0))
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank % torch.cuda.device_count())
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")
        self.distributed = self.world > 1
        if self.distributed and not dist.is_initialized():
            for var in ("MASTER_ADDR", "MASTER_PORT"):
                if var not in env:
                    raise RuntimeError(f"WORLD_SIZE={self.world} but {var} is not set: start the "
                                       f"processes with torchrun")
            cuda = self.device.type == "cuda"
            dist.init_process_group(backend="nccl" if cuda else "gloo",
                                    timeout=datetime.timedelta(minutes=30),
                                    **({"device_id": self.device} if cuda else {}))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        return dist.get_backend() if self.distributed else "none (single process)"

    def wrap(self, model: torch.nn.Module, **ddp_kwargs) -> torch.nn.Module:
        """DistributedDataParallel over the processes (the model itself in one process)."""
        if not self.distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, **ddp_kwargs)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _on() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over the processes."""
    if _on():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any) -> List[Any]:
    """Every process's `obj`, in rank order."""
    if not _on():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not _on():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if _on():
        dist.barrier()

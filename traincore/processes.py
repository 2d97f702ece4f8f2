"""This process's place among the launcher's processes, and the collectives the trainers use.

Single process: `python src/gpt2_ft.py ...` (no process group).
One machine, N processes (both launchers set RANK / WORLD_SIZE / LOCAL_RANK):
    torchrun --nproc_per_node=N src/gpt2_ft.py ...
    python -m torch.distributed.launch --nproc_per_node=N src/gpt2_ft.py ...  (adds --local-rank)
Several machines: torchrun --nnodes=M --node_rank=R --master_addr=HEAD --master_port=29500 ...
Open MPI (`mpirun`, `--platform k8s`): OMPI_COMM_WORLD_* stand in for the torch variables.
Backend: NCCL when CUDA is available, gloo on CPU. One process per GPU: LOCAL_RANK picks it, and
more processes on a machine than GPUs it shows them is an error (gpu_of). The collectives below
are no-ops without a process group, so the same code runs in one process.
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
            local_world = env.get("LOCAL_WORLD_SIZE", env.get("OMPI_COMM_WORLD_LOCAL_SIZE"))
            torch.cuda.set_device(gpu_of(self.local_rank, torch.cuda.device_count(),
                                         int(local_world) if local_world else None))
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


def gpu_of(local_rank: int, device_count: int, local_world: Optional[int] = None) -> int:
    """The GPU index of the process with this LOCAL_RANK, one process per visible GPU.

    Two processes on one GPU would run, each at half speed and twice the memory, so more
    processes on a machine than GPUs it shows them is an error (ValueError), raised on every
    process when the launcher says how many it started on this machine (LOCAL_WORLD_SIZE:
    torchrun, torch.distributed.launch; Open MPI's local size), else on those past the count."""
    fix = (f"start at most {device_count} process(es) per machine (torchrun --nproc_per_node "
           f"{device_count}), or show each process more GPUs (CUDA_VISIBLE_DEVICES); a launcher "
           f"that gives each process a GPU of its own through CUDA_VISIBLE_DEVICES should set "
           f"LOCAL_RANK=0 and LOCAL_WORLD_SIZE=1 for it")
    if device_count < 1:
        raise ValueError("no GPU visible to this process (CUDA_VISIBLE_DEVICES?)")
    if local_world is not None and local_world > device_count:
        raise ValueError(f"{local_world} processes on this machine but {device_count} visible "
                         f"GPU(s): two processes would share a GPU; {fix}")
    if not 0 <= local_rank < device_count:
        raise ValueError(f"LOCAL_RANK {local_rank} but {device_count} visible GPU(s) (GPU "
                         f"0..{device_count - 1}): two processes would share a GPU; {fix}")
    return local_rank


def _on() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """Rank 0 of the process group, or the only process."""
    return not _on() or dist.get_rank() == 0


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


class _Slot:
    """Where a tensor sat in a broadcast state: its place in the byte buffer, dtype, shape."""

    def __init__(self, start: int, nbytes: int, dtype: torch.dtype, shape):
        self.start, self.nbytes, self.dtype, self.shape = start, nbytes, dtype, tuple(shape)


def broadcast_state(obj: Any, src: int = 0) -> Any:
    """`obj` (nested dicts / lists / tuples of tensors and picklable values, e.g. a resumable
    state) as process `src` holds it, on every process, with its tensors on the CPU. The
    structure travels pickled (small); the tensors as one byte buffer in one broadcast, whatever
    their dtypes (what gloo and NCCL support alike). Other processes pass any value for obj."""
    if not _on():
        return obj
    tensors, size = [], [0]

    def strip(x):                       # the structure, each tensor replaced by its slot
        if torch.is_tensor(x):
            t = x.detach().cpu().contiguous()
            slot = _Slot(size[0], t.numel() * t.element_size(), t.dtype, t.shape)
            size[0] += slot.nbytes
            tensors.append(t)
            return slot
        if isinstance(x, dict):
            return type(x)((k, strip(v)) for k, v in x.items())
        if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
            return type(x)(strip(v) for v in x)
        return x

    src_side = dist.get_rank() == src
    head = broadcast_object((strip(obj), size[0]) if src_side else None, src=src)
    skeleton, total = head
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
        else torch.device("cpu")
    if src_side:
        buf = torch.cat([t.reshape(-1).view(torch.uint8) for t in tensors]) if tensors else \
            torch.empty(0, dtype=torch.uint8)
        buf = buf.to(device)
    else:
        buf = torch.empty(total, dtype=torch.uint8, device=device)
    if total:
        dist.broadcast(buf, src=src)
    buf = buf.cpu()

    def fill(x):
        if isinstance(x, _Slot):
            return buf[x.start:x.start + x.nbytes].clone().view(x.dtype).reshape(x.shape)
        if isinstance(x, dict):
            return type(x)((k, fill(v)) for k, v in x.items())
        if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
            return type(x)(fill(v) for v in x)
        return x
    return fill(skeleton)


def barrier() -> None:
    if _on():
        dist.barrier()

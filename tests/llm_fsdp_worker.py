"""One rank of tests/test_llm_fsdp.py: a small MLP with adapters on its nn.Linear layers,
sharded by FSDP2 or FSDP1 over gloo, trained a few steps on half of the global batch, then the
adapter gathered, saved by rank 0 and merged on an unsharded copy.

    python -m torch.distributed.run --nproc_per_node=2 llm_fsdp_worker.py MODE METHOD OUT

MODE: fsdp2 | fsdp1 | fsdp1-flat (FSDP1, use_orig_params=False), or `none` to run as one
process on the whole batch (the reference). Writes OUT/losses.json, OUT/adapter/ (rank 0),
OUT/state_rank<r>.pt (the adapter as each rank gathered it), OUT/merged_out.pt, OUT/errors.json.
"""
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import loralib as lora  # noqa: E402

CONFIGS = {
    "lorma": lora.MethodConfig(method="lorma", r=2, alpha=4.0, options={"kind": "rri"}),
    "nola": lora.MethodConfig(method="nola", r=2, alpha=4.0,
                              options={"num_basis_A": 6, "num_basis_B": 6, "qbits": 4}),
    "lora": lora.MethodConfig(method="lora", r=2, alpha=4.0),
}
STEPS, BATCH = 3, 8


def build(method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 4))
    lora.inject(model, CONFIGS[method], ["0", "2", "4"])
    with torch.no_grad():     # an adapter away from identity, so every factor gets a gradient
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(7)) * 0.1)
    return model


def data():
    g = torch.Generator().manual_seed(3)
    return torch.randn(BATCH, 8, generator=g), torch.randn(BATCH, 4, generator=g)


def shard(model, mode):
    if mode == "fsdp2":
        from torch.distributed.fsdp import fully_shard
        for m in model:
            if isinstance(m, lora.AdaptedLinear):
                fully_shard(m)
        return fully_shard(model)
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    return FSDP(model, use_orig_params=mode == "fsdp1",
                auto_wrap_policy=ModuleWrapPolicy({type(model[0])}),
                device_id=torch.device("cpu"))


def main(mode, method, out):
    out = Path(out)
    distributed = mode != "none"
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    errors = {}
    model = build(method)
    if mode == "fsdp1-flat":    # uniform requires_grad, so that FSDP1 can flatten it at all
        model.requires_grad_(True)
    if distributed:
        model = shard(model, mode)
    x, y = data()
    per = BATCH // world
    x, y = x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    losses = []
    for _ in range(STEPS):
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        total = loss.detach().clone()
        if distributed:
            dist.all_reduce(total)
        losses.append(total.item() / world)
    try:
        state = lora.lora_state_dict(model)       # every rank
        torch.save(state, out / f"state_rank{rank}.pt")
        lora.save_adapter(model, str(out / "adapter"))     # every rank; rank 0 writes
    except ValueError as e:
        errors["save"] = str(e)
    try:
        lora.merge_and_unload(model)
    except ValueError as e:
        errors["merge"] = str(e)
    if rank == 0:
        (out / "losses.json").write_text(json.dumps(losses))
        (out / "errors.json").write_text(json.dumps(errors))
        if "save" not in errors:    # merge on an unsharded copy, as the error says
            fresh = build(method)
            lora.load_adapter(fresh, str(out / "adapter"))
            lora.merge_and_unload(fresh)
            with torch.no_grad():
                torch.save(fresh(data()[0]), out / "merged_out.pt")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


def spawned(rank, world, port, mode, method, out):
    """A rank started by torch.multiprocessing (the test forks its own process: no torch
    import per rank)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    main(mode, method, out)


if __name__ == "__main__":
    os.makedirs(sys.argv[3], exist_ok=True)
    main(*sys.argv[1:4])

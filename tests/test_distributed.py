"""Two gloo processes on CPU train exactly like one process with the same global batch."""
import os
import subprocess
import sys

import pytest
import torch

from launch_helpers import free_port, launch_ranks
from test_train_helpers import (SRC, base_args, read_log, write_backbone, write_card,
                                write_random_data)


def _launch(launcher, nproc, argv, cwd):
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    port = str(free_port())
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               "--master_addr=127.0.0.1", f"--master_port={port}"]
    else:  # the deprecated launcher of the seed commands: passes --local-rank=N
        cmd = [sys.executable, "-m", "torch.distributed.launch", f"--nproc_per_node={nproc}",
               "--master_addr=127.0.0.1", f"--master_port={port}"]
    r = subprocess.run(cmd + [str(SRC / "gpt2_ft.py")] + argv, cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    card = write_card(tmp_path)
    # 22 examples: the last global batch of the epoch wraps around (padding like DistributedSampler)
    data = write_random_data(tmp_path / "train.jsonl", 22, seed=3)
    backbone = write_backbone(tmp_path / "backbone.bin", card)
    common = {"--lora_dim": 4, "--lora_alpha": 16, "--max_step": 7, "--lr": 0.02,
              "--eval_interval": 7, "--clip": 1.0, "--label_smooth": 0.1}
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = _launch("launch", 1, base_args(tmp_path, data, card, backbone, one,
                                        **common, **{"--train_batch_size": 4}), tmp_path)
    assert "world_size 1" in r1.stdout
    r2 = _launch("torchrun", 2, base_args(tmp_path, data, card, backbone, two,
                                          **common, **{"--train_batch_size": 2}), tmp_path)
    assert "world_size 2" in r2.stdout and "backend gloo" in r2.stdout
    l1, l2 = read_log(one), read_log(two)
    assert [r["step"] for r in l1] == [r["step"] for r in l2] == list(range(1, 8))
    assert l1[-1]["epoch"] == 2  # 22 examples / 4 per step: the run crosses an epoch
    for a, b in zip(l1, l2):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), (a, b)
    v1, v2 = read_log(one, "valid_log.jsonl"), read_log(two, "valid_log.jsonl")
    assert v1[0]["valid_loss"] == pytest.approx(v2[0]["valid_loss"], rel=1e-5)
    f1 = torch.load(one / "model.7.pt", weights_only=True)["model_state_dict"]
    f2 = torch.load(two / "model.7.pt", weights_only=True)["model_state_dict"]
    assert f1.keys() == f2.keys()
    assert max((f1[k] - f2[k]).abs().max().item() for k in f1) < 1e-5


@pytest.mark.slow
def test_resume_on_machines_without_a_shared_work_dir(tmp_path):
    """Rank 1 runs on a machine whose --work_dir is empty (no resume.pt): it continues from rank
    0's state, and the stopped-and-resumed run ends bit-identical to an uninterrupted one."""
    card = write_card(tmp_path)
    data = write_random_data(tmp_path / "train.jsonl", 20, seed=4)
    backbone = write_backbone(tmp_path / "backbone.bin", card)
    common = {"--lora_dim": 4, "--lora_alpha": 16, "--lora_dropout": 0.3, "--max_step": 4,
              "--train_batch_size": 2, "--save_interval": 1000}

    def argv(work, **over):
        return base_args(tmp_path, data, card, backbone, work, **common, **over)

    whole = tmp_path / "whole"
    launch_ranks(SRC / "gpt2_ft.py", [argv(whole), argv(tmp_path / "whole_rank1")], tmp_path)
    cut = tmp_path / "cut"
    launch_ranks(SRC / "gpt2_ft.py", [argv(cut, **{"--stop_after_steps": 2}),
                   argv(tmp_path / "cut_rank1", **{"--stop_after_steps": 2})], tmp_path)
    assert (cut / "resume.pt").exists() and not (tmp_path / "cut_rank1" / "resume.pt").exists()
    empty = tmp_path / "machine2"          # rank 1's machine: nothing of the first invocation
    out = launch_ranks(SRC / "gpt2_ft.py", [argv(cut, **{"--resume": None}), argv(empty, **{"--resume": None})],
                        tmp_path)
    assert "resumed from" in out and "at step 2" in out
    assert not (empty / "resume.pt").exists()
    la, lb = read_log(whole), read_log(cut)
    assert [r["step"] for r in lb] == [1, 2, 3, 4]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    fa = torch.load(whole / "model.4.pt", weights_only=True)["model_state_dict"]
    fb = torch.load(cut / "model.4.pt", weights_only=True)["model_state_dict"]
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)


def _read_resume_worker(rank, world, port, paths, out):
    import torch.distributed as dist
    from traincore import read_resume
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        results = []
        for path, missing_ok in paths[rank]:
            try:
                results.append(("state", read_resume(path, missing_ok)))
            except SystemExit as e:
                results.append(("exit", str(e)))
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_read_resume_gives_every_process_rank_0s_file(tmp_path):
    """Rank 0 reads; rank 1 (which sees another file, or none) gets rank 0's state tensor for
    tensor, whatever the dtypes, or rank 0's verdict: None when missing, else its error."""
    import random
    import torch.multiprocessing as mp
    state = {"step": 7, "optimizer": {"state": {0: {"step": torch.tensor(7.0),
                                                    "exp_avg": torch.randn(3, 4)}},
                                      "param_groups": [{"lr": 0.1, "params": [0]}]},
             "model_state_dict": {"a": torch.randn(2, 3).to(torch.bfloat16),
                                  "mask": torch.tensor([True, False, True]),
                                  "idx": torch.arange(5), "empty": torch.zeros(0, 3)},
             "rng": [{"torch": torch.get_rng_state(), "python": random.getstate()}] * 2,
             "settings": {"lr": 0.1}, "tracking": "{}"}
    torch.save(state, tmp_path / "resume.pt")
    other = dict(state, step=3)
    torch.save(other, tmp_path / "other.pt")
    mine, absent = str(tmp_path / "resume.pt"), str(tmp_path / "absent.pt")
    paths = [[(mine, False), (absent, True), (absent, False)],          # rank 0
             [(absent, False), (mine, True), (str(tmp_path / "other.pt"), False)]]  # rank 1
    out = str(tmp_path / "got")
    mp.spawn(_read_resume_worker, args=(2, free_port(), paths, out), nprocs=2, join=True)
    r0, r1 = torch.load(out + ".0", weights_only=False), torch.load(out + ".1", weights_only=False)
    for got in (r0, r1):
        kind, s = got[0]
        assert kind == "state" and s["step"] == 7 and s["rng"][1]["python"] == state["rng"][0]["python"]
        for k, v in state["model_state_dict"].items():
            assert s["model_state_dict"][k].dtype == v.dtype and torch.equal(s["model_state_dict"][k], v)
        assert torch.equal(s["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
        assert torch.equal(s["rng"][0]["torch"], state["rng"][0]["torch"])
        assert got[1] == ("state", None)                  # rank 0 has no file: nobody resumes
        assert got[2][0] == "exit" and "absent.pt not found" in got[2][1]

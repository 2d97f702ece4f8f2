"""Two gloo processes on CPU train exactly like one process with the same global batch."""
import os
import socket
import subprocess
import sys

import pytest
import torch

from test_train_helpers import (SRC, base_args, read_log, write_backbone, write_card,
                                write_random_data)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(launcher, nproc, argv, cwd):
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    port = str(_free_port())
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

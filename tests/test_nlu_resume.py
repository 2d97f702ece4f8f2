"""run_glue.py gains what gpt2_ft.py has: --resume continues a killed run bit for bit (also
after kill -9), gradient accumulation gives the big batch's update, TensorBoard scalars."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def args(shared_data, out, *extra):
    # dropout on (RoBERTa's 0.1 and the adapter's) so the restored RNG matters
    return ["--task_name", "rte", "--data_dir", str(shared_data / "glue"), "--tokenizer_dir",
            str(shared_data / "vocab"), "--model_card", "roberta-tiny", "--random_init",
            "--max_seq_length", "32", "--max_train_samples", "24", "--max_eval_samples", "8",
            "--per_device_train_batch_size", "4", "--lora_dim", "2", "--lora_dropout", "0.2",
            "--learning_rate", "1e-2", "--seed", "5", "--output_dir", str(out), *extra]


def adapter(out):
    return torch.load(out / "pytorch_model.bin", weights_only=True)


def same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_a_stop_equals_the_whole_run(shared_data, tmp_path):
    from nlu import run_glue
    run_glue.main(args(shared_data, tmp_path / "whole", "--num_train_epochs", "2",
                       "--evaluation_strategy", "epoch"))
    cut = tmp_path / "cut"
    run_glue.main(args(shared_data, cut, "--num_train_epochs", "2", "--evaluation_strategy",
                       "epoch", "--stop_after_steps", "8", "--save_steps", "3"))
    assert (cut / "resume.pt").exists() and not (cut / "pytorch_model.bin").exists()
    with pytest.raises(SystemExit, match="holds an earlier run.*--resume"):
        run_glue.main(args(shared_data, cut, "--num_train_epochs", "2"))
    with pytest.raises(SystemExit, match=r"learning_rate: 0\.01 -> 0\.02"):
        run_glue.main(args(shared_data, cut, "--num_train_epochs", "2", "--evaluation_strategy",
                           "epoch", "--resume", "--learning_rate", "2e-2"))
    run_glue.main(args(shared_data, cut, "--num_train_epochs", "2", "--evaluation_strategy",
                       "epoch", "--resume"))
    assert same(adapter(tmp_path / "whole"), adapter(cut))
    a = json.loads((tmp_path / "whole" / "eval_results.json").read_text())
    b = json.loads((cut / "eval_results.json").read_text())
    assert a["per_epoch"] == b["per_epoch"]           # the epoch before the stop is kept
    steps = [json.loads(x)["step"] for x in (cut / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 12
    assert not (cut / "resume.pt").exists()
    assert list((cut / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_resume_after_kill_9_equals_the_whole_run(shared_data, tmp_path):
    from nlu import run_glue
    run_glue.main(args(shared_data, tmp_path / "whole", "--max_steps", "40",
                       "--evaluation_strategy", "no"))
    killed = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "NLU" / "src" / "run_glue.py"),
           *args(shared_data, killed, "--max_steps", "40", "--evaluation_strategy", "no",
                 "--save_steps", "2", "--logging_steps", "1")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    for line in p.stdout:          # kill it mid-run, once a resumable state exists
        if line.startswith("step 11/") or time.time() > deadline:
            break
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (killed / "resume.pt").exists() and not (killed / "pytorch_model.bin").exists()
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "resumed from" in r.stdout
    assert same(adapter(tmp_path / "whole"), adapter(killed))


def test_gradient_accumulation_equals_the_big_batch(shared_data, tmp_path):
    from nlu import run_glue
    card = tmp_path / "config.json"      # roberta-tiny without dropout: the batches must agree
    card.write_text(json.dumps({"vocab_size": 50265, "hidden_size": 32, "num_hidden_layers": 2,
                                "num_attention_heads": 4, "intermediate_size": 64,
                                "max_position_embeddings": 130, "hidden_dropout_prob": 0.0,
                                "attention_probs_dropout_prob": 0.0}))
    common = ["--max_steps", "3", "--evaluation_strategy", "no", "--lora_dropout", "0",
              "--model_card", str(card)]
    run_glue.main(args(shared_data, tmp_path / "big", *common,
                       "--per_device_train_batch_size", "8"))
    run_glue.main(args(shared_data, tmp_path / "acc", *common,
                       "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2"))
    a, b = adapter(tmp_path / "big"), adapter(tmp_path / "acc")
    assert set(a) == set(b)
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) for k in a)


@pytest.mark.slow
def test_resume_on_machines_without_a_shared_output_dir(shared_data, tmp_path):
    """Two processes as on two machines: rank 1's --output_dir never holds resume.pt, yet it
    continues from rank 0's state; the result equals the uninterrupted two-process run."""
    from launch_helpers import launch_ranks
    script = ROOT / "NLU" / "src" / "run_glue.py"
    common = ("--max_steps", "5", "--evaluation_strategy", "no", "--logging_steps", "1")

    def ranks(name, *extra):
        return [args(shared_data, tmp_path / name, *common, *extra),
                args(shared_data, tmp_path / (name + "_rank1"), *common, *extra)]
    launch_ranks(script, ranks("whole"), tmp_path)
    launch_ranks(script, ranks("cut", "--stop_after_steps", "2"), tmp_path)
    assert (tmp_path / "cut" / "resume.pt").exists()
    assert not (tmp_path / "cut_rank1" / "resume.pt").exists()
    out = launch_ranks(script, [args(shared_data, tmp_path / "cut", *common, "--resume"),
                                args(shared_data, tmp_path / "machine2", *common, "--resume")],
                       tmp_path)
    assert "resumed from" in out and "at step 2" in out
    assert same(adapter(tmp_path / "whole"), adapter(tmp_path / "cut"))
    losses = [[json.loads(x)["loss"] for x in (tmp_path / n / "train_log.jsonl").read_text().splitlines()]
              for n in ("whole", "cut")]
    assert losses[0] == losses[1] and len(losses[0]) == 5

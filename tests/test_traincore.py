"""traincore: what both trainers share, checked on its own (the trainers' tests check it in use)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from traincore import (Precision, RunLog, TrainLoop, read_checkpoint, remove_stale_temporaries,
                       save_atomic, unwrap_state_dict, write_json_atomic)
from traincore.resume import allowed_changes


def test_precision_is_the_same_policy_on_every_device():
    with pytest.raises(ValueError, match="exclusive"):
        Precision.from_flags(True, True, "cpu")
    fp32 = Precision.from_flags(False, False, "cpu")
    assert fp32.name == "fp32" and fp32.grad_scaler() is None
    x, w = torch.randn(4, 8), torch.randn(8, 8)
    with fp32.autocast():
        assert (x @ w).dtype == torch.float32
    for fp16, bf16, dtype in ((True, False, torch.float16), (False, True, torch.bfloat16)):
        p = Precision.from_flags(fp16, bf16, torch.device("cpu"))
        with p.autocast():
            assert (x @ w).dtype == dtype        # CPU autocast really runs, nothing is ignored
        assert (p.grad_scaler() is not None) == fp16


def test_atomic_files_follow_the_umask_and_leave_no_temporaries(tmp_path):
    old = os.umask(0o027)
    try:
        save_atomic({"a": torch.ones(2)}, tmp_path / "m.pt")
        write_json_atomic({"k": 1}, tmp_path / "r.json")
    finally:
        os.umask(old)
    for name in ("m.pt", "r.json"):
        assert (os.stat(tmp_path / name).st_mode & 0o777) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "r.json"]
    assert json.loads((tmp_path / "r.json").read_text()) == {"k": 1}
    (tmp_path / ".m.pt.x1.tmp").write_bytes(b"partial")
    (tmp_path / ".other.x2.tmp").write_bytes(b"not ours")
    assert remove_stale_temporaries(tmp_path, ("m.pt",)) == 1
    assert (tmp_path / ".other.x2.tmp").exists()


def test_checkpoint_reading_every_layout(tmp_path):
    sd = {"w": torch.arange(6.0).view(2, 3)}
    torch.save({"model_state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "z.pt")
    torch.save(sd, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    for f in ("z.pt", "old.pt"):
        got = unwrap_state_dict(read_checkpoint(tmp_path / f), f)
        assert got.keys() == sd.keys() and torch.equal(got["w"], sd["w"])
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes.txt: not a PyTorch checkpoint"):
        read_checkpoint(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="missing.pt: no such file"):
        read_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="x.pt: key 'a' holds a int, not a tensor"):
        unwrap_state_dict({"a": 1}, "x.pt", tensors_only=True)
    with pytest.raises(ValueError, match="both map to 'w'"):
        unwrap_state_dict({"w": sd["w"], "module.w": sd["w"]}, "x.pt")


def _train(groups, lr=0.1):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    loop = TrainLoop(model, opt, sched, Precision.from_flags(False, False, "cpu"), clip=0.0)
    seen = []
    loop.run(groups, lambda net, b: net(b[0]).sub(b[1]).pow(2).sum() / b[2],
             lambda step, lr, pos: seen.append((step, lr, pos)))
    return model, seen


def test_train_loop_accumulation_equals_the_big_batch():
    torch.manual_seed(1)
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    big, _ = _train([(0, [(x, y, 8)])])
    acc, seen = _train([(0, [(x[:3], y[:3], 8), (x[3:], y[3:], 8)])])
    for a, b in zip(big.parameters(), acc.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert seen == [(1, 0.1, 0)]


def test_train_loop_stops_when_asked_and_counts_steps():
    torch.manual_seed(1)
    x, y = torch.randn(4, 3), torch.randn(4, 2)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loop = TrainLoop(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s),
                     Precision.from_flags(False, False, "cpu"), step=5)
    lrs = []
    stopped = loop.run(((i, [(x, y)]) for i in range(10)),
                       lambda net, b: net(b[0]).sub(b[1]).pow(2).mean(),
                       lambda step, lr, pos: lrs.append(lr) or step == 7)
    assert stopped and loop.step == 7 and lrs == [0.1, 0.05]   # steps 6 and 7


def test_run_log_resumes_at_its_step_and_writes_tensorboard(tmp_path, capsys):
    log = RunLog(str(tmp_path), ("train", "valid"), 0, 10, tensorboard=True)
    for s in (1, 2, 3):
        log.write("train", {"step": s, "loss": 1.0 / s})
    log.write("valid", {"step": 2, "valid_loss": 0.7})
    log.close()
    out = capsys.readouterr().out           # off a terminal: the step of the total, an ETA
    assert "| train | step 3/10 (30%) | loss 0.3333 | " in out and ", ETA " in out
    with open(tmp_path / "train_log.jsonl", "a") as f:
        f.write('{"step": 4, "lo')                    # a kill mid-write
    log = RunLog(str(tmp_path), ("train", "valid"), 2, 10, tensorboard=False)
    log.write("train", {"step": 3, "loss": 9.0})
    log.close()
    rows = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 0.5), (3, 9.0)]
    assert any(p.name.startswith("events.") for p in (tmp_path / "tensorboard").iterdir())


def test_resume_allow_changes_names_unknown_settings():
    assert allowed_changes(" lr, clip ", ("lr", "clip", "seed")) == ["lr", "clip"]
    with pytest.raises(SystemExit, match=r"unknown setting\(s\) \['lrr'\].*lr, clip"):
        allowed_changes("lrr", ("lr", "clip"))


def test_processes_without_a_launcher_are_one_process(monkeypatch):
    from traincore import Processes, all_reduce_sum, broadcast_object, gather_objects
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    p = Processes(local_rank=3)
    assert (p.world, p.rank, p.local_rank, p.distributed, p.main) == (1, 0, 3, False, True)
    t = torch.ones(2)
    assert all_reduce_sum(t) is t and gather_objects(5) == [5] and broadcast_object("x") == "x"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR is not set"):
        Processes()


def test_nlg_task_table_drives_the_shell_scripts():
    from nlg.tasks import TASKS
    r = subprocess.run([sys.executable, "-m", "nlg.tasks", "shell", "webnlg"], capture_output=True,
                       text=True, check=True)
    env = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert env["TASK_SCORE_SPLITS"] == "'all seen unseen'" and env["TASK_REFERENCES"] == "multi"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name, task in TASKS.items():
        assert os.path.isfile(os.path.join(root, "NLG", task.converter))
        r = subprocess.run([sys.executable, "-m", "nlg.tasks", "raw", name], capture_output=True,
                           text=True, check=True)
        assert [tuple(line.split()) for line in r.stdout.splitlines()] == list(task.raw)
    r = subprocess.run([sys.executable, "-m", "nlg.tasks", "shell", "e3e"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "unknown NLG task 'e3e'" in r.stderr


def test_glue_table_names_each_task_s_scores_and_reported_metric():
    import numpy as np
    from nlu.glue_data import TASKS
    from nlu.glue_metrics import glue_metrics
    pred = label = np.array([0, 1, 1, 0])
    for name, spec in TASKS.items():
        scores = glue_metrics(name, pred.astype(float) if spec.labels is None else pred, label)
        assert list(scores) == list(spec.scores) and spec.metric in scores
    # the LoRA paper's numbers: accuracy for MRPC and QQP, MCC for CoLA, Pearson for STS-B
    assert {n: s.reported for n, s in TASKS.items()} == {
        "cola": "mcc", "sst2": "accuracy", "mrpc": "accuracy", "stsb": "pearson",
        "rte": "accuracy", "qnli": "accuracy", "qqp": "accuracy", "mnli": "dev_matched_accuracy"}


def test_backbone_checks_are_strict_and_name_the_file():
    from traincore import check_backbone
    want = {"a": torch.Size([2]), "b": torch.Size([3])}
    with pytest.raises(KeyError) as e:
        check_backbone(want, {"a": torch.zeros(2), "zz": torch.zeros(1)}, "f.bin")
    assert isinstance(e.value, ValueError) and str(e.value).startswith("checkpoint f.bin: 1 tensor")
    with pytest.raises(ValueError, match=r"f.bin: a has shape \(3,\), the model expects \(2,\)"):
        check_backbone(want, {"a": torch.zeros(3)}, "f.bin")
    with pytest.raises(ValueError, match=r"missing 1 of 2 backbone tensor\(s\) the model needs \(b\)\. Give it"):
        check_backbone(want, {"a": torch.zeros(2)}, "f.bin", hint=" Give it.")
    assert check_backbone(want, {"a": torch.zeros(2)}, "f.bin", random_init=True) == ["b"]


def test_progress_off_a_terminal_prints_periodic_lines_with_an_eta():
    import io
    from traincore.progress import Progress
    out = io.StringIO()                         # not a terminal: no bar, lines instead
    with Progress(4, "beam", "contexts", every_s=0.0, stream=out) as p:
        for _ in range(4):
            p.update()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("beam: 1/4 contexts (25%), ") and ", ETA " in lines[0]
    assert len(lines) == 4 and lines[-1].startswith("beam: 4/4 contexts (100%)")
    assert "ETA" not in lines[-1]
    quiet = io.StringIO()
    with Progress(4, "x", enabled=False, stream=quiet) as p:
        p.update(4)
    assert quiet.getvalue() == ""


def test_no_init_skips_initialisation_and_restores_it():
    from traincore.noinit import no_init
    real = torch.nn.init.normal_
    t = torch.zeros(3)
    with no_init():
        assert torch.nn.init.normal_(t, 0.0, 1.0) is t and torch.equal(t, torch.zeros(3))
        lin = torch.nn.Linear(4, 4)          # built: the right shapes, no init spent
        assert lin.weight.shape == (4, 4)
    assert torch.nn.init.normal_ is real
    torch.nn.init.normal_(t)
    assert not torch.equal(t, torch.zeros(3))


def test_more_processes_than_gpus_is_an_error_on_every_process():
    """One process per GPU: LOCAL_RANK picks it; a machine running more processes than it shows
    GPUs is refused (naming the counts and the fix), not two processes silently on one GPU."""
    from traincore import gpu_of
    assert [gpu_of(r, 4, 4) for r in range(4)] == [0, 1, 2, 3]
    assert gpu_of(1, 8, 2) == 1 and gpu_of(0, 1) == 0
    for rank in (0, 1):          # torchrun says 2 processes: both stop, rank 0 too
        with pytest.raises(ValueError, match=r"2 processes on this machine but 1 visible GPU.*"
                                             r"--nproc_per_node 1"):
            gpu_of(rank, 1, 2)
    with pytest.raises(ValueError, match=r"LOCAL_RANK 2 but 2 visible GPU\(s\)"):
        gpu_of(2, 2)             # a launcher that does not say how many it started
    with pytest.raises(ValueError, match="no GPU visible"):
        gpu_of(0, 0)


def test_tf32_is_a_setting_of_its_own():
    """--tf32: TF32 matmuls for float32 tensors (torch's "high" precision); fp32 sets full float32
    explicitly; tf32 goes with bf16 autocast, which it covers the float32 products of."""
    before = torch.get_float32_matmul_precision()
    try:
        p = Precision.from_flags(False, False, "cpu", tf32=True)
        assert p.name == "tf32" and p.autocast().__class__.__name__ == "nullcontext"
        p.apply()
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cuda.matmul.allow_tf32
        Precision.from_flags(False, False, "cpu").apply()
        assert torch.get_float32_matmul_precision() == "highest"
        assert not torch.backends.cuda.matmul.allow_tf32
        assert Precision.from_flags(False, True, "cpu", tf32=True).name == "bf16+tf32"
    finally:
        torch.set_float32_matmul_precision(before)

"""Nothing lost, nothing silently wrong: divergence stops a run, one run per work dir (a killed
run leaves no stuck lock), resume only with the same settings, over-long examples reported,
partial log lines tolerated, empty E2E references refused."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from test_train_helpers import (ROOT, SRC, base_args, run_script, write_backbone, write_card,
                                write_random_data)

import traincore


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("safety")
    card = write_card(d)
    return {"dir": d, "card": card, "data": write_random_data(d / "train.jsonl", 16),
            "backbone": write_backbone(d / "backbone.bin", card)}


def ft(tiny, work, **over):
    run_script("gpt2_ft.py", base_args(tiny["dir"], tiny["data"], tiny["card"], tiny["backbone"],
                                       work, **{"--lora_dim": 2, "--lora_alpha": 4, **over}))


def test_divergence_stops_the_run_and_saves_nothing_non_finite(tiny, tmp_path):
    work = tmp_path / "w"
    with pytest.raises(SystemExit, match=r"(not finite .* from step|diverged by step) \d+"):
        ft(tiny, work, **{"--lr": 1e6, "--max_step": 8, "--save_interval": 1,
                          "--log_interval": 4})
    for path in work.glob("*.pt"):
        sd = torch.load(path, weights_only=True)["model_state_dict"]
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point()), path
    assert not (work / "run_info.json").exists()


def test_checkpoints_with_non_finite_tensors_are_refused():
    with pytest.raises(traincore.NonFiniteError, match="x.pt: not written.*a.lora_A"):
        traincore.check_finite_state({"a.lora_A": torch.tensor([1.0, float("nan")])}, "x.pt")


def test_a_busy_work_dir_is_refused_at_once_naming_the_other_run(tiny, tmp_path):
    work = tmp_path / "busy"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, traincore; "
         "traincore.claim_work_dir(sys.argv[1]); print('held', flush=True); time.sleep(60)",
         str(work)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.time()
        with pytest.raises(SystemExit, match=f"in use by another run \\(pid {holder.pid}"):
            ft(tiny, work, **{"--max_step": 2})
        assert time.time() - t0 < 10
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    ft(tiny, work, **{"--max_step": 2})      # the killed holder left no stuck lock
    assert (work / "run_info.json").exists()


def test_a_finished_work_dir_is_refused_unless_overwritten(tiny, tmp_path):
    work = tmp_path / "done"
    ft(tiny, work, **{"--max_step": 4, "--save_interval": 2})
    assert (work / "model.2.pt").exists()
    with pytest.raises(SystemExit, match="holds an earlier run.*--overwrite"):
        ft(tiny, work, **{"--max_step": 3})
    ft(tiny, work, **{"--max_step": 3, "--overwrite": None})
    assert not (work / "model.2.pt").exists() and (work / "model.3.pt").exists()
    log = [json.loads(x) for x in (work / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]          # one run's records only


def test_resume_refuses_changed_settings_and_tolerates_a_partial_log_line(tiny, tmp_path, capsys):
    work = tmp_path / "r"
    ft(tiny, work, **{"--max_step": 6, "--stop_after_steps": 3, "--save_interval": 3})
    with pytest.raises(SystemExit, match=r"other settings.*lr: 0\.01 -> 0\.02"):
        ft(tiny, work, **{"--max_step": 6, "--resume": None, "--lr": 0.02})
    with (work / "train_log.jsonl").open("a") as f:
        f.write('{"step": 4, "loss": 1.2')          # a kill mid-write
    ft(tiny, work, **{"--max_step": 6, "--resume": None, "--log_interval": 2})  # may change
    assert "dropped a partial last line" in capsys.readouterr().out
    steps = [json.loads(x)["step"] for x in (work / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 6]
    other = tmp_path / "r2"
    ft(tiny, other, **{"--max_step": 6, "--stop_after_steps": 3, "--save_interval": 3})
    ft(tiny, other, **{"--max_step": 6, "--resume": None, "--lr": 0.02,
                       "--resume_allow_changes": "lr"})
    assert (other / "run_info.json").exists()


def test_resume_on_a_fresh_work_dir_starts_at_step_0(tiny, tmp_path, capsys):
    ft(tiny, tmp_path / "fresh", **{"--max_step": 2, "--resume": None})
    assert "starting at step 0" in capsys.readouterr().out


def test_over_long_examples_are_reported_or_refused(tiny, tmp_path, capsys):
    long = write_random_data(tmp_path / "long.jsonl", 8)
    ft({**tiny, "data": long}, tmp_path / "a", **{"--max_step": 1, "--seq_len": 20})
    out = capsys.readouterr().out
    assert "examples are longer than --seq_len 20" in out and "truncated" in out
    with pytest.raises(SystemExit, match="every example is longer than --seq_len 6"):
        ft({**tiny, "data": long}, tmp_path / "b", **{"--max_step": 1, "--seq_len": 6})


def test_gpt2_decode_refuses_an_empty_e2e_reference(tmp_path, shared_data):
    fmt = tmp_path / "test_formatted.jsonl"
    rows = [{"context": "name : A", "completion": "A is good."},
            {"context": "name : A", "completion": " "},
            {"context": "name : B", "completion": "B is bad."}]
    fmt.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps({"id": i, "predict": [32]}) + "\n" for i in range(3)))
    r = subprocess.run([sys.executable, str(SRC / "gpt2_decode.py"), "--vocab",
                        str(shared_data / "vocab"), "--sample_file", str(pred), "--input_file",
                        str(fmt), "--output_ref_file", str(tmp_path / "ref.txt"),
                        "--output_pred_file", str(tmp_path / "hyp.txt")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "'name : A' has an empty reference" in r.stderr
    assert not (tmp_path / "ref.txt").exists()


def test_nlu_refuses_a_finished_output_dir_and_a_diverged_adapter(shared_data, tmp_path):
    from nlu import run_glue
    args = ["--task_name", "rte", "--data_dir", str(shared_data / "glue"), "--tokenizer_dir",
            str(shared_data / "vocab"), "--model_card", "roberta-tiny", "--random_init",
            "--max_seq_length", "32", "--max_train_samples", "8", "--max_eval_samples", "8",
            "--per_device_train_batch_size", "4", "--lora_dim", "2", "--output_dir",
            str(tmp_path / "o")]
    run_glue.main(args + ["--max_steps", "1"])
    with pytest.raises(SystemExit, match="holds an earlier run.*--overwrite_output_dir"):
        run_glue.main(args + ["--max_steps", "1"])
    run_glue.main(args + ["--max_steps", "1", "--overwrite_output_dir"])
    with pytest.raises(SystemExit, match="(not finite|diverged)"):
        run_glue.main(args[:-1] + [str(tmp_path / "nan"), "--max_steps", "6",
                                   "--learning_rate", "1e9", "--max_grad_norm", "0",
                                   "--logging_steps", "6"])
    assert not (tmp_path / "nan" / "pytorch_model.bin").exists()


def test_smaller_items_name_what_is_wrong(tiny, tmp_path, shared_data):
    # bytes that are not UTF-8 name the file and line (converters, gpt2_encode)
    bad = tmp_path / "train.txt"
    bad.write_bytes(b"name[A]||A is good.\nname[B]||B \xff bad.\n")
    r = subprocess.run([sys.executable, str(SRC / "format_converting_e2e.py"), str(bad),
                        str(tmp_path / "out.jsonl")], capture_output=True, text=True)
    assert r.returncode != 0 and f"{bad}:2: not UTF-8" in r.stderr
    enc_in = tmp_path / "f.jsonl"
    enc_in.write_bytes(b'{"context": "a", "completion": "b"}\n{"context": "\xfe", "completion": "c"}\n')
    r = subprocess.run([sys.executable, str(SRC / "gpt2_encode.py"), "--vocab",
                        str(shared_data / "vocab"), "--input", str(enc_in), "--output",
                        str(tmp_path / "e.jsonl")], capture_output=True, text=True)
    assert r.returncode != 0 and f"{enc_in}:2: not UTF-8" in r.stderr
    # a DART null relation
    dart = tmp_path / "dart.json"
    dart.write_text(json.dumps([{"tripleset": [["a", None, "b"]], "annotations": [{"text": "t"}]}]))
    r = subprocess.run([sys.executable, str(SRC / "format_converting_dart.py"), str(dart),
                        str(tmp_path / "d.jsonl")], capture_output=True, text=True)
    assert r.returncode != 0 and "entry [0]: tripleset[0] must be" in r.stderr
    # temporary files of killed saves are removed by the next run
    work = tmp_path / "w"
    work.mkdir()
    (work / ".resume.pt.abc123.tmp").write_bytes(b"x" * 100)
    (work / "keep.tmp").write_text("not ours")
    ft(tiny, work, **{"--max_step": 1})
    assert not (work / ".resume.pt.abc123.tmp").exists() and (work / "keep.tmp").exists()
    # beam search into a folder it cannot write fails before decoding (a path under a plain
    # file: not writable even for root)
    from test_beam_cli import run_beam
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    with pytest.raises(SystemExit, match="cannot write"):
        run_beam("gpt2_beam.py", ["--data", tiny["data"], "--model_card", tiny["card"],
                                  "--init_checkpoint", work / "model.1.pt", "--work_dir",
                                  blocker / "out"])


def test_nlu_files_follow_the_umask(shared_data, tmp_path):
    from nlu import run_glue
    old = os.umask(0o022)
    try:
        run_glue.main(["--task_name", "rte", "--data_dir", str(shared_data / "glue"),
                       "--tokenizer_dir", str(shared_data / "vocab"), "--model_card",
                       "roberta-tiny", "--random_init", "--max_seq_length", "32",
                       "--max_train_samples", "8", "--max_eval_samples", "8",
                       "--per_device_train_batch_size", "4", "--lora_dim", "2", "--max_steps",
                       "1", "--output_dir", str(tmp_path / "o")])
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "o" / "pytorch_model.bin").st_mode & 0o777) == 0o644


def test_a_full_disk_is_reported_as_such(tmp_path, monkeypatch):
    from traincore import files as checkpoint   # where save_atomic lives
    monkeypatch.setattr(checkpoint.torch, "save", lambda obj, f: (_ for _ in ()).throw(
        RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed "
                     "writing file data/0: file write failed")))
    monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                        lambda p: type("u", (), {"free": 1024})())
    with pytest.raises(OSError, match="no space left on the device"):
        checkpoint.save_atomic({"a": torch.zeros(1)}, tmp_path / "m.pt")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("where,script,groups", [
    ("NLG", "src/gpt2_ft.py", ("data and model:", "training:", "logging, saving, resuming:",
                               "optimizer and schedule:", "adaptation method (loralib):")),
    ("NLG", "src/gpt2_beam.py", ("data and model:", "search:", "adaptation method (loralib):")),
    ("NLU", "src/run_glue.py", ("task, data and model:", "training:", "evaluation:"))])
def test_help_groups_the_flags_and_shows_defaults(where, script, groups):
    r = subprocess.run([sys.executable, script, "--help"], cwd=ROOT / where, capture_output=True,
                       text=True)
    assert r.returncode == 0 and "(default:" in r.stdout
    assert all(f"\n{g}\n" in r.stdout for g in groups), r.stdout[:3000]


@pytest.mark.parametrize("where,argv,line", [
    ("NLG", ["src/gpt2_beam.py", "--data", "/nonexistent.jsonl"], "gpt2_beam: --data /nonexistent.jsonl: no such file"),
    ("NLG", ["src/format_converting_e2e.py", "/nonexistent.txt", "out.jsonl"],
     "format_converting_e2e.py: /nonexistent.txt: no such file"),
    ("NLG", ["src/gpt2_decode.py", "--vocab", "/nonexistent", "--sample_file", "s", "--input_file", "i",
             "--output_ref_file", "r", "--output_pred_file", "p"], "gpt2_decode.py: /nonexistent/encoder.json"),
    ("NLU", ["src/run_glue.py", "--task_name", "xyz", "--output_dir", "o"], "run_glue.py: unknown GLUE task 'xyz'"),
])
def test_command_line_errors_are_one_line_and_exit_2(where, argv, line, tmp_path):
    r = subprocess.run([sys.executable, *argv], cwd=ROOT / where, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith(line) and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stdout == ""            # nothing long printed before it

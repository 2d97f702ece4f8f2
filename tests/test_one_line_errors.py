"""Every command-line entry point reports bad input and Ctrl-C as one line (exit 2 and 130), the
traceback only with LORA_DEBUG=1 or --debug (issue 25, item 3); under torch.distributed.launch
/ torchrun rank 0's line is the last thing printed; an interrupted training names the step it
reached and the command that continues it; a log file gets progress lines with the total and an
ETA; the settings go to a file instead of a 100-line dump."""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from launch_helpers import free_port
from test_train_helpers import (ROOT, SRC, base_args, run_script, write_backbone, write_card,
                                write_random_data)

EVAL = ROOT / "NLG" / "eval"
LLM = ROOT / "NLG" / "MetaMathQA"
QLORA = ROOT / "NLG" / "llama" / "qlora.py"
NLU_SRC = ROOT / "NLU" / "src"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("oneline")
    card = write_card(d)
    data = write_random_data(d / "train.jsonl", 16)
    backbone = write_backbone(d / "backbone.bin", card)
    bad = d / "bad.jsonl"
    bad.write_text('{"context": [1, 2], "completion": [3]}\n{"context": [1, 2\n')
    work = d / "trained"
    run_script("gpt2_ft.py", base_args(d, data, card, backbone, work, **{
        "--lora_dim": 2, "--lora_alpha": 4, "--max_step": 1}))
    fmt = d / "fmt.jsonl"
    fmt.write_text('{"context": "a", "completion": "b"}\nnot json\n')
    return {"dir": d, "card": card, "data": data, "backbone": backbone, "bad": str(bad),
            "ckpt": str(work / "model.1.pt"), "fmt": str(fmt)}


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LORA_DEBUG", "TORCHELASTIC_RUN_ID")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", **extra)
    return env


def _commands(t):
    """(name, argv, the one line's start): a bad input for every entry point."""
    d = t["dir"]
    return [
        ("gpt2_ft", [SRC / "gpt2_ft.py"] + base_args(d, t["bad"], t["card"], t["backbone"],
                                                     d / "w_ft", **{"--lora_dim": 2}),
         f"gpt2_ft: {t['bad']}:2: not valid JSON"),
        ("gpt2_ft_nola", [SRC / "gpt2_ft_nola.py", "--train_data", t["data"], "--valid_data",
                          t["data"], "--max_step", "x"], "gpt2_ft_nola.py: argument --max_step"),
        ("gpt2_beam", [SRC / "gpt2_beam.py", "--data", t["bad"], "--model_card", t["card"],
                       "--init_checkpoint", t["ckpt"], "--seq_len", "64", "--eos_token_id", "210",
                       "--work_dir", d / "w_beam"], f"gpt2_beam: {t['bad']}:2: not valid JSON"),
        ("gpt2_encode", [SRC / "gpt2_encode.py", "--input", t["fmt"], "--vocab",
                         d / "no_vocab", "--output", d / "o.jsonl"], "gpt2_encode.py: "),
        ("gpt2_decode", [SRC / "gpt2_decode.py", "--vocab", d / "no_vocab", "--sample_file", "s",
                         "--input_file", "i", "--output_ref_file", "r", "--output_pred_file",
                         "p"], "gpt2_decode.py: "),
        ("format_converting_e2e", [SRC / "format_converting_e2e.py", t["fmt"], d / "o.jsonl"],
         f"format_converting_e2e.py: {t['fmt']}:1: expected 'MR||REF'"),
        ("format_e2e_csv", ["-m", "nlg.format_e2e_csv", "only_one"],
         "format_e2e_csv.py: expected 2 arguments"),
        ("checkpoint", ["-m", "nlg.checkpoint", "export", "--model_card", t["card"],
                        "--init_checkpoint", d / "none.pt", "--output", d / "x.bin"],
         "checkpoint: "),
        ("report", ["-m", "nlg.report", d / "no_runs_here"], "report: "),
        ("score", [EVAL / "score.py", "--task", "webnlg", "--ref", "r", "--hyp", "h"],
         "score.py: --task webnlg needs --nr"),
        ("score_e2e", [EVAL / "score_e2e.py", d / "none.txt", d / "none.txt"], "score_e2e.py: "),
        ("score_gen", [EVAL / "score_gen.py", "-R", d / "none", "-H", d / "none.txt", "-nr", "2"],
         "score_gen.py: "),
        ("run_glue", [NLU_SRC / "run_glue.py", "--task_name", "xyz", "--output_dir", d / "g"],
         "run_glue.py: unknown GLUE task 'xyz'"),
        ("run_glue_smoke", [NLU_SRC / "run_glue_smoke.py", t["fmt"]], "run_glue_smoke.py: "),
        ("train_math_lorma", [LLM / "train_math_lorma.py", "--model_name_or_path", d / "no_model",
                              "--data_path", t["fmt"], "--output_dir", d / "m"],
         f"train_math_lorma.py: --model_name_or_path {d / 'no_model'}: cannot load"),
        ("qlora", [QLORA, "--model_name_or_path", d / "no_model", "--dataset", t["fmt"],
                   "--output_dir", d / "q"],
         f"qlora.py: --model_name_or_path {d / 'no_model'}: cannot load"),
        ("eval_gsm8k", [LLM / "eval_gsm8k.py", "--model", d, "--data_file", t["fmt"]],
         f"eval_gsm8k.py: {t['fmt']}:2: not JSON"),
        ("eval_math", [LLM / "eval_math.py", "--model", d, "--data_file", t["fmt"]],
         f"eval_math.py: {t['fmt']}:2: not JSON"),
        ("eval_mmlu", [LLM / "eval_mmlu.py", "--model_name_or_path", d, "--data_dir",
                       d / "no_mmlu"], "eval_mmlu.py: "),
        ("llm_smoke", [ROOT / "NLG" / "scripts" / "llm_smoke.py", "4", "42", "pre"],
         "llm_smoke.py: give all four of R SEED MODE RI or none"),
    ]


NAMES = [c[0] for c in _commands({"dir": ROOT, "bad": "b", "card": "c", "backbone": "k",
                                  "ckpt": "m", "fmt": "f", "data": "t"})]


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_one_line_and_exit_2_with_the_traceback_behind_debug(tiny, tmp_path, name):
    argv, start = next((a, s) for n, a, s in _commands(tiny) if n == name)
    cmd = [sys.executable] + [str(a) for a in argv]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(start), r.stderr[-3000:]
    if name in ("gpt2_ft", "gpt2_beam", "format_converting_e2e", "run_glue"):
        for debug in ({"LORA_DEBUG": "1"}, {}):
            extra = ["--debug"] if not debug else []
            r = subprocess.run(cmd + extra, capture_output=True, text=True, env=_env(**debug),
                               cwd=tmp_path)
            assert r.returncode == 2 and "Traceback (most recent call last)" in r.stderr
            assert r.stderr.strip().splitlines()[-1].startswith(start), r.stderr[-2000:]


# A Ctrl-C while the command reads its input: the first open() of that file raises
# KeyboardInterrupt, as SIGINT would there.
_CTRL_C_AT_OPEN = """
import builtins, io, runpy, sys
target, argv = sys.argv[1], sys.argv[2:]
real_open = builtins.open
def ctrl_c(path, *a, **k):
    if str(path) == target:
        raise KeyboardInterrupt
    return real_open(path, *a, **k)
builtins.open = io.open = ctrl_c       # pathlib reads through io.open
if argv[0] == "-m":
    sys.argv = [argv[1]] + argv[2:]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
else:
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("name,reads", [
    ("gpt2_ft", "data"), ("gpt2_beam", "data"), ("gpt2_encode", "fmt"),
    ("format_converting_e2e", "fmt"), ("score_e2e", "ref"), ("score", "ref"),
    ("report", "record"), ("gpt2_decode", "fmt")])
def test_ctrl_c_is_one_line_and_exit_130(tiny, tmp_path, name, reads, request):
    t, d = tiny, tiny["dir"]
    vocab = request.getfixturevalue("shared_data") / "vocab" \
        if name in ("gpt2_encode", "gpt2_decode") else None     # GPT-2's, beside the checkout
    ref = tmp_path / "ref.txt"
    ref.write_text("a b\n\nc d\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "scores.json").write_text('{"BLEU": 0.5, "task": "e2e"}')
    argv = {
        "gpt2_ft": [SRC / "gpt2_ft.py"] + base_args(d, t["data"], t["card"], t["backbone"],
                                                    tmp_path / "w", **{"--lora_dim": 2}),
        "gpt2_beam": [SRC / "gpt2_beam.py", "--data", t["data"], "--model_card", t["card"],
                      "--init_checkpoint", t["ckpt"], "--seq_len", "64", "--eos_token_id", "210",
                      "--work_dir", tmp_path / "b"],
        "gpt2_encode": [SRC / "gpt2_encode.py", "--input", t["fmt"], "--vocab", vocab,
                        "--output", tmp_path / "o"],
        "format_converting_e2e": [SRC / "format_converting_e2e.py", t["fmt"], tmp_path / "o"],
        "score_e2e": [EVAL / "score_e2e.py", ref, ref, "--no-meteor"],
        "score": [EVAL / "score.py", "--task", "e2e", "--ref", ref, "--hyp", ref, "--no-meteor"],
        "report": ["-m", "nlg.report", run],
        "gpt2_decode": [SRC / "gpt2_decode.py", "--vocab", vocab,
                        "--sample_file", t["fmt"], "--input_file", t["fmt"],
                        "--output_ref_file", tmp_path / "r", "--output_pred_file", tmp_path / "p"],
    }[name]
    target = {"data": t["data"], "fmt": t["fmt"], "ref": ref, "record": run / "scores.json"}[reads]
    r = subprocess.run([sys.executable, "-c", _CTRL_C_AT_OPEN, str(target)] + [str(a) for a in argv],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 130 and len(lines) == 1, r.stderr[-3000:]
    assert re.fullmatch(r"[\w.]+: stopped \(Ctrl-C\)", lines[0]), lines


def _interrupt_when(cmd, marker, env, cwd, timeout=240):
    """Start `cmd` in its own process group (a terminal's foreground job), send the group SIGINT
    (Ctrl-C) once `marker` appears in its output; (return code, whole output)."""
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env, cwd=cwd, start_new_session=True,
                         # a shell's background job ignores SIGINT; a terminal's does not
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen, t0 = [], time.time()
    try:
        for line in p.stdout:
            seen.append(line)
            if marker in line:
                os.killpg(p.pid, signal.SIGINT)
                break
            assert time.time() - t0 < timeout, "".join(seen)[-3000:]
        seen.append(p.stdout.read())       # to the end: a helper that prints last holds it open
        p.wait(timeout=timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return p.returncode, "".join(seen)


STOPPED = re.compile(r"gpt2_ft: stopped by Ctrl-C after step (\d+) of 100000; the resumable "
                     r"state holds step (\d+)(?: \(saved every --save_interval 4\))?; "
                     r"continue with: (.*)")


def test_an_interrupted_training_names_its_step_and_the_command_that_continues_it(tiny, tmp_path):
    """Before: Ctrl-C printed ~60 lines and no step or command."""
    work = tmp_path / "w"
    argv = [sys.executable, SRC / "gpt2_ft.py"] + base_args(
        tiny["dir"], tiny["data"], tiny["card"], tiny["backbone"], work, **{
            "--lora_dim": 2, "--lora_alpha": 4, "--max_step": 100000, "--save_interval": 4,
            "--log_interval": 5})
    rc, out = _interrupt_when(argv, "| train | step 10/", _env(), tmp_path)
    lines = out.strip().splitlines()
    m = STOPPED.fullmatch(lines[-1])
    assert rc == 130 and m, out[-3000:]
    assert "Traceback" not in out
    step, saved = int(m.group(1)), int(m.group(2))
    # the last save the run finished: step's own when step is a multiple of 4, unless Ctrl-C
    # came between that step and the end of its save (then the one before)
    assert step >= 10 and (saved == step // 4 * 4 or (step % 4 == 0 and saved == step - 4)), out
    command = shlex.split(m.group(3))
    assert command[1:] == [str(a) for a in argv[1:]] + ["--resume"]
    # the command, as printed (cut short by --stop_after_steps), continues from that state
    r = subprocess.run(command + ["--stop_after_steps", "1"], capture_output=True, text=True,
                       env=_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {work / 'resume.pt'} at step {saved}" in r.stdout


def test_under_the_launcher_rank_0_has_the_last_word(tiny, tmp_path):
    """2 gloo processes under torch.distributed.launch: a data error, then Ctrl-C in training
    under torchrun. Before: the message sat 40 lines above the launcher's own traceback."""
    line = f"gpt2_ft: {tiny['bad']}:2: not valid JSON (Expecting ',' delimiter)"
    launch = [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=2",
              f"--master_port={free_port()}"]
    r = subprocess.run(launch + [str(SRC / "gpt2_ft.py")] + base_args(
        tiny["dir"], tiny["bad"], tiny["card"], tiny["backbone"], tmp_path / "a",
        **{"--lora_dim": 2}), capture_output=True, text=True, env=_env(), cwd=tmp_path,
        timeout=240)
    out = (r.stdout + r.stderr).strip().splitlines()
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1] == line, r.stderr[-3000:]
    assert out.count(line) == 1            # rank 0 alone printed it (the box quotes rank 1's)
    assert "Traceback (most recent call last)" in r.stderr      # the launcher's, above it

    run = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={free_port()}", SRC / "gpt2_ft.py"] + base_args(
        tiny["dir"], tiny["data"], tiny["card"], tiny["backbone"], tmp_path / "b", **{
            "--lora_dim": 2, "--max_step": 100000, "--save_interval": 4, "--log_interval": 5})
    rc, out = _interrupt_when(run, "| train | step 10/", _env(), tmp_path)
    last = out.strip().splitlines()[-1]
    m = STOPPED.fullmatch(last)
    assert rc != 0 and m, out[-3000:]
    assert shlex.split(m.group(3))[1:] == [str(a) for a in run[1:]] + ["--resume"]
    assert out.count("gpt2_ft: stopped by Ctrl-C") == 1


def test_a_log_file_shows_the_step_of_the_total_and_an_eta(tmp_path, capsys, monkeypatch):
    from traincore import runlog
    clock = iter([100.0, 130.0, 160.0])
    monkeypatch.setattr(runlog.time, "time", lambda: next(clock))
    log = runlog.RunLog(str(tmp_path), ("train",), 0, 10, tensorboard=False)   # off a terminal
    log.write("train", {"step": 3, "loss": 0.5})
    log.write("train", {"step": 10, "loss": 0.25})
    log.close()
    assert capsys.readouterr().out.splitlines() == [
        "| train | step 3/10 (30%) | loss 0.5 | 30s elapsed, ETA 1m10s",   # 30 s per 3 steps
        "| train | step 10/10 (100%) | loss 0.25 | 1m00s elapsed"]


def test_the_settings_go_to_a_file_and_the_log_gets_a_short_header(tiny, tmp_path, capsys):
    """Before: every run started with a 100-line argument dump."""
    work = tmp_path / "w"
    run_script("gpt2_ft.py", base_args(tiny["dir"], tiny["data"], tiny["card"], "random", work,
                                       **{"--lora_dim": 2, "--max_step": 2, "--task": "e2e"}))
    out = capsys.readouterr().out
    assert "    - " not in out and len(out.splitlines()) < 15, out
    assert f"settings: {work / 'args.json'}" in out and "training: 2 steps" in out
    saved = json.loads((work / "args.json").read_text())
    assert saved["lora_dim"] == 2 and saved["random_init"] and saved["init_checkpoint"] is None
    info = json.loads((work / "run_info.json").read_text())   # what the report groups by
    assert info["task"] == "e2e" and info["random_seed"] == 7
    assert info["settings"]["lr"] == 0.01 and info["settings"]["train_batch_size"] == 4


def test_an_interrupted_glue_run_names_its_step_and_the_command_that_continues_it(tmp_path):
    smoke = tmp_path / "smoke"
    subprocess.run([sys.executable, NLU_SRC / "run_glue_smoke.py", smoke], check=True,
                   capture_output=True, env=_env())
    argv = [sys.executable, NLU_SRC / "run_glue.py", "--task_name", "sst2", "--data_dir",
            smoke / "glue", "--tokenizer_dir", smoke / "tokenizer", "--model_card",
            "roberta-tiny", "--random_init", "--max_seq_length", "32",
            "--per_device_train_batch_size", "8", "--max_steps", "100000", "--save_steps", "3",
            "--logging_steps", "5", "--lora_dim", "2", "--output_dir", tmp_path / "o",
            "--no_tensorboard"]
    rc, out = _interrupt_when(argv, "step 10/100000", _env(), tmp_path)
    m = re.fullmatch(r"run_glue\.py: stopped by Ctrl-C after step (\d+) of 100000; the "
                     r"resumable state holds step (\d+)(?: \(saved every --save_steps 3 and "
                     r"every epoch\))?; continue with: (.*)", out.strip().splitlines()[-1])
    assert rc == 130 and m, out[-3000:]
    step, saved = int(m.group(1)), int(m.group(2))
    assert step >= 10 and 0 <= step - saved < 3 and (saved % 3 == 0 or saved % 8 == 0)
    assert shlex.split(m.group(3))[1:] == [str(a) for a in argv[1:]] + ["--resume"]
    assert "Traceback" not in out

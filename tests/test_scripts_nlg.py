"""NLG/scripts: the generated <task>_<method>.sh files and the pipeline they call (run_task.sh).

The end-to-end runs use the shared dev data (../shared), prepared by create_datasets.sh's
local-folder mode, a random tiny GPT-2 (gpt2.tiny, GPT-2's vocabulary) and a few steps: they check
the plumbing and the files between the steps, not the quality.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import loralib as lora

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "NLG" / "scripts"
TASKS = ("e2e", "webnlg", "dart")

METHODS = tuple(lora.script_variants()) + ("ft",)   # one script per variant the registry lists
SMOKE = {  # a few steps of a toy model: overrides of the papers' settings the scripts hold
    "MAX_STEP": "3", "WARMUP_STEP": "1", "TRAIN_BATCH_SIZE": "4", "VALID_BATCH_SIZE": "4", "SEQ_LEN": "128",
    "BEAM": "2", "EVAL_LEN": "8", "BEAM_BATCH_SIZE": "16", "SAVE_INTERVAL": "3",
    "EXTRA_FT_ARGS": "--no_progress --eval_interval 1000 --log_interval 1",
    "OMP_NUM_THREADS": "1",  # toy matrices: threads only wait on each other, worse on a shared CPU
}


OFFICIAL_NOLA = ("finetune_gpt2m_e2e_qv_nola.sh", "finetune_gpt2l_e2e_qv_nola.sh")


def bash(script, *args, env=None, cwd=ROOT):
    full = {**os.environ, **(env or {}), "PYTHON": sys.executable}
    return subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True, env=full,
                          cwd=cwd)


def test_every_task_and_method_has_a_current_script():
    assert {"lora", "lorma_plus", "lorma_pi", "mtlora_icfm", "nola", "qnola"} <= set(METHODS)
    r = subprocess.run([sys.executable, str(SCRIPTS / "make_scripts.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for task in TASKS:
        for method in METHODS:
            path = SCRIPTS / f"{task}_{method}.sh"
            assert path.is_file() and os.access(path, os.X_OK), path
            assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_make_scripts_check_notices_an_edited_script(tmp_path):
    make = [sys.executable, str(SCRIPTS / "make_scripts.py"), "--out_dir", str(tmp_path)]
    assert subprocess.run(make, capture_output=True).returncode == 0
    assert len(list(tmp_path.glob("*.sh"))) == len(TASKS) * len(METHODS) + len(OFFICIAL_NOLA)
    (tmp_path / "dart_nola.sh").write_text((tmp_path / "dart_nola.sh").read_text().replace("0.005", "0.006"))
    r = subprocess.run(make + ["--check"], capture_output=True, text=True)
    assert r.returncode != 0 and "dart_nola.sh" in r.stderr


def _settings(script, env=None):
    """The environment a generated script hands to run_task.sh (run_task.sh replaced by `env`)."""
    fake = Path(script).parent
    text = Path(script).read_text().replace('exec bash "$(dirname "${BASH_SOURCE[0]}")/run_task.sh" "$@"', "env")
    r = subprocess.run(["bash", "-c", text], capture_output=True, text=True, env={**os.environ, **(env or {})},
                       cwd=fake)
    assert r.returncode == 0, r.stderr
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def test_scripts_hand_their_settings_and_env_overrides_to_the_pipeline():
    s = _settings(SCRIPTS / "webnlg_lorma_pi.sh")
    assert s["TASK"] == "webnlg" and s["METHOD_NAME"] == "lorma_pi"
    assert s["METHOD_ARGS"].split() == ["--method", "lorma", "--lorma_type", "shift", "--lorma_mode", "pre",
                                        "--lora_dim", "4", "--lora_alpha", "32", "--lora_dropout", s["DROPOUT"]]
    over = _settings(SCRIPTS / "webnlg_lorma_pi.sh", env={"LR": "0.123", "DROPOUT": "0.3", "LORMA_MODE": "post"})
    assert over["LR"] == "0.123" and over["METHOD_ARGS"].endswith("--lora_dropout 0.3")
    assert "--lorma_mode post" in over["METHOD_ARGS"]
    q = _settings(SCRIPTS / "e2e_qnola.sh")
    assert "--qnola --qbits 3" in q["METHOD_ARGS"] and "--nola_qv" in q["METHOD_ARGS"]


def test_pipeline_errors_name_what_is_missing(tmp_path):
    r = bash(SCRIPTS / "e2e_lora.sh", "--bogus")
    assert r.returncode != 0 and "--bogus" in r.stderr
    r = bash(SCRIPTS / "e2e_lora.sh", "--init_checkpoint", tmp_path / "none.bin", "--data_dir", tmp_path)
    assert r.returncode != 0 and "none.bin" in r.stderr
    r = bash(SCRIPTS / "e2e_lora.sh", "--init_checkpoint", "random", "--model_card", "gpt2.tiny",
             "--data_dir", tmp_path)
    assert r.returncode != 0 and str(tmp_path / "train.jsonl") in r.stderr
    r = bash(SCRIPTS / "dart_ft.sh", "--num_gpus", "two")
    assert r.returncode != 0 and "num_gpus" in r.stderr


def _subset(src_dir, out_dir, flip_cate=False):
    """train / valid / test splits cut from a dev split (ids and formatted text stay aligned); the
    test split takes at most 3 lines from each of 8 contexts, so it has several reference groups."""
    ids = (src_dir / "valid.jsonl").read_text().splitlines()
    fmt = (src_dir / "valid_formatted.jsonl").read_text().splitlines()
    assert len(ids) == len(fmt)
    per_context = {}
    for i in range(len(fmt) - 1, 48, -1):  # from the end: contexts the training lines do not have
        ctx = json.loads(fmt[i])["context"]
        if len(per_context) < 8 or ctx in per_context:
            per_context.setdefault(ctx, [])
            if len(per_context[ctx]) < 3:
                per_context[ctx].append(i)
    test = sorted(i for lines in per_context.values() for i in lines)
    out_dir.mkdir(parents=True)
    written = {}
    for name, lines in (("train", range(0, 40)), ("valid", range(40, 48)), ("test", test)):
        (out_dir / f"{name}.jsonl").write_text("".join(ids[i] + "\n" for i in lines))
        rows = [json.loads(fmt[i]) for i in lines]
        if flip_cate:  # the dev split has seen categories only: mark some unseen to split the scores
            for row in rows:
                row["cate"] = sorted(per_context).index(row["context"]) % 3 != 0 if name == "test" else True
        (out_dir / f"{name}_formatted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        written[name] = rows
    return written["test"]


@pytest.fixture(scope="module")
def built_data(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("nlgdata")
    r = bash(ROOT / "create_datasets.sh", "--from", shared_data, "--out", out / "built", "--tasks", "e2e,webnlg",
             "--vocab", shared_data / "vocab")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out


@pytest.mark.slow
def test_e2e_lora_script_end_to_end_on_cpu(built_data, shared_data, tmp_path):
    rows = _subset(built_data / "built" / "e2e", tmp_path / "e2e")
    contexts = [r["context"] for r in rows]
    work = tmp_path / "work"
    args = ["--data_dir", tmp_path / "e2e", "--vocab", shared_data / "vocab", "--model_card", "gpt2.tiny",
            "--init_checkpoint", "random", "--work_dir", work, "--launcher", "python", "--seed", 7]
    r = bash(SCRIPTS / "e2e_lora.sh", *args, env=SMOKE)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    info = json.loads((work / "run_info.json").read_text())
    # LoRA r=4 on q and v of gpt2.tiny's 2 layers (n_embd 64): 2 * 2 * 4 * (64 + 64)
    assert info["method"] == "lora" and info["trainable_params"] == 2048
    assert Path(info["final_checkpoint"]).name == "model.3.pt"
    preds = (work / "predict.3.b2p09r4.jsonl").read_text().splitlines()  # E2E: length penalty 0.9
    assert len(preds) == len(contexts)
    distinct = list(dict.fromkeys(contexts))
    assert len(distinct) == 8
    assert len((work / "e2e_pred.txt").read_text().splitlines()) == len(distinct)
    blocks = [b for b in (work / "e2e_ref.txt").read_text().split("\n\n") if b.strip()]
    assert len(blocks) == len(distinct)
    scores = json.loads((work / "scores.json").read_text())
    assert {"BLEU", "NIST", "ROUGE_L", "CIDEr"} <= set(scores)
    # a second run reuses the trained model and the predictions
    again = bash(SCRIPTS / "e2e_lora.sh", *args, env=SMOKE)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "train: reusing" in again.stdout and "beam: reusing" in again.stdout
    assert json.loads((work / "scores.json").read_text()) == scores
    # changed settings are noticed: a beam setting redoes the search, a training one is refused
    beam2 = bash(SCRIPTS / "e2e_lora.sh", *args, env={**SMOKE, "REPETITION_PENALTY": "1.3"})
    assert beam2.returncode == 0 and "train: reusing" in beam2.stdout
    assert "beam search (" in beam2.stdout and "decode + score" in beam2.stdout
    lr2 = bash(SCRIPTS / "e2e_lora.sh", *args, env={**SMOKE, "LR": "0.5"})
    assert lr2.returncode == 2 and "settings or inputs changed" in lr2.stderr


@pytest.mark.slow
def test_run_task_continues_an_interrupted_training(built_data, shared_data, tmp_path):
    _subset(built_data / "built" / "e2e", tmp_path / "e2e")
    work = tmp_path / "work"
    args = ["--data_dir", tmp_path / "e2e", "--vocab", shared_data / "vocab", "--model_card", "gpt2.tiny",
            "--init_checkpoint", "random", "--work_dir", work, "--launcher", "python"]
    cut = bash(SCRIPTS / "e2e_lora.sh", *args, env={**SMOKE, "MAX_STEP": "4", "SAVE_INTERVAL": "2",
                                                   "EXTRA_FT_ARGS": SMOKE["EXTRA_FT_ARGS"] + " --stop_after_steps 2"})
    assert cut.returncode != 0 and (work / "resume.pt").exists() and not (work / "run_info.json").exists()
    r = bash(SCRIPTS / "e2e_lora.sh", *args, env={**SMOKE, "MAX_STEP": "4", "SAVE_INTERVAL": "2"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "continuing the interrupted run" in r.stdout and "resumed from" in r.stdout
    assert json.loads((work / "run_info.json").read_text())["last_step"] == 4


@pytest.mark.slow
def test_webnlg_script_scores_seen_unseen_and_all_with_torchrun(built_data, shared_data, tmp_path):
    rows = _subset(built_data / "built" / "webnlg_challenge_2017", tmp_path / "webnlg", flip_cate=True)
    work = tmp_path / "work"
    r = bash(SCRIPTS / "webnlg_nola.sh", "--data_dir", tmp_path / "webnlg", "--vocab", shared_data / "vocab",
             "--model_card", "gpt2.tiny", "--init_checkpoint", "random", "--work_dir", work,
             "--launcher", "torchrun", env={**SMOKE, "num_gpus": "1", "NOLA_NUM_BASIS": "16"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    info = json.loads((work / "run_info.json").read_text())
    assert info["method"] == "nola" and info["trainable_params"] == 2 * 2 * (16 + 16)  # layers x (q, v) x (kA + kB)
    n = {}
    for split in ("all", "seen", "unseen"):
        n[split] = len((work / f"eval_{split}" / "hypothesis").read_text().splitlines())
        refs = sorted((work / f"eval_{split}" / "references").iterdir())
        assert [p.name for p in refs] == [f"reference{i}" for i in range(6)]
        assert all(len(p.read_text().splitlines()) == n[split] for p in refs)
        assert "BLEU" in json.loads((work / f"eval_{split}" / "scores.json").read_text())
    want = {"seen": len({r["context"] for r in rows if r["cate"]}),
            "unseen": len({r["context"] for r in rows if not r["cate"]})}
    assert n["seen"] == want["seen"] and n["unseen"] == want["unseen"]
    assert n["all"] == n["seen"] + n["unseen"]
    assert json.loads((work / "scores.json").read_text()) == json.loads((work / "eval_all" / "scores.json").read_text())


def test_nola_official_scripts_hand_over_their_own_values():
    m = _settings(SCRIPTS / OFFICIAL_NOLA[0])
    assert m["METHOD_ARGS"].split() == ["--lora_qv", "--use_nola", "--nola_num_basis", "512",
                                        "--lora_rank", "8", "--lora_alpha", "8"]
    assert (m["LR"], m["TRAIN_BATCH_SIZE"], m["GRAD_ACC"], m["MODEL_CARD"]) == \
        ("0.005", "8", "1", "gpt2.md")
    big = _settings(SCRIPTS / OFFICIAL_NOLA[1])
    assert "--nola_num_basis 256" in big["METHOD_ARGS"] and "--lora_alpha 2" in big["METHOD_ARGS"]
    assert (big["LR"], big["TRAIN_BATCH_SIZE"], big["GRAD_ACC"], big["MODEL_CARD"]) == \
        ("0.01", "4", "4", "gpt2.lg")


@pytest.mark.slow
def test_nola_official_script_runs_as_its_users_call_it(built_data, shared_data, tmp_path):
    """`bash scripts/finetune_gpt2m_e2e_qv_nola.sh` from NLG/, with NOLA's own flag spellings."""
    _subset(built_data / "built" / "e2e", tmp_path / "e2e")
    work = tmp_path / "work"
    r = bash("scripts/" + OFFICIAL_NOLA[0], "--data_dir", tmp_path / "e2e", "--vocab",
             shared_data / "vocab", "--model_card", "gpt2.tiny", "--init_checkpoint", "random",
             "--work_dir", work, "--launcher", "python", env=SMOKE, cwd=ROOT / "NLG")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    info = json.loads((work / "run_info.json").read_text())
    # 2 layers x (q, v) x (512 + 512) coefficients: the official script's 512 bases
    assert info["method"] == "nola" and info["trainable_params"] == 2 * 2 * 1024
    assert "'offsets': 'normal'" in info["method_config"]    # GPT-2's official N(0, 0.02) offsets
    assert "BLEU" in json.loads((work / "scores.json").read_text())


def test_card_and_vocabulary_are_checked_before_training(tmp_path, shared_data):
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"vocab_size": 500, "n_embd": 32, "n_layer": 1, "n_head": 4,
                                "n_positions": 128}))
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "test_formatted.jsonl"):
        (tmp_path / name).write_text('{"context": [1], "completion": [2]}\n')
    r = bash(SCRIPTS / "e2e_lora.sh", "--model_card", card, "--vocab", shared_data / "vocab",
             "--init_checkpoint", "random", "--data_dir", tmp_path, "--work_dir", tmp_path / "w")
    assert r.returncode == 2 and "has vocab_size 500 but" in r.stderr and "50257 tokens" in r.stderr
    assert not (tmp_path / "w" / "train_log.jsonl").exists()


@pytest.mark.slow
def test_smoke_runs_a_task_script_end_to_end_offline_from_the_demo_generators(tmp_path):
    """--smoke: the demo's generators write the task's raw files and a vocabulary,
    create_datasets.sh builds the data, a tiny random model runs every step; --help names
    every environment override run_task.sh reads."""
    env = {"SMOKE_DIR": str(tmp_path / "smoke"), "OMP_NUM_THREADS": "1"}
    r = bash(SCRIPTS / "webnlg_lora.sh", "--smoke", "--max_step", "2", env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    work = tmp_path / "smoke" / "runs" / "webnlg_lora"
    assert json.loads((work / "run_info.json").read_text())["last_step"] == 2
    for split in ("all", "seen", "unseen"):        # WebNLG's three scored splits
        assert "BLEU" in json.loads((work / f"eval_{split}" / "scores.json").read_text())
    data = tmp_path / "smoke" / "data" / "webnlg_challenge_2017"
    assert all((data / f"{s}.jsonl").is_file() for s in ("train", "valid", "test"))
    assert "beam search: 10/10 contexts (100%)" in r.stderr   # (stage reuse: tested above)
    text = (SCRIPTS / "run_task.sh").read_text()
    import re
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text)) | set(re.findall(r'"\$([A-Z][A-Z0-9_]*)"', text))
    internal = {"BASH_SOURCE", "TASK", "METHOD_NAME", "TASK_DATA", "TASK_REFERENCES", "TASK_SCORE_SPLITS",
                "TASK_REF_NUM", "TASK_TITLE", "TASK_CONVERTER", "PWD"}
    helptext = bash(SCRIPTS / "run_task.sh", "--help").stdout
    assert [v for v in sorted(used - internal) if v not in helptext] == []


def _recording_python(tmp_path):
    """A PYTHON for run_task.sh that records the training and decoding command lines (and
    stops there) and runs every other step with the real interpreter."""
    record = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/usr/bin/env bash\ncase "$1" in src/gpt2_ft.py|src/gpt2_beam.py) '
                    f'echo "$*" >> "{record}"; exit 3;; esac\nexec "{sys.executable}" "$@"\n')
    fake.chmod(0o755)
    return fake, record


@pytest.mark.parametrize("precision,flag", [("fp32", None), ("tf32", "--tf32"), ("bf16", "--bf16")])
def test_precision_setting_reaches_training_and_decoding(tmp_path, shared_data, precision, flag):
    """PRECISION=fp32|tf32|bf16 (default fp32, the official runs) is a setting of every
    generated script, listed in --help, and becomes the same flag of gpt2_ft.py and gpt2_beam.py."""
    assert _settings(SCRIPTS / "dart_nola.sh")["PRECISION"] == "fp32"
    assert _settings(SCRIPTS / OFFICIAL_NOLA[1])["PRECISION"] == "fp32"
    assert _settings(SCRIPTS / "e2e_lora.sh", env={"PRECISION": precision})["PRECISION"] == precision
    assert "PRECISION=fp32|tf32|bf16" in bash(SCRIPTS / "e2e_lora.sh", "--help").stdout
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "test_formatted.jsonl"):
        (data / name).write_text('{"context": [1], "completion": [2]}\n')
    fake, record = _recording_python(tmp_path)
    work = tmp_path / "w"
    args = ["--model_card", "gpt2.tiny", "--vocab", shared_data / "vocab", "--init_checkpoint", "random",
            "--data_dir", data, "--work_dir", work, "--launcher", "python"]
    env = {"PRECISION": precision}
    r = subprocess.run(["bash", str(SCRIPTS / "e2e_lora.sh"), *map(str, args)], capture_output=True,
                       text=True, env={**os.environ, **env, "PYTHON": str(fake)})
    assert r.returncode == 3, r.stderr
    (work / "model.1.pt").write_bytes(b"")           # a finished training: decoding comes next
    (work / "run_info.json").write_text(json.dumps({"final_checkpoint": str(work / "model.1.pt")}))
    r = subprocess.run(["bash", str(SCRIPTS / "e2e_lora.sh"), *map(str, args)], capture_output=True,
                       text=True, env={**os.environ, **env, "PYTHON": str(fake)})
    assert r.returncode == 3, r.stderr
    calls = record.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["src/gpt2_ft.py", "src/gpt2_beam.py"]
    for c in calls:
        used = {f for f in ("--tf32", "--bf16", "--fp16") if f in c.split()}
        assert used == ({flag} if flag else set()), c
    bad = bash(SCRIPTS / "e2e_lora.sh", *args, env={"PRECISION": "fp8"})
    assert bad.returncode == 2 and "PRECISION must be fp32, tf32 or bf16, got 'fp8'" in bad.stderr

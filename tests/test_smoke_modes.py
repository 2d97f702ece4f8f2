"""Smoke modes (issue 25, item 5): every NLU script takes --smoke (LoRMA's and MTLoRA's
interfaces included) and the LLM pipeline has a command that builds its own tiny model and
data; each runs the real pipeline offline. Their outputs are ignored by git. Also what the runs
record for the report (NLU trainable_params, score.py's task, gpt2_beam's settings file)."""
import json
import os
import subprocess
import sys

import pytest

from test_train_helpers import ROOT

NLU_SCRIPTS = ROOT / "NLU" / "scripts"


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHON=sys.executable, **{k: str(v) for k, v in extra.items()})
    for var in ("MODEL_CARD", "INIT_CHECKPOINT", "TOKENIZER_DIR", "DATA_DIR", "OUTPUT_DIR",
                "RANDOM_INIT", "MAX_STEPS", "num_gpus"):
        env.pop(var, None)              # the smoke sets them all itself
    return env


def test_smoke_data_is_every_glue_task_in_its_real_layout(tmp_path):
    """run_glue_smoke.py writes files the real reader takes: each task's train and dev splits
    (MNLI both dev files) with both labels present, and a vocabulary with RoBERTa's ids."""
    from nlu.glue_data import TASKS, RobertaTokenizer, load_split
    r = subprocess.run([sys.executable, ROOT / "NLU" / "src" / "run_glue_smoke.py", tmp_path],
                       capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    tok = RobertaTokenizer(str(tmp_path / "tokenizer"))
    assert (tok.bos_id, tok.pad_id, tok.eos_id) == (0, 1, 2)
    for name, spec in TASKS.items():
        train = load_split(str(tmp_path / "glue"), name, "train")["train"]
        dev = load_split(str(tmp_path / "glue"), name, "dev")
        assert len(train) == 64 and list(dev) == [f[:-4] for f in spec.dev_files]
        assert all(len(v) == 16 for v in dev.values())
        labels = {e.label for e in train}
        assert len(labels) > 1, name                     # something to learn
        assert all(tok.encode_pair(e.text_a, e.text_b, 64)[-1] == 2 for e in train)


def test_missing_inputs_are_listed_at_once_with_the_smoke_hint(tmp_path):
    """Before: LoRMA's interface needed five environment variables, found one error at a time."""
    r = subprocess.run(["bash", NLU_SCRIPTS / "roberta_large_plus_cola.sh", "pre", "8", "True",
                        "42"], capture_output=True, text=True, cwd=tmp_path,
                       env=_env(INIT_CHECKPOINT=tmp_path / "none.bin",
                                TOKENIZER_DIR=tmp_path / "none", DATA_DIR=tmp_path / "none"))
    assert r.returncode == 2, r.stderr
    assert "3 input(s) missing" in r.stderr and "INIT_CHECKPOINT" in r.stderr
    assert "TOKENIZER_DIR" in r.stderr and "DATA_DIR" in r.stderr and "--smoke" in r.stderr
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
@pytest.mark.parametrize("script,args,task,metric", [
    ("roberta_large_plus_cola.sh", ["pre", "8", "True", "42"], "cola", "mcc"),   # LoRMA's
    ("roberta_base_mrpc.sh", [], "mrpc", "f1"),             # MTLoRA's, an MNLI-start task
])
def test_nlu_smoke_runs_the_script_offline(tmp_path, script, args, task, metric):
    smoke = tmp_path / "smoke"
    r = subprocess.run(["bash", NLU_SCRIPTS / script, *args, "--smoke"], capture_output=True,
                       text=True, cwd=tmp_path, env=_env(SMOKE_DIR=smoke, SMOKE_STEPS=6),
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = next((smoke / "runs").glob(f"*/{task}"))
    results = json.loads((out / "eval_results.json").read_text())
    assert results["task"] == task and metric in results
    config = json.loads((out / "run_config.json").read_text())
    assert config["args"]["max_steps"] == 6 and config["args"]["random_init"]
    assert config["args"]["model_card"] == "roberta-tiny"
    import torch
    saved = torch.load(out / "pytorch_model.bin", weights_only=True)
    # trainable_params (for the report): what was saved, the adapter and the head
    assert config["trainable_params"] == sum(v.numel() for v in saved.values())
    if task != "cola":
        return
    # run again: the data is reused, the run replaced
    again = subprocess.run(["bash", NLU_SCRIPTS / script, *args, "--smoke"], capture_output=True,
                           text=True, cwd=tmp_path, env=_env(SMOKE_DIR=smoke, SMOKE_STEPS=2),
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "run_config.json").read_text())["args"]["max_steps"] == 2


@pytest.mark.slow
def test_llm_smoke_builds_its_model_and_data_and_runs_the_pipeline(tmp_path):
    """Also LoRMA's run_math_lorma.sh end to end, as its README calls it (`4 42 pre rri`, the
    smoke's default arguments): the official print lines, the method and targets it trains, a
    bad MODE refused."""
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    r = subprocess.run([sys.executable, ROOT / "NLG" / "scripts" / "llm_smoke.py", "--out",
                        tmp_path, "--steps", "2"], capture_output=True, text=True, env=_env(),
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "runs" / "lorma_4_pre_rri_seed_42"
    info = json.loads((run / "run_info.json").read_text())
    assert info["method"]["method"] == "lorma" and info["trainable_params"] > 0
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log if "loss" in x][-1] == 2
    assert all(x["loss"] > 0 for x in log if "loss" in x)    # the responses were trained on
    for name in ("gsm8k_results.json", "math_results.json"):
        assert "accuracy" in json.loads((run / name).read_text())
    assert (run / "config.json").is_file() and (run / "adapter").is_dir()
    # run_math_lorma.sh's own output and settings (its official print lines: MetaMath's)
    assert "gsm8k length==== 4 , gsm8k acc==== " in r.stdout
    assert "length==== 4 , acc==== " in r.stdout and "SEED=42 only names" in r.stdout
    gsm = json.loads((run / "gsm8k_results.json").read_text())
    assert gsm["total"] == 4 and 0 <= gsm["accuracy"] <= 1 and "invalid_outputs" in gsm
    assert info["method"]["options"]["kind"] == "rri" and info["method"]["alpha"] == 8.0
    assert info["args"]["target_modules"] == ["up_proj", "down_proj", "o_proj", "gate_proj"]
    bad = subprocess.run([sys.executable, ROOT / "NLG" / "scripts" / "llm_smoke.py", "--out",
                          tmp_path, "4", "42", "middle", "rri"], capture_output=True, text=True,
                         env=_env(), timeout=600)
    assert bad.returncode == 2 and "MODE must be pre or post" in bad.stderr


def test_generated_outputs_are_ignored_by_git():
    paths = ["NLG/smoke_out/x", "NLU/smoke_out/x", "NLU/trained_models/x", "NLU/data/glue/x",
             "NLG/trained_models/x", "NLU/pretrained_checkpoints/roberta-base/x",
             "NLG/MetaMathQA/Llama3_8B_metamath40k_lorma_8_pre_rri_lr_5e_m4_seed_42/x"]
    r = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode == 128:
        pytest.skip("not a git checkout")
    assert r.stdout.split() == paths


def test_score_json_names_its_task(tmp_path):
    import score as score_step
    ref, hyp = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    ref.write_text("the cat sat .\n\na dog ran .\n")
    hyp.write_text("the cat sat .\na dog ran .\n")
    assert score_step.main(["--task", "e2e", "--ref", str(ref), "--hyp", str(hyp), "--json",
                            str(tmp_path / "s.json"), "--no-meteor", "--official", "no"]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["task"] == "e2e"


def test_lorma_interface_ignores_do_pi_as_the_official_script_and_the_readme_says_so(tmp_path):
    """LoRMA's roberta_large_plus_cola.sh MODE R DO_PI SEED runs LoRMA_+ whatever DO_PI says
    (the official plus scripts never read it); NLU/README.md said DO_PI True gives LoRMA_pi."""
    import shutil
    shutil.copy(NLU_SCRIPTS / "roberta_large_plus_cola.sh", tmp_path)
    (tmp_path / "run_glue_task.sh").write_text('echo "$METHOD_ARGS"\n')   # what it would run
    got = [subprocess.run(["bash", tmp_path / "roberta_large_plus_cola.sh", "pre", "8", do_pi,
                           "42"], capture_output=True, text=True).stdout for do_pi in ("True",
                                                                                      "False")]
    assert got[0] == got[1] and "--lorma_type rri" in got[0]
    readme = (ROOT / "NLU" / "README.md").read_text()
    line = next(x for x in readme.splitlines() if "roberta_large_plus_cola.sh MODE R DO_PI" in x)
    assert "LoRMA_+" in line and "LoRMA_pi" not in line and "no effect" in line
    example = next(x for x in readme.splitlines() if x.startswith("./roberta_large_plus_cola.sh"))
    assert "LoRMA_+" in example and "LoRMA_pi" not in example

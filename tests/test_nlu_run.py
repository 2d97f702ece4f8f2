"""run_glue.py and the NLU scripts end to end, on CPU, with a tiny random-init RoBERTa."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "NLU" / "scripts"

import loralib as lora  # noqa: E402
from nlu import run_glue  # noqa: E402
from nlu.roberta import RobertaForSequenceClassification, config_from_card, trainable_state_dict  # noqa: E402


def _env(shared_data, out, **extra):
    env = dict(os.environ, MODEL_CARD="roberta-tiny", RANDOM_INIT="1", INIT_CHECKPOINT="",
               DATA_DIR=str(shared_data / "glue"), TOKENIZER_DIR=str(shared_data / "vocab"),
               OUTPUT_DIR=str(out), MAX_STEPS="2", MAX_TRAIN_SAMPLES="32",
               MAX_EVAL_SAMPLES="32", MAX_SEQ_LENGTH="64", EVAL_STRATEGY="end", num_gpus="1",
               PYTHON=sys.executable)
    env.update(extra)
    return env


def _run(cmd, env, cwd=SCRIPTS):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_lorma_seed_command(shared_data, tmp_path):
    """LoRMA's README line `./roberta_large_plus_cola.sh pre 8 True 42`, run as written."""
    out = tmp_path / "lorma"
    r = _run(["./roberta_large_plus_cola.sh", "pre", "8", "True", "42"], _env(shared_data, out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads((out / "eval_results.json").read_text())
    assert res["task"] == "cola" and -1.0 <= res["mcc"] <= 1.0
    cfg = json.loads((out / "run_config.json").read_text())
    # DO_PI True has no effect, as in LoRMA's official plus scripts (rri always), and says so
    assert cfg["method"]["options"] == {"kind": "rri", "mode": "pre", "init": "b_zero",
                                        "dropout_site": "input"}
    assert "DO_PI=True has no effect" in r.stderr
    assert cfg["method"]["r"] == 8 and cfg["method"]["alpha"] == 4.0       # alpha = r / 2
    assert cfg["args"]["seed"] == 42 and cfg["args"]["learning_rate"] == 3e-4
    sd = torch.load(out / "pytorch_model.bin", weights_only=True)
    adapter = sorted(k for k in sd if "lora_" in k)
    assert len(adapter) == 2 * 2 * 2                                       # layers x q,v x A,B
    assert set(sd) - set(adapter) == {"classifier.dense.weight", "classifier.dense.bias",
                                      "classifier.out_proj.weight", "classifier.out_proj.bias"}
    assert "trainable params: 3,170 /" in r.stdout   # 2*2*(2*8*32) adapter + 1,122 head
    bad = _run(["./roberta_large_plus_cola.sh", "pre", "8", "maybe", "42"], _env(shared_data, out))
    assert bad.returncode == 2 and "DO_PI must be True or False" in bad.stderr


@pytest.mark.slow
def test_mtlora_mrpc_starts_from_mnli_adapter(shared_data, tmp_path):
    """MTLoRA's roberta_base_mrpc.sh: an adapter from an MNLI run (the official targets: q, v,
    intermediate, output), new 2-way head."""
    method = lora.MethodConfig(method="mtlora", r=8, alpha=16, options={"structure": "SHIM"},
                               pipeline="roberta")
    torch.manual_seed(0)
    mnli = RobertaForSequenceClassification(config_from_card("roberta-tiny", num_labels=3,
                                                             method=method))
    mnli_file = tmp_path / "mnli_adapter.bin"
    torch.save(trainable_state_dict(mnli), mnli_file)
    out = tmp_path / "mrpc"
    env = _env(shared_data, out, MNLI_ADAPTER=str(mnli_file))
    env["MTLORA_STRUCTURE"] = "SHIM"
    r = _run(["bash", "roberta_base_mrpc.sh"], env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    n_adapter = sum(1 for k in trainable_state_dict(mnli) if "lora_" in k)
    assert f"loaded: 0 backbone, {n_adapter} adapter, 0 classifier tensors" in r.stdout
    assert "classifier head of" in r.stdout and "not loaded" in r.stdout
    res = json.loads((out / "eval_results.json").read_text())
    assert {"accuracy", "f1", "acc_and_f1"} <= set(res)
    assert json.loads((out / "run_config.json").read_text())["method"]["options"]["structure"] \
        == "SHIM"
    env["MNLI_ADAPTER"] = str(tmp_path / "missing.bin")
    r = _run(["bash", "roberta_base_mrpc.sh"], env)
    assert r.returncode == 2 and "starts from the MNLI adapter" in r.stderr


def _args(shared_data, out, *extra):
    return ["--task_name", "stsb", "--data_dir", str(shared_data / "glue"),
            "--tokenizer_dir", str(shared_data / "vocab"), "--model_card", "roberta-tiny",
            "--random_init", "--max_seq_length", "64", "--max_train_samples", "24",
            "--max_eval_samples", "24", "--per_device_train_batch_size", "8",
            "--output_dir", str(out), "--seed", "3", *extra]


def test_regression_run_saves_adapter_and_head_and_reloads(shared_data, tmp_path, capsys):
    out = tmp_path / "stsb"
    first = run_glue.main(_args(shared_data, out, "--max_steps", "3", "--lora_dim", "4",
                                "--lora_alpha", "8", "--learning_rate", "1e-2"))
    assert set(first) == {"pearson", "spearmanr", "corr"}
    sd = torch.load(out / "pytorch_model.bin", weights_only=True)
    assert sorted(k for k in sd if not k.startswith("classifier.")) == sorted(
        f"roberta.encoder.layer.{i}.attention.self.{p}.lora_{m}"
        for i in range(2) for p in ("query", "value") for m in "AB")
    assert sd["classifier.out_proj.weight"].shape == (1, 32)
    assert sd["roberta.encoder.layer.0.attention.self.query.lora_B"].abs().sum() > 0   # trained
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3
    # Same seed -> same random backbone; the saved adapter + head reproduce the evaluation.
    again = run_glue.main(_args(shared_data, tmp_path / "eval", "--do_eval", "--lora_dim", "4",
                                "--lora_alpha", "8", "--adapter_checkpoint",
                                str(out / "pytorch_model.bin")))
    assert again == pytest.approx(first, abs=1e-6)
    assert f"trainable params: {2 * 2 * (2 * 4 * 32) + (32 * 32 + 32) + (32 + 1):,} /" \
        in capsys.readouterr().out
    # Without --random_init an adapter-only file is not a model: an error, not a random backbone.
    argv = [a for a in _args(shared_data, tmp_path / "x", "--do_eval", "--lora_dim", "4",
                             "--init_checkpoint", str(out / "pytorch_model.bin"))
            if a != "--random_init"]
    with pytest.raises(ValueError, match="backbone tensors missing"):
        run_glue.main(argv)


def test_full_finetuning_saves_everything(shared_data, tmp_path):
    out = tmp_path / "ft"
    run_glue.main(_args(shared_data, out, "--max_steps", "1", "--evaluation_strategy", "no"))
    sd = torch.load(out / "pytorch_model.bin", weights_only=True)
    model = RobertaForSequenceClassification(config_from_card("roberta-tiny", num_labels=1))
    assert set(sd) == set(model.state_dict())
    with pytest.raises(ValueError, match="--lora_dim 4 given, but the method is 'full'"):
        run_glue.main(_args(shared_data, out, "--method", "full", "--lora_dim", "4"))


@pytest.mark.slow
def test_two_processes_train_like_one(shared_data, tmp_path):
    """torchrun with 2 gloo processes x batch 4 gives the update of 1 process x batch 8."""
    card = tmp_path / "config.json"
    card.write_text(json.dumps({"vocab_size": 50265, "hidden_size": 32, "num_hidden_layers": 2,
                                "num_attention_heads": 4, "intermediate_size": 64,
                                "max_position_embeddings": 130, "hidden_dropout_prob": 0.0,
                                "attention_probs_dropout_prob": 0.0}))
    common = ["--task_name", "rte", "--data_dir", str(shared_data / "glue"),
              "--tokenizer_dir", str(shared_data / "vocab"), "--model_card", str(card),
              "--random_init", "--max_seq_length", "64", "--max_train_samples", "32",
              "--max_eval_samples", "16", "--max_steps", "3", "--cls_dropout", "0",
              "--lora_dim", "4", "--lora_alpha", "8", "--learning_rate", "1e-2"]
    script = str(ROOT / "NLU" / "src" / "run_glue.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run_glue.main([*common, "--per_device_train_batch_size", "8",
                   "--output_dir", str(tmp_path / "one")])
    two = _run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", script, *common, "--per_device_train_batch_size", "4",
                "--output_dir", str(tmp_path / "two")], env, cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es) x batch 4" in two.stdout
    a = torch.load(tmp_path / "one" / "pytorch_model.bin", weights_only=True)
    b = torch.load(tmp_path / "two" / "pytorch_model.bin", weights_only=True)
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    ra = json.loads((tmp_path / "one" / "eval_results.json").read_text())
    rb = json.loads((tmp_path / "two" / "eval_results.json").read_text())
    assert ra["accuracy"] == rb["accuracy"]


def test_generated_scripts_are_current_and_their_flags_parse(tmp_path):
    """The committed scripts equal the generator's output, and every script's method flags give
    the method its name promises."""
    import importlib.util   # by path: NLG/scripts has a make_scripts.py too
    spec = importlib.util.spec_from_file_location("nlu_make_scripts", SCRIPTS / "make_scripts.py")
    make_scripts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_scripts)
    names = make_scripts.main(out_dir=str(tmp_path))
    assert len(names) == 2 * 10 * 8 + 8 + 1
    expected_method = {"ft": "full", "lora": "lora", "lorma_plus": "lorma", "lorma_pi": "lorma",
                       "nola": "nola", "qnola": "nola"}
    for name in names:
        text = (tmp_path / name).read_text()
        assert (SCRIPTS / name).read_text() == text, f"{name} is stale: run make_scripts.py"
        if name == "roberta_large_plus_cola.sh":
            continue
        line = next(x for x in text.splitlines() if x.startswith("export METHOD_ARGS="))
        flags = line.split("=", 1)[1].strip('"')
        flags = flags.replace("${LORMA_MODE:-pre}", "pre").replace("${MTLORA_STRUCTURE}", "ICFM")
        flags = flags.replace("${QBITS}", "3")
        args = run_glue.build_parser().parse_args(
            ["--task_name", "rte", "--output_dir", "x", *flags.split()])
        cfg = lora.method_config_from_args(args, default="full", pipeline="roberta")
        parts = name[:-3].split("_")
        method = "_".join(parts[2:-1]) or "mtlora_icfm"     # roberta_base_<task>.sh: MTLoRA
        if method.startswith("mtlora"):
            assert cfg.method == "mtlora" and cfg.options["structure"] == method[7:].upper()
        else:
            assert cfg.method == expected_method[method], name
        if method == "lorma_pi":
            assert cfg.options["kind"] == "shift"
        if method == "qnola":
            assert cfg.options["qbits"] == 3
        if cfg.is_adapter and cfg.method != "nola":
            assert cfg.r == 8
        from_mnli = "export FROM_MNLI=1" in text
        # MRPC, RTE, STS-B start from MNLI in LoRA's and MTLoRA's scripts, not in LoRMA's
        assert from_mnli == (parts[-1] in ("mrpc", "rte", "stsb")
                             and method not in ("ft", "lorma_plus", "lorma_pi")), name


def test_adapter_record_rebuilds_the_method_and_refuses_contradicting_flags(shared_data,
                                                                            tmp_path):
    out = tmp_path / "pi"
    flags = ["--method", "lorma_pi", "--lora_dim", "4", "--lora_alpha", "8"]
    first = run_glue.main(_args(shared_data, out, "--max_steps", "2", *flags))
    record = json.loads((out / "adapter_config.json").read_text())["loralib"]
    assert record["method"] == "lorma_pi" and record["pipeline"] == "roberta"
    adapter = str(out / "pytorch_model.bin")
    again = run_glue.main(_args(shared_data, tmp_path / "e", "--do_eval",
                                "--adapter_checkpoint", adapter))       # no method flag
    assert again == pytest.approx(first, abs=1e-6)
    with pytest.raises(ValueError, match="kind 'rri' \\(checkpoint: 'shift'\\)"):
        run_glue.main(_args(shared_data, tmp_path / "x", "--do_eval", "--adapter_checkpoint",
                            adapter, "--method", "lorma_plus", "--lora_dim", "4",
                            "--lora_alpha", "8"))


@pytest.mark.parametrize("precision,flag", [("fp32", None), ("tf32", "--tf32"), ("bf16", "--bf16")])
def test_scripts_take_a_precision_setting(tmp_path, precision, flag):
    """PRECISION=fp32|tf32|bf16 (default fp32, the official runs) becomes run_glue.py's flag;
    the scripts' --help lists it with its cost; anything else is refused."""
    record = tmp_path / "argv.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" > "{record}"\n')
    fake.chmod(0o755)
    tok = tmp_path / "tok"          # the inputs run_glue_task.sh checks before it starts
    tok.mkdir()
    (tok / "vocab.json").write_text("{}")
    (tok / "merges.txt").write_text("")
    env = dict(os.environ, PYTHON=str(fake), num_gpus="1", OUTPUT_DIR=str(tmp_path / "out"), MNLI_ADAPTER="none",
               INIT_CHECKPOINT=str(fake), TOKENIZER_DIR=str(tok), DATA_DIR=str(tmp_path),
               **({} if precision == "fp32" else {"PRECISION": precision}))
    r = _run(["bash", "roberta_base_lora_rte.sh"], env)
    assert r.returncode == 0, r.stderr
    argv = record.read_text().split()
    assert argv[0].endswith("run_glue.py")
    assert {f for f in ("--tf32", "--bf16", "--fp16") if f in argv} == ({flag} if flag else set())
    assert run_glue.build_parser().parse_args(argv[1:]).tf32 == (flag == "--tf32")
    assert "PRECISION        fp32|tf32|bf16" in _run(["bash", "roberta_base_lora_rte.sh", "--help"], env).stdout
    bad = _run(["bash", "roberta_large_nola_cola.sh"], dict(env, PRECISION="fp16"))
    assert bad.returncode == 2 and "PRECISION must be fp32, tf32 or bf16, got 'fp16'" in bad.stderr

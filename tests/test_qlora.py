"""NLG/llama/qlora.py (QLoRA's / NOLA's instruction tuning) on a tiny random LLaMA quantized on
the CPU: NOLA on a 4-bit NF4 base with MMLU at --eval_steps, resuming, a 16-bit base, NOLA's
scripts run from their folders, and qlora.py's flags and defaults."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import loralib as lora
from kbit_cases import tiny_llama

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
bnb = pytest.importorskip("bitsandbytes")
tokenizers = pytest.importorskip("tokenizers")

ROOT = Path(__file__).resolve().parents[1]
LLAMA = ROOT / "NLG" / "llama"
sys.path.insert(0, str(LLAMA))
import qlora  # noqa: E402
import qlora_model  # noqa: E402


def char_tokenizer():
    """One token per character (no pad token: qlora.py's [PAD] gets added)."""
    from tokenizers import Regex, models, pre_tokenizers
    vocab = ["<unk>", "<s>", "</s>"] + [chr(c) for c in range(32, 127)] + ["\n"]
    tk = tokenizers.Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)},
                                               unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>",
                                                eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("qlora")
    tiny_llama(d / "model", tokenizer=char_tokenizer())
    rows = [{"instruction": f"Say {w}.", "input": "" if i % 3 else "loudly", "output": w}
            for i, w in enumerate(["yes", "no", "maybe", "never", "always", "soon", "later",
                                   "now"] * 2)]
    (d / "alpaca.json").write_text(json.dumps(rows))
    return d


@pytest.fixture(scope="module")
def mmlu_dir(tmp_path_factory):
    """The four shortest rows of QLoRA's zero-shot MMLU validation file (../shared)."""
    shared = Path(os.environ.get("LORA_SHARED_DIR", ROOT.parent / "shared")) / "data" / "mmlu"
    src = shared / "zero_shot_mmlu_val.json"
    if not src.is_file():
        pytest.skip(f"{src} not found: MMLU during training is tested with ../shared beside "
                    f"the checkout")
    rows = [json.loads(x) for x in src.read_text().splitlines() if x.strip()]
    d = tmp_path_factory.mktemp("mmlu")
    short = sorted(rows, key=lambda r: len(r["input"]))[:4]
    (d / "zero_shot_mmlu_val.json").write_text("".join(json.dumps(r) + "\n" for r in short))
    return d


def flags(tiny, out, *extra):
    return ["--model_name_or_path", str(tiny / "model"), "--dataset", str(tiny / "alpaca.json"),
            "--output_dir", str(out), "--per_device_train_batch_size", "2",
            "--gradient_accumulation_steps", "2", "--source_max_len", "48",
            "--target_max_len", "12", "--logging_steps", "1", "--learning_rate", "1e-2",
            *map(str, extra)]


NOLA_4BIT = ["--use_nola", "--nola_num_basis", 16, "--lora_r", 4, "--lora_alpha", 4, "--bits", 4,
             "--bf16", "--max_steps", 3, "--seed", 0]


def mmlu_flags(mmlu_dir):
    return ["--do_eval", "--evaluation_strategy", "steps", "--eval_steps", 2,
            "--eval_dataset_size", 3, "--do_mmlu_eval", "--mmlu_dataset", "mmlu-zs",
            "--mmlu_data_dir", mmlu_dir, "--mmlu_source_max_len", 160,
            "--per_device_eval_batch_size", 2]


def adapter(folder):
    from safetensors.torch import load_file
    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.slow
def test_nola_on_a_4bit_base_with_mmlu_at_eval_steps(tiny, mmlu_dir, tmp_path):
    out = tmp_path / "run"
    trainer = qlora.main(flags(tiny, out, *NOLA_4BIT, *mmlu_flags(mmlu_dir)))
    model = trainer.model
    q = model.model.layers[0].self_attn.q_proj
    assert isinstance(q, lora.kbit.KbitLayer) and isinstance(q.base_layer, bnb.nn.Linear4bit)
    assert q.base_layer.weight.quant_type == "nf4" and q.base_layer.weight.compress_statistics
    # qlora.py's casts: bf16 adapters (trained as such), fp32 norms, bf16 embeddings
    assert {p.dtype for n, p in model.named_parameters() if p.requires_grad} == {torch.bfloat16}
    assert model.model.norm.weight.dtype == torch.float32
    assert model.model.get_input_embeddings().weight.dtype == torch.bfloat16
    info = json.loads((out / "run_info.json").read_text())
    assert info["trainable_params"] == 2 * 16 * 7 * 2         # kA + kB, 7 linears x 2 layers
    assert sorted({n.rsplit(".", 1)[1] for n in info["targets"]}) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    saved = adapter(out / "adapter")
    assert saved["model.layers.1.mlp.down_proj.nola_alpha"].dtype == torch.bfloat16
    assert (out / "completed").exists()
    # MMLU at step 2 (eval_steps) and at the end (step 3): logged, and the run's results file
    res = json.loads((out / "mmlu_results.json").read_text())
    assert [h["step"] for h in res["history"]] == [2, 3] and res["step"] == 3
    assert res["total"] == 4 and res["split"] == "eval" and res["shots"] == 0
    assert res["accuracy"] == res["mmlu_eval_accuracy"] and "mmlu_loss" in res
    assert sum(s["total"] for s in res["subjects"].values()) == 4
    for subject, s in res["subjects"].items():
        assert res[f"mmlu_eval_accuracy_{subject}"] == s["accuracy"] == s["correct"] / s["total"]
    logged = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "mmlu_eval_accuracy" in r][:1] == [2]
    assert any("eval_loss" in r for r in logged)
    # resuming: a run cut after step 2 and started again ends where the whole run ended, its
    # MMLU history whole
    cut = tmp_path / "cut"
    qlora.main(flags(tiny, cut, *NOLA_4BIT, *mmlu_flags(mmlu_dir), "--stop_after_steps", 2))
    assert (cut / "checkpoint-2").is_dir() and not (cut / "completed").exists()
    qlora.main(flags(tiny, cut, *NOLA_4BIT, *mmlu_flags(mmlu_dir)))
    a, b = adapter(out / "adapter"), adapter(cut / "adapter")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((cut / "mmlu_results.json").read_text())["history"] == res["history"]
    assert qlora.main(flags(tiny, cut, *NOLA_4BIT)) is None        # completed: not again


def test_a_16bit_base_and_lora(tiny, tmp_path):
    """--bits 16: no quantization; the adapted linears' frozen weights bf16 under --bf16 (qlora.py
    casts the whole LoRA layer), other weights fp32 after k-bit preparation, norms fp32; LoRA's
    folder is PEFT's."""
    out = tmp_path / "run"
    trainer = qlora.main(flags(tiny, out, "--bits", 16, "--bf16", "--lora_r", 2,
                               "--max_steps", 1, "--adapter_dtype", "float32"))
    model = trainer.model
    q = model.model.layers[0].self_attn.q_proj
    assert not isinstance(q, lora.kbit.KbitLayer)
    assert q.weight.dtype == torch.bfloat16 and q.lora_A.dtype == torch.float32
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model.model.layers[0].input_layernorm.weight.dtype == torch.float32
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 2 and cfg["lora_alpha"] == 16


def script_env(tiny):
    return {**os.environ, "MODEL_PATH": str(tiny / "model"), "PYTHON": sys.executable,
            "OMP_NUM_THREADS": "1"}


SMALL = ["--dataset", "{data}", "--output_dir", "{out}", "--max_steps", "1", "--eval_steps", "1",
         "--source_max_len", "32", "--target_max_len", "8", "--per_device_train_batch_size", "2",
         "--gradient_accumulation_steps", "1", "--eval_dataset_size", "3",
         "--max_eval_samples", "3", "--dataloader_num_workers", "0", "--nola_num_basis", "8",
         "--lora_r", "2"]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["scripts/finetune_llama2_alpaca_7b_nola.sh",
                                    "qlora/scripts/finetune_llama2_guanaco_13b_nola.sh"])
def test_nola_scripts_run_from_their_folder(tiny, mmlu_dir, tmp_path, script):
    """NOLA's 7B 4-bit script and its 8-bit 13B one (with the --lora_modules qlora.py ignores),
    on the tiny model, shortened by flags appended to the script's own."""
    out = tmp_path / "out"
    extra = [a.format(data=tiny / "alpaca.json", out=out) for a in SMALL] + [
        "--mmlu_dataset", "mmlu-zs", "--mmlu_split", "eval", "--mmlu_data_dir", str(mmlu_dir),
        "--max_mmlu_samples", "2", "--mmlu_source_max_len", "160"]
    r = subprocess.run(["bash", str(LLAMA / script), *extra], env=script_env(tiny),
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    info = json.loads((out / "run_info.json").read_text())
    assert info["bits"] == (4 if "alpaca" in script else 8)
    assert info["method"]["method"] == "nola" and info["method"]["alpha"] == 4.0
    assert info["args"]["max_grad_norm"] == 0.9 and info["args"]["learning_rate"] == 1e-3
    assert info["trainable_params"] == 2 * 8 * 7 * 2
    assert json.loads((out / "mmlu_results.json").read_text())["total"] == 2
    if "guanaco" in script:
        assert "--lora_modules qv is ignored, as qlora.py ignores it" in r.stdout


def test_a_missing_mmlu_file_is_named_with_its_source(tiny, tmp_path):
    with pytest.raises(SystemExit, match=r"needs .*nowhere.zero_shot_mmlu_val\.json.*"
                                         r"artidoro/qlora"):
        qlora.main(flags(tiny, tmp_path / "run", "--do_eval", "--evaluation_strategy", "steps",
                         "--eval_steps", 1, "--do_mmlu_eval", "--mmlu_dataset", "mmlu-zs",
                         "--mmlu_data_dir", tmp_path / "nowhere"))
    assert not (tmp_path / "run").exists()


def parse(*argv):
    args = qlora.build_parser().parse_args(["--model_name_or_path", "m", *map(str, argv)])
    return args, qlora.method_from_args(args)


def test_qlora_flags_and_defaults():
    args, m = parse()
    assert (m.method, m.r, m.alpha, m.dropout) == ("lora", 64, 16.0, 0.0)
    assert (args.bits, args.quant_type, args.double_quant, args.optim, args.max_grad_norm,
            args.lr_scheduler_type, args.source_max_len, args.target_max_len) == \
        (4, "nf4", True, "paged_adamw_32bit", 0.3, "constant", 1024, 256)
    args, m = parse("--use_nola")
    assert (m.method, m.r, m.alpha) == ("nola", 64, 16.0)
    assert (m.options["num_basis_A"], m.options["num_basis_B"]) == (128, 128)
    assert m.options["offsets"] == "kaiming" and m.options["basis_device"] == "native"
    _, m = parse("--use_nola", "--nola_num_basis", 512, "--lora_r", 16, "--lora_alpha", 4)
    assert (m.r, m.alpha, m.options["num_basis_A"]) == (16, 4.0, 512)
    _, m = parse("--method", "lorma", "--lora_r", 8, "--lorma_type", "shift")
    assert (m.method, m.r, m.alpha, m.options["kind"]) == ("lorma", 8, 16.0, "shift")
    _, m = parse("--full_finetune", "--bits", 16)
    assert m.method == "full"
    with pytest.raises(ValueError, match="--full_finetune and --method lora disagree"):
        parse("--full_finetune", "--method", "lora")
    with pytest.raises(SystemExit):             # an unknown flag is an error, not ignored
        parse("--lora_moduls", "qv")


@pytest.mark.parametrize("argv,match", [
    (["--full_finetune"], "needs --bits 16 or 32"),
    (["--do_mmlu_eval"], "--do_mmlu_eval runs at each evaluation"),
    (["--do_eval", "--evaluation_strategy", "steps"], "needs --eval_steps"),
    (["--remove_unused_columns", "True"], "must be False"),
    (["--do_predict"], "not implemented"),
    (["--bf16", "--fp16"], "exclude each other"),
])
def test_settings_that_cannot_work_are_refused_by_flag(argv, match):
    args, m = parse("--dataset", __file__, *argv)
    with pytest.raises(ValueError, match=match):     # main() prints it as one line, exit 2
        qlora.check_setup(args, m)


def test_hub_datasets_ask_for_the_datasets_package(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "datasets" else real(name, *a))
    args, m = parse("--dataset", "alpaca")
    with pytest.raises(ValueError, match="pip install datasets"):
        qlora.check_setup(args, m)
    args, m = parse("--dataset", "alpaca", "--dataset_file", __file__)
    qlora.check_setup(args, m)          # a local copy of its rows needs no package


def test_linear_names_and_kbit_preparation_as_qlora_and_peft(tiny):
    """find_all_linear_names on 4-bit, 8-bit and 16-bit bases; the k-bit preparation against
    PEFT's own prepare_model_for_kbit_training."""
    peft = pytest.importorskip("peft")
    from kbit_cases import load_quantized
    seven = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    for bits, kind in ((4, "nf4-dq"), (8, "int8")):
        model = load_quantized(tiny / "model", kind, torch.bfloat16)
        assert qlora_model.linear_names(model, bits) == seven
    plain = transformers.AutoModelForCausalLM.from_pretrained(tiny / "model")
    assert qlora_model.linear_names(plain, 16) == seven
    assert qlora_model.linear_names(load_quantized(tiny / "model", "nf4"), 8) == []
    ours, theirs = (load_quantized(tiny / "model", "nf4-dq", torch.bfloat16) for _ in range(2))
    qlora_model.prepare_for_kbit_training(ours, True, {"use_reentrant": True})
    peft.prepare_model_for_kbit_training(theirs, use_gradient_checkpointing=True,
                                         gradient_checkpointing_kwargs={"use_reentrant": True})
    state = lambda m: {n: (p.dtype, p.requires_grad) for n, p in m.named_parameters()}  # noqa
    assert state(ours) == state(theirs)
    assert ours.is_gradient_checkpointing and theirs.is_gradient_checkpointing
    x = torch.randint(3, 90, (1, 5))
    assert ours.get_input_embeddings()(x).requires_grad      # the input grads of checkpointing


def test_4bit_weight_bytes_have_the_closed_form_of_the_estimate(tiny):
    """What benchmarks/bench_qlora_memory.py --estimate counts for LLaMA-2's 4-bit base (packed
    codes, block maxima, double quantization's second level) is what bitsandbytes holds."""
    from kbit_cases import load_quantized
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_qlora_memory as bench
    for kind, double in (("nf4-dq", True), ("nf4", False), ("fp4-dq", True)):
        model = load_quantized(tiny / "model", kind)
        layers = [m for m in model.modules() if lora.kbit.kind(m) == "4bit"]
        assert len(layers) == 14
        assert sum(bench.weight_bytes(m) for m in layers) == \
            sum(bench.nf4_bytes(m.in_features * m.out_features, double) for m in layers)


# NOLA's scripts (UCDvision/NOLA @ 03c7027, llama/scripts/finetune_llama2_alpaca_*.sh and
# llama/qlora/scripts/finetune_llama2_guanaco_*.sh), transcribed: the flags all twelve share ...
COMMON = {"--output_dir": "./output/llama-2-guanaco-7b", "--logging_steps": "5",
          "--save_strategy": "steps", "--data_seed": "42", "--save_steps": "500",
          "--save_total_limit": "40", "--evaluation_strategy": "steps",
          "--eval_dataset_size": "1024", "--max_eval_samples": "1000",
          "--per_device_eval_batch_size": "1", "--max_new_tokens": "32",
          "--dataloader_num_workers": "8", "--group_by_length": None,
          "--logging_strategy": "steps", "--remove_unused_columns": "False", "--do_train": None,
          "--do_eval": None, "--do_mmlu_eval": None, "--mmlu_split": "test",
          "--quant_type": "nf4", "--bf16": None, "--warmup_ratio": "0.03",
          "--lr_scheduler_type": "constant", "--gradient_checkpointing": None,
          "--dataset": "alpaca", "--source_max_len": "384", "--target_max_len": "512",
          "--max_steps": "200", "--eval_steps": "200", "--adam_beta2": "0.999",
          "--lora_dropout": "0.0", "--weight_decay": "0.0", "--seed": "0"}
# ... and theirs: model, bits, NOLA, r, alpha, batch x accumulation, learning rate, clipping
PER_SCRIPT = {
    "scripts/finetune_llama2_alpaca_7b_lora.sh": ("7b", 4, False, 1, 16, 16, 16, 2e-4, 0.9),
    "scripts/finetune_llama2_alpaca_7b_nola.sh": ("7b", 4, True, 16, 4, 16, 16, 1e-3, 0.9),
    "scripts/finetune_llama2_alpaca_13b_lora.sh": ("13b", 4, False, 1, 16, 16, 16, 1e-4, 0.9),
    "scripts/finetune_llama2_alpaca_13b_nola.sh": ("13b", 4, True, 16, 4, 16, 16, 1e-3, 0.9),
    "scripts/finetune_llama2_alpaca_70b_lora.sh": ("70b", 4, False, 1, 16, 2, 128, 1e-4, 0.9),
    "scripts/finetune_llama2_alpaca_70b_nola.sh": ("70b", 4, True, 16, 4, 2, 128, 1e-3, 0.9),
    "qlora/scripts/finetune_llama2_guanaco_7b_lora.sh": ("7b", 8, False, 1, 16, 16, 16, 2e-4,
                                                         0.9),
    "qlora/scripts/finetune_llama2_guanaco_7b_nola.sh": ("7b", 8, True, 16, 4, 16, 16, 1e-3,
                                                         0.9),
    "qlora/scripts/finetune_llama2_guanaco_13b_lora.sh": ("13b", 8, False, 1, 16, 16, 16, 1e-4,
                                                          0.3),
    "qlora/scripts/finetune_llama2_guanaco_13b_nola.sh": ("13b", 8, True, 16, 4, 16, 16, 1e-3,
                                                          0.9),
    "qlora/scripts/finetune_llama2_guanaco_70b_lora.sh": ("70b", 8, False, 1, 16, 2, 128, 1e-4,
                                                          0.9),
    "qlora/scripts/finetune_llama2_guanaco_70b_nola.sh": ("70b", 4, True, 16, 4, 2, 128, 1e-3,
                                                          0.3),
}


def script_flags(path):
    """{flag: value or None} of the qlora.py command in a script."""
    text = path.read_text()
    words = " ".join(line.strip().rstrip("\\") for line in
                     text.split("qlora.py \\\n", 1)[1].splitlines()).split()
    out, i = {}, 0
    while i < len(words):
        flag = words[i]
        if flag == '"$@"':
            i += 1
            continue
        value = words[i + 1].strip("'\"") if i + 1 < len(words) and \
            not words[i + 1].startswith("--") and words[i + 1] != '"$@"' else None
        out[flag] = value
        i += 1 if value is None else 2
    return out, text


@pytest.mark.parametrize("script", sorted(PER_SCRIPT))
def test_the_twelve_scripts_are_nola_as_written(script):
    got, text = script_flags(LLAMA / script)
    size, bits, nola, r, alpha, batch, accum, lr, clip = PER_SCRIPT[script]
    want = {**COMMON, "--model_name_or_path": f"${{MODEL_PATH:-meta-llama/Llama-2-{size}-hf}}",
            "--bits": str(bits), "--lora_r": str(r), "--lora_alpha": str(alpha),
            "--per_device_train_batch_size": str(batch),
            "--gradient_accumulation_steps": str(accum)}
    if nola:
        want.update({"--use_nola": None, "--nola_num_basis": "512"})
    if script.endswith("guanaco_13b_nola.sh"):
        want["--lora_modules"] = "qv"           # guanaco_13b_nola.sh:26, ignored by qlora.py
    lr_got, clip_got = got.pop("--learning_rate"), got.pop("--max_grad_norm")
    assert got == want
    assert (float(lr_got), float(clip_got)) == (lr, clip)
    assert text.rstrip().endswith('"$@"') and 'cd "$(dirname "$0")/.."' in text
    assert (LLAMA / script).stat().st_mode & 0o111      # executable

"""NLG/MetaMathQA: LoRMA's math pipeline on a tiny random LLaMA (saved with save_pretrained,
a tokenizer built from the GPT-2 BPE files), offline: data handling, every method through
train_math_lorma.py, run_math_lorma.sh's checks, resume, two processes, answer extraction."""
import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import loralib as lora

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

ROOT = Path(__file__).resolve().parents[1]
MATH = ROOT / "NLG" / "MetaMathQA"

import answers  # noqa: E402
import llm_sharding  # noqa: E402
import llm_trainer  # noqa: E402
import math_data  # noqa: E402
import train_math_lorma  # noqa: E402


@pytest.fixture(scope="module")
def llm(tmp_path_factory, shared_data):
    d = tmp_path_factory.mktemp("llm")
    tok = transformers.GPT2TokenizerFast(vocab=str(shared_data / "vocab" / "encoder.json"),
                                         merges=str(shared_data / "vocab" / "vocab.bpe"))
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   vocab_size=len(tok), max_position_embeddings=256,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(d / "base")
    tok.save_pretrained(d / "base")
    mathqa = [{"query": f"What is {a} plus {b}?\nShow the work.",
               "response": f"{a} + {b} = {a + b}. The answer is: {a + b}"}
              for a in range(4) for b in range(3)]
    (d / "mathqa.json").write_text(json.dumps(mathqa))
    alpaca = [{"instruction": f"Say {w}.", "input": "" if i % 2 else "loudly", "output": w}
              for i, w in enumerate(["yes", "no", "maybe", "never", "always", "soon"])]
    (d / "alpaca.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca))
    gsm = [{"query": f"Tom has {a} apples and gets {b}. How many?",
            "response": f"{a} + {b} = {a + b}\n#### {a + b}"} for a in range(3) for b in range(2)]
    (d / "gsm8k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gsm))
    mth = [{"instruction": f"Compute ${a}+1$.", "output": f"So $\\boxed{{{a + 1}}}$."}
           for a in range(3)]
    (d / "math.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mth))
    return d


@pytest.fixture(scope="module")
def llm_bf16(llm):
    """The tiny model saved in bf16, as Llama-3's checkpoints are."""
    d = llm / "base_bf16"
    if not d.exists():
        transformers.AutoModelForCausalLM.from_pretrained(llm / "base", dtype=torch.float32) \
            .to(torch.bfloat16).save_pretrained(d)
        transformers.AutoTokenizer.from_pretrained(llm / "base").save_pretrained(d)
    return d


def train(llm, out, *extra, data="mathqa.json"):
    train_math_lorma.main(["--model_name_or_path", str(llm / "base"),
                           "--data_path", str(llm / data), "--output_dir", str(out),
                           "--per_device_train_batch_size", "2", "--learning_rate", "1e-2",
                           "--max_steps", "2", "--model_max_length", "64", "--logging_steps", "1",
                           *map(str, extra)])
    return json.loads((out / "run_info.json").read_text())


# ---------------------------------------------------------------------------- data

def test_data_as_the_official_script(llm):
    rows = math_data.load_examples(str(llm / "mathqa.json"), 5)
    raw = json.loads((llm / "mathqa.json").read_text())
    want = random.Random(42).sample(raw, len(raw))[:5]      # random.seed(42); random.sample
    assert [r["output"] for r in rows] == [w["response"] for w in want]
    assert rows[0]["instruction"] == want[0]["query"].split("\n")[0]
    assert rows[0]["input"] == "Show the work."
    assert math_data.prompt(rows[0]).endswith("### Input:\nShow the work.\n\n### Response:")
    alp = math_data.load_examples(str(llm / "alpaca.jsonl"), 100)
    no_input = next(r for r in alp if not r["input"])
    assert math_data.prompt(no_input) == math_data.PROMPT_NO_INPUT.format(**no_input)
    tok = transformers.AutoTokenizer.from_pretrained(llm / "base")
    tok.pad_token = tok.eos_token
    batch = math_data.Collator(tok, 256)(rows[:2])
    src = tok(math_data.prompt(rows[0]))["input_ids"]
    full = tok(math_data.prompt(rows[0]) + rows[0]["output"] + tok.eos_token)["input_ids"]
    n = len(full)
    assert batch["input_ids"][0, :n].tolist() == full and full[-1] == tok.eos_token_id
    assert (batch["labels"][0, :len(src)] == -100).all()                # loss on the response
    assert batch["labels"][0, len(src):n].tolist() == full[len(src):]    # ... and the EOS
    with pytest.raises(ValueError, match="row 2 lacks"):
        bad = llm / "bad.json"
        bad.write_text(json.dumps([{"query": "a", "response": "b"}, {"query": "c"}]))
        math_data.load_examples(str(bad), 10)


def test_a_max_length_that_cuts_every_response_is_an_error(llm, tmp_path):
    """Before: every label was -100 and the run trained on nothing, saying loss 0."""
    rows = math_data.load_examples(str(llm / "alpaca.jsonl"), 100)
    tok = transformers.AutoTokenizer.from_pretrained(llm / "base")
    tok.pad_token = tok.eos_token
    n_src = [len(tok(math_data.prompt(r))["input_ids"]) for r in rows]
    assert min(n_src) < max(n_src)              # prompts with and without an input
    with pytest.raises(ValueError, match=f"--model_max_length {min(n_src)}: every one of the "
                                         f"first {len(rows)} examples.*raise --model_max_length"):
        math_data.responses_cut(tok, rows, min(n_src))
    assert math_data.responses_cut(tok, rows, max(n_src)) == n_src.count(max(n_src))
    assert math_data.responses_cut(tok, rows, max(n_src) + 1) == 0
    with pytest.raises(ValueError, match=f"--model_max_length {min(n_src)}: a batch of 2"):
        math_data.Collator(tok, min(n_src))(rows[:2])
    with pytest.raises(SystemExit, match=f"train_math_lorma.py: --model_max_length {min(n_src)}"):
        train(llm, tmp_path / "cut", "--model_max_length", min(n_src), data="alpaca.jsonl")
    assert not (tmp_path / "cut" / "config.json").exists()


@pytest.mark.parametrize("flag,tail", [("--resume", ["--resume"]), (None, [])])
def test_ctrl_c_in_llm_training_names_the_step_and_the_command(tmp_path, monkeypatch, flag, tail):
    """train_math_lorma.py (continues with --resume) and qlora.py (the same command resumes)."""
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")

    class Stopped:
        state = SimpleNamespace(global_step=5, max_steps=20)

        def train(self, resume_from_checkpoint=None):
            raise KeyboardInterrupt

    monkeypatch.setattr(sys, "argv", ["train_math_lorma.py", "--output_dir", "o"])
    monkeypatch.delenv("LORA_RESUME_COMMAND", raising=False)
    with pytest.raises(KeyboardInterrupt) as e:
        llm_trainer.train(Stopped(), None, str(tmp_path), "--resume_every 2 steps", flag)
    assert str(e.value) == ("stopped by Ctrl-C after step 5 of 20; the resumable state holds "
                            "step 4 (saved every --resume_every 2 steps); continue with: "
                            + " ".join(["python", "train_math_lorma.py", "--output_dir", "o"]
                                       + tail))


# ---------------------------------------------------------------------------- training

@pytest.mark.parametrize("flags", [
    ["--lorma_r", 4, "--lorma_alpha", 8, "--lorma_mode", "pre", "--rank_inflation", "rri"],
    ["--lorma_r", 4, "--lorma_alpha", 8, "--lorma_mode", "post", "--rank_inflation", "shift"],
    ["--lorma_r", 4, "--lorma_alpha", 8, "--rank_inflation", "none"],
    ["--method", "lora", "--lora_dim", 4, "--lora_alpha", 8],
    ["--method", "mtlora", "--lora_dim", 4, "--mtlora_structure", "CTCM"],
    ["--method", "nola", "--nola_rank", 4, "--nola_num_basis", 16],
    ["--method", "nola", "--nola_rank", 4, "--nola_num_basis", 16, "--qnola", "--qbits", 3],
    ["--method", "full"],
], ids=["lorma-rri", "lorma-shift-post", "lorma-none", "lora", "mtlora", "nola", "qnola", "full"])
def test_every_method_trains_merges_and_saves(llm, tmp_path, flags):
    out = tmp_path / "run"
    info = train(llm, out, *flags, "--target_modules", "q_proj", "v_proj", "down_proj",
                 data="alpaca.jsonl" if "lora" in flags else "mathqa.json")
    assert info["steps"] == 2 and info["trainable_params"] > 0
    merged = transformers.AutoModelForCausalLM.from_pretrained(out)
    base = transformers.AutoModelForCausalLM.from_pretrained(llm / "base")
    assert not any(k for k in merged.state_dict() if "lora_" in k or "nola_" in k)
    w = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[w], base.state_dict()[w])   # the update is in
    if "full" in flags:
        assert info["trainable_params"] == info["total_params"]
        return
    assert torch.equal(merged.state_dict()["model.layers.0.self_attn.k_proj.weight"],
                       base.state_dict()["model.layers.0.self_attn.k_proj.weight"])
    meta = json.loads((out / "adapter" / "adapter_config.json").read_text())["loralib"]
    assert meta["target_modules"] == ["q_proj", "v_proj", "down_proj"]
    assert [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()
            ][:2] == [1, 2]
    assert list((out / "trainer" / "runs").rglob("events.out.tfevents.*"))


def _stored_dtypes(folder, name):
    from safetensors.torch import load_file
    return {k: v.dtype for k, v in load_file(str(folder / name)).items()}


@pytest.mark.parametrize("torch_dtype", [None, "bfloat16"], ids=["default", "bf16-base"])
def test_a_bf16_checkpoint_trains_fp32_adapters_and_moments(llm, llm_bf16, tmp_path,
                                                             torch_dtype):
    """transformers 5 loads a checkpoint in its own dtype: the default --torch_dtype float32
    gives the official recipe (fp32 weights, bf16 autocast); --torch_dtype bfloat16 a bf16 base;
    the adapters and their Adam moments are fp32 either way."""
    out = tmp_path / "run"
    flags = ["--torch_dtype", torch_dtype] if torch_dtype else []
    trainer = train_math_lorma.main([
        "--model_name_or_path", str(llm_bf16), "--data_path", str(llm / "mathqa.json"),
        "--output_dir", str(out), "--per_device_train_batch_size", "2", "--max_steps", "2",
        "--model_max_length", "64", "--learning_rate", "1e-2", "--bf16", "True",
        "--lorma_r", "4", "--lorma_alpha", "8", *flags])
    opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    params = [p for g in opt.param_groups for p in g["params"]]
    assert params and all(p.dtype == torch.float32 for p in params)
    moments = [v for p in params for k, v in opt.state[p].items() if k.startswith("exp_avg")]
    assert len(moments) == 2 * len(params) and all(m.dtype == torch.float32 for m in moments)
    saved = _stored_dtypes(out / "adapter", "adapter_model.safetensors")
    assert saved and set(saved.values()) == {torch.float32}
    base = torch.bfloat16 if torch_dtype else torch.float32
    merged = _stored_dtypes(out, "model.safetensors")
    assert set(merged.values()) == {base}
    w = "model.layers.0.self_attn.q_proj.weight"
    before = transformers.AutoModelForCausalLM.from_pretrained(llm_bf16).state_dict()[w]
    after = transformers.AutoModelForCausalLM.from_pretrained(out).state_dict()[w]
    assert not torch.equal(after.to(before.dtype), before)        # the update is in


def _adapter_grads(llm, *flags):
    args = train_math_lorma.build_parser().parse_args([
        "--model_name_or_path", str(llm / "base"), "--data_path", "unused", "--output_dir",
        "unused", "--lorma_r", "4", "--lorma_alpha", "8", "--target_modules", "q_proj",
        "v_proj", "down_proj", *flags])
    method = train_math_lorma.method_from_args(args)
    model = transformers.AutoModelForCausalLM.from_pretrained(llm / "base", dtype=torch.float32)
    torch.manual_seed(0)          # the adapters' initial draw
    train_math_lorma.prepare_model(args, model, method)
    with torch.no_grad():     # away from the identity, so that every factor has a gradient
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    model.train()
    ids = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(2))
    model(input_ids=ids, labels=ids).loss.backward()
    return model, {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_adapter_gradients(llm, reentrant):
    plain_model, plain = _adapter_grads(llm)
    model, ckpt = _adapter_grads(llm, "--gradient_checkpointing", "True",
                                 "--gradient_checkpointing_kwargs",
                                 json.dumps({"use_reentrant": reentrant}))
    assert model.model.gradient_checkpointing and not plain_model.model.gradient_checkpointing
    assert plain.keys() == ckpt.keys() and len(plain) == 2 * 3 * 2      # A, B x 3 x 2 layers
    for n in plain:
        assert ckpt[n] is not None, n
        torch.testing.assert_close(ckpt[n], plain[n], rtol=1e-5, atol=1e-7)


def test_resume_continues_a_stopped_run_exactly(llm, tmp_path):
    flags = ["--lorma_r", 4, "--lorma_alpha", 8, "--max_steps", 4, "--resume_every", 2,
             "--learning_rate", 5e-2]
    train(llm, tmp_path / "whole", *flags)
    train_math_lorma.main(["--model_name_or_path", str(llm / "base"), "--data_path",
                           str(llm / "mathqa.json"), "--output_dir", str(tmp_path / "cut"),
                           "--per_device_train_batch_size", "2", "--model_max_length", "64",
                           "--stop_after_steps", "2", *map(str, flags)])
    assert not (tmp_path / "cut" / "config.json").exists()
    train(llm, tmp_path / "cut", *flags, "--resume")
    a = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "whole").state_dict()
    b = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "cut").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SystemExit, match="already holds a trained model"):
        train(llm, tmp_path / "whole", *flags)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PARALLEL = ["--max_steps", "2", "--model_max_length", "64", "--lorma_r", "4",
            "--lorma_alpha", "8", "--learning_rate", "5e-2", "--logging_steps", "1"]


@pytest.fixture(scope="module")
def one_process(llm, tmp_path_factory):
    """The reference of the several-process runs: one process, the global batch of 4."""
    out = tmp_path_factory.mktemp("one") / "run"
    train_math_lorma.main(["--model_name_or_path", str(llm / "base"), "--data_path",
                           str(llm / "mathqa.json"), "--output_dir", str(out),
                           "--per_device_train_batch_size", "4", *PARALLEL])
    return out


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _same_run(one, two, atol):
    log = lambda d: [json.loads(x) for x in (d / "train_log.jsonl").read_text().splitlines()]  # noqa
    losses = lambda d: [r["loss"] for r in log(d) if "loss" in r]        # noqa: E731
    assert losses(two) == pytest.approx(losses(one), rel=1e-5) and len(losses(one)) == 2
    a = transformers.AutoModelForCausalLM.from_pretrained(one).state_dict()
    b = transformers.AutoModelForCausalLM.from_pretrained(two).state_dict()
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol) for k in a)


@pytest.mark.slow
def test_two_gloo_processes_equal_one(llm, one_process, tmp_path):
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
                          str(MATH / "train_math_lorma.py"), "--model_name_or_path",
                          str(llm / "base"), "--data_path", str(llm / "mathqa.json"),
                          *PARALLEL, "--output_dir", str(tmp_path / "two"),
                          "--per_device_train_batch_size", "2"], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    _same_run(one_process, tmp_path / "two", atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["torchrun-fsdp1", "accelerate-fsdp.yaml"])
def test_fsdp_trainer_path_equals_one_process(llm, one_process, tmp_path, how):
    """Two gloo processes under FSDP through the Trainer (tests/llm_trainer_fsdp.py lets
    accelerate shard CPU processes): FSDP1 from --fsdp / --fsdp_config, and FSDP2 from the
    shipped accelerate config. Losses, the adapter rank 0 saved, and the model merged on a
    fresh base equal one process's; no resumable state is left."""
    shim = str(ROOT / "tests" / "llm_trainer_fsdp.py")
    out = tmp_path / "two"
    flags = ["--model_name_or_path", str(llm / "base"), "--data_path", str(llm / "mathqa.json"),
             *PARALLEL, "--output_dir", str(out), "--per_device_train_batch_size", "2"]
    if how == "torchrun-fsdp1":   # sync_module_states: FSDP1 cannot broadcast on CPU
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", shim, *flags,
               "--fsdp", "full_shard auto_wrap", "--fsdp_config",
               json.dumps({"version": 1, "sync_module_states": False})]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(MATH / "fsdp.yaml"), "--num_processes", "2", "--main_process_port",
               str(_free_port()), shim, *flags]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    info = json.loads((out / "run_info.json").read_text())
    assert info["sharding"] == ("fsdp1" if how == "torchrun-fsdp1" else "fsdp2")
    _same_run(one_process, out, atol=1e-6)
    from safetensors.torch import load_file
    got = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    want = load_file(str(one_process / "adapter" / "adapter_model.safetensors"))
    assert got.keys() == want.keys() and all(got[k].numel() > 0 for k in got)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
    assert not list((out / "trainer").glob("checkpoint-*"))


# ---------------------------------------------------------------------------- multi-GPU setups



def test_deepspeed_zero3_is_refused_at_start_naming_fsdp(tmp_path, monkeypatch):
    for k in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE",
              "ACCELERATE_DEEPSPEED_CONFIG_FILE"):
        monkeypatch.delenv(k, raising=False)
    ds3 = tmp_path / "ds3.json"
    ds3.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    for config in (str(ds3), ds3.read_text(), {"zero_optimization": {"stage": 3}}):
        with pytest.raises(SystemExit, match="ZeRO stage 3.*FSDP"):
            llm_sharding.refuse_zero3(config, {})
    llm_sharding.refuse_zero3({"zero_optimization": {"stage": 2}}, {})      # ZeRO-1/2 go through
    llm_sharding.refuse_zero3(None, {})
    with pytest.raises(SystemExit, match="accelerate config.*FSDP"):
        llm_sharding.refuse_zero3(None, {"ACCELERATE_USE_DEEPSPEED": "true",
                                     "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"})
    with pytest.raises(SystemExit, match="accelerate config.*FSDP"):
        llm_sharding.refuse_zero3(None, {"ACCELERATE_USE_DEEPSPEED": "true",
                                     "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(ds3)})
    with pytest.raises(ValueError, match="--deepspeed: .*nope.json: no such"):
        llm_sharding.refuse_zero3(str(tmp_path / "nope.json"), {})
    with pytest.raises(SystemExit, match="FSDP"):     # what got past the flags: the plugin
        llm_sharding.check_trainer_sharding(SimpleNamespace(
            deepspeed_plugin=SimpleNamespace(zero_stage=3), fsdp_plugin=None))
    # the script stops before it reads the data or loads a model
    with pytest.raises(SystemExit, match="ZeRO stage 3"):
        train_math_lorma.main(["--model_name_or_path", str(tmp_path / "no-model"),
                               "--data_path", str(tmp_path / "no-data.json"), "--output_dir",
                               str(tmp_path / "out"), "--deepspeed", str(ds3)])
    assert not (tmp_path / "out").exists()


def test_trainer_fsdp1_needs_use_orig_params(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin as Plugin
    state = lambda plugin: SimpleNamespace(fsdp_plugin=plugin, deepspeed_plugin=None)  # noqa
    with pytest.raises(SystemExit, match="use_orig_params=True"):
        llm_sharding.check_trainer_sharding(state(Plugin(fsdp_version=1, use_orig_params=False)))
    monkeypatch.setenv("FSDP_VERSION", "1")      # accelerate launch's FSDP1 default: False
    monkeypatch.delenv("FSDP_USE_ORIG_PARAMS", raising=False)
    with pytest.raises(SystemExit, match="use_orig_params=True"):
        llm_sharding.check_trainer_sharding(state(Plugin()))
    assert llm_sharding.check_trainer_sharding(
        state(Plugin(fsdp_version=1, use_orig_params=True))) == "fsdp1"
    assert llm_sharding.check_trainer_sharding(state(Plugin(fsdp_version=2))) == "fsdp2"
    assert llm_sharding.check_trainer_sharding(state(None)) is None


def _args(llm, out, *flags):
    return train_math_lorma.build_parser().parse_args([
        "--model_name_or_path", str(llm / "base"), "--data_path", str(llm / "mathqa.json"),
        "--output_dir", str(out), "--lorma_r", "4", "--lorma_alpha", "8", *map(str, flags)])


def test_trainer_save_writes_the_state_dict_it_is_given(llm, tmp_path):
    """Under FSDP the Trainer gathers the state dict and hands it to _save: the adapter must
    come from it, not from the (sharded) model."""
    args = _args(llm, tmp_path / "run", "--max_steps", 1)
    method = train_math_lorma.method_from_args(args)
    tok, model = train_math_lorma.load_model(args)
    train_math_lorma.prepare_model(args, model, method)
    trainer = train_math_lorma.make_trainer(args, model, tok, [], str(tmp_path / "run"))
    given = {k: (v + 1 if lora.is_adapter_key(k) else v) for k, v in model.state_dict().items()}
    trainer._save(str(tmp_path / "ckpt"), state_dict=given)
    saved = lora.adapter_io._load_tensors(str(tmp_path / "ckpt"))
    want = {k: v for k, v in given.items() if lora.is_adapter_key(k)}
    assert saved.keys() == want.keys()
    assert all(torch.equal(saved[k], want[k]) for k in want)
    trainer._save(str(tmp_path / "plain"))              # none given: the model's own adapter
    own = lora.adapter_io._load_tensors(str(tmp_path / "plain"))
    assert all(torch.equal(own[k], model.state_dict()[k]) for k in want)
    with pytest.raises(KeyError, match="lacks adapter key"):
        trainer._save(str(tmp_path / "bad"), state_dict={"lm_head.weight": torch.zeros(1)})


def test_merging_the_saved_adapter_on_a_fresh_base_equals_merging_in_place(llm, tmp_path):
    """What rank 0 does under FSDP (the sharded model cannot merge in place)."""
    out = tmp_path / "run"
    train(llm, out, "--lorma_r", 4, "--lorma_alpha", 8, "--target_modules", "q_proj", "v_proj")
    tok, fresh = train_math_lorma._merge_on_unsharded_copy(_args(llm, out), str(out / "adapter"))
    in_place = transformers.AutoModelForCausalLM.from_pretrained(out).state_dict()
    got = fresh.state_dict()
    assert got.keys() == in_place.keys() and len(tok) == len(
        transformers.AutoTokenizer.from_pretrained(out))
    for k in in_place:
        torch.testing.assert_close(got[k], in_place[k], rtol=0, atol=0)


def test_tf32_passes_through_and_needs_a_gpu(llm, tmp_path):
    assert train_math_lorma.training_kwargs(_args(llm, tmp_path, "--tf32", "True"),
                                            str(tmp_path))["tf32"] is True
    assert "tf32" not in train_math_lorma.training_kwargs(_args(llm, tmp_path), str(tmp_path))
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="--tf32 needs an NVIDIA GPU"):
            train(llm, tmp_path / "tf32", "--tf32", "True")


def test_fsdp_setups_that_cannot_work_are_refused_at_start(llm, tmp_path, monkeypatch):
    """One process cannot shard; under FSDP there is no resumable state and no full
    fine-tuning here."""
    with pytest.raises(SystemExit, match="several GPU processes"):
        train(llm, tmp_path / "fsdp", "--fsdp", "full_shard auto_wrap", "--fsdp_config",
              json.dumps({"version": 2}))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")        # accelerate launch's FSDP config
    with pytest.raises(SystemExit, match="several GPU processes"):
        train(llm, tmp_path / "fsdp2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match="no resumable state"):
        train(llm, tmp_path / "fsdp3", "--resume")
    with pytest.raises(SystemExit, match="--method full under FSDP"):
        train(llm, tmp_path / "fsdp4", "--method", "full")


# ---------------------------------------------------------------------------- the script

# run_math_lorma.sh end to end (LoRMA's README command): tests/test_smoke_modes.py, through
# NLG/scripts/llm_smoke.py, which runs it on a tiny model.


def test_run_math_lorma_precision_setting_is_checked(llm):
    env = {**os.environ, "DATA_PATH": str(llm / "mathqa.json"), "PRECISION": "fp16"}
    bad = subprocess.run(["./run_math_lorma.sh", "4", "42", "pre", "rri"], cwd=MATH, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "PRECISION must be bf16, tf32 or fp32" in bad.stderr


# ---------------------------------------------------------------------------- answers

@pytest.mark.parametrize("completion,expected", [
    ("so 3 + 4 = 7. The answer is: 7", 7),
    ("The answer is: 1,234", 1234),
    ("The answer is: 1,234,567", 1234),          # one separator only, as upstream
    ("The answer is: 7/2", 4), ("The answer is: 5/2", 2),   # round half to even
    ("The answer is: 2.5", 2), ("The answer is: 3.5", 4),
    ("The answer is: -3/4", -1), ("The answer is: 3/0", 3),
    ("The answer is: x/4", None), ("The answer is: $1,234.50", 1234),
    ("The answer is: .5", 0), ("The answer is: 5 The answer is: 6", 6),
    ("The answer is: none", None), ("no marker 42", None),
])
def test_gsm8k_answer_extraction(completion, expected):
    from eval_gsm8k import extract_answer_number
    assert extract_answer_number(completion) == expected


@pytest.mark.parametrize("a,b,equal", [
    ("\\frac12", "\\frac{1}{2}", True), ("\\dfrac{1}{2}", "0.5", True), ("3/4", "\\frac{3}{4}", True),
    ("x = 5", "5", True), ("5^\\circ", "5", True), ("\\$10", "10", True), ("50\\%", "50", True),
    ("\\left(1,2\\right)", "(1,2)", True), ("\\sqrt2", "\\sqrt{2}", True), (".5", "0.5", True),
    ("10 \\text{ cm}", "10", True), ("\\pi/2", "\\pi / 2", False), ("3", "4", False),
    (None, "1", False),
])
def test_math_equivalence(a, b, equal):
    assert answers.is_equiv(a, b) == equal


def test_math_boxed_extraction():
    assert answers.remove_boxed(answers.last_boxed_only_string(
        "first \\boxed{1} then \\boxed{\\frac{a}{b}} end")) == "\\frac{a}{b}"
    assert answers.last_boxed_only_string("no box") is None
    assert answers.last_boxed_only_string("\\boxed{open") is None
    assert answers.remove_boxed("\\fbox{3}") is None
    assert answers.math_prediction("work. The answer is: 12.\nmore") == "12"


def test_divergence_stops_the_llm_run(llm, tmp_path):
    with pytest.raises(SystemExit, match="(loss is nan|diverged by step)"):
        train(llm, tmp_path / "nan", "--method", "lora", "--lora_dim", 4, "--learning_rate", 1e12,
              "--max_grad_norm", 0, "--max_steps", 4, "--resume_every", 1)
    assert not (tmp_path / "nan" / "config.json").exists()

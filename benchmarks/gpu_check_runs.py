"""Several processes, and the NLU and LLM pipelines, for benchmarks/gpu_check.py.

distributed: gpt2_ft.py under torchrun, 2 processes x batch 4 (NCCL on 2 GPUs; gloo on a CPU),
against one process with batch 8 on the same data: the same losses (train and validation, the
latter an all-reduce) and the same final adapter. With one GPU torchrun starts one process
(which needs no process group), so an NCCL group of one is also built here: all_reduce_sum,
broadcast_state (what --resume sends to every rank), gather_objects and a DDP training step
against the plain model.

nlu: one run_glue.py run (2 steps, LoRA on q, v, RoBERTa-base's shape with random weights on a
GPU, in bf16) on an SST-2-shaped file. llm: one train_math_lorma.py run (2 steps, LoRA on q, v)
on a small random Llama saved with save_pretrained; on a GPU with a bf16 base (--torch_dtype
bfloat16 --bf16 True), whose adapters and optimizer must stay fp32. Both synthesize their data
and a byte-level tokenizer (every byte one token, no merges), so they need no download.
"""
import datetime
import json
import math
import os
import random
import sys

import torch

from gpu_check_core import (ROOT, Setting, call_main, e2e_examples, free_port, python, run_command,
                            write_jsonl)
from gpu_check_train import make_batches


def _losses(work_dir, name):
    path = work_dir / name
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def _adapter(path):
    import loralib as lora
    sd = torch.load(path, map_location="cpu", weights_only=True)["model_state_dict"]
    return {k: v for k, v in sd.items() if lora.is_adapter_key(k)}


def check_distributed(setting: Setting, part):
    from nlg import gpt2_ft
    procs = 2 if not setting.gpu or setting.gpus >= 2 else 1
    if setting.gpu and procs == 1:
        setting.skip("two NCCL processes: one GPU visible (torchrun with one process, and an "
                     "NCCL group of one)")
    if not setting.gpu:
        setting.skip("NCCL: no GPU (2 gloo processes on the CPU instead)")
    work = setting.work / "distributed"
    work.mkdir(exist_ok=True)
    train = write_jsonl(work / "train.jsonl", e2e_examples(32, seed=12, vocab=setting.vocab))
    common = ["--train_data", train, "--valid_data", train, "--model_card", setting.small_card(),
              "--random_init", "--seq_len", "128", "--max_step", "3", "--lr", "0.001",
              "--log_interval", "1", "--eval_interval", "3", "--save_interval", "1000",
              "--random_seed", "5", "--lora_dim", "4", "--lora_alpha", "32", "--lora_dropout", "0",
              "--overwrite", "--no_tensorboard", "--no_progress"]
    one, many = work / "one_process", work / f"{procs}_processes"
    call_main(gpt2_ft.main, common + ["--train_batch_size", 8, "--work_dir", one], part.log)
    log = work / "torchrun.log"
    run_command([python(), "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", procs,
                 ROOT / "NLG" / "src" / "gpt2_ft.py", *common,
                 "--train_batch_size", 8 // procs, "--work_dir", many], log,
                timeout=part.left() - 5)
    backend = next((ln.rsplit("backend", 1)[1].strip() for ln in log.read_text().splitlines()
                    if ln.startswith("rank 0 ") and "backend" in ln), "?")
    a = [r["loss"] for r in _losses(one, "train_log.jsonl")]
    b = [r["loss"] for r in _losses(many, "train_log.jsonl")]
    va = [r["valid_loss"] for r in _losses(one, "valid_log.jsonl")]
    vb = [r["valid_loss"] for r in _losses(many, "valid_log.jsonl")]
    rel = max(abs(x - y) / abs(x) for x, y in zip(a + va, b + vb)) if a and len(a) == len(b) else math.inf
    ad_a, ad_b = _adapter(one / "model.3.pt"), _adapter(many / "model.3.pt")
    diff = max((ad_a[k] - ad_b[k]).abs().max().item() for k in ad_a)
    scale = max(v.abs().max().item() for v in ad_a.values())
    part.verdict(f"distributed: torchrun {procs} x batch {8 // procs} ({backend}) = 1 x batch 8",
                 rel < 1e-4 and len(va) == len(vb) == 1 and set(ad_a) == set(ad_b) and diff <= 1e-4 * scale,
                 f"losses {', '.join(f'{x:.4f}' for x in b)} (relative difference {rel:.1e}), "
                 f"final adapter max difference {diff:.1e} of {scale:.1e}",
                 "the processes did not train as one process with their global batch",
                 backend=backend, processes=procs, rel_loss=rel, adapter_diff=diff)
    if setting.gpu and procs == 1:
        nccl_world_of_one(setting, part)


def nccl_world_of_one(setting: Setting, part):
    """traincore's collectives and a DDP step over an NCCL group of one process."""
    import copy

    import torch.distributed as dist
    from gpu_check_train import build_model
    from traincore import all_reduce_sum, broadcast_state, gather_objects
    dev = setting.device
    saved = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=dev,
                            timeout=datetime.timedelta(seconds=120))
    try:
        t = all_reduce_sum(torch.arange(4.0, device=dev))
        state = {"w": torch.randn(3, 5).bfloat16(), "step": 7, "rng": torch.get_rng_state()}
        got = broadcast_state(state)
        ok_state = (torch.equal(got["w"], state["w"]) and got["step"] == 7
                    and torch.equal(got["rng"], state["rng"]))
        model = build_model(setting.small_card(), dev).eval()     # eval: no dropout masks
        ref = copy.deepcopy(model)
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index],
                                                        broadcast_buffers=False)
        batch = {k: v.to(dev) if torch.is_tensor(v) else v
                 for k, v in make_batches("8xE2E", 1, setting, pin=False)[0].items()}
        for net in (ddp, ref):
            _, loss = net(batch["input"], lm_labels=batch["target"], lm_mask=batch["mask"],
                          loss_positions=batch["loss_positions"])
            loss.backward()
        grads = [(p.grad, q.grad) for p, q in zip(model.parameters(), ref.parameters())
                 if p.requires_grad]
        grad_diff = max((a - b).abs().max().item() for a, b in grads)
        ok = (torch.equal(t.cpu(), torch.arange(4.0)) and ok_state
              and gather_objects({"rank": 0}) == [{"rank": 0}] and grad_diff <= 1e-6)
        part.verdict("distributed: an NCCL group of one (all_reduce, broadcast_state, "
                     "gather_objects, a DDP step)", ok,
                     f"collectives exact, DDP gradients = plain gradients within {grad_diff:.1e}",
                     "a collective or the DDP step gave other values", grad_diff=grad_diff)
    finally:
        dist.destroy_process_group()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ----------------------------------------------------------------------------------------------

def byte_vocab(folder):
    """A byte-level BPE vocabulary with no merges (every byte a token) in GPT-2's file layout,
    with RoBERTa's specials first and <|endoftext|> last: enough to run both pipelines."""
    from nlg.encoder import bytes_to_unicode
    folder.mkdir(parents=True, exist_ok=True)
    byte_chars = bytes_to_unicode()
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for b in range(256):
        vocab[byte_chars[b]] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "encoder.json").write_text(json.dumps(vocab))
    (folder / "vocab.bpe").write_text("#version: 0.2\n")
    return folder


WORDS = ("good great fine awful bad dull film plot actors music story slow funny sad very not "
         "quite a the this that is was").split()


def check_nlu_step(setting: Setting, part):
    from nlu import run_glue
    work = setting.work / "nlu"
    rng = random.Random(4)
    (work / "SST-2").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 64), ("dev", 32)):
        lines = ["sentence\tlabel"] + [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16))) + f"\t{rng.randint(0, 1)}"
            for _ in range(n)]
        (work / "SST-2" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    card = setting.pick("roberta-base", tiny="roberta-tiny")
    precision = ["--bf16"] if setting.gpu else []
    out = work / "run"
    result = call_main(run_glue.main, [
        "--task_name", "sst2", "--data_dir", work, "--tokenizer_dir", byte_vocab(work / "vocab"),
        "--model_card", card, "--random_init", "--max_seq_length", "64", "--max_train_samples", "32",
        "--max_eval_samples", "32", "--per_device_train_batch_size", "8", "--max_steps", "2",
        "--learning_rate", "1e-3", "--lora_dim", "8", "--lora_alpha", "16",
        "--evaluation_strategy", "end", "--output_dir", out, "--overwrite_output_dir",
        "--seed", "1", "--no_tensorboard", *precision], part.log)
    losses = [r["loss"] for r in _losses(out, "train_log.jsonl") if "loss" in r]
    ok = bool(losses) and all(math.isfinite(x) for x in losses) and (out / "pytorch_model.bin").is_file()
    part.verdict(f"NLU: run_glue.py sst2, {card}, LoRA, {'bf16' if precision else 'fp32'}, 2 steps",
                 ok, f"loss {' -> '.join(f'{x:.3f}' for x in losses)}, eval {result}",
                 "no finite loss or no saved adapter", losses=losses, eval=result)


def check_llm_step(setting: Setting, part):
    import transformers
    sys.path.insert(0, str(ROOT / "NLG" / "MetaMathQA"))
    import train_math_lorma
    work = setting.work / "llm"
    vocab = byte_vocab(work / "vocab")
    tok = transformers.GPT2TokenizerFast(vocab=str(vocab / "encoder.json"),
                                         merges=str(vocab / "vocab.bpe"))
    size = setting.pick(dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                             num_attention_heads=8, num_key_value_heads=4),
                        tiny=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2))
    cfg = transformers.LlamaConfig(**size, vocab_size=len(tok), max_position_embeddings=512,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(work / "base")
    tok.save_pretrained(work / "base")
    data = work / "mathqa.json"
    data.write_text(json.dumps([{"query": f"What is {a} plus {b}?", "response":
                                 f"{a} + {b} = {a + b}. The answer is: {a + b}"}
                                for a in range(4) for b in range(4)]))
    bf16 = ["--torch_dtype", "bfloat16", "--bf16", "True"] if setting.gpu else []
    out = work / "run"
    trainer = call_main(train_math_lorma.main, [
        "--model_name_or_path", work / "base", "--data_path", data, "--output_dir", out,
        "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--max_steps", "2",
        "--model_max_length", "512", "--logging_steps", "1", "--method", "lora", "--lora_dim", "4",
        "--lora_alpha", "8", "--target_modules", "q_proj", "v_proj", *bf16], part.log)
    info = json.loads((out / "run_info.json").read_text())
    dtypes = sorted({str(p.dtype).replace("torch.", "") for g in trainer.optimizer.param_groups
                     for p in g["params"]})
    losses = [r["loss"] for r in _losses(out, "train_log.jsonl") if "loss" in r]
    part.verdict(f"LLM: train_math_lorma.py, Llama {size['hidden_size']} x "
                 f"{size['num_hidden_layers']}, LoRA, {'bf16 base' if bf16 else 'fp32'}, 2 steps",
                 info.get("steps") == 2 and dtypes == ["float32"]
                 and all(math.isfinite(x) and x > 0 for x in losses),
                 f"loss {' -> '.join(f'{x:.3f}' for x in losses)}, trained tensors {'/'.join(dtypes)}",
                 "not 2 steps with positive finite losses and fp32 adapters", losses=losses,
                 adapter_dtypes=dtypes)

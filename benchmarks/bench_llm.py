"""LLM pipeline speed: a training step of every `loralib.inject`-ed method on a Llama-shaped model
against PEFT's LoRA on the same model, and the GSM8K evaluation's generation against plain
`generate` with the same settings.

Model: transformers' LlamaForCausalLM with random weights, --hidden 512, --layers 8 (heads of
64), vocabulary of the GPT-2 BPE files in ../shared/data/vocab; targets q_proj, v_proj, r=8.

  train     forward + backward + AdamW over the adapter, on the same random batches
            (--batch x --seq tokens), ours and PEFT alternating step by step;
  generate  NLG/MetaMathQA/generate.py's Hugging Face path (prompts sorted by length, batches of
            16 on CPU, greedy, stop strings) against `generate` on the prompts in file order,
            same batch size and settings; --prompts GSM8K-style prompts, --max_tokens new ones.

    python benchmarks/bench_llm.py [--steps 4] [--prompts 32] [--max_tokens 32] [--threads 2]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

import loralib as lora

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "NLG" / "MetaMathQA"))   # generate.py, the evaluation's own code
import generate as gsm  # noqa: E402
from common import interleaved, variant_configs  # noqa: E402


def llama(args, vocab):
    import transformers
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
                                   num_hidden_layers=args.layers,
                                   num_attention_heads=args.hidden // 64,
                                   num_key_value_heads=args.hidden // 64, vocab_size=vocab,
                                   max_position_embeddings=2048)
    return transformers.LlamaForCausalLM(cfg)


def step_fn(model):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(ids):
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def bench_train(args, vocab):
    import peft
    batches = [torch.randint(vocab, (args.batch, args.seq)) for _ in range(args.steps + 1)]
    peft_model = peft.get_peft_model(llama(args, vocab), peft.LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM"))
    fns = {"peft lora": step_fn(peft_model)}
    for name, cfg in variant_configs("llm", 8, 16, dropout=0.05).items():
        model = llama(args, vocab)
        lora.inject(model, cfg, ["q_proj", "v_proj"])
        lora.mark_only_lora_as_trainable(model)
        fns[name] = step_fn(model)
    secs = interleaved(fns, batches)
    print(f"train: batch {args.batch} x seq {args.seq}, hidden {args.hidden}, {args.layers} layers")
    print("| setup | s/step | relative to PEFT LoRA |")
    print("|---|---:|---:|")
    for k, v in secs.items():
        print(f"| {k} | {v:.3f} | {v / secs['peft lora']:.2f} |")


def bench_generate(args, shared, vocab):
    import transformers
    tok = transformers.GPT2TokenizerFast(vocab=str(shared / "vocab" / "encoder.json"),
                                         merges=str(shared / "vocab" / "vocab.bpe"))
    with tempfile.TemporaryDirectory() as d:
        model = llama(args, vocab)
        model.save_pretrained(d)
        tok.save_pretrained(d)
        questions = [f"A shop sells {i + 3} apples for {2 * i + 5} dollars. " * (1 + i % 4)
                     + "How much do 7 apples cost?" for i in range(args.prompts)]
        prompts = [gsm.EVAL_PROMPT.format(instruction=q) for q in questions]
        opts = argparse.Namespace(backend="hf", batch_size=16, max_tokens=args.max_tokens,
                                  tensor_parallel_size=1)
        t0 = time.perf_counter()
        ours = gsm.generate(d, prompts, opts)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()     # both timings include loading the model folder
        ltok = transformers.AutoTokenizer.from_pretrained(d, padding_side="left")
        ltok.pad_token = ltok.pad_token or ltok.eos_token
        plain = transformers.AutoModelForCausalLM.from_pretrained(d).eval()
        for i in range(0, len(prompts), 16):
            enc = ltok(prompts[i:i + 16], return_tensors="pt", padding=True)
            with torch.no_grad():
                plain.generate(**enc, max_new_tokens=args.max_tokens, do_sample=False,
                               pad_token_id=ltok.pad_token_id, stop_strings=gsm.STOP,
                               tokenizer=ltok)
        t_plain = time.perf_counter() - t0
    print(f"generate: {len(prompts)} prompts, {args.max_tokens} new tokens, batches of 16")
    print(f"| setup | s | prompts/s |\n|---|---:|---:|\n"
          f"| GSM8K evaluation (generate.py) | {t_ours:.1f} | {len(ours) / t_ours:.2f} |\n"
          f"| plain generate, file order | {t_plain:.1f} | {len(prompts) / t_plain:.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max_tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip", default="", help="train and/or generate")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shared = Path(args.shared)
    import json
    vocab = len(json.loads((shared / "vocab" / "encoder.json").read_text(encoding="utf-8")))
    if "train" not in args.skip:
        bench_train(args, vocab)
    if "generate" not in args.skip:
        bench_generate(args, shared, vocab)


if __name__ == "__main__":
    main()

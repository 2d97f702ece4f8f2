"""Training throughput (completion tokens/s) of GPT-2 small + LoRA r=4 on E2E batches.

Compares on the same batches (E2E valid lines encoded with the GPT-2 vocabulary, batch 8,
GPT-2 small shape with random weights, CPU by default):
  ours        NLG/src/model.py + loralib LoRA on q, v; batches padded to their longest example;
              logits only at completion positions; the reference AdamW (optimizer.py)
  hf+peft     transformers GPT2LMHeadModel + peft LoRA r=4 on c_attn (peft cannot adapt only the
              q and v slices of the fused projection), labels -100 outside the completion,
              torch AdamW, same per-batch padding
  ours@512    our model fed as Microsoft's pipeline feeds it: every example padded to 512 and
              logits over all positions (the reference's cost)

    python benchmarks/bench_train.py [--steps 4] [--padded_steps 1] [--device cpu]

Throughput = completion tokens (loss-mask ones) / wall time of forward + backward + optimizer
step, after one untimed warm-up step per setup.
"""
import argparse
import json
import os
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

import loralib as lora  # noqa: E402
from nlg import encoder  # noqa: E402
from nlg.model import GPT2LMModel, config_from_card  # noqa: E402
from nlg.optimizer import AdamW  # noqa: E402
from common import interleaved, padded_batches, peft_step  # noqa: E402


def make_batches(shared, n_batches, batch_size, work):
    enc = encoder.get_encoder(str(shared / "vocab"))
    lines = (shared / "e2e" / "valid.txt").read_text().splitlines()[: n_batches * batch_size]
    path = work / "bench_e2e.jsonl"
    with open(path, "w") as f:
        for line in lines:
            mr, ref = line.split("||")
            f.write(json.dumps({"context": enc.encode(mr) + [enc.eos_id],
                                "completion": enc.encode(" " + ref.strip()) + [enc.eos_id]})
                    + "\n")
    return padded_batches(path, batch_size, 512, n_batches)


def timed(step_fn, warm, batches, device):
    step_fn(warm)  # untimed warm-up (allocator, kernels, lazy init)
    if device.type == "cuda":
        torch.cuda.synchronize()
    tokens, t0 = 0.0, time.perf_counter()
    for b in batches:
        step_fn(b)
        tokens += b["n_tokens"]
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return tokens / dt, dt / len(batches)


def ours(batches, device, padded=False):
    torch.manual_seed(0)
    cfg = lora.MethodConfig(method="lora", r=4, alpha=32, dropout=0.1)
    model = GPT2LMModel(config_from_card("gpt2.sm", method=cfg)).to(device).train()
    lora.mark_only_lora_as_trainable(model)
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4,
                betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, correct_bias=True)

    def step(b):
        inp, tgt, msk = b["input"], b["target"], b["mask"]
        pos = b["loss_positions"]
        if padded:  # Microsoft's pipeline: pad to 512, logits at every position
            pad = 512 - inp.shape[1]
            inp = torch.nn.functional.pad(inp, (0, pad))
            tgt = torch.nn.functional.pad(tgt, (0, pad))
            msk = torch.nn.functional.pad(msk, (0, pad))
            pos = torch.arange(inp.numel())
        _, loss = model(inp.to(device), lm_labels=tgt.to(device), lm_mask=msk.to(device),
                        label_smooth=0.1, loss_positions=pos.to(device))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def hf_peft(batches, device):
    import transformers
    import peft
    torch.manual_seed(0)
    hc = transformers.GPT2Config(n_embd=768, n_layer=12, n_head=12, resid_pdrop=0.0,
                                 embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(hc)
    pc = peft.LoraConfig(r=4, lora_alpha=32, lora_dropout=0.1, target_modules=["c_attn"],
                         fan_in_fan_out=True, task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, pc).to(device).train()
    return peft_step(model, device)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--steps", type=int, default=4, help="timed steps per setup")
    ap.add_argument("--padded_steps", type=int, default=1, help="timed steps padded to 512")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip", default="", help="comma list of setups to skip: ours,hf+peft,ours@512")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    work = Path(os.environ.get("TMPDIR", "/tmp"))
    n = 1 + max(args.steps, args.padded_steps)
    batches = make_batches(Path(args.shared), n, args.batch_size, work)
    skip = set(args.skip.split(","))
    names = {"ours": "ours (LoRA q,v; per-batch padding; masked logits)",
             "hf+peft": "transformers + peft (LoRA c_attn; per-batch padding)",
             "ours@512": "ours padded to 512, full logits (reference pipeline cost)"}
    builders = {"ours": lambda: ours(batches, device), "hf+peft": lambda: hf_peft(batches, device),
                "ours@512": lambda: ours(batches, device, padded=True)}
    # ours and hf+peft run interleaved step by step, so that a busy machine slows both alike
    steps = {k: builders[k]() for k in ("ours", "hf+peft") if k not in skip}
    secs = interleaved(steps, batches[:args.steps + 1], device)
    tokens = sum(b["n_tokens"] for b in batches[1:args.steps + 1]) / args.steps
    rows = [(names[k], tokens / secs[k], secs[k]) for k in steps]
    del steps
    if "ours@512" not in skip and args.padded_steps > 0:
        tps, sec = timed(builders["ours@512"](), batches[0], batches[1:args.padded_steps + 1],
                         device)
        rows.append((names["ours@512"], tps, sec))
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
          f"mean completion tokens/batch "
          f"{sum(b['n_tokens'] for b in batches) / len(batches):.1f}, "
          f"mean padded length {sum(b['input'].shape[1] for b in batches) / len(batches):.1f}")
    print("| setup | completion tokens/s | s/step |")
    print("|---|---:|---:|")
    for name, tps, sec in rows:
        print(f"| {name} | {tps:.1f} | {sec:.3f} |")


if __name__ == "__main__":
    main()

"""How cost grows: one command sweeps the training batch size and sequence length, and the
decoder's beam size and generated length, and writes a table and a PNG of time per unit of work
against each.

    python benchmarks/bench_scaling.py [--model_card gpt2.sm] [--threads 2] [--out scaling]

Training: GPT-2 + LoRA (q, v, r=4), one optimizer step on random token ids (completion = the
second half), ms per completion token. Decoding: gpt2_beam.py's decoder on distinct random
contexts of 32 tokens (a random model rarely stops early: the full eval_len), ms per generated
token per context. Each point runs after a warm-up; every sweep holds the other settings at
their defaults (batch 8, seq 128, beam 10, eval_len 32, 8 contexts).
"""
import argparse
import json
import time
from pathlib import Path

import torch

import loralib as lora
from nlg.beam_search import BeamSettings, decode_contexts
from nlg.model import GPT2LMModel, config_from_card


def train_point(model, opt, batch, seq, vocab, reps=2):
    ids = torch.randint(vocab, (batch, seq))
    mask = torch.zeros(batch, seq)
    mask[:, seq // 2:] = 1
    pos = mask.reshape(-1).nonzero().squeeze(1)

    def step():
        _, loss = model(ids, lm_labels=ids, lm_mask=mask, loss_positions=pos)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    step()
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    return (time.perf_counter() - t0) / reps * 1e3 / (batch * (seq - seq // 2))


def decode_point(model, beam, eval_len, n_ctx, vocab):
    g = torch.Generator().manual_seed(0)
    ctx = [torch.randint(vocab, (32,), generator=g).tolist() for _ in range(n_ctx)]
    s = BeamSettings(beam=beam, eval_len=eval_len, length_penalty=0.8, no_repeat_ngram_size=4,
                     eos_token_ids=(vocab - 1,))
    per = max(1, 160 // beam)
    with torch.no_grad():
        decode_contexts(model, ctx[:1], s, per)
        t0 = time.perf_counter()
        decode_contexts(model, ctx, s, per)
    return (time.perf_counter() - t0) * 1e3 / (n_ctx * eval_len)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model_card", default="gpt2.sm")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="scaling", help="writes OUT.md, OUT.json and OUT.png")
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--seqs", default="32,64,128,256")
    ap.add_argument("--beams", default="1,2,5,10")
    ap.add_argument("--eval_lens", default="8,16,32,64")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = lora.MethodConfig(method="lora", r=4, alpha=32, dropout=0.1, pipeline="gpt2")
    model = GPT2LMModel(config_from_card(args.model_card, method=cfg))
    lora.mark_only_lora_as_trainable(model)
    vocab = model.config.vocab_size
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    sweeps = {}
    model.train()
    sweeps["train: batch size (seq 128)"] = ("ms / completion token", [
        (b, train_point(model, opt, b, 128, vocab)) for b in ints(args.batches)])
    sweeps["train: sequence length (batch 8)"] = ("ms / completion token", [
        (t, train_point(model, opt, 8, t, vocab)) for t in ints(args.seqs)])
    model.eval()
    lora.merge_all(model)
    sweeps["decode: beam size (eval_len 32)"] = ("ms / generated token / context", [
        (b, decode_point(model, b, 32, 8, vocab)) for b in ints(args.beams)])
    sweeps["decode: eval_len (beam 10)"] = ("ms / generated token / context", [
        (n, decode_point(model, 10, n, 8, vocab)) for n in ints(args.eval_lens)])
    lines = [f"# Scaling ({args.model_card}, {torch.get_num_threads()} threads, "
             f"{time.strftime('%Y-%m-%d')})", ""]
    for name, (unit, pts) in sweeps.items():
        lines += [f"| {name} | {unit} |", "|---:|---:|"] + [f"| {x} | {y:.3f} |" for x, y in pts] + [""]
    Path(args.out + ".md").write_text("\n".join(lines))
    Path(args.out + ".json").write_text(json.dumps({k: v for k, v in sweeps.items()}, indent=1))
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (the table is complete)")
        return
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4 * len(sweeps), 3.6))
    for ax, (name, (unit, pts)) in zip(axes, sweeps.items()):
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(unit, fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=100)
    print(f"plot: {args.out}.png")


if __name__ == "__main__":
    main()

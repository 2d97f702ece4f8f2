"""Beam-search decoding speed on the E2E valid split, in lines of the split decoded per second.

A GPT-2 small-shaped model with random weights (no pretrained weights needed) decodes E2E valid
MRs (context = BPE(MR) + <|endoftext|>, as gpt2_encode.py writes them) with beam 10, length
penalty 0.8, no-repeat n-gram 4, end ids {50256, 628}:

  ours       gpt2_beam.py's decode path as configured by default: each distinct context once,
             many contexts per batch sorted by length, prefill once, shared by the beams;
  reference  the same code path run the reference's way: batch 1, every line decoded (no dedup),
             every context padded to seq_len - eval_len (the reference pads to --seq_len 512);
  hf         Hugging Face `generate` (num_beams 10, same length penalty, n-gram ban and end ids,
             batches of 10 left-padded lines) on the same weights.

Each runs on the first --lines / --ref_lines / --hf_lines lines of the split (E2E lists the
references of one MR on consecutive lines, so a prefix has the split's duplication rate).
A random model rarely emits an end id, so every run generates the full eval_len: the slowest case.

    python benchmarks/bench_beam.py                       # eval_len 64, all 4,672 lines (long)
    python benchmarks/bench_beam.py --lines 600 --eval_len 64 --ref_lines 1 --hf_lines 20
    python benchmarks/bench_beam.py --lines 600 --eval_len 64 --ref_lines 0 --hf_lines 0 --breakdown
                                                          # + where the time goes, per part

Measured on the 2-core CPU dev machine (shared with other jobs, so wall-clock rates moved by up to
2x between runs; each comparison below comes from one run, the three parts back to back):

  eval_len 64, 1 thread:  ours 3.24 lines/s (600 lines, 72 distinct contexts),
                          reference way 0.093 (1 line), HF generate 0.322 (20 lines)
                          -> 34.7x the reference way, 10.1x HF generate
  eval_len 32, 2 threads: ours 5.80 lines/s (20 lines, 4 distinct contexts),
                          reference way 0.324 (2 lines), HF generate 0.344 (20 lines)
                          -> 17.9x the reference way, 16.9x HF generate
  eval_len 64, 2 threads, the whole split (4,672 lines, 547 distinct contexts, machine loaded):
                          ours 2.00 lines/s (39 min); 7.75 lines/s (10 min, 70% of the GEMM
                          probe) on 2026-12-01
"""
import argparse
import json
import os
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from nlg.beam_search import truncate_context  # noqa: E402
from common import gemm_probe  # noqa: E402
from nlg.checkpoint import backbone_state_dict  # noqa: E402
from nlg.encoder import get_encoder  # noqa: E402
from nlg.beam_run import decode, settings_from_args  # noqa: E402
from nlg.gpt2_beam import build_parser  # noqa: E402
from nlg.model import GPT2LMModel, config_from_card, lora  # noqa: E402

SHARED = Path(os.environ.get("LORA_SHARED_DIR", ROOT.parent / "shared"))


def e2e_contexts(path, vocab_dir):
    enc = get_encoder(str(vocab_dir))
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                mr = line.strip().split("||")[0]
                out.append(enc.encode(mr) + [enc.eos_id])
    return out


def beam_args(opts, *extra):
    return build_parser().parse_args([
        "--data", "unused", "--seq_len", str(opts.seq_len), "--eval_len", str(opts.eval_len),
        "--beam", str(opts.beam), "--length_penalty", "0.8", "--no_repeat_ngram_size", "4",
        "--repetition_penalty", "1.0", "--eos_token_id", "628", "--batch_size", "1", *extra])


class FlopCount:
    """The model FLOPs of the work the decoder asks for: 2 per weight and token in the blocks'
    matmuls (12 d^2 per layer), attention 4 d per layer and key position actually attended
    (the cache positions a row has reached), and the LM head 2 d V per row it scores."""

    def __init__(self, model):
        c = model.config
        self.d, self.L, self.V, self.flops = c.n_embd, c.n_layer, c.vocab_size, 0.0
        self.matmul_flops = 0.0                                   # the part that is weight products
        tr, head = model.transformer, model.lm_head
        forward, step = tr.forward, tr.beam_step

        def counted_forward(input_ids, *a, past=None, **k):      # the prefill: causal
            B, T = input_ids.shape
            s_past = 0 if past is None else past[0].size(3)
            self.count(B * T, B * sum(s_past + t + 1 for t in range(T)))
            return forward(input_ids, *a, past=past, **k)

        def counted_step(tokens, positions, *a):                  # a new token sees 0..position
            self.count(tokens.numel(), float((positions.float() + 1).sum()))
            return step(tokens, positions, *a)

        def counted_head(hidden):
            head_flops = 2 * self.d * self.V * hidden.reshape(-1, self.d).shape[0]
            self.flops += head_flops
            self.matmul_flops += head_flops
            return head(hidden)
        tr.forward, tr.beam_step, model.lm_head = counted_forward, counted_step, counted_head

    def count(self, tokens, keys):
        self.flops += 24 * self.L * self.d ** 2 * tokens + 4 * self.L * self.d * keys
        self.matmul_flops += 24 * self.L * self.d ** 2 * tokens


def run_ours(model, contexts, opts, *extra):
    args = beam_args(opts, *extra)
    s = settings_from_args(args)
    ctx = [truncate_context(c, args.seq_len, args.eval_len) for c in contexts]
    t0, c0 = time.perf_counter(), time.process_time()
    decode(model, ctx, s, args, log=lambda *a: None)
    return _rates(len(contexts), t0, c0)


# torch.profiler op names by what they do in a decoding step: the first part with a fragment
# the name contains, or, for a fragment starting with "=", equals ("=aten::index": the top-k's
# pick of its candidates, not index_select's cache moves)
_PARTS = (("matmuls", ("_linear_pointwise", "addmm", "aten::mm", "aten::bmm", "aten::matmul")),
          ("attention", ("scaled_dot_product",)),
          ("scoring", ("topk", "log_softmax", "scatter_reduce", "aten::isin", "aten::amax", "=aten::index")),
          ("weight packing", ("_reorder_linear_weight",)),
          ("cache", ("gather", "copy_", "index_select", "aten::sort", "aten::cat", "scatter_")))


def breakdown(model, counter, contexts, opts, *extra):
    """(share of the decode's op time per part, the weight products' own GFLOP/s), from the
    profiler's self times (it inflates small ops a little): what bounds the FLOP rate when the
    matmuls alone run near the probe."""
    from torch.profiler import profile
    before = counter.matmul_flops
    with profile() as prof:
        run_ours(model, contexts, opts, *extra)
    parts = dict.fromkeys([name for name, _ in _PARTS] + ["other"], 0.0)
    for ev in prof.key_averages():
        part = next((name for name, frags in _PARTS
                     if any(ev.key == f[1:] if f.startswith("=") else f in ev.key for f in frags)), "other")
        parts[part] += ev.self_cpu_time_total                     # microseconds
    total = sum(parts.values()) or 1.0
    matmul_rate = (counter.matmul_flops - before) / max(parts["matmuls"] * 1e-6, 1e-9)
    return {k: v / total for k, v in parts.items()}, matmul_rate


def _rates(lines, t0, c0):
    """(lines per wall second, lines per CPU second of this process): on a shared machine the
    second is the steadier one."""
    return lines / (time.perf_counter() - t0), lines / max(time.process_time() - c0, 1e-9)


def run_hf(model, contexts, opts):
    from transformers import GPT2Config, GPT2LMHeadModel
    c = model.config
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=c.vocab_size, n_positions=c.n_positions, n_embd=c.n_embd,
                                    n_layer=c.n_layer, n_head=c.n_head, layer_norm_epsilon=c.layer_norm_epsilon,
                                    activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                                    attn_pdrop=0.0))
    missing, unexpected = hf.transformer.load_state_dict(backbone_state_dict(model), strict=False)
    if unexpected or any(not k.endswith(("attn.bias", "attn.masked_bias")) for k in missing):
        raise RuntimeError(f"weights do not map onto HF GPT-2: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    hf.eval()
    probe = torch.tensor([contexts[0]])
    with torch.no_grad():
        diff = (hf(probe).logits - model(probe)[0]).abs().max().item()
    if diff > 1e-3:
        raise RuntimeError(f"HF logits differ from ours by {diff}: not the same model")
    eos = [50256, 628]
    t0, c0 = time.perf_counter(), time.process_time()
    for a in range(0, len(contexts), 10):
        batch = contexts[a:a + 10]
        T = max(len(x) for x in batch)
        ids = torch.full((len(batch), T), 50256, dtype=torch.long)
        mask = torch.zeros(len(batch), T, dtype=torch.long)
        for b, x in enumerate(batch):
            ids[b, T - len(x):] = torch.tensor(x)
            mask[b, T - len(x):] = 1
        with torch.no_grad():
            hf.generate(input_ids=ids, attention_mask=mask, num_beams=opts.beam, do_sample=False,
                        max_new_tokens=opts.eval_len, length_penalty=0.8, no_repeat_ngram_size=4,
                        eos_token_id=eos, pad_token_id=50256, num_return_sequences=1)
    return _rates(len(contexts), t0, c0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(SHARED / "data" / "e2e" / "valid.txt"), help="E2E MR||REF lines")
    p.add_argument("--vocab", default=str(SHARED / "data" / "vocab"), help="folder with encoder.json / vocab.bpe")
    p.add_argument("--model_card", default="gpt2.sm")
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--eval_len", type=int, default=64)
    p.add_argument("--seq_len", type=int, default=512)
    p.add_argument("--lines", type=int, default=0, help="lines for ours (0: the whole split)")
    p.add_argument("--ref_lines", type=int, default=2, help="lines for the reference-way run (0: skip)")
    p.add_argument("--hf_lines", type=int, default=20, help="lines for HF generate (0: skip)")
    p.add_argument("--decode_batch", type=int, default=0, help="distinct contexts per batch (0: default)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--breakdown", action="store_true",
                   help="decode the same lines again under torch.profiler and print where the time goes")
    p.add_argument("--json", default=None, help="also write the results here")
    opts = p.parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(0)
    model = GPT2LMModel(config_from_card(opts.model_card)).eval()
    lora.merge_all(model)
    contexts = e2e_contexts(opts.data, opts.vocab)
    n = opts.lines or len(contexts)
    res = {"model_card": opts.model_card, "beam": opts.beam, "eval_len": opts.eval_len,
           "threads": torch.get_num_threads(), "split_lines": len(contexts)}
    print(f"{len(contexts)} lines in {opts.data}, {len(set(map(tuple, contexts)))} distinct contexts; "
          f"{opts.model_card}, beam {opts.beam}, eval_len {opts.eval_len}, {torch.get_num_threads()} threads")

    extra = ["--decode_batch", str(opts.decode_batch)] if opts.decode_batch else []
    peak, peak_cpu = gemm_probe(), gemm_probe(clock=time.process_time)
    counter = FlopCount(model)
    t0, c0 = time.perf_counter(), time.process_time()
    rate, cpu_rate = run_ours(model, contexts[:n], opts, *extra)
    achieved = counter.flops / (time.perf_counter() - t0)
    achieved_cpu = counter.flops / (time.process_time() - c0)
    # probed before and after: a busy machine moves both
    peak, peak_cpu = max(peak, gemm_probe()), max(peak_cpu, gemm_probe(clock=time.process_time))
    res["gflops"] = {"achieved": achieved / 1e9, "gemm_probe": peak / 1e9, "fraction": achieved / peak,
                     "achieved_per_cpu_s": achieved_cpu / 1e9, "gemm_probe_per_cpu_s": peak_cpu / 1e9,
                     "fraction_cpu_time": achieved_cpu / peak_cpu}
    print(f"ours: {achieved / 1e9:.1f} GFLOP/s of model work ({counter.flops / 1e9:.0f} GFLOP), "
          f"{100 * achieved / peak:.0f}% of a 2048^3 fp32 GEMM's {peak / 1e9:.1f} GFLOP/s; per CPU-second "
          f"{achieved_cpu / 1e9:.1f} against {peak_cpu / 1e9:.1f}: {100 * achieved_cpu / peak_cpu:.0f}%")
    res["ours"] = {"lines": n, "distinct": len(set(map(tuple, contexts[:n]))), "lines_per_s": rate,
                   "lines_per_cpu_s": cpu_rate}
    print(f"ours       {n:5d} lines: {rate:8.3f} lines/s ({cpu_rate:8.3f} per CPU-s)")
    if opts.breakdown:
        res["breakdown"], mm = breakdown(model, counter, contexts[:n], opts, *extra)
        res["gflops"]["matmuls_alone"] = mm / 1e9
        print("where the time goes (profiler self time): " + ", ".join(
            f"{k} {100 * v:.1f}%" for k, v in res["breakdown"].items())
              + f"; the weight products alone ran at {mm / 1e9:.0f} GFLOP/s ({100 * mm / peak:.0f}% of the probe)")
    for name, k, fn in (("reference_way", opts.ref_lines, lambda c: run_ours(
            model, c, opts, "--decode_batch", "1", "--no_dedup", "--pad_to_seq_len", "--no_early_exit")),
                        ("hf_generate", opts.hf_lines, lambda c: run_hf(model, c, opts))):
        if not k:
            continue
        r, cr = fn(contexts[:k])
        res[name] = {"lines": k, "lines_per_s": r, "lines_per_cpu_s": cr,
                     "ours_speedup": rate / r, "ours_speedup_cpu": cpu_rate / cr}
        print(f"{name:13s}{k:3d} lines: {r:8.3f} lines/s ({cr:8.3f} per CPU-s)   ours is "
              f"{rate / r:6.1f}x ({cpu_rate / cr:6.1f}x per CPU-s)")
    if opts.json:
        Path(opts.json).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()

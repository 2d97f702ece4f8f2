"""Decoding as a user runs it: `python src/gpt2_beam.py ...` as a command, start-up included
(imports, building the model, loading the checkpoint), against Hugging Face `generate` on the
same lines (in this process, its model already built: start-up not counted for it).

    python benchmarks/bench_beam_command.py [--contexts 30] [--eval_len 64] [--threads 2]

GPT-2 S shape with random weights saved as a published checkpoint; the first --contexts distinct
MRs of the E2E valid split (../shared/data), one line each; beam 10, length penalty 0.8,
no-repeat n-gram 4, end ids {<|endoftext|>, 628}. --lines N decodes the first N lines of the
split instead (repeated MRs included: the command decodes each distinct context once).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
import bench_beam  # noqa: E402
from nlg.checkpoint import backbone_state_dict  # noqa: E402
from nlg.model import GPT2LMModel, config_from_card  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contexts", type=int, default=30, help="distinct MRs, one line each")
    ap.add_argument("--lines", type=int, default=0, help="instead: the split's first N lines")
    ap.add_argument("--eval_len", type=int, default=64)
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--hf_lines", type=int, default=0, help="HF lines (default: all of them)")
    opts = ap.parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    shared = bench_beam.SHARED / "data"
    lines = bench_beam.e2e_contexts(str(shared / "e2e" / "valid.txt"), str(shared / "vocab"))
    if opts.lines:
        contexts = lines[:opts.lines]
    else:
        contexts, seen = [], set()
        for c in lines:
            if tuple(c) not in seen:
                seen.add(tuple(c))
                contexts.append(c)
            if len(contexts) == opts.contexts:
                break
    torch.manual_seed(0)
    model = GPT2LMModel(config_from_card("gpt2.sm")).eval()
    with tempfile.TemporaryDirectory() as d:
        ckpt, data = Path(d) / "gpt2.bin", Path(d) / "test.jsonl"
        torch.save(backbone_state_dict(model), ckpt)
        data.write_text("".join(json.dumps({"context": c, "completion": [628]}) + "\n"
                                for c in contexts))
        env = {**os.environ, **({"OMP_NUM_THREADS": str(opts.threads)} if opts.threads else {})}
        cmd = [sys.executable, "src/gpt2_beam.py", "--data", str(data), "--model_card", "gpt2.sm",
               "--init_checkpoint", str(ckpt), "--beam", str(opts.beam), "--eval_len",
               str(opts.eval_len), "--seq_len", "512", "--length_penalty", "0.8",
               "--no_repeat_ngram_size", "4", "--eos_token_id", "628", "--batch_size", "16",
               "--work_dir", d, "--output_file", "p.jsonl"]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT / "NLG", check=True, env=env, capture_output=True)
        ours = time.perf_counter() - t0
    n_hf = opts.hf_lines or len(contexts)
    hf_rate, _ = bench_beam.run_hf(model, contexts[:n_hf], opts)   # uses opts.beam, .eval_len
    hf = len(contexts) / hf_rate
    print(f"{len(contexts)} lines ({len(set(map(tuple, contexts)))} distinct), beam {opts.beam}, "
          f"eval_len {opts.eval_len}, {torch.get_num_threads()} threads")
    print(f"ours, the command with start-up: {ours:.1f} s; HF generate ({n_hf} lines, "
          f"scaled to {len(contexts)}): {hf:.1f} s -> ours is {hf / ours:.2f}x")


if __name__ == "__main__":
    main()

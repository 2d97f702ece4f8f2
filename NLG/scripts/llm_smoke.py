#!/usr/bin/env python
"""The LLM pipeline (NLG/MetaMathQA/run_math_lorma.sh: train -> merge -> save -> GSM8K and MATH
evaluation) end to end, offline, on CPU, in under a minute (34 CPU-seconds): to check a set-up
before a long run.

    python NLG/scripts/llm_smoke.py [R SEED MODE RI] [--out DIR] [--steps N]
    (default: 4 42 pre rri; the arguments of run_math_lorma.sh)

Everything it needs is written once into DIR (default NLG/smoke_out/llm): a tiny random Llama
(2 layers, width 32) saved with save_pretrained, a byte-level tokenizer for it, and rows in the
formats of the real files (MetaMathQA {"query", "response"}, GSM8K {"query", "response" ending
in "#### <answer>"}, MATH {"instruction", "output" with \\boxed{}}). Then run_math_lorma.sh runs
exactly as for a real model, with MODEL_PATH, DATA_PATH, GSM8K_TEST, MATH_TEST and SAVE_PATH
pointing there, PRECISION=fp32, N steps of batch 2 (EXTRA_ARGS) and 16-token answers
(EVAL_ARGS). The scores mean nothing (a random model); the run shows that every step works.
Outputs: DIR/runs/lorma_<R>_<MODE>_<RI>_seed_<SEED>/ (replaced on each run).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
NLG = os.path.dirname(HERE)
sys.path.append(os.path.dirname(NLG))     # traincore from an uninstalled checkout
RUN = os.path.join(NLG, "MetaMathQA", "run_math_lorma.sh")


def write_inputs(out):
    """The tiny model, its tokenizer and the three data files (once)."""
    import torch
    import transformers

    from nlg.byte_vocab import write_byte_vocab
    base, data = os.path.join(out, "base"), os.path.join(out, "data")
    if os.path.isfile(os.path.join(out, ".done")):
        return base, data
    vocab = os.path.join(out, "vocab")
    write_byte_vocab(vocab)
    tok = transformers.GPT2TokenizerFast(vocab=os.path.join(vocab, "encoder.json"),
                                         merges=os.path.join(vocab, "vocab.bpe"))
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   vocab_size=len(tok), max_position_embeddings=512,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(base)
    tok.save_pretrained(base)
    os.makedirs(data, exist_ok=True)
    rows = [{"query": f"What is {a} plus {b}?", "response": f"{a} + {b} = {a + b}. "
             f"The answer is: {a + b}"} for a in range(6) for b in range(4)]
    with open(os.path.join(data, "MetaMathQA-smoke.json"), "w") as f:
        json.dump(rows, f)
    gsm = [{"query": f"Tom has {a} apples and gets {b} more. How many apples does he have?",
            "response": f"{a} + {b} = {a + b}\n#### {a + b}"} for a in range(2) for b in range(2)]
    math = [{"instruction": f"Compute ${a}+1$.", "output": f"So $\\boxed{{{a + 1}}}$."}
            for a in range(4)]
    for name, items in (("GSM8K_test.jsonl", gsm), ("MATH_test.jsonl", math)):
        with open(os.path.join(data, name), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in items)
    open(os.path.join(out, ".done"), "w").close()
    return base, data


def _main(argv=None):
    from traincore import cli
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("args", nargs="*", default=["4", "42", "pre", "rri"], metavar="R SEED MODE RI",
                   help="run_math_lorma.sh's arguments")
    p.add_argument("--out", default=os.path.join(NLG, "smoke_out", "llm"),
                   help="where the tiny model, the data and the runs go")
    p.add_argument("--steps", type=int, default=4, help="training steps (batch 2)")
    cli.setup_parser(p)
    args = p.parse_args(argv)
    if len(args.args) != 4:
        p.error(f"give all four of R SEED MODE RI or none, got {args.args}")
    r, seed, mode, ri = args.args
    out = os.path.abspath(args.out)
    base, data = write_inputs(out)
    save = os.path.join(out, "runs", f"lorma_{r}_{mode}_{ri}_seed_{seed}")
    shutil.rmtree(save, ignore_errors=True)       # the smoke's own folder: each run anew
    env = dict(os.environ, MODEL_PATH=base, DATA_PATH=os.path.join(data, "MetaMathQA-smoke.json"),
               GSM8K_TEST=os.path.join(data, "GSM8K_test.jsonl"),
               MATH_TEST=os.path.join(data, "MATH_test.jsonl"), SAVE_PATH=save, PRECISION="fp32",
               num_gpus="1", PYTHON=sys.executable,
               EXTRA_ARGS=f"--max_steps {args.steps} --gradient_accumulation_steps 1 "
                          f"--model_max_length 320 " + os.environ.get("EXTRA_ARGS", ""),
               EVAL_ARGS="--max_tokens 16 " + os.environ.get("EVAL_ARGS", ""))
    print(f"== LLM smoke: tiny random Llama {base}, {args.steps} steps -> {save}", flush=True)
    rc = subprocess.call(["bash", RUN, r, seed, mode, ri], env=env)
    if rc == 0:
        print(f"== LLM smoke: done ({save})")
    return rc


def main(argv=None):
    """_main with bad input and Ctrl-C as one line (exit 2 / 130; traincore.cli)."""
    from traincore import cli
    return cli.run("llm_smoke.py", _main, argv)


if __name__ == "__main__":
    sys.exit(main())

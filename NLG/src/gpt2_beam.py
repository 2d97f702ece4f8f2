"""Beam-search decoding of a fine-tuned GPT-2 (Microsoft's gpt2_beam.py command line).

    python -m torch.distributed.launch --nproc_per_node=1 src/gpt2_beam.py \
        --data ./data/e2e/test.jsonl --batch_size 1 --seq_len 512 --eval_len 64 \
        --model_card gpt2.md --init_checkpoint ./trained_models/GPT2_M/e2e/model.26289.pt \
        --platform local --lora_dim 4 --lora_alpha 32 --beam 10 --length_penalty 0.8 \
        --no_repeat_ngram_size 4 --repetition_penalty 1.0 --eos_token_id 628 \
        --work_dir ./trained_models/GPT2_M/e2e --output_file predict.26289.b10p08r4.jsonl

Writes <work_dir>/<output_file>: one line per input line, {"id": line index, "predict": eval_len
token ids}, as the reference does. The method comes from loralib's flags (--lora_*, --nola_*,
--method ...; gpt2_beam_<method>.py preset it). Weights: the final model.<step>.pt alone, or a
backbone (--init_checkpoint) plus an adapter (--adapter_checkpoint); an adapter with no backbone
is an error. The model is moved to its device, the adapter merged into the weights there, and
with --bf16 / --fp16 the merged model is cast once to that dtype (no autocast while decoding).

The search gives the reference's results (see beam_search.py), computed faster: each distinct
context is decoded once, many contexts per batch (sorted by length, padded per batch instead of to
--seq_len), one prefill per context whose keys / values its beams share. On a CPU the
matmuls run through oneDNN, with each weight reordered once into oneDNN's layout for the whole
run (loralib/cpu_linear.py; that copy doubles the weights' memory while decoding;
LORALIB_CPU_PREPACK=0 skips it, LORALIB_CPU_LINEAR=torch keeps torch's MKL path), and glibc's
malloc keeps up to 1 GiB of freed memory so that a step reuses the last one's pages
(nlg/cpu_memory.py; NLG_CPU_MALLOC=default leaves malloc alone). --seq_len
only bounds the context: its last seq_len - eval_len tokens are kept. A batch holds at most about
160 hypotheses on CPU, 1024 on GPU (distinct contexts x beam, or --batch_size contexts if that
is more), fewer where long contexts would overrun the KV-cache budget; --decode_batch sets the
most contexts per batch instead. The contexts are spread evenly over the fewest batches that
hold them (17 contexts at most 16 per batch: 9 and 8). With N
processes (torchrun / torch.distributed.launch) the distinct contexts are split across ranks and rank 0 writes the file.

A checkpoint trained on a Hugging Face backbone (gpt2_ft.py --backbone hf:...) records it: the
model.<step>.pt alone is enough (the base weights come from the recorded spec, the method and
adapted modules from the record, the default end id is its tokenizer's); the same search then
runs with the model's own attention layers filling its KV cache (nlg/hf_beam_cache.py).
--backbone names the base again where it moved (same architecture and vocabulary).
"""
if not __package__:  # run as a file (python src/gpt2_beam.py), as in Microsoft's repo
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from traincore.entry import as_package
    as_package(__file__, "nlg")
import argparse
import os
import sys

import loralib as lora
from nlg.gpu import add_gpu_params
from traincore import cli
from traincore.cli import message, usage_error

# Only what the command line needs is imported here, so that --help and argparse's errors
# answer without torch; the run itself is nlg/beam_run.py.

ROWS_PER_BATCH = {"cpu": 160, "cuda": 1024}  # hypotheses (contexts x beam) decoded together
# KV-cache memory a batch may use: a fixed share on CPU, a fraction of the GPU's memory.
CACHE_BYTES_CPU = 3 << 30
CACHE_FRACTION_GPU = 0.3


def build_parser(defaults=None, description="Beam-search decoding of a fine-tuned GPT-2"):
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_gpu_params(p)
    g = p.add_argument_group("data and model")
    g.add_argument("--data", required=True, help="token-id jsonl ({'context', 'completion'}) from gpt2_encode.py")
    g.add_argument("--model_card", default="gpt2.sm",
                   help="gpt2.sm | gpt2.md | gpt2.lg | gpt2.tiny, or a JSON file of GPT2Config keywords")
    g.add_argument("--init_checkpoint", default=None,
                   help="trained model.<step>.pt (final: backbone + adapter), or the pretrained "
                        "backbone when --adapter_checkpoint is given")
    g.add_argument("--backbone", default=None,
                   help="hf:<hub id | folder | file.gguf>: where the Hugging Face backbone a "
                        "checkpoint records is now (default: the recorded one)")
    g.add_argument("--adapter_checkpoint", default=None,
                   help="adapter-only checkpoint (periodic model.<step>.pt), loaded over --init_checkpoint")
    g.add_argument("--vocab", default=None,
                   help="folder with encoder.json: its <|endoftext|> is the default end id")
    g.add_argument("--work_dir", type=str, default=os.getenv("PT_OUTPUT_DIR", "gpt2_model"),
                   help="output folder")
    g.add_argument("--output_file", type=str, default="beam_prediction.jsonl", help="output file name")
    g = p.add_argument_group("search")
    g.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    g.add_argument("--eval_len", type=int, default=256, help="tokens generated (steps of the search)")
    g.add_argument("--seq_len", type=int, default=512,
                   help="context + generation budget: the last seq_len - eval_len context tokens are kept")
    g.add_argument("--min_length", type=int, default=0, help="no eos before this many tokens")
    g.add_argument("--length_penalty", type=float, default=1.0,
                   help="a finished hypothesis scores sum(log p) / length ** length_penalty")
    g.add_argument("--no_repeat_ngram_size", type=int, default=4,
                   help="ban repeating an n-gram of the generated tokens (0: off)")
    g.add_argument("--repetition_penalty", type=float, default=1.0, help="CTRL repetition penalty")
    g.add_argument("--eos_token_id", action="append", type=int, default=None,
                   help="an extra end id (repeatable), added to <|endoftext|> (50256, or the "
                        "--vocab's); ids outside the model's vocabulary are ignored")
    g = p.add_argument_group("speed (the results stay the same; fp16 / bf16 may differ slightly)")
    g.add_argument("--batch_size", type=int, default=10,
                   help="the most distinct contexts per batch is at least this (the reference's batch)")
    g.add_argument("--decode_batch", type=int, default=0,
                   help="the most distinct contexts per batch, spread evenly (0: about %d hypotheses "
                        "on CPU, %d on GPU)"
                        % (ROWS_PER_BATCH["cpu"], ROWS_PER_BATCH["cuda"]))
    g.add_argument("--bf16", action="store_true",
                   help="decode in bf16: the merged model is cast once (GPU or CPU; results may "
                        "differ from fp32)")
    g.add_argument("--fp16", action="store_true",
                   help="decode in fp16: the merged model is cast once (GPU or CPU; results may "
                        "differ from fp32)")
    g.add_argument("--tf32", action="store_true",
                   help="TF32 products for fp32 weights on Ampere and newer GPUs (results may "
                        "differ from fp32)")
    g.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="torch.compile each decoding step's model call (backend: inductor; "
                        "aot_eager checks the graphs without generating code); the first "
                        "steps pay the compilation")
    g = p.add_argument_group("benchmarks: run the way the reference does")
    g.add_argument("--no_dedup", action="store_true",
                   help="decode every line, also repeated contexts (for benchmarks)")
    g.add_argument("--pad_to_seq_len", action="store_true",
                   help="pad every context to seq_len - eval_len as the reference does (for benchmarks)")
    g.add_argument("--no_early_exit", action="store_true",
                   help="run all eval_len steps for every context even once its result is settled")
    cli.setup_parser(p)
    lora.add_method_args(p)
    if defaults:
        p.set_defaults(**defaults)
    return p


def main(argv=None, defaults=None, description=None):
    """The command: bad input and Ctrl-C as one line (traincore/cli.py)."""
    return cli.run("gpt2_beam", _main, argv, defaults, description)


def _main(argv=None, defaults=None, description=None):
    args = build_parser(defaults, **({"description": description} if description else {})
                        ).parse_args(argv)
    # an entry point's presets are named as such in errors (nlg/method_flags.py)
    args.preset, args.prog = dict(defaults or {}), os.path.basename(sys.argv[0] or "gpt2_beam.py")
    if args.fp16 and args.bf16:
        usage_error("gpt2_beam", "--fp16 and --bf16 are exclusive (pick one)")
    check_inputs(args)
    from nlg.beam_run import (checkpoint_backbone, resolve_method, run,   # torch from here on
                              settings_from_args)
    from nlg.gpu import cleanup, parse_gpu
    try:
        record = checkpoint_backbone(args)
        method = resolve_method(args, record)
        s = settings_from_args(args, record)
        parse_gpu(args)                      # e.g. more processes than GPUs: an error
    except (ValueError, KeyError) as e:
        usage_error("gpt2_beam", message(e))
    try:
        return run(args, method, s, record)
    finally:
        cleanup(args)


def check_inputs(args):
    """The files and the model card, checked before the settings dump and the model build."""
    from nlg.model import config_from_card
    if not os.path.isfile(args.data):
        usage_error("gpt2_beam", f"--data {args.data}: no such file (the test split's token ids: "
                                 f"create_datasets.sh)")
    for flag in ("init_checkpoint", "adapter_checkpoint"):
        path = getattr(args, flag)
        if path and not os.path.isfile(path):
            usage_error("gpt2_beam", f"--{flag} {path}: no such file (the trained model.<step>.pt "
                                     f"in the training's --work_dir)")
    try:
        config_from_card(args.model_card)
    except (ValueError, OSError) as e:
        usage_error("gpt2_beam", str(e))


if __name__ == "__main__":
    main(sys.argv[1:])

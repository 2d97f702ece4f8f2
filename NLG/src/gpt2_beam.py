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
is an error. The adapter is merged into the weights before decoding.

The search gives the reference's results (see beam_search.py), computed faster: each distinct
context is decoded once, many contexts per batch (sorted by length, padded per batch instead of to
--seq_len), one prefill per context whose keys / values its beams share. On a CPU the
matmuls run through oneDNN, with each weight reordered once into oneDNN's layout for the whole
run (loralib/cpu_linear.py; that copy doubles the weights' memory while decoding;
LORALIB_CPU_PREPACK=0 skips it, LORALIB_CPU_LINEAR=torch keeps torch's MKL path). --seq_len
only bounds the context: its last seq_len - eval_len tokens are kept. A batch holds about 160
hypotheses on CPU, 1024 on GPU (distinct contexts x beam, at least --batch_size contexts), fewer
where long contexts would overrun the KV-cache budget; --decode_batch sets the number of contexts outright. With N
processes (torchrun / torch.distributed.launch) the distinct contexts are split across ranks and rank 0 writes the file.
"""
if not __package__:  # run as a file (python src/gpt2_beam.py), as in Microsoft's repo
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from traincore.entry import as_package
    as_package(__file__, "nlg")
import argparse
import json
import os
import sys
import tempfile
import time

import torch

from nlg.beam_search import BeamSettings, decode_contexts, truncate_context, unique_contexts
from nlg.checkpoint import check_method_matches, load_model_weights, stored_method
from nlg.data_utils import read_ft_file
from nlg.gpu import add_gpu_params, cleanup, parse_gpu
from nlg.model import GPT2LMModel, config_from_card, lora
from traincore import Precision, barrier, gather_objects, write_text_atomic
from traincore.cli import message, usage_error
from traincore.noinit import no_init
from traincore.progress import Progress

DEFAULT_EOS = 50256  # Microsoft's default; --vocab takes it from encoder.json instead
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
                   help="least number of distinct contexts decoded together (the reference's batch)")
    g.add_argument("--decode_batch", type=int, default=0,
                   help="distinct contexts per batch (0: about %d hypotheses on CPU, %d on GPU)"
                        % (ROWS_PER_BATCH["cpu"], ROWS_PER_BATCH["cuda"]))
    g.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU or CPU; results may differ from fp32)")
    g.add_argument("--fp16", action="store_true", help="fp16 autocast (GPU or CPU; results may differ from fp32)")
    g = p.add_argument_group("benchmarks: run the way the reference does")
    g.add_argument("--no_dedup", action="store_true",
                   help="decode every line, also repeated contexts (for benchmarks)")
    g.add_argument("--pad_to_seq_len", action="store_true",
                   help="pad every context to seq_len - eval_len as the reference does (for benchmarks)")
    g.add_argument("--no_early_exit", action="store_true",
                   help="run all eval_len steps for every context even once its result is settled")
    lora.add_method_args(p)
    if defaults:
        p.set_defaults(**defaults)
    return p


def eos_ids(args):
    default = DEFAULT_EOS
    if args.vocab:
        from nlg.encoder import get_encoder
        default = get_encoder(args.vocab).eos_id
    return tuple([default] + list(args.eos_token_id or []))


def settings_from_args(args) -> BeamSettings:
    return BeamSettings(beam=args.beam, eval_len=args.eval_len, min_length=args.min_length,
                        length_penalty=args.length_penalty,
                        no_repeat_ngram_size=args.no_repeat_ngram_size,
                        repetition_penalty=args.repetition_penalty, eos_token_ids=eos_ids(args))


def read_contexts(path, seq_len, eval_len, vocab_size):
    """The (truncated) context of every example line, in file order (= the output ids)."""
    out = []
    for ctx, _, lineno in read_ft_file(path):
        if not ctx:
            raise ValueError(f"{path}:{lineno}: empty context: nothing to decode from")
        bad = [t for t in ctx if t >= vocab_size]
        if bad:
            raise ValueError(f"{path}:{lineno}: token id {bad[0]} is outside the model's vocabulary "
                             f"(vocab_size {vocab_size}): wrong --model_card or another vocabulary?")
        out.append(truncate_context(ctx, seq_len, eval_len))
    return out


def batch_limits(args, model, device):
    """(contexts per batch, KV-cache positions per batch or None): --decode_batch as given, else
    about ROWS_PER_BATCH hypotheses, fewer when long contexts would overrun the cache budget."""
    if args.decode_batch > 0:
        return args.decode_batch, None
    rows = ROWS_PER_BATCH["cuda" if device.type == "cuda" else "cpu"]
    c = model.config
    per_position = 2 * c.n_layer * c.n_embd * next(model.parameters()).element_size()
    if device.type == "cuda":
        budget = CACHE_FRACTION_GPU * torch.cuda.get_device_properties(device).total_memory
    else:
        budget = CACHE_BYTES_CPU
    return max(args.batch_size, rows // args.beam, 1), int(budget // per_position)


def load_model(args, method):
    if args.init_checkpoint is None:
        if args.adapter_checkpoint:
            raise ValueError(f"--adapter_checkpoint {args.adapter_checkpoint} needs its backbone: "
                             f"give the pretrained GPT-2 as --init_checkpoint")
        raise ValueError("--init_checkpoint is required: the trained model.<step>.pt (or the "
                         "pretrained backbone with --adapter_checkpoint)")
    config = config_from_card(args.model_card, method=method)
    if args.seq_len > config.n_positions:
        raise ValueError(f"--seq_len {args.seq_len} exceeds the model's n_positions {config.n_positions}")
    # Every tensor comes from the checkpoint (the loader refuses a file that lacks one), so the
    # model is built without the random init the file would overwrite (traincore/noinit.py).
    with no_init():
        model = GPT2LMModel(config, init_weights=False)
    info = load_model_weights(model, args.init_checkpoint, adapter_checkpoint=args.adapter_checkpoint,
                              require_adapter=config.adapter is not None)
    merged = lora.merge_all(model)
    return model.eval(), info, merged


def decode(model, contexts, s: BeamSettings, args, rank=0, world_size=1, log=print):
    """Predictions for every context (list of eval_len ids, input order); the distinct contexts
    are split across ranks and gathered (every rank gets the full list)."""
    device = next(model.parameters()).device
    if args.no_dedup:
        uniq, inverse = [list(c) for c in contexts], list(range(len(contexts)))
    else:
        uniq, inverse = unique_contexts(contexts)
    # Deal contexts out by length so every rank gets a similar share of long and short ones.
    order = sorted(range(len(uniq)), key=lambda j: (-len(uniq[j]), j))
    mine = order[rank::world_size]
    per_batch, cache_rows = batch_limits(args, model, device)
    if rank == 0:
        log(f"{len(contexts)} lines, {len(uniq)} distinct contexts; {len(mine)} on rank 0, "
            f"up to {per_batch} per batch, beam {s.beam}, eval_len {s.eval_len}")
    # rank 0's share of the distinct contexts: a bar on a terminal, else a line every 30 s
    bar = Progress(len(mine), "beam search" + (" (rank 0)" if world_size > 1 else ""),
                   "contexts", enabled=rank == 0)
    with bar, Precision.from_flags(args.fp16, args.bf16, device).autocast():
        preds = decode_contexts(model, [uniq[j] for j in mine], s, per_batch,
                                pad_to=(args.seq_len - args.eval_len) if args.pad_to_seq_len else 0,
                                early_exit=not args.no_early_exit, progress=bar.update,
                                cache_rows=cache_rows)
    gathered = {}
    for part in gather_objects(list(zip(mine, preds))):
        gathered.update(part)
    return [gathered[j] for j in inverse]


def write_predictions(path, predictions):
    write_text_atomic("".join(json.dumps({"id": i, "predict": pred}) + "\n"
                              for i, pred in enumerate(predictions)), path)


def main(argv=None, defaults=None, description=None):
    args = build_parser(defaults, **({"description": description} if description else {})
                        ).parse_args(argv)
    if args.fp16 and args.bf16:
        usage_error("gpt2_beam", "--fp16 and --bf16 are exclusive (pick one)")
    check_inputs(args)
    try:
        method = resolve_method(args)
        s = settings_from_args(args)
    except (ValueError, KeyError) as e:
        usage_error("gpt2_beam", message(e))
    parse_gpu(args)
    try:
        return run(args, method, s)
    finally:
        cleanup(args)


def check_inputs(args):
    """The files and the model card, checked before the settings dump and the model build."""
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


def resolve_method(args):
    """The method to build: the one the checkpoint records when no method flag is given (a
    preset entry point's rank may come from it too), else the flags', which must then agree
    with what the checkpoint records. Files that record nothing need the flags."""
    path = args.adapter_checkpoint or args.init_checkpoint
    stored = stored_method(path)
    fill_rank = (stored is not None and stored.is_adapter and args.lora_dim is None
                 and args.method is not None and lora.get_spec(stored.method).cli.uses_lora_dim)
    if fill_rank:
        args.lora_dim = stored.r          # e.g. gpt2_beam_lorma_plus.py without --lora_dim
        if args.lora_alpha is None:
            args.lora_alpha = stored.alpha
    method = lora.method_config_from_args(args, default="none", pipeline="gpt2")
    if stored is None:
        return method
    if method.method == "none":
        return lora.MethodConfig(method="none") if not stored.is_adapter else stored
    check_method_matches(method, stored, path)
    return method


def _check_writable(path):
    """Fail before decoding, not after it, when the predictions cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as e:
        usage_error("gpt2_beam", f"cannot write {path} ({e.strerror}): give a writable "
                                 f"--work_dir")


def run(args, method, s):
    rank = args.rank
    if rank == 0:
        print("=" * 80)
        for k, v in vars(args).items():
            if k != "procs":
                print(f"    - {k} : {v}")
        print("=" * 80)
    if rank == 0:
        _check_writable(os.path.join(args.work_dir, args.output_file))
    try:
        model, info, merged = load_model(args, method)
        contexts = read_contexts(args.data, args.seq_len, args.eval_len, model.config.vocab_size)
    except (ValueError, KeyError, FileNotFoundError) as e:
        # Decoding never starts from random weights, so the loader's --random_init hint is moot.
        usage_error("gpt2_beam", message(e).split(" Pass --random_init")[0])
    model.to(args.device)
    if rank == 0:
        print(f"method: {method.method}; loaded {info}; merged {merged} adapted layer(s)")
        print(f"end ids: {s.eos_within(model.config.vocab_size)}")
    t0 = time.time()
    try:
        preds = decode(model, contexts, s, args, rank, args.world_size if args.distributed else 1)
    except ValueError as e:  # settings the model cannot serve (e.g. a beam wider than the vocabulary)
        usage_error("gpt2_beam", str(e))
    if rank == 0:
        path = os.path.join(args.work_dir, args.output_file)
        write_predictions(path, preds)
        dt = time.time() - t0
        print(f"saved {len(preds)} predictions to {path} ({dt:.1f}s, {len(preds) / max(dt, 1e-9):.2f} lines/s)")
    barrier()


if __name__ == "__main__":
    main(sys.argv[1:])

"""The run of gpt2_beam.py (its command line is there): the model loaded, moved to its device,
merged there and cast once to the decoding dtype, the contexts read, deduplicated and split
across ranks, decoded in batches (beam_search.py), the predictions gathered and written."""
import contextlib
import json
import os
import tempfile
import time

import torch

from nlg.backbone import stored_backbone
from nlg.beam_search import BeamSettings, decode_contexts, truncate_context, unique_contexts
from nlg import method_flags
from nlg.checkpoint import load_model_weights, stored_method
from nlg.cpu_memory import keep_freed_memory
from nlg.data_utils import read_ft_file
from nlg.gpt2_beam import CACHE_BYTES_CPU, CACHE_FRACTION_GPU, ROWS_PER_BATCH
from nlg.model import GPT2LMModel, config_from_card, lora
from traincore import Precision, barrier, gather_objects, write_json_atomic, write_text_atomic
from traincore.cli import message, usage_error
from traincore.noinit import no_init
from traincore.settings_file import plain
from traincore.progress import Progress

DEFAULT_EOS = 50256  # Microsoft's default; --vocab takes it from encoder.json instead


def eos_ids(args, record=None):
    """The end ids: the default one (GPT-2's 50256, the --vocab's <|endoftext|>, or the end id
    an HF backbone's checkpoint records: its tokenizer's), then every --eos_token_id."""
    default = DEFAULT_EOS
    if record is not None:
        if args.vocab:
            raise ValueError(f"--vocab {args.vocab} is GPT-2's vocabulary; this checkpoint's "
                             f"backbone ({record.get('spec')}) has its own tokenizer, whose end "
                             f"id it records")
        default = record["eos_token_id"]
    elif args.vocab:
        from nlg.encoder import get_encoder
        default = get_encoder(args.vocab).eos_id
    return tuple([default] + list(args.eos_token_id or []))


def check_end_ids(s: BeamSettings, vocab_size: int, args) -> list:
    """The end ids the model can generate; none is an error naming the flag to give (a model
    card with its own vocabulary has no 50256: every hypothesis would run to --eval_len)."""
    if args.vocab and not 0 <= s.eos_token_ids[0] < vocab_size:
        raise ValueError(f"--vocab {args.vocab}: its <|endoftext|> is id {s.eos_token_ids[0]}, "
                         f"outside the model's vocabulary (vocab_size {vocab_size} of "
                         f"--model_card {args.model_card}): give the vocabulary the model was "
                         f"trained with")
    within = s.eos_within(vocab_size)
    if not within:
        given = f" and --eos_token_id {args.eos_token_id}" if args.eos_token_id else ""
        raise ValueError(f"no end-of-text id in the model's vocabulary (vocab_size {vocab_size} "
                         f"of --model_card {args.model_card}; <|endoftext|> {DEFAULT_EOS} without "
                         f"--vocab{given}): give --vocab DIR (the vocabulary the data was encoded "
                         f"with) or --eos_token_id ID, else no output ever ends before --eval_len")
    return within


def write_decoding_record(path, args, method, end_ids):
    """<predictions>.settings.json beside the predictions: what decoded them (the report reads
    the settings; a later look at a file tells how it was made)."""
    stem = path[:-len(".jsonl")] if path.endswith(".jsonl") else path
    record = {"predictions": os.path.basename(path), "method": method.to_dict(),
              "end_ids": list(end_ids),
              "settings": {k: plain(v) for k, v in vars(args).items() if k != "procs"}}
    write_json_atomic(record, stem + ".settings.json")
    return stem + ".settings.json"


def settings_from_args(args, record=None) -> BeamSettings:
    return BeamSettings(beam=args.beam, eval_len=args.eval_len, min_length=args.min_length,
                        length_penalty=args.length_penalty,
                        no_repeat_ngram_size=args.no_repeat_ngram_size,
                        repetition_penalty=args.repetition_penalty,
                        eos_token_ids=eos_ids(args, record))


def read_contexts(path, seq_len, eval_len, vocab_size):
    """The (truncated) context of every example line, in file order (= the output ids)."""
    out = []
    for ctx, _, lineno in read_ft_file(path):
        if not ctx:
            raise ValueError(f"{path}:{lineno}: empty context: nothing to decode from")
        bad = [t for t in ctx if t >= vocab_size]
        if bad:
            raise ValueError(f"{path}:{lineno}: token id {bad[0]} is outside the model's vocabulary "
                             f"(vocab_size {vocab_size}): wrong --model_card, or a file "
                             f"encoded with another vocabulary or tokenizer?")
        out.append(truncate_context(ctx, seq_len, eval_len))
    return out


def batch_limits(args, model, device):
    """(contexts per batch, KV-cache positions per batch or None): --decode_batch as given, else
    about ROWS_PER_BATCH hypotheses, fewer when long contexts would overrun the cache budget."""
    if args.decode_batch > 0:
        return args.decode_batch, None
    rows = ROWS_PER_BATCH["cuda" if device.type == "cuda" else "cpu"]
    per_position = model.cache_bytes_per_position()
    if device.type == "cuda":
        budget = CACHE_FRACTION_GPU * torch.cuda.get_device_properties(device).total_memory
    else:
        budget = CACHE_BYTES_CPU
    return max(args.batch_size, rows // args.beam, 1), int(budget // per_position)


def load_model(args, method, record=None):
    """(model, what was loaded); record: the checkpoint's backbone record (None: GPT-2)."""
    if record is not None:
        return _load_hf(args, method, record)
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
    return model.eval(), info


def _load_hf(args, method, record):
    from nlg.hf_backbone import KIND, load_trained
    if record.get("kind") != KIND:
        raise ValueError(f"checkpoint {args.init_checkpoint}: unknown backbone kind "
                         f"{record.get('kind')!r}")
    if args.adapter_checkpoint:
        raise ValueError(f"--adapter_checkpoint: {args.init_checkpoint} has a Hugging Face "
                         f"backbone, whose checkpoints hold the adapter already: give the "
                         f"model.<step>.pt as --init_checkpoint alone")
    return load_trained(args.init_checkpoint, record, method, spec_text=args.backbone)


def checkpoint_backbone(args):
    """The backbone record of --init_checkpoint (None: GPT-2); --backbone given with a GPT-2
    checkpoint is an error (its backbone is the --model_card)."""
    record = stored_backbone(args.init_checkpoint)
    if record is None and args.backbone:
        raise ValueError(f"--backbone {args.backbone}: {args.init_checkpoint} records no "
                         f"Hugging Face backbone (a GPT-2 checkpoint: its model is --model_card)")
    if record is not None and args.compile:
        raise ValueError("--compile compiles the GPT-2 backbone's decoding step; this "
                         "checkpoint's Hugging Face backbone decodes without it")
    return record


def ready_for_decoding(model, device, precision: Precision) -> int:
    """The model as decoding runs it: on its device, adapters merged there (a merge that depends
    on the device, e.g. bases drawn where they live, is computed where the model runs; in fp32),
    then cast once to --bf16 / --fp16, so that no step re-casts a weight (autocast casts every
    frozen weight again on every call). Returns how many layers were merged."""
    model.to(device)
    merged = lora.merge_all(model)
    if precision.dtype is not None:
        model.to(precision.dtype)
    return merged


@contextlib.contextmanager
def cpu_products(device, dtype, compiling: bool):
    """loralib's oneDNN products on a CPU (loralib/cpu_linear.py), or torch's own while
    decoding where they would not serve: under --compile (inductor generates its own CPU
    kernels; products of weights packed by address would split the compiled step), and for bf16
    weights on a CPU whose oneDNN has no bf16 product (no AVX512-BF16 / AMX: the call fails)."""
    cpu_linear = lora.cpu_linear
    off = device.type == "cpu" and (compiling or (
        dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    was = cpu_linear._enabled
    if off:
        cpu_linear.set_enabled(False)
    try:
        yield
    finally:
        cpu_linear.set_enabled(was)


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
    if device.type == "cpu":
        keep_freed_memory()                 # each step reuses the last one's pages (cpu_memory.py)
    if rank == 0:
        log(f"{len(contexts)} lines, {len(uniq)} distinct contexts; {len(mine)} on rank 0, "
            f"up to {per_batch} per batch, beam {s.beam}, eval_len {s.eval_len}")
    # rank 0's share of the distinct contexts: a bar on a terminal, else a line every 30 s
    bar = Progress(len(mine), "beam search" + (" (rank 0)" if world_size > 1 else ""),
                   "contexts", enabled=rank == 0)
    # No autocast: the model is already in the decoding dtype (ready_for_decoding).
    with bar:
        preds = decode_contexts(model, [uniq[j] for j in mine], s, per_batch,
                                pad_to=(args.seq_len - args.eval_len) if args.pad_to_seq_len else 0,
                                early_exit=not args.no_early_exit, progress=bar.update,
                                cache_rows=cache_rows, compile_backend=args.compile)
    gathered = {}
    for part in gather_objects(list(zip(mine, preds))):
        gathered.update(part)
    return [gathered[j] for j in inverse]


def write_predictions(path, predictions):
    write_text_atomic("".join(json.dumps({"id": i, "predict": pred}) + "\n"
                              for i, pred in enumerate(predictions)), path)


def resolve_method(args, record=None):
    """The method to build: the one the checkpoint records, every method flag given agreeing
    with it (nlg/method_flags.py); files that record nothing need the flags. record: the
    checkpoint's backbone record (an HF backbone: loralib's "llm" defaults, and --adapt_targets
    naming modules must be the recorded ones)."""
    path = args.adapter_checkpoint or args.init_checkpoint
    pipeline = "gpt2"
    if record is not None:
        from nlg.hf_backbone import explicit_targets
        pipeline = "llm"
        modules = explicit_targets(args)
        if modules is not None and modules != record.get("target_modules"):
            raise ValueError(f"--adapt_targets {','.join(modules)}: checkpoint {path} adapted "
                             f"{record.get('target_modules')}")
    return method_flags.resolve(args, stored_method(path), f"checkpoint {path}", pipeline,
                                preset=getattr(args, "preset", None),
                                prog=getattr(args, "prog", "gpt2_beam.py"))


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


def run(args, method, s, record=None):
    rank = args.rank
    if rank == 0:     # every setting goes beside the predictions (write_decoding_record)
        print(f"gpt2_beam: {args.data} -> {os.path.join(args.work_dir, args.output_file)} "
              f"(beam {s.beam}, eval_len {s.eval_len}, length penalty {s.length_penalty})")
        _check_writable(os.path.join(args.work_dir, args.output_file))
    try:
        if record is not None:
            from nlg.hf_tokenizer import check_separator
            check_separator(args.data, record["eos_token_id"], record.get("tokenizer"))
        model, info = load_model(args, method, record)
        contexts = read_contexts(args.data, args.seq_len, args.eval_len, model.vocab_size)
        end_ids = check_end_ids(s, model.vocab_size, args)
    except (ValueError, KeyError, FileNotFoundError, ImportError) as e:
        # Decoding never starts from random weights, so the loader's --random_init hint is moot.
        usage_error("gpt2_beam", message(e).split(" Pass --random_init")[0])
    precision = Precision.from_flags(args.fp16, args.bf16, args.device, tf32=args.tf32)
    precision.apply()
    merged = ready_for_decoding(model, args.device, precision)
    if rank == 0:
        print(f"method: {method.method}; loaded {info}; merged {merged} adapted layer(s)")
        ignored = [e for e in s.eos_token_ids if e not in end_ids]
        print(f"end ids: {end_ids}" + (f" ({ignored} outside the vocabulary: ignored)"
                                       if ignored else ""))
    t0 = time.time()
    try:
        with cpu_products(args.device, precision.dtype, bool(args.compile)):
            preds = decode(model, contexts, s, args, rank, args.world_size if args.distributed else 1)
    except ValueError as e:  # settings the model cannot serve (e.g. a beam wider than the vocabulary)
        usage_error("gpt2_beam", str(e))
    if rank == 0:
        path = os.path.join(args.work_dir, args.output_file)
        write_predictions(path, preds)
        write_decoding_record(path, args, method, end_ids)
        dt = time.time() - t0
        print(f"saved {len(preds)} predictions to {path} ({dt:.1f}s, {len(preds) / max(dt, 1e-9):.2f} lines/s)")
    barrier()

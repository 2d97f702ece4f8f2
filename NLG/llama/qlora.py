"""Instruction tuning of a causal LM on a 4-bit, 8-bit or 16-bit frozen base with any loralib
method, as QLoRA's qlora.py, which NOLA's LLaMA-2 runs use (NOLA's llama/qlora.py): its flags
and defaults, its data (instruct_data.py), its MMLU evaluation during training (mmlu.py) and
NOLA's twelve scripts (scripts/, qlora/scripts/).

    cd NLG/llama
    MODEL_PATH=meta-llama/Llama-2-7b-hf bash scripts/finetune_llama2_alpaca_7b_nola.sh

qlora.py's spellings are taken as written (--use_nola --nola_num_basis --lora_r --lora_alpha
--lora_dropout --bits --quant_type --double_quant --full_finetune, the Trainer's flags, ...);
--method picks any loralib method instead (lora, nola, lorma, mtlora, full) with its own flags.
Defaults are qlora.py's: LoRA r 64, alpha 16, NOLA 128 bases per factor, every linear layer but
lm_head adapted, 4-bit NF4 with double quantization, paged AdamW, constant learning rate.
The base is quantized at load (bitsandbytes), frozen and its other weights cast to fp32 (PEFT's
prepare_model_for_kbit_training); under --bf16 the adapters are then cast to bf16 and trained as
bf16 weights, norms kept fp32, as qlora.py does (--adapter_dtype float32: fp32 adapters). NOLA's
bases are drawn on the training device as in the official code (--nola_basis_device cpu draws
them on the CPU: the same numbers on every machine, far slower on a large model).

The output folder gets checkpoint-N/ (the adapter, optimizer and schedule: a rerun resumes from
the last one, as qlora.py does, optimizer included), adapter/ (the final adapter, loralib's
folder; PEFT's layout for LoRA; with --full_finetune model/, save_pretrained),
train_log.jsonl, mmlu_results.json (--do_mmlu_eval), metrics.json, run_info.json and
`completed`.

Deliberate differences from qlora.py, each a fix: --do_mmlu_eval with mmlu-zs works (qlora.py
drops the subject column it then reads); the MMLU of the final evaluation, on the same weights
as the last step's, is logged again, not recomputed; a finished run (`completed`) is not trained
again; unknown flags are errors (qlora.py ignores them; --lora_modules, which NOLA's
guanaco_13b_nola.sh passes and qlora.py ignores, is accepted and ignored with a note); resuming
restores the optimizer (qlora.py reloads the adapter only); the adapters are drawn after seeding
with --seed (qlora.py seeds after drawing them), so a rerun starts from the same adapter, NOLA's
basis seeds included. Hub datasets need the `datasets`
package; --dataset also takes a local file, --dataset_file a local copy of a hub dataset's rows.
"""
import argparse
import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(os.path.dirname(HERE), "MetaMathQA")
for p in (HERE, SHARED):
    if p not in sys.path:
        sys.path.insert(0, p)
try:
    import loralib as lora
    if "inject" not in getattr(lora, "__all__", ()):    # Microsoft's loralib 0.1.2, say
        raise ImportError
except ImportError:   # a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    sys.modules.pop("loralib", None)
    import loralib as lora
import instruct_data  # noqa: E402
import llm_trainer  # noqa: E402
import mmlu  # noqa: E402
import traincore  # noqa: E402
from traincore import cli  # noqa: E402

WHAT = "qlora.py"
ADAPTER_DTYPES = ("auto", "float32", "bfloat16", "float16")
MMLU_SOURCE = ("QLoRA's data/mmlu/*.json (github.com/artidoro/qlora, folder data/mmlu; NOLA "
               "ships the same files in llama/data/mmlu)")


def _flag(g, name, kind, default, help=None, **kw):
    if kind is bool:
        g.add_argument(name, type=lora.cli._bool, nargs="?", const=True, default=default,
                       help=help, **kw)
    else:
        g.add_argument(name, type=kind, default=default, help=help, **kw)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model (qlora.py ModelArguments)")
    _flag(g, "--model_name_or_path", str, "EleutherAI/pythia-12b", "hub id or local folder")
    _flag(g, "--trust_remote_code", bool, False)
    _flag(g, "--use_auth_token", bool, False)
    _flag(g, "--use_fast_tokenizer", bool, False,
          "(qlora.py loads the slow tokenizer; transformers 5 has one kind)")
    g = p.add_argument_group("data (qlora.py DataArguments)")
    _flag(g, "--dataset", str, "alpaca", f"one of {', '.join(instruct_data.HUB_DATASETS)} "
          f"(hub, needs `pip install datasets`), or a local .json/.jsonl/.csv/.tsv file")
    _flag(g, "--dataset_format", str, None, f"one of {instruct_data.FORMATS}")
    _flag(g, "--dataset_file", str, None,
          "a local copy of the rows of a hub --dataset (its train split, in the hub's order)")
    _flag(g, "--eval_dataset_size", int, 1024)
    _flag(g, "--max_train_samples", int, None)
    _flag(g, "--max_eval_samples", int, None)
    _flag(g, "--source_max_len", int, 1024)
    _flag(g, "--target_max_len", int, 256)
    _flag(g, "--train_on_source", bool, False, "loss on the prompt too")
    g = p.add_argument_group("MMLU during training")
    _flag(g, "--do_mmlu_eval", bool, False, "MMLU at every evaluation (needs --do_eval)")
    _flag(g, "--mmlu_dataset", str, "mmlu-fs", choices=mmlu.DATASETS)
    _flag(g, "--mmlu_split", str, "eval", choices=sorted(mmlu.SPLITS))
    _flag(g, "--max_mmlu_samples", int, None)
    _flag(g, "--mmlu_source_max_len", int, mmlu.DEFAULT_SOURCE_MAX_LEN)
    _flag(g, "--mmlu_data_dir", str, os.path.join("data", "mmlu"),
          f"folder of {MMLU_SOURCE}; relative to where the command runs, as in qlora.py")
    g = p.add_argument_group("quantization and adapters")
    _flag(g, "--bits", int, 4, "4 / 8: bitsandbytes base; 16 / 32: none", choices=(4, 8, 16, 32))
    _flag(g, "--quant_type", str, "nf4", choices=("nf4", "fp4"))
    _flag(g, "--double_quant", bool, True, "quantize the 4-bit block constants too")
    _flag(g, "--full_finetune", bool, False, "no adapters (--bits 16 or 32)")
    _flag(g, "--adam8bit", bool, False, "(qlora.py declares it and never reads it)")
    _flag(g, "--max_memory_MB", int, 24000, "per GPU, for device_map auto")
    _flag(g, "--target_modules", str, None, "module names to adapt (default: every linear "
          "layer but lm_head, as qlora.py's find_all_linear_names)", nargs="+")
    _flag(g, "--lora_modules", str, None, "(accepted and ignored, as qlora.py does)")
    _flag(g, "--adapter_dtype", str, "auto", "adapter weights: auto = bfloat16 under --bf16 "
          "(qlora.py casts them), else float32", choices=ADAPTER_DTYPES)
    g = p.add_argument_group("training (the Trainer's flags, qlora.py's defaults)")
    _flag(g, "--output_dir", str, "./output")
    _flag(g, "--cache_dir", str, None)
    _flag(g, "--do_train", bool, True)
    _flag(g, "--do_eval", bool, False)
    _flag(g, "--do_predict", bool, False, "(not implemented here)")
    _flag(g, "--predict_with_generate", bool, False, "(not implemented here)")
    _flag(g, "--optim", str, "paged_adamw_32bit")
    _flag(g, "--per_device_train_batch_size", int, 1)
    _flag(g, "--per_device_eval_batch_size", int, 8)
    _flag(g, "--gradient_accumulation_steps", int, 16)
    _flag(g, "--max_steps", int, 10000)
    _flag(g, "--num_train_epochs", float, 3.0, "(used when --max_steps <= 0)")
    _flag(g, "--learning_rate", float, 2e-4)
    _flag(g, "--weight_decay", float, 0.0)
    _flag(g, "--adam_beta1", float, 0.9)
    _flag(g, "--adam_beta2", float, 0.999)
    _flag(g, "--adam_epsilon", float, 1e-8)
    _flag(g, "--max_grad_norm", float, 0.3)
    _flag(g, "--lr_scheduler_type", str, "constant")
    _flag(g, "--warmup_ratio", float, 0.03,
          "(with the constant schedule transformers applies no warmup)")
    _flag(g, "--gradient_checkpointing", bool, True)
    g.add_argument("--gradient_checkpointing_kwargs", type=json.loads,
                   default={"use_reentrant": False}, help="JSON for torch.utils.checkpoint")
    _flag(g, "--group_by_length", bool, True, "batches of rows of similar length (characters)")
    _flag(g, "--remove_unused_columns", bool, False, "(must stay False, as qlora.py says)")
    _flag(g, "--logging_steps", int, 10)
    _flag(g, "--logging_strategy", str, "steps", choices=("no", "steps", "epoch"))
    _flag(g, "--save_strategy", str, "steps", choices=("no", "steps", "epoch"))
    _flag(g, "--save_steps", int, 250)
    _flag(g, "--save_total_limit", int, 40)
    _flag(g, "--evaluation_strategy", str, "no", choices=("no", "steps", "epoch"),
          dest="eval_strategy")
    g.add_argument("--eval_strategy", dest="eval_strategy", choices=("no", "steps", "epoch"),
                   default=argparse.SUPPRESS,
                   help="(the newer spelling of --evaluation_strategy)")
    _flag(g, "--eval_steps", int, None)
    _flag(g, "--seed", int, 42)
    _flag(g, "--data_seed", int, None)
    _flag(g, "--dataloader_num_workers", int, 0)
    _flag(g, "--bf16", bool, False)
    _flag(g, "--fp16", bool, False)
    _flag(g, "--tf32", bool, None, "(qlora.py turns TF32 matmuls on wherever CUDA is)")
    _flag(g, "--report_to", str, "none")
    _flag(g, "--run_name", str, None)
    _flag(g, "--stop_after_steps", int, None,
          "end after N steps with the checkpoint saved (tests of resuming)")
    g = p.add_argument_group("generation (qlora.py GenerationArguments: accepted, used only "
                             "for prediction, which is not implemented here)")
    for name, kind, default in (("max_new_tokens", int, 256), ("min_new_tokens", int, None),
                                ("do_sample", bool, False), ("num_beams", int, 1),
                                ("num_beam_groups", int, 1), ("penalty_alpha", float, None),
                                ("use_cache", bool, True), ("temperature", float, 1.0),
                                ("top_k", int, 50), ("top_p", float, 1.0),
                                ("typical_p", float, 1.0), ("diversity_penalty", float, 0.0),
                                ("repetition_penalty", float, 1.0),
                                ("length_penalty", float, 1.0), ("no_repeat_ngram_size", int, 0)):
        _flag(g, f"--{name}", kind, default)
    lora.add_method_args(p)
    cli.setup_parser(p)
    return p


def method_from_args(args):
    """The MethodConfig of qlora.py's flags: --use_nola (or any --nola_* flag) is NOLA,
    --full_finetune is full fine-tuning, else LoRA; --method picks any method. Rank --lora_r
    (64), alpha --lora_alpha (16), dropout --lora_dropout (0), NOLA's --nola_num_basis (128)
    bases for A and B, as qlora.py's defaults."""
    implied = lora.cli.resolve_dialects(args)          # --lora_r -> rank; --nola_* -> nola
    if args.method is not None and args.full_finetune and args.method != "full":
        raise ValueError(f"--full_finetune and --method {args.method} disagree")
    method = args.method or ("full" if args.full_finetune else None) or implied or "lora"
    args.full_finetune = method == "full"
    if method in lora.registry.NO_ADAPTER:
        args.method = method
        return lora.method_config_from_args(args, default=method, pipeline="llm")
    family = lora.get_spec(method).family
    rank = args.lora_dim if args.lora_dim is not None else 64
    args.lora_alpha = 16.0 if args.lora_alpha is None else args.lora_alpha
    args.lora_dropout = 0.0 if args.lora_dropout is None else args.lora_dropout
    if family == "nola":
        if args.nola_rank is not None and args.lora_dim is not None \
                and args.nola_rank != args.lora_dim:
            raise ValueError(f"--nola_rank {args.nola_rank} and --lora_r {args.lora_dim} "
                             f"disagree (for NOLA they are one setting)")
        args.nola_rank = args.nola_rank if args.nola_rank is not None else rank
        args.lora_dim = args.alias_lora_r = None      # NOLA's card takes its rank as nola_rank
        if args.nola_num_basis is None and args.nola_num_basis_A is None \
                and args.nola_num_basis_B is None:
            args.nola_num_basis = 128
        if args.nola_basis_device is None:
            args.nola_basis_device = "native"       # the official on-device draw (see top)
    else:
        args.lora_dim = rank
    args.method = method
    return lora.method_config_from_args(args, default=method, pipeline="llm")


def check_setup(args, method) -> None:
    """Refusals that need nothing loaded; each names the flag."""
    problems = []
    if method.method == "full" and args.bits not in (16, 32):
        problems.append(f"--full_finetune trains every weight: it needs --bits 16 or 32, not "
                        f"{args.bits} (as qlora.py asserts)")
    if args.remove_unused_columns:
        problems.append("--remove_unused_columns must be False: the rows are text the collator "
                        "tokenizes (qlora.py: 'Needed to make this codebase work')")
    if args.do_predict or args.predict_with_generate:
        problems.append("--do_predict / --predict_with_generate (generation) is not "
                        "implemented here")
    if args.fp16 and args.bf16:
        problems.append("--fp16 and --bf16 exclude each other")
    if args.eval_strategy != "no" and not args.do_eval:
        problems.append(f"--evaluation_strategy {args.eval_strategy} evaluates the held-out "
                        f"rows: give --do_eval too")
    if args.do_mmlu_eval and (not args.do_eval or args.eval_strategy == "no"):
        problems.append("--do_mmlu_eval runs at each evaluation: give --do_eval "
                        "--evaluation_strategy steps --eval_steps N (as NOLA's scripts do)")
    if args.eval_strategy == "steps" and not args.eval_steps:
        problems.append("--evaluation_strategy steps needs --eval_steps")
    if args.dataset in instruct_data.HUB_DATASETS and args.dataset_file is None \
            and importlib.util.find_spec("datasets") is None:
        problems.append(f"--dataset {args.dataset} is read from the Hugging Face hub, which "
                        f"needs the `datasets` package: pip install datasets (or give a local "
                        f"copy of its rows with --dataset_file, or a local --dataset file)")
    if problems:
        raise ValueError("; ".join(problems))


def mmlu_rows(args):
    path = mmlu.mmlu_path(args.mmlu_data_dir, args.mmlu_dataset, args.mmlu_split)
    if not os.path.isfile(path):
        raise ValueError(f"--do_mmlu_eval needs {path} (from {os.getcwd()}): no such "
                         f"file. Get {MMLU_SOURCE} and put them there, or point "
                         f"--mmlu_data_dir at their folder")
    return path, mmlu.read_mmlu(path, args.max_mmlu_samples)


def adapter_dtype(args):
    import torch
    if args.adapter_dtype == "auto":
        return torch.bfloat16 if args.bf16 else torch.float32
    return getattr(torch, args.adapter_dtype)


def adapt(args, model, method):
    """The base prepared and the adapters in, as qlora.py's get_accelerate_model; returns the
    adapted module names (None when fine-tuning everything)."""
    import torch
    import qlora_model
    names = None
    if method.is_adapter:
        qlora_model.prepare_for_kbit_training(model, args.gradient_checkpointing,
                                              args.gradient_checkpointing_kwargs)
        targets = args.target_modules or qlora_model.linear_names(model, args.bits)
        # fp32 as created, then cast as qlora.py casts its LoRA layers
        names = lora.inject(model, method, targets, adapter_dtype=torch.float32)
    on = getattr(model, "is_activation_checkpointing", None)         # transformers >= 5
    if on is None:
        on = getattr(model, "is_gradient_checkpointing", False)
    if args.gradient_checkpointing and not on:
        llm_trainer.enable_gradient_checkpointing(model, args.gradient_checkpointing_kwargs)
    qlora_model.cast_like_qlora(model, args.bf16, adapter_dtype(args))
    return names


def trainable_report(model) -> str:
    """qlora.py's print_trainable_parameters line (a packed 4-bit weight counts its bytes, as
    there) and the share of each dtype."""
    trainable, total = lora.count_parameters(model)
    dtypes = {}
    for p in model.parameters():
        dtypes[p.dtype] = dtypes.get(p.dtype, 0) + p.numel()
    lines = [f"trainable params: {trainable} || all params: {total} || "
             f"trainable: {100 * trainable / total}"]
    lines += [f"{d} {n} {n / total}" for d, n in dtypes.items()]
    return "\n".join(lines)


def training_kwargs(args):
    kw = dict(output_dir=args.output_dir,
              per_device_train_batch_size=args.per_device_train_batch_size,
              per_device_eval_batch_size=args.per_device_eval_batch_size,
              gradient_accumulation_steps=args.gradient_accumulation_steps,
              learning_rate=args.learning_rate, weight_decay=args.weight_decay,
              adam_beta1=args.adam_beta1, adam_beta2=args.adam_beta2,
              adam_epsilon=args.adam_epsilon, max_grad_norm=args.max_grad_norm,
              lr_scheduler_type=args.lr_scheduler_type, warmup_ratio=args.warmup_ratio,
              num_train_epochs=args.num_train_epochs, max_steps=args.max_steps,
              logging_steps=args.logging_steps, logging_strategy=args.logging_strategy,
              save_strategy=args.save_strategy, save_steps=args.save_steps,
              save_total_limit=args.save_total_limit, eval_strategy=args.eval_strategy,
              eval_steps=args.eval_steps, seed=args.seed, data_seed=args.data_seed,
              bf16=args.bf16, fp16=args.fp16, optim=args.optim, report_to=args.report_to,
              run_name=args.run_name, remove_unused_columns=False,
              dataloader_num_workers=args.dataloader_num_workers,
              group_by_length=args.group_by_length, do_train=args.do_train,
              do_eval=args.do_eval)
    if args.tf32 is not None:
        kw["tf32"] = args.tf32
    return llm_trainer.training_arguments(kw)


def last_checkpoint(output_dir):
    """(checkpoint folder or None, completed), as qlora.py's get_last_checkpoint."""
    if not os.path.isdir(output_dir):
        return None, False
    if os.path.exists(os.path.join(output_dir, "completed")):
        return None, True
    steps = [int(n.split("-")[1]) for n in os.listdir(output_dir)
             if n.startswith("checkpoint-") and n.split("-")[1].isdigit()
             and os.path.isdir(os.path.join(output_dir, n))]
    return (os.path.join(output_dir, f"checkpoint-{max(steps)}") if steps else None), False


def data(args, tok):
    splits = instruct_data.load_splits(args.dataset, args.dataset_format,
                                       data_file=args.dataset_file, seed=args.seed)
    train, evaluation = instruct_data.train_eval_split(
        splits, do_train=args.do_train, do_eval=args.do_eval,
        eval_dataset_size=args.eval_dataset_size, max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples)
    collator = instruct_data.InstructCollator(tok, args.source_max_len, args.target_max_len,
                                              train_on_source=args.train_on_source)
    return train, evaluation, collator


def _main(argv=None):
    args = build_parser().parse_args(argv)
    method = method_from_args(args)
    check_setup(args, method)
    if args.lora_modules is not None:
        print(f"note: --lora_modules {args.lora_modules} is ignored, as qlora.py ignores it "
              f"(the adapters go on {args.target_modules or 'every linear layer but lm_head'})")
    mmlu_data = mmlu_rows(args) if args.do_mmlu_eval else None
    from model_check import check_model
    check_model(args.model_name_or_path, "--model_name_or_path")
    import torch
    import transformers
    import qlora_model
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True         # qlora.py 76-77
    checkpoint, completed = last_checkpoint(args.output_dir)
    if completed:
        print(f"{args.output_dir} holds a completed run (its `completed` file): nothing to do "
              f"(remove the folder, or pick another --output_dir, to train again)")
        return None
    os.makedirs(args.output_dir, exist_ok=True)
    if int(os.environ.get("RANK", "0")) == 0:
        try:    # one run per output folder (the lock dies with the process)
            traincore.claim_work_dir(args.output_dir, resuming=True)
        except traincore.WorkDirBusy as e:
            raise ValueError(str(e)) from None
    print(f"loading base model {args.model_name_or_path} ({args.bits}-bit)...")
    model = qlora_model.load_base(args)
    tok = qlora_model.load_tokenizer(args, model)
    # (qlora.py draws the adapters from the process's unseeded RNG: here --seed makes a rerun
    # draw the same adapter, NOLA's basis seeds included)
    transformers.set_seed(args.seed)
    names = adapt(args, model, method)
    if names is not None:
        print(f"adapted {len(names)} modules with {method.method}: r={method.r} "
              f"alpha={method.alpha} dropout={method.dropout} {method.options}")
        for note in method.notes():
            print(f"note: {note}")
    model.config.use_cache = False
    transformers.set_seed(args.seed)     # after the model, as qlora.py (NOLA's seeds drawn)
    try:
        train_set, eval_set, collator = data(args, tok)
    except ImportError as e:        # a dataset reader's package (datasets) is missing
        raise ValueError(str(e)) from None
    targs = transformers.TrainingArguments(**training_kwargs(args))
    cbs = llm_trainer.callbacks(args.output_dir, args.stop_after_steps)
    if mmlu_data is not None:
        from mmlu_callback import mmlu_callback
        path, rows = mmlu_data
        cb = mmlu_callback(rows, tok, dataset=args.mmlu_dataset, split=args.mmlu_split,
                           data_file=path, batch_size=args.per_device_eval_batch_size,
                           source_max_len=args.mmlu_source_max_len,
                           target_max_len=args.target_max_len, out_dir=args.output_dir)
        cbs.append(cb)
    trainer = llm_trainer.trainer_class()(model=model, args=targs, train_dataset=train_set,
                                          eval_dataset=eval_set, data_collator=collator,
                                          callbacks=cbs)
    if mmlu_data is not None:
        cb.trainer = trainer
    print(trainable_report(model))
    trainable, total = lora.count_parameters(model)
    metrics = {"run_name": args.run_name}
    try:
        if args.do_train:
            if checkpoint:
                print(f"resuming from {checkpoint}")
            result = llm_trainer.train(trainer, checkpoint, args.output_dir,
                                       f"--save_steps {args.save_steps} steps", None)
            if args.stop_after_steps and trainer.state.global_step < trainer.state.max_steps:
                print(f"stopped after step {trainer.state.global_step}; run the same command "
                      f"again to continue")
                return trainer
            trainer.save_metrics("train", result.metrics)
            trainer.save_state()
            metrics.update(result.metrics)
        if args.do_eval:
            eval_metrics = trainer.evaluate(metric_key_prefix="eval")
            trainer.save_metrics("eval", eval_metrics)
            metrics.update(eval_metrics)
    except traincore.NonFiniteError as e:
        raise SystemExit(f"{WHAT}: {e}")
    final = os.path.join(args.output_dir, "adapter" if method.is_adapter else "model")
    if method.is_adapter:
        llm_trainer.save_final_adapter(model, final, args.model_name_or_path, WHAT)
    if not trainer.is_world_process_zero():
        return trainer
    if not method.is_adapter:           # --full_finetune: the whole model, as save_pretrained
        try:
            traincore.check_finite_state(model.state_dict(), final)
        except traincore.NonFiniteError as e:
            raise SystemExit(f"{WHAT}: training diverged: {e}")
        model.save_pretrained(final)
        tok.save_pretrained(final)
    peak = {}
    if torch.cuda.is_available():       # what a GPU needs for this run (benchmarks/: estimate)
        peak = {i: torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())}
        print("peak GPU memory allocated: " + ", ".join(f"cuda:{i} {b / 2 ** 30:.2f} GiB"
                                                        for i, b in peak.items()))
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    with open(os.path.join(args.output_dir, "run_info.json"), "w") as f:
        json.dump({"pipeline": "qlora", "method": method.to_dict(), "bits": args.bits,
                   "peak_gpu_memory_bytes": peak,
                   "targets": names, "trainable_params": trainable, "total_params": total,
                   "steps": trainer.state.global_step,
                   "tasks": ["mmlu"] if args.do_mmlu_eval else [],
                   "args": vars(args)}, f, indent=2, default=str)
    with open(os.path.join(args.output_dir, "completed"), "a"):
        pass
    print(f"saved the {'adapter' if method.is_adapter else 'model'} to {final}")
    return trainer


def main(argv=None):
    """_main with bad input and Ctrl-C reported as one line (exit 2 / 130; traincore.cli)."""
    return cli.run("qlora.py", _main, argv)


if __name__ == "__main__":
    main()

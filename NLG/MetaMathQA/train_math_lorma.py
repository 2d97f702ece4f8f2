"""Fine-tune a Hugging Face causal LM on MetaMathQA (or Alpaca-format) data with any loralib
method, as LoRMA's NLG/MetaMathQA/train_math_lorma.py does, then merge the adapter and save.

    python train_math_lorma.py --model_name_or_path meta-llama/Meta-Llama-3-8B \
        --data_path ./data/train/MetaMathQA-40K.json --data_length 10000000 --bf16 True \
        --output_dir SAVE_PATH --per_device_train_batch_size 2 --gradient_accumulation_steps 32 \
        --learning_rate 5e-4 --weight_decay 0. --warmup_ratio 0.1 --lr_scheduler_type cosine \
        --logging_steps 1 --num_train_epochs 2 --lorma_r 8 --lorma_alpha 16 --lorma_mode pre \
        --rank_inflation rri --target_modules up_proj down_proj o_proj gate_proj

The official flags are accepted as written; --method picks another loralib method (lora,
mtlora, nola with --qnola, full) with its usual flags. Training is Hugging Face's Trainer, as in
the official code (its AdamW, schedule, gradient clipping at 1.0, loss normalisation over the
accumulated tokens), with adapter-only checkpoints so that --resume is cheap. SAVE_PATH gets
the merged model and tokenizer (save_pretrained: a plain model, no adapter tensors), adapter/
(loralib.save_adapter), train_log.jsonl, run_info.json and TensorBoard scalars (trainer/runs/).

Precision as the official run: the base loads in float32 (--torch_dtype float32: the official
script calls from_pretrained without a dtype under transformers 4, which gives float32), the
adapters are float32 whatever the base, and --bf16 True is autocast. --torch_dtype bfloat16
halves the base's memory (adapters and their Adam moments stay float32).

Many GPUs: torchrun (DDP), or FSDP (--fsdp full_shard, or accelerate launch with an FSDP
config: FSDP2, or FSDP1 with use_orig_params); every rank takes part in gathering the adapter,
rank 0 writes it and merges it into a fresh unsharded copy of the base. DeepSpeed ZeRO-3 is
refused (llm_sharding.py).
"""
import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
try:
    import loralib as lora
    if "inject" not in getattr(lora, "__all__", ()):    # Microsoft's loralib 0.1.2, say
        raise ImportError
except ImportError:   # a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    sys.modules.pop("loralib", None)
    import loralib as lora
import traincore  # noqa: E402  (its names load on use: --help needs no torch)
from traincore import cli  # noqa: E402
import llm_trainer  # noqa: E402
from llm_sharding import check_trainer_sharding, refuse_zero3  # noqa: E402

DTYPES = ("float32", "bfloat16", "float16", "auto")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model_name_or_path", required=True, help="hub id or local folder")
    g.add_argument("--data_path", required=True,
                   help="MetaMathQA (query/response) or Alpaca (instruction/input/output) rows")
    g.add_argument("--data_length", type=int, default=10_000_000,
                   help="keep the first N rows after the seeded shuffle")
    g.add_argument("--model_max_length", type=int, default=512, help="truncation length")
    g.add_argument("--output_dir", required=True, help="SAVE_PATH: merged model, adapter, logs")
    g.add_argument("--target_modules", nargs="+", default=["q_proj", "v_proj"],
                   help="module-name suffixes to adapt (official default q_proj v_proj)")
    g.add_argument("--torch_dtype", default="float32", choices=DTYPES,
                   help="dtype of the base model's weights (float32: what the official script "
                        "loads under transformers 4; auto: the checkpoint's, bf16 for "
                        "Llama-3); adapters are float32 whatever this is")
    t = p.add_argument_group("training (Trainer's flags)")
    t.add_argument("--per_device_train_batch_size", type=int, default=8)
    t.add_argument("--per_device_eval_batch_size", type=int, default=8,
                   help="(accepted; this pipeline evaluates with eval_gsm8k.py / eval_math.py)")
    t.add_argument("--gradient_accumulation_steps", type=int, default=1)
    t.add_argument("--learning_rate", type=float, default=5e-5)
    t.add_argument("--weight_decay", type=float, default=0.0)
    t.add_argument("--warmup_ratio", type=float, default=0.0)
    t.add_argument("--lr_scheduler_type", default="linear")
    t.add_argument("--num_train_epochs", type=float, default=3.0)
    t.add_argument("--max_steps", type=int, default=-1, help="> 0 overrides the epochs")
    t.add_argument("--logging_steps", type=int, default=10)
    t.add_argument("--max_grad_norm", type=float, default=1.0)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--bf16", type=lora.cli._bool, nargs="?", const=True, default=False)
    t.add_argument("--fp16", type=lora.cli._bool, nargs="?", const=True, default=False)
    t.add_argument("--tf32", type=lora.cli._bool, nargs="?", const=True, default=None,
                   help="TF32 matmuls on Ampere-or-newer NVIDIA GPUs (TrainingArguments tf32)")
    t.add_argument("--gradient_checkpointing", type=lora.cli._bool, nargs="?", const=True,
                   default=False, help="recompute activations in backward (less memory)")
    t.add_argument("--gradient_checkpointing_kwargs", type=json.loads,
                   default={"use_reentrant": False},
                   help="JSON for torch.utils.checkpoint; use_reentrant false by default (true "
                        "works too: the embeddings' output is made to require grad)")
    t.add_argument("--fsdp", default="",
                   help="Trainer's FSDP option, e.g. 'full_shard auto_wrap' (or launch with "
                        "accelerate and an FSDP config)")
    t.add_argument("--fsdp_config", default=None,
                   help="Trainer's fsdp_config: a JSON file or string (version 2 by default; "
                        "version 1 needs use_orig_params true)")
    t.add_argument("--deepspeed", default=None,
                   help="DeepSpeed JSON config (ZeRO-1/2; ZeRO-3 is refused: use FSDP)")
    t.add_argument("--evaluation_strategy", "--eval_strategy", dest="eval_strategy",
                   default="no", choices=("no",),
                   help="(the official script passes no; there is no evaluation set here)")
    t.add_argument("--save_strategy", default="no", choices=("no", "steps", "epoch"),
                   help="intermediate merged-model saves; a resumable adapter state is kept "
                        "anyway (--resume_every)")
    t.add_argument("--save_steps", type=int, default=500)
    t.add_argument("--save_total_limit", type=int, default=None)
    t.add_argument("--resume_every", type=int, default=100,
                   help="steps between resumable states (adapter + optimizer, small)")
    t.add_argument("--resume", action="store_true", help="continue a killed run from its last "
                                                         "resumable state in --output_dir")
    t.add_argument("--stop_after_steps", type=int, default=None,
                   help="end the process after N steps with the resumable state saved (tests "
                        "of --resume)")
    t.add_argument("--local_rank", "--local-rank", type=int, default=None,
                   help="(set by torch.distributed.launch)")
    lora.add_method_args(p)
    cli.setup_parser(p)
    return p


def method_from_args(args):
    implied = lora.cli.resolve_dialects(args)
    if args.method is None and implied is None and args.lora_dim is None \
            and not any(getattr(args, f, None) is not None for f in
                        lora.get_spec("nola").cli.flags):
        args.method = "lorma"             # the official script's method and defaults
    family = lora.get_spec(args.method or implied or "lora").family \
        if (args.method or implied) not in ("full", "none") else args.method
    if family == "lorma":
        args.lora_dim = 8 if args.lora_dim is None else args.lora_dim
        args.lora_alpha = 16.0 if args.lora_alpha is None else args.lora_alpha
    return lora.method_config_from_args(args, default="lorma", pipeline="llm")


def load_model(args):
    import torch
    import transformers
    tok = transformers.AutoTokenizer.from_pretrained(args.model_name_or_path,
                                                     model_max_length=args.model_max_length,
                                                     padding_side="right")
    dtype = args.torch_dtype if args.torch_dtype == "auto" else getattr(torch, args.torch_dtype)
    # transformers 5 loads the checkpoint's dtype unless told ("auto" default) and names the
    # argument `dtype`; 4.x named it torch_dtype and loaded float32.
    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model_name_or_path,
                                                              **{key: dtype})
    if tok.pad_token is None:
        llm_trainer.add_pad_token(tok, model)      # the official [PAD], mean embeddings
    return tok, model


def prepare_model(args, model, method):
    """Put the adapter in (fp32 tensors whatever the base's dtype) and switch on gradient
    checkpointing; returns the adapted module names (None when fine-tuning everything)."""
    names = None
    if method.is_adapter:
        names = lora.inject(model, method, args.target_modules)
    if args.gradient_checkpointing:
        llm_trainer.enable_gradient_checkpointing(model, args.gradient_checkpointing_kwargs)
    return names


def training_kwargs(args, save_path, sharded=False):
    """TrainingArguments for this run (llm_trainer.training_arguments: across transformers
    versions)."""
    kw = dict(output_dir=os.path.join(save_path, "trainer"),
              per_device_train_batch_size=args.per_device_train_batch_size,
              gradient_accumulation_steps=args.gradient_accumulation_steps,
              learning_rate=args.learning_rate, weight_decay=args.weight_decay,
              lr_scheduler_type=args.lr_scheduler_type, num_train_epochs=args.num_train_epochs,
              max_steps=args.max_steps, logging_steps=args.logging_steps,
              max_grad_norm=args.max_grad_norm, seed=args.seed, bf16=args.bf16, fp16=args.fp16,
              optim="adamw_torch", save_strategy="no" if sharded else "steps",
              save_steps=args.resume_every, save_total_limit=1, report_to=["tensorboard"],
              remove_unused_columns=False, dataloader_num_workers=0,
              warmup_ratio=args.warmup_ratio,
              logging_dir=os.path.join(save_path, "trainer", "runs"))
    if args.tf32 is not None:
        kw["tf32"] = args.tf32
    if args.fsdp:
        kw["fsdp"] = args.fsdp
        cfg = args.fsdp_config
        if cfg and not cfg.lstrip().startswith("{"):
            with open(cfg, encoding="utf-8") as f:
                cfg = f.read()
        kw["fsdp_config"] = json.loads(cfg) if cfg else {}
    if args.deepspeed:
        kw["deepspeed"] = args.deepspeed
    return llm_trainer.training_arguments(kw)


def make_trainer(args, model, tok, train_set, save_path, sharded=False):
    import transformers
    from math_data import Collator
    targs = transformers.TrainingArguments(**training_kwargs(args, save_path, sharded))
    return llm_trainer.trainer_class()(model=model, args=targs, train_dataset=train_set,
                                       data_collator=Collator(tok, args.model_max_length),
                                       callbacks=llm_trainer.callbacks(save_path,
                                                                       args.stop_after_steps))


def _fsdp_requested(args) -> bool:
    """FSDP from --fsdp or from accelerate launch's environment (before the Trainer exists)."""
    return bool(args.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


def _check_setup(args, method) -> None:
    """Refusals that need nothing loaded: each names the flag and what to do instead."""
    refuse_zero3(args.deepspeed)
    if args.tf32:
        import torch
        if not (torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8):
            raise ValueError("--tf32 needs an NVIDIA GPU of the Ampere "
                             "generation or newer (TF32 matmuls); leave it off elsewhere")
    if _fsdp_requested(args):
        if int(os.environ.get("WORLD_SIZE", "1")) < 2:
            raise ValueError("FSDP (--fsdp, or the accelerate config) "
                             "shards across several GPU processes only: launch N processes "
                             "on N GPUs (accelerate launch --config_file fsdp.yaml "
                             "--num_processes N, or torchrun with --fsdp); accelerate does "
                             "not shard on CPU processes")
        if not method.is_adapter:
            raise ValueError("--method full under FSDP is not supported "
                             "here (use an adapter method, or DDP with torchrun)")
        if args.resume or args.stop_after_steps:
            raise ValueError("under FSDP this script keeps no resumable "
                             "state (--resume / --stop_after_steps): the adapter is saved at "
                             "the end")


def _merge_on_unsharded_copy(args, folder):
    """The base loaded afresh (unsharded, this process only), the saved adapter loaded into it
    and merged: what a sharded model cannot do in place."""
    tok, model = load_model(args)
    lora.load_adapter(model, folder)
    lora.merge_and_unload(model)
    return tok, model


def _main(argv=None):
    args = build_parser().parse_args(argv)
    method = method_from_args(args)
    _check_setup(args, method)
    from model_check import check_model
    check_model(args.model_name_or_path, "--model_name_or_path")
    import transformers
    from math_data import load_examples
    save_path = args.output_dir
    if os.path.isfile(os.path.join(save_path, "config.json")) and not args.resume:
        raise ValueError(f"{save_path} already holds a trained model "
                         f"(remove it, or pick another --output_dir)")
    os.makedirs(save_path, exist_ok=True)
    if int(os.environ.get("RANK", "0")) == 0:
        try:    # one run per output folder (the lock dies with the process)
            traincore.claim_work_dir(save_path, resuming=True)
        except traincore.WorkDirBusy as e:
            raise ValueError(str(e)) from None
    transformers.set_seed(args.seed)
    examples = load_examples(args.data_path, args.data_length)
    tok, model = load_model(args)
    names = prepare_model(args, model, method)
    if names is not None:
        print(f"adapted {len(names)} modules ({', '.join(args.target_modules)}) with "
              f"{method.method}: r={method.r} alpha={method.alpha} dropout={method.dropout} "
              f"{method.options}")
        for note in method.notes():
            print(f"note: {note}")
    trainable, total = lora.count_parameters(model)
    print(f"Trainable Parameters: {trainable}")
    print(lora.parameter_report(model))
    print(f"{len(examples)} training examples from {args.data_path}")
    from math_data import responses_cut
    cut = responses_cut(tok, examples, args.model_max_length)
    if cut:
        print(f"note: {cut} of the first {min(1000, len(examples))} examples have their response "
              f"cut away by --model_max_length {args.model_max_length} (they train on nothing)")
    trainer = make_trainer(args, model, tok, examples, save_path, sharded=_fsdp_requested(args))
    sharded = check_trainer_sharding(trainer.accelerator.state)
    if _fsdp_requested(args) and sharded is None:
        raise ValueError("FSDP was asked for (--fsdp, or the accelerate "
                         "config) but accelerate did not shard the model: it shards across "
                         "several GPU processes only (torchrun / accelerate launch "
                         "--num_processes N on N GPUs); CPU processes would train unsharded")
    resume = None
    if args.resume:
        resume = transformers.trainer_utils.get_last_checkpoint(os.path.join(save_path, "trainer"))
        print(f"resuming from {resume}" if resume else "no resumable state: starting afresh")
    try:
        llm_trainer.train(trainer, resume, os.path.join(save_path, "trainer"),
                          f"--resume_every {args.resume_every} steps", "--resume")
    except traincore.NonFiniteError as e:
        raise SystemExit(f"train_math_lorma.py: {e}")
    if args.stop_after_steps and trainer.state.global_step < trainer.state.max_steps:
        print(f"stopped after step {trainer.state.global_step}; continue with --resume")
        return trainer
    # Every rank from here to the adapter's save: under FSDP gathering it is a collective.
    live = trainer.model_wrapped if sharded else model
    adapter_dir = os.path.join(save_path, "adapter")
    if method.is_adapter:
        llm_trainer.save_final_adapter(live, adapter_dir, args.model_name_or_path,
                                       "train_math_lorma.py")
    else:
        try:
            traincore.check_finite_state(model.state_dict(), save_path)
        except traincore.NonFiniteError as e:
            raise SystemExit(f"train_math_lorma.py: training diverged: {e}")
    if not trainer.is_world_process_zero():
        return trainer
    if sharded:
        tok, model = _merge_on_unsharded_copy(args, adapter_dir)
    elif method.is_adapter:
        lora.merge_and_unload(model)
    model.generation_config.temperature = 1.0
    model.generation_config.top_p = 1.0
    for p in model.parameters():
        p.data = p.data.contiguous()
    model.save_pretrained(save_path)
    tok.save_pretrained(save_path)
    with open(os.path.join(save_path, "run_info.json"), "w") as f:
        json.dump({"method": method.to_dict(), "trainable_params": trainable,
                   "total_params": total, "examples": len(examples),
                   "steps": trainer.state.global_step, "sharding": sharded,
                   "args": vars(args)}, f, indent=2, default=str)
    for name in os.listdir(os.path.join(save_path, "trainer")):   # keep runs/ (TensorBoard)
        if name.startswith("checkpoint-"):
            shutil.rmtree(os.path.join(save_path, "trainer", name), ignore_errors=True)
    print(f"saved the merged model to {save_path}")
    return trainer


def main(argv=None):
    """_main with bad input and Ctrl-C reported as one line (exit 2 / 130; traincore.cli)."""
    return cli.run("train_math_lorma.py", _main, argv)


if __name__ == "__main__":
    main()

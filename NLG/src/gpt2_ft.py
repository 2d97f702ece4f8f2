"""Fine-tune GPT-2 with one loralib method (or fully) on token-id jsonl data.

Microsoft's command line (examples/NLG/src/gpt2_ft.py) plus loralib's method flags:
    python -m torch.distributed.launch --nproc_per_node=1 src/gpt2_ft.py \
        --train_data ./data/e2e/train.jsonl --valid_data ./data/e2e/valid.jsonl \
        --train_batch_size 8 --grad_acc 1 --valid_batch_size 4 --seq_len 512 \
        --model_card gpt2.md --init_checkpoint ./pretrained_checkpoints/gpt2-medium-pytorch_model.bin \
        --platform local --clip 0.0 --lr 0.0002 --weight_decay 0.01 --correct_bias --adam_beta2 0.999 \
        --scheduler linear --warmup_step 500 --max_epoch 5 --save_interval 1000 \
        --lora_dim 4 --lora_alpha 32 --lora_dropout 0.1 --label_smooth 0.1 \
        --work_dir ./trained_models/GPT2_M/e2e --random_seed 110
The method: --method {full,lora,lorma,mtlora,nola,...}; without it, --nola_* flags pick NOLA and
--lora_dim > 0 picks LoRA, else full fine-tuning. torchrun works as well (see gpu.py, also for
several machines).

Semantics that differ from Microsoft's script, on purpose:
  * a step is one optimizer update (--grad_acc batches); --max_step and the schedule count updates
    (Microsoft's count batches, which only differs when --grad_acc > 1);
  * the loss of a step is the token-weighted mean over the whole distributed batch, so N processes
    with batch B train exactly like one process with batch N*B;
  * batches are padded to their longest example, and logits are only computed where the loss
    mask is 1;
  * --fp16 / --bf16 use torch autocast (no apex), --tf32 TF32 products (fp32 is the default, as
    the official runs); --resume continues a stopped run exactly, also on several machines
    without a shared --work_dir (rank 0's resume.pt reaches every process);
  * --compile runs the training step through torch.compile (off by default).

A Hugging Face causal LM trains instead of GPT-2 with --backbone hf:<hub id | folder | file.gguf>
(nlg/hf_backbone.py): the data encoded with its tokenizer (gpt2_encode.py --tokenizer, same
spec), no --model_card / --init_checkpoint (its weights come from the spec), the method through
loralib.inject on the projections --adapt_targets names (default q_proj,v_proj: loralib's q, v),
the same loop, loss, resume and checkpoints; a checkpoint then records the backbone and holds
the adapter (every weight for full fine-tuning), not the base weights the spec gives again.

Outputs in --work_dir: model.<step>.pt every --save_interval (adapter only, or everything for full
fine-tuning), the final model.<max_step>.pt (backbone + adapter: --init_checkpoint for the beam
scripts needs nothing else), resume.pt, train_log.jsonl, valid_log.jsonl, run_info.json and
TensorBoard event files under tensorboard/.
"""
if not __package__:  # run as a file (python src/gpt2_ft.py), as in Microsoft's repo
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from traincore.entry import as_package
    as_package(__file__, "nlg")
import argparse
import os

import loralib as lora
from nlg.gpu import add_gpu_params
from nlg.optimizer_flags import add_optimizer_params
from traincore import cli

# Only what the command line needs is imported here, so that --help and argparse's errors
# answer without torch; the run itself is nlg/finetune.py.


def build_parser(defaults=None, description="Fine-tune GPT-2 with a loralib method"):
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_gpu_params(parser)
    add_optimizer_params(parser)
    g = parser.add_argument_group("data and model")
    g.add_argument("--train_data", required=True, help="training token-id jsonl")
    g.add_argument("--valid_data", required=True, help="validation token-id jsonl")
    g.add_argument("--seq_len", type=int, default=512,
                        help="maximum tokens per example (batches are padded to their longest)")
    g.add_argument("--model_card", default="gpt2.md",
                        help="gpt2.sm | gpt2.md | gpt2.lg | gpt2.tiny, or a JSON file of "
                             "GPT2Config keywords")
    g.add_argument("--backbone", default="gpt2",
                        help="gpt2: the hand-rolled GPT-2 of --model_card; or hf:<hub id | folder "
                             "| file.gguf>: a Hugging Face causal LM (its weights from there, in "
                             "float32; train on data encoded with gpt2_encode.py --tokenizer, "
                             "same spec)")
    g.add_argument("--init_checkpoint", default=None,
                        help="pretrained GPT-2 pytorch_model.bin / .safetensors, or a trained "
                             "model.<step>.pt; 'random': a random backbone (= --random_init)")
    g.add_argument("--random_init", action="store_true",
                        help="allow a random backbone (no checkpoint, or one lacking tensors)")
    g.add_argument("--independent_layer_init", action="store_true",
                        help="draw each layer's adapter on its own (the official code deep-copies "
                             "one block, so all layers start from the same adapter values)")
    g.add_argument("--obj", default="clm", choices=["jlm", "clm"],
                        help="clm: loss on the completion; jlm: on every token")
    g = parser.add_argument_group("training")
    g.add_argument("--train_batch_size", type=int, default=8, help="batch size per process")
    g.add_argument("--valid_batch_size", type=int, default=4, help="validation batch size")
    g.add_argument("--grad_acc", type=int, default=1, help="gradient accumulation steps")
    g.add_argument("--clip", type=float, default=0.0, help="gradient clip (0: none)")
    g.add_argument("--label_smooth", default=0.0, type=float, help="label smoothing")
    g.add_argument("--fp16", action="store_true",
                        help="fp16 autocast + loss scaling (GPU or CPU; traincore/precision.py)")
    g.add_argument("--bf16", action="store_true",
                        help="bf16 autocast (GPU or CPU): products in bf16 (8-bit mantissa), "
                             "weights, optimizer and loss in fp32")
    g.add_argument("--tf32", action="store_true",
                        help="TF32 products for fp32 tensors on Ampere and newer GPUs (10-bit "
                             "mantissa inputs, fp32 sums); without it and --bf16 / --fp16 every "
                             "product is fp32, as in the official runs")
    g.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                        help="torch.compile the model for the training step (backend: inductor; "
                             "aot_eager checks the graphs without generating code; dynamic "
                             "shapes: batches are padded per batch); the first steps pay the "
                             "compilation")
    g = parser.add_argument_group("logging, saving, resuming")
    g.add_argument("--work_dir", type=str, default=os.getenv("PT_OUTPUT_DIR", "gpt2_model"),
                        help="output folder")
    g.add_argument("--log_interval", type=int, default=100, help="log interval (steps)")
    g.add_argument("--eval_interval", type=int, default=2000, help="eval interval (steps)")
    g.add_argument("--save_interval", type=int, default=500, help="save interval (steps)")
    g.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="continue from a resumable state (default <work_dir>/resume.pt)")
    g.add_argument("--resume_allow_changes", default="",
                        help="comma-separated settings --resume may change although they change "
                             "the computation (e.g. lr); see RESUME_SETTINGS in finetune.py")
    g.add_argument("--stop_after_steps", type=int, default=None,
                        help="stop this invocation after N updates, saving the resumable state "
                             "(for time-limited jobs; continue with --resume)")
    g.add_argument("--overwrite", action="store_true",
                        help="replace a finished or interrupted run in --work_dir (its files go "
                             "first); without it such a folder is refused")
    g.add_argument("--export_published", default=None, metavar="PATH",
                        help="after the last step also write the model (adapter merged into the "
                             "weights) as a published GPT-2 pytorch_model.bin / .safetensors")
    g.add_argument("--no_tensorboard", action="store_true", help="skip TensorBoard files")
    g.add_argument("--no_progress", action="store_true",
                        help="no progress bar (it shows only on a terminal anyway)")
    g.add_argument("--task", default=None,
                        help="the task's name, recorded in run_info.json for the report "
                             "(run_task.sh gives it)")
    cli.setup_parser(parser, g)
    g = parser.add_argument_group("accepted for Microsoft's command lines (unused)")
    g.add_argument("--roll_interval", type=int, default=-1, help="(Microsoft's; unused)")
    g.add_argument("--roll_lr", type=float, default=0.00001, help="(Microsoft's; unused)")
    g.add_argument("--roll_step", type=int, default=100, help="(Microsoft's; unused)")
    g.add_argument("--eval_epoch", type=int, default=1, help="(Microsoft's; unused)")
    lora.add_method_args(parser)
    if defaults:
        parser.set_defaults(**defaults)
    return parser


# ----------------------------------------------------------------------------------------------

def main(argv=None, defaults=None, description=None):
    """The command: bad input and Ctrl-C as one line (traincore/cli.py)."""
    return cli.run("gpt2_ft", _main, argv, defaults, description)


def _main(argv=None, defaults=None, description=None):
    args = build_parser(defaults, **({"description": description} if description else {})
                        ).parse_args(argv)
    if args.max_step is None and args.max_epoch is None:
        usage_error("give --max_step or --max_epoch")
    if args.fp16 and args.bf16:
        usage_error("--fp16 and --bf16 are exclusive (pick one)")
    for name in ("train_batch_size", "valid_batch_size", "grad_acc", "log_interval",
                 "eval_interval", "save_interval"):
        if getattr(args, name) <= 0:
            usage_error(f"--{name} must be positive, got {getattr(args, name)}")
    hf = args.backbone != "gpt2"
    try:
        if hf:
            from nlg.hf_backbone import explicit_targets
            args.hf_target_modules = explicit_targets(args)
        # An HF backbone takes the method defaults of loralib's pipeline for Hugging Face
        # causal LMs (nlg/hf_backbone.py says which).
        method = lora.method_config_from_args(args, default="full",
                                              pipeline="llm" if hf else "gpt2")
        args.method_config = method
    except (ValueError, KeyError) as e:
        usage_error(f"method flags: {e}")
    check_inputs(args)
    from nlg.finetune import train          # torch from here on
    from nlg.gpu import cleanup, parse_gpu
    from traincore import NonFiniteError, release_work_dir
    try:
        parse_gpu(args)
    except ValueError as e:          # e.g. more processes than GPUs
        usage_error(str(e))
    try:
        return train(args, method)
    except NonFiniteError as e:
        raise SystemExit(f"gpt2_ft: {e}")
    finally:
        release_work_dir(args.work_dir)
        cleanup(args)


def usage_error(msg):
    """A command-line error: one line, exit status 2, before anything long is printed."""
    cli.usage_error("gpt2_ft", msg)


def check_inputs(args):
    """The files and the model card, checked before the settings dump and the model build."""
    from nlg.model import config_from_card
    if args.init_checkpoint == "random" and not os.path.exists("random"):
        args.init_checkpoint, args.random_init = None, True    # run_task.sh's spelling
    for flag in ("train_data", "valid_data"):
        path = getattr(args, flag)
        if not os.path.isfile(path):
            usage_error(f"--{flag} {path}: no such file (build it with create_datasets.sh)")
    if args.backbone != "gpt2":
        check_hf_inputs(args)
        return
    if args.init_checkpoint and not os.path.isfile(args.init_checkpoint):
        usage_error(f"--init_checkpoint {args.init_checkpoint}: no such file "
                    f"(download_pretrained_checkpoints.sh, or --random_init for a random backbone)")
    if not args.init_checkpoint and not args.random_init:
        usage_error("no --init_checkpoint given (the pretrained GPT-2 pytorch_model.bin, or "
                    "--random_init to start from random weights on purpose)")
    try:
        card = config_from_card(args.model_card)
    except (ValueError, OSError) as e:
        usage_error(str(e))
    if args.seq_len > card.n_positions:
        usage_error(f"--seq_len {args.seq_len} exceeds n_positions {card.n_positions} of "
                    f"--model_card {args.model_card} (lower --seq_len)")


def check_hf_inputs(args):
    """--backbone hf:...: the spec readable, the GPT-2 weight flags absent, --seq_len within
    the model's positions."""
    from nlg.backbone import parse_hf_spec
    from nlg.hf_backbone import check_targets
    from nlg.hf_loading import load_config, load_tokenizer
    from nlg.hf_tokenizer import check_separator
    for flag, given in (("init_checkpoint", args.init_checkpoint),
                        ("random_init", args.random_init),
                        ("independent_layer_init", args.independent_layer_init)):
        if given:
            usage_error(f"--{flag} is for the GPT-2 backbone; with --backbone {args.backbone} "
                        f"the weights come from the model, and each layer's adapter is drawn "
                        f"on its own")
    try:
        spec = parse_hf_spec(args.backbone)
        # one spelling per model (a folder made absolute): what resume.pt and run_info.json record
        args.backbone = str(spec)
        config = load_config(spec)
        check_targets(config, args.method_config, args.hf_target_modules)
        eos = load_tokenizer(spec, "--backbone").eos_token_id
        for path in (args.train_data, args.valid_data):
            check_separator(path, eos, args.backbone)
    except (ValueError, ImportError) as e:
        usage_error(str(e))
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and args.seq_len > limit:
        usage_error(f"--seq_len {args.seq_len} exceeds the {limit} positions of --backbone "
                    f"{args.backbone} (lower --seq_len)")


if __name__ == "__main__":
    main()

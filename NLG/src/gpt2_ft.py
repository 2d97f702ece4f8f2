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
  * --fp16 / --bf16 use torch autocast (no apex); --resume continues a stopped run exactly.

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
import math
import os
import sys
import time

import torch

from nlg.checkpoint import export_published, load_model_weights, method_record, training_state_dict
from nlg.data_utils import BatchStream, FT_Dataset, eval_batches
from nlg.gpu import add_gpu_params, cleanup, parse_gpu
from nlg.model import GPT2LMModel, config_from_card, lora
from nlg.optimizer import add_optimizer_params, create_adam_optimizer_from_args, create_optimizer_scheduler
from traincore import (LossWatch, NonFiniteError, Precision, RunLog, TrainLoop, WorkDirBusy, all_reduce_sum,
                       allowed_changes, barrier, claim_work_dir, cli, load_resume, release_work_dir,
                       remove_stale_temporaries, save_finite, save_resume, seed_all, write_json_atomic)

# What a run writes in --work_dir (removed first by --overwrite).
RUN_OUTPUTS = ("model.", "resume.pt", "train_log.jsonl", "valid_log.jsonl", "run_info.json",
               "tensorboard", ".resume.pt.", ".model.")
NONFINITE_HINT = (" (a lower --lr, --clip 1.0, or --fp16 -> --bf16 usually helps; the last "
                  "finite state is resume.pt, if one was written)")


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
    g.add_argument("--init_checkpoint", default=None,
                        help="pretrained GPT-2 pytorch_model.bin / .safetensors, or a trained "
                             "model.<step>.pt")
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
    g.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU or CPU)")
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
                             "the computation (e.g. lr); see RESUME_SETTINGS")
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
    try:
        method = lora.method_config_from_args(args, default="full", pipeline="gpt2")
        args.method_config = method
    except (ValueError, KeyError) as e:
        usage_error(f"method flags: {e}")
    check_inputs(args)
    parse_gpu(args)
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
    for flag in ("train_data", "valid_data"):
        path = getattr(args, flag)
        if not os.path.isfile(path):
            usage_error(f"--{flag} {path}: no such file (build it with create_datasets.sh)")
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


def _peak_memory_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        import resource
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 1024 if sys.platform != "darwin" else rss / 2 ** 20
    except ImportError:
        return float("nan")


def _to_device(batch, device):
    nb = device.type == "cuda"
    return {k: (v.to(device, non_blocking=nb) if torch.is_tensor(v) else v)
            for k, v in batch.items()}


def evaluate(model, valid_data, args, precision):
    """Token-weighted mean loss over the whole validation set (all ranks)."""
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=args.device)
    with torch.no_grad():
        for batch in eval_batches(valid_data, args.valid_batch_size, args.world_size, args.rank):
            b = _to_device(batch, args.device)
            with precision.autocast():
                _, loss_sum = model(b["input"], lm_labels=b["target"], lm_mask=b["mask"],
                                    reduction="sum", loss_positions=b["loss_positions"])
            totals[0] += loss_sum.double()
            totals[1] += batch["n_tokens"]
    all_reduce_sum(totals)
    model.train()
    loss = (totals[0] / totals[1].clamp(min=1e-4)).item()
    return loss, math.exp(min(loss, 700.0))


# ----------------------------------------------------------------------------------------------

def train(args, method):
    _claim(args)
    seed_all(args.random_seed)
    if args.rank == 0:
        print("=" * 80)
        for k, v in vars(args).items():
            if k != "procs":
                print(f"    - {k} : {v}")
        print("=" * 80)
    config, train_data, valid_data = _load_data(args, method)
    model, full = _build_model(args, method, config)
    trainable, total = lora.count_parameters(model)
    stream = BatchStream(train_data, args.train_batch_size, args.world_size, args.rank,
                         args.random_seed)
    # Like Microsoft's loop, training ends at --max_step or after --max_epoch, whichever is first.
    max_step = args.max_step
    if args.max_epoch is not None:
        by_epoch = max(1, args.max_epoch * stream.per_epoch // args.grad_acc)
        max_step = by_epoch if max_step is None else min(max_step, by_epoch)
    args.max_step = max_step
    optimizer = create_adam_optimizer_from_args(model, args)
    scheduler = create_optimizer_scheduler(optimizer, args)
    precision = Precision.from_flags(args.fp16, args.bf16, args.device)
    scaler = precision.grad_scaler()
    sd = model.state_dict()
    trained = list(sd) if full else [k for k in sd if lora.is_adapter_key(k)]
    step, resume_path = _maybe_resume(args, model, trained, optimizer, scheduler, scaler)

    net = args.procs.wrap(model, broadcast_buffers=False)
    loop = TrainLoop(net, optimizer, scheduler, precision, scaler, clip=args.clip,
                     distributed=args.world_size > 1, step=step,
                     params=[p for p in model.parameters() if p.requires_grad])
    steps = _Steps(args, method, model, full, trained, stream, valid_data, precision, loop, step)
    t_start, cpu_start = time.time(), time.process_time()
    net.train()
    try:
        loop.run(steps.groups(), steps.loss_of, steps.after_step)
    finally:
        steps.log.close()
    # CPU time of this process (all its threads): comparable between runs that shared the cores
    return _finish(args, method, model, loop.step, dict(
        trainable=trainable, total=total, train_time=time.time() - t_start,
        train_cpu=time.process_time() - cpu_start, peak_mem=_peak_memory_mb(args.device),
        resume_path=resume_path))


def _claim(args):
    if args.rank != 0:
        return
    try:
        claim_work_dir(args.work_dir, resuming=bool(args.resume), overwrite=args.overwrite,
                       occupied=("run_info.json", "resume.pt"), outputs=RUN_OUTPUTS)
    except WorkDirBusy as e:
        raise SystemExit(f"gpt2_ft: {e}")
    stale = remove_stale_temporaries(args.work_dir, ("model.", "resume.pt"))
    if stale:
        print(f"removed {stale} temporary file(s) of interrupted saves in {args.work_dir}")


def _load_data(args, method):
    config = config_from_card(args.model_card, method=method,
                              independent_layer_init=args.independent_layer_init)
    train_data = FT_Dataset(args.train_data, args.train_batch_size, args.seq_len,
                            joint_lm=args.obj == "jlm")
    valid_data = FT_Dataset(args.valid_data, args.valid_batch_size, args.seq_len)
    for data in (train_data, valid_data):
        data.check_vocab(config.vocab_size)
        cut, unusable = data.length_report()
        if unusable == data.num_examples:
            raise SystemExit(f"gpt2_ft: {data.ft_file}: every example is longer than --seq_len "
                             f"{args.seq_len} before its completion starts: nothing to train on "
                             f"or score (raise --seq_len)")
        if (cut or unusable) and args.rank == 0:
            print(f"note: {data.ft_file}: {cut + unusable} of {data.num_examples} examples are "
                  f"longer than --seq_len {args.seq_len}: {cut} truncated to it (the end of "
                  f"their completion is not trained on), {unusable} with no completion token "
                  f"left (they add nothing to the loss)")
    return config, train_data, valid_data


def _build_model(args, method, config):
    # A checkpoint without --random_init sets every backbone tensor (the loader checks): no
    # random draws for them.
    model = GPT2LMModel(config, init_backbone=args.random_init or not args.init_checkpoint)
    info = load_model_weights(model, args.init_checkpoint, random_init=args.random_init)
    if args.rank == 0:
        print(f"method: {method.method}{' ' + str(method) if config.adapter else ''}")
        for note in method.notes():
            print(f"note: {note}")
        print(f"loaded: {info}")
    full = config.adapter is None
    if not full:
        lora.mark_only_lora_as_trainable(model)
    model.to(args.device)
    if args.rank == 0:
        print(lora.parameter_report(model))
    return model, full


def _maybe_resume(args, model, trained, optimizer, scheduler, scaler):
    """(step, resume.pt path or None): where this run starts."""
    if not args.resume:
        return 0, None
    path = os.path.join(args.work_dir, "resume.pt") if args.resume == "auto" else args.resume
    if args.resume == "auto" and not os.path.isfile(path):
        if args.rank == 0:   # --resume on a fresh work dir: nothing to continue yet
            print(f"--resume: no {path} yet: starting at step 0")
        return 0, None
    allowed = allowed_changes(args.resume_allow_changes, RESUME_SETTINGS)
    state = load_resume(path, model, trained, optimizer, scheduler, scaler, resume_settings(args),
                        allowed, args.device, args.rank, args.world_size)
    if args.rank == 0:
        print(f"resumed from {path} at step {state['step']}")
    return int(state["step"]), path


class _Steps:
    """gpt2_ft's part of the loop: its batches, its loss, and what happens after each step."""

    def __init__(self, args, method, model, full, trained, stream, valid_data, precision, loop,
                 start_step):
        self.args, self.method, self.model, self.full, self.trained = args, method, model, full, trained
        self.stream, self.valid_data, self.precision, self.loop = stream, valid_data, precision, loop
        self.start_step = start_step
        self.log = RunLog(args.work_dir, ("train", "valid"), start_step, args.max_step,
                          main=args.rank == 0, tensorboard=not args.no_tensorboard,
                          progress=not args.no_progress)
        self.watch = LossWatch(args.device)
        self.log_loss = torch.zeros((), dtype=torch.float64, device=args.device)
        self.log_tokens = 0.0
        self.t_start = self.t_log = time.time()

    def groups(self):
        """Step s trains on batches s*grad_acc ... (BatchStream: a function of the step)."""
        args = self.args
        for s in range(self.start_step, args.max_step):
            micro = [self.stream.batch(s * args.grad_acc + i) for i in range(args.grad_acc)]
            n_tok = torch.tensor([sum(b["n_tokens"] for b in micro)], dtype=torch.float64,
                                 device=args.device)
            all_reduce_sum(n_tok)  # the global count normalises every rank's loss
            denom = (n_tok + 0.0001).float() / args.world_size  # DDP averages gradients over ranks
            yield s, [(b, denom) for b in micro]

    def loss_of(self, net, item):
        batch, denom = item
        b = _to_device(batch, self.args.device)
        _, loss_sum = net(b["input"], lm_labels=b["target"], lm_mask=b["mask"],
                          label_smooth=self.args.label_smooth, reduction="sum",
                          loss_positions=b["loss_positions"])
        self.log_loss += loss_sum.detach().double()
        self.watch.update(loss_sum, self.loop.step + 1)
        self.log_tokens += batch["n_tokens"]
        return loss_sum / denom

    def after_step(self, step, lr, _position):
        args = self.args
        self.log.step()
        if step % args.log_interval == 0 or step == args.max_step:
            self._log_train(step, lr)
        if step % args.eval_interval == 0:
            vloss, vppl = evaluate(self.loop.net, self.valid_data, args, self.precision)
            self.log.write("valid", {"step": step, "valid_loss": vloss, "valid_ppl": vppl})
            self.t_log = time.time()
        stopping = args.stop_after_steps is not None and step - self.start_step >= args.stop_after_steps
        if step % args.save_interval == 0 or step == args.max_step or stopping:
            self.watch.check(NONFINITE_HINT)
            if step % args.save_interval == 0 and step < args.max_step and args.rank == 0:
                sd = self.model.state_dict() if self.full else lora.lora_state_dict(self.model)
                save_finite({"model_state_dict": sd, **method_record(self.method)},
                            os.path.join(args.work_dir, f"model.{step}.pt"), sd, step, NONFINITE_HINT)
            save_resume(os.path.join(args.work_dir, "resume.pt"), self.model, self.trained,
                        self.loop.optimizer, self.loop.scheduler, self.loop.scaler, step,
                        resume_settings(args), args.device, main=args.rank == 0,
                        hint=NONFINITE_HINT)
        if stopping and step < args.max_step:
            if args.rank == 0:
                print(f"stopping after {step - self.start_step} steps at step {step}; continue "
                      f"with --resume")
            return True
        return False

    def _log_train(self, step, lr):
        args = self.args
        self.watch.check(NONFINITE_HINT)
        tot = torch.stack([self.log_loss, torch.tensor(self.log_tokens, dtype=torch.float64,
                                                       device=args.device)])
        all_reduce_sum(tot)
        loss_val, tokens = (tot[0] / tot[1].clamp(min=1e-4)).item(), tot[1].item()
        elapsed = time.time() - self.t_log
        self.log.write("train", {"step": step, "loss": loss_val, "lr": lr,
                                 "tokens_per_s": tokens / max(elapsed, 1e-9),
                                 "elapsed_s": time.time() - self.t_start,
                                 "peak_mem_mb": _peak_memory_mb(args.device),
                                 "epoch": self.stream.epoch_of(step * args.grad_acc - 1)})
        self.log_loss.zero_()
        self.log_tokens, self.t_log = 0.0, time.time()


def _finish(args, method, model, step, run):
    """The final checkpoint and run_info.json (it marks a finished run: run_task.sh reuses it; a
    stopped one has resume.pt)."""
    final_path = exported = None
    if step >= args.max_step:
        final_path = os.path.join(args.work_dir, f"model.{step}.pt")
        if args.rank == 0:
            sd = training_state_dict(model)
            save_finite({"model_state_dict": sd, **method_record(method)}, final_path, sd, step,
                        NONFINITE_HINT)
            print(f"saved final checkpoint {final_path}")
            if args.export_published:
                exported = export_published(model, args.export_published, merge=True)
                print(f"exported the merged model in the published layout: {exported}")
            write_json_atomic({
                "method": method.method, "method_config": str(method), "notes": list(method.notes()),
                "model_card": args.model_card, "trainable_params": run["trainable"],
                "total_params": run["total"], "final_checkpoint": final_path, "last_step": step,
                "max_step": args.max_step, "world_size": args.world_size,
                "train_time_s": run["train_time"], "train_cpu_s": run["train_cpu"],
                "peak_mem_mb": run["peak_mem"], "resumed_from": run["resume_path"],
                "exported_published": exported}, os.path.join(args.work_dir, "run_info.json"))
    barrier()
    return final_path


# ----------------------------------------------------------------------------------------------
# Resumable state (traincore/resume.py): the trainable tensors (float; quantized NOLA keeps its
# latents), optimizer, scheduler, loss scaler, every rank's RNG and the step. The frozen backbone
# comes again from --init_checkpoint. Batches are a function of the step (BatchStream), so nothing
# else is needed.

# Settings --resume must see unchanged: they decide what the steps compute (the method's own
# settings come with "method"). Logging, evaluation and saving intervals, --work_dir,
# --valid_data, progress / TensorBoard output and --stop_after_steps may change freely; one of
# these only with --resume_allow_changes NAME.
RESUME_SETTINGS = ("model_card", "init_checkpoint", "train_data", "train_batch_size", "grad_acc",
                   "world_size", "random_seed", "max_step", "seq_len", "obj", "lr", "scheduler",
                   "warmup_step", "weight_decay", "correct_bias", "no_decay_bias", "adam_beta1",
                   "adam_beta2", "adam_epislon", "clip", "label_smooth", "fp16", "bf16",
                   "independent_layer_init", "method")


def resume_settings(args):
    out = {k: getattr(args, k, None) for k in RESUME_SETTINGS if k != "method"}
    out["method"] = args.method_config.to_dict() if getattr(args, "method_config", None) else None
    return out


if __name__ == "__main__":
    main()

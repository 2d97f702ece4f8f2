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
import argparse
import contextlib
import json
import math
import os
import random
import sys
import time

import torch

from checkpoint import (export_published, load_model_weights, method_record,
                        remove_stale_temporaries, save_atomic, training_state_dict)
from data_utils import BatchStream, FT_Dataset, eval_batches
from gpu import (add_gpu_params, all_gather_object, all_reduce_sum, cleanup, distributed_sync,
                 parse_gpu)
from model import GPT2LMModel, config_from_card, lora
try:
    import traincore
except ImportError:    # `python src/gpt2_ft.py` without `pip install -e .`
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
    import traincore
from traincore import (LossWatch, NonFiniteError, WorkDirBusy, changed_settings,  # noqa: E402
                       check_finite_state, claim_work_dir, read_jsonl, release_work_dir,
                       rng_state, set_rng_state)

# What a run writes in --work_dir (removed first by --overwrite).
RUN_OUTPUTS = ("model.", "resume.pt", "train_log.jsonl", "valid_log.jsonl", "run_info.json",
               "tensorboard", ".resume.pt.", ".model.")
NONFINITE_HINT = (" (a lower --lr, --clip 1.0, or --fp16 -> --bf16 usually helps; the last "
                  "finite state is resume.pt, if one was written)")
from optimizer import (add_optimizer_params, create_adam_optimizer_from_args,
                       create_optimizer_scheduler)


def build_parser(defaults=None, description="Fine-tune GPT-2 with a loralib method"):
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_gpu_params(parser)
    add_optimizer_params(parser)
    parser.add_argument("--train_data", required=True, help="training token-id jsonl")
    parser.add_argument("--valid_data", required=True, help="validation token-id jsonl")
    parser.add_argument("--train_batch_size", type=int, default=8, help="batch size per process")
    parser.add_argument("--valid_batch_size", type=int, default=4, help="validation batch size")
    parser.add_argument("--grad_acc", type=int, default=1, help="gradient accumulation steps")
    parser.add_argument("--clip", type=float, default=0.0, help="gradient clip (0: none)")
    parser.add_argument("--seq_len", type=int, default=512,
                        help="maximum tokens per example (batches are padded to their longest)")
    parser.add_argument("--model_card", default="gpt2.md",
                        help="gpt2.sm | gpt2.md | gpt2.lg | gpt2.tiny, or a JSON file of "
                             "GPT2Config keywords")
    parser.add_argument("--init_checkpoint", default=None,
                        help="pretrained GPT-2 pytorch_model.bin / .safetensors, or a trained "
                             "model.<step>.pt")
    parser.add_argument("--random_init", action="store_true",
                        help="allow a random backbone (no checkpoint, or one lacking tensors)")
    parser.add_argument("--fp16", action="store_true", help="fp16 autocast + loss scaling (GPU)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--log_interval", type=int, default=100, help="log interval (steps)")
    parser.add_argument("--eval_interval", type=int, default=2000, help="eval interval (steps)")
    parser.add_argument("--save_interval", type=int, default=500, help="save interval (steps)")
    parser.add_argument("--work_dir", type=str, default=os.getenv("PT_OUTPUT_DIR", "gpt2_model"),
                        help="output folder")
    parser.add_argument("--obj", default="clm", choices=["jlm", "clm"],
                        help="clm: loss on the completion; jlm: on every token")
    parser.add_argument("--label_smooth", default=0.0, type=float, help="label smoothing")
    parser.add_argument("--roll_interval", type=int, default=-1, help="(Microsoft's; unused)")
    parser.add_argument("--roll_lr", type=float, default=0.00001, help="(Microsoft's; unused)")
    parser.add_argument("--roll_step", type=int, default=100, help="(Microsoft's; unused)")
    parser.add_argument("--eval_epoch", type=int, default=1, help="(Microsoft's; unused)")
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="continue from a resumable state (default <work_dir>/resume.pt)")
    parser.add_argument("--stop_after_steps", type=int, default=None,
                        help="stop this invocation after N updates, saving the resumable state "
                             "(for time-limited jobs; continue with --resume)")
    parser.add_argument("--export_published", default=None, metavar="PATH",
                        help="after the last step also write the model (adapter merged into the "
                             "weights) as a published GPT-2 pytorch_model.bin / .safetensors")
    parser.add_argument("--no_tensorboard", action="store_true", help="skip TensorBoard files")
    parser.add_argument("--no_progress", action="store_true", help="no tqdm progress bar")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished or interrupted run in --work_dir (its files go "
                             "first); without it such a folder is refused")
    parser.add_argument("--resume_allow_changes", default="",
                        help="comma-separated settings --resume may change although they change "
                             "the computation (e.g. lr); see RESUME_SETTINGS")
    parser.add_argument("--independent_layer_init", action="store_true",
                        help="draw each layer's adapter on its own (the official code deep-copies "
                             "one block, so all layers start from the same adapter values)")
    lora.add_method_args(parser)
    if defaults:
        parser.set_defaults(**defaults)
    return parser


# ----------------------------------------------------------------------------------------------

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


def evaluate(model, valid_data, args, autocast):
    """Token-weighted mean loss over the whole validation set (all ranks)."""
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=args.device)
    with torch.no_grad():
        for batch in eval_batches(valid_data, args.valid_batch_size, args.world_size, args.rank):
            b = _to_device(batch, args.device)
            with autocast():
                _, loss_sum = model(b["input"], lm_labels=b["target"], lm_mask=b["mask"],
                                    reduction="sum", loss_positions=b["loss_positions"])
            totals[0] += loss_sum.double()
            totals[1] += batch["n_tokens"]
    all_reduce_sum(totals, args)
    model.train()
    loss = (totals[0] / totals[1].clamp(min=1e-4)).item()
    return loss, math.exp(min(loss, 700.0))


def _truncate_log(path, last_step):
    """Keep the records up to the resumed step (a partial last line is dropped, with a note)."""
    if not os.path.isfile(path):
        return
    keep = [r for r in read_jsonl(path) if r.get("step", 0) <= last_step]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in keep)


class RunLog:
    """train_log.jsonl / valid_log.jsonl, TensorBoard scalars and the progress bar (rank 0)."""

    def __init__(self, args, start_step, max_step):
        self.enabled = args.rank == 0
        self.tb = self.bar = None
        if not self.enabled:
            return
        os.makedirs(args.work_dir, exist_ok=True)
        paths = [os.path.join(args.work_dir, n) for n in ("train_log.jsonl", "valid_log.jsonl")]
        if start_step > 0:  # drop what a killed run logged after its last resumable state
            for p in paths:
                _truncate_log(p, start_step)
        mode = "a" if start_step > 0 else "w"
        self.train, self.valid = (open(p, mode) for p in paths)
        if not args.no_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(os.path.join(args.work_dir, "tensorboard"),
                                        purge_step=start_step + 1 if start_step else None)
            except ImportError:
                print("tensorboard is not installed: no TensorBoard scalars")
        if not args.no_progress:
            from tqdm import tqdm
            self.bar = tqdm(total=max_step, initial=start_step, desc="train", unit="step",
                            dynamic_ncols=True, mininterval=1.0)

    def step(self, n=1):
        if self.bar is not None:
            self.bar.update(n)

    def write(self, kind, record):
        if not self.enabled:
            return
        f = self.train if kind == "train" else self.valid
        f.write(json.dumps(record) + "\n")
        f.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step":
                    self.tb.add_scalar(f"{kind}/{k}", v, record["step"])
        if self.bar is not None:
            self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v)
                                  for k, v in record.items() if k != "step"}, refresh=False)
        msg = " | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in record.items())
        (self.bar.write if self.bar is not None else print)(f"| {kind} | {msg}")

    def close(self):
        if not self.enabled:
            return
        self.train.close()
        self.valid.close()
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------------------------

def main(argv=None, defaults=None, description=None):
    args = build_parser(defaults, **({"description": description} if description else {})
                        ).parse_args(argv)
    if args.max_step is None and args.max_epoch is None:
        raise SystemExit("give --max_step or --max_epoch")
    if args.fp16 and args.bf16:
        raise SystemExit("--fp16 and --bf16 are exclusive")
    for name in ("train_batch_size", "valid_batch_size", "grad_acc", "log_interval",
                 "eval_interval", "save_interval"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name} must be positive, got {getattr(args, name)}")
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
    print(f"gpt2_ft: {msg}", file=sys.stderr)
    sys.exit(2)


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


def train(args, method):
    device, rank, world = args.device, args.rank, args.world_size
    if rank == 0:
        try:
            claim_work_dir(args.work_dir, resuming=bool(args.resume), overwrite=args.overwrite,
                           occupied=("run_info.json", "resume.pt"), outputs=RUN_OUTPUTS)
        except WorkDirBusy as e:
            raise SystemExit(f"gpt2_ft: {e}")
        stale = remove_stale_temporaries(args.work_dir)
        if stale:
            print(f"removed {stale} temporary file(s) of interrupted saves in {args.work_dir}")
    torch.manual_seed(args.random_seed)
    random.seed(args.random_seed)
    if rank == 0:
        print("=" * 80)
        for k, v in vars(args).items():
            print(f"    - {k} : {v}")
        print("=" * 80)

    config = config_from_card(args.model_card, method=method,
                              independent_layer_init=args.independent_layer_init)
    if args.seq_len > config.n_positions:
        raise SystemExit(f"--seq_len {args.seq_len} exceeds the model's n_positions "
                         f"{config.n_positions}")
    train_data = FT_Dataset(args.train_data, args.train_batch_size, args.seq_len,
                            joint_lm=args.obj == "jlm")
    valid_data = FT_Dataset(args.valid_data, args.valid_batch_size, args.seq_len)
    train_data.check_vocab(config.vocab_size)
    valid_data.check_vocab(config.vocab_size)
    for data in (train_data, valid_data):
        cut, unusable = data.length_report()
        if unusable == data.num_examples:
            raise SystemExit(f"gpt2_ft: {data.ft_file}: every example is longer than --seq_len "
                             f"{args.seq_len} before its completion starts: nothing to train on "
                             f"or score (raise --seq_len)")
        if (cut or unusable) and rank == 0:
            print(f"note: {data.ft_file}: {cut + unusable} of {data.num_examples} examples are "
                  f"longer than --seq_len {args.seq_len}: {cut} truncated to it (the end of "
                  f"their completion is not trained on), {unusable} with no completion token "
                  f"left (they add nothing to the loss)")

    model = GPT2LMModel(config)
    info = load_model_weights(model, args.init_checkpoint, random_init=args.random_init)
    if rank == 0:
        print(f"method: {method.method}{' ' + str(method) if config.adapter else ''}")
        for note in method.notes():
            print(f"note: {note}")
        print(f"loaded: {info}")
    full = config.adapter is None
    if not full:
        lora.mark_only_lora_as_trainable(model)
    model.to(device)
    trainable, total = lora.count_parameters(model)
    if rank == 0:
        print(lora.parameter_report(model))

    stream = BatchStream(train_data, args.train_batch_size, world, rank, args.random_seed)
    # Like Microsoft's loop, training ends at --max_step or after --max_epoch, whichever is first.
    max_step = args.max_step
    if args.max_epoch is not None:
        by_epoch = max(1, args.max_epoch * stream.per_epoch // args.grad_acc)
        max_step = by_epoch if max_step is None else min(max_step, by_epoch)
    args.max_step = max_step
    optimizer = create_adam_optimizer_from_args(model, args)
    scheduler = create_optimizer_scheduler(optimizer, args)

    use_cuda = device.type == "cuda"
    amp_dtype = None
    if args.fp16 or args.bf16:
        if use_cuda:
            amp_dtype = torch.float16 if args.fp16 else torch.bfloat16
        elif rank == 0:
            print("--fp16/--bf16 ignored on CPU: training in fp32")
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=amp_dtype)

    step = 0
    resume_path = None
    if args.resume == "auto" and not os.path.isfile(os.path.join(args.work_dir, "resume.pt")):
        if rank == 0:   # --resume on a fresh work dir: nothing to continue yet
            print(f"--resume: no {os.path.join(args.work_dir, 'resume.pt')} yet: starting at "
                  f"step 0")
    elif args.resume:
        resume_path = (os.path.join(args.work_dir, "resume.pt") if args.resume == "auto"
                       else args.resume)
        step = _load_resume(resume_path, model, optimizer, scheduler, scaler, args, full)
        if rank == 0:
            print(f"resumed from {resume_path} at step {step}")

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if use_cuda else None, broadcast_buffers=False)
    params = [p for p in model.parameters() if p.requires_grad]

    log = RunLog(args, step, max_step)
    watch = LossWatch(device)
    if rank == 0:
        os.makedirs(args.work_dir, exist_ok=True)
    net.train()
    t_start = time.time()
    t_log = time.time()
    run_steps = 0
    log_loss = torch.zeros((), dtype=torch.float64, device=device)
    log_tokens = 0.0
    log_steps = 0
    final_path = None
    while step < max_step:
        micro = [stream.batch(step * args.grad_acc + i) for i in range(args.grad_acc)]
        n_tok = torch.tensor([sum(b["n_tokens"] for b in micro)], dtype=torch.float64,
                             device=device)
        all_reduce_sum(n_tok, args)  # the global count normalises every rank's loss
        denom = (n_tok + 0.0001).float() / world  # DDP averages gradients over ranks
        for i, batch in enumerate(micro):
            b = _to_device(batch, device)
            sync = contextlib.nullcontext() if (world == 1 or i == len(micro) - 1) else net.no_sync()
            with sync:
                with autocast():
                    _, loss_sum = net(b["input"], lm_labels=b["target"], lm_mask=b["mask"],
                                      label_smooth=args.label_smooth, reduction="sum",
                                      loss_positions=b["loss_positions"])
                loss = loss_sum / denom
                (scaler.scale(loss) if scaler is not None else loss).backward()
            log_loss += loss_sum.detach().double()
            watch.update(loss_sum, step + 1)
            log_tokens += batch["n_tokens"]
        if scaler is not None:
            scaler.unscale_(optimizer)
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.clip)
        lr = optimizer.param_groups[0]["lr"]
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        run_steps += 1
        log_steps += 1
        log.step()

        if step % args.log_interval == 0 or step == max_step:
            watch.check(NONFINITE_HINT)
            tot = torch.stack([log_loss, torch.tensor(log_tokens, dtype=torch.float64,
                                                      device=device)])
            all_reduce_sum(tot, args)
            loss_val, tokens = (tot[0] / tot[1].clamp(min=1e-4)).item(), tot[1].item()
            elapsed = time.time() - t_log
            log.write("train", {"step": step, "loss": loss_val, "lr": lr,
                                "tokens_per_s": tokens / max(elapsed, 1e-9),
                                "elapsed_s": time.time() - t_start,
                                "peak_mem_mb": _peak_memory_mb(device),
                                "epoch": stream.epoch_of(step * args.grad_acc - 1)})
            log_loss.zero_()
            log_tokens, log_steps, t_log = 0.0, 0, time.time()

        if step % args.eval_interval == 0:
            vloss, vppl = evaluate(net, valid_data, args, autocast)
            log.write("valid", {"step": step, "valid_loss": vloss, "valid_ppl": vppl})
            t_log = time.time()

        stopping = args.stop_after_steps is not None and run_steps >= args.stop_after_steps
        if step % args.save_interval == 0 or step == max_step or stopping:
            watch.check(NONFINITE_HINT)
            if step % args.save_interval == 0 and step < max_step and rank == 0:
                sd = model.state_dict() if full else lora.lora_state_dict(model)
                _save_checked({"model_state_dict": sd, **method_record(method)},
                              os.path.join(args.work_dir, f"model.{step}.pt"), step)
            _save_resume(os.path.join(args.work_dir, "resume.pt"), model, optimizer, scheduler,
                         scaler, args, step, full)
        if stopping and step < max_step:
            if rank == 0:
                print(f"stopping after {run_steps} steps at step {step}; continue with --resume")
            break

    train_time = time.time() - t_start
    exported = None
    if step >= max_step:
        final_path = os.path.join(args.work_dir, f"model.{step}.pt")
        if rank == 0:
            _save_checked({"model_state_dict": training_state_dict(model),
                           **method_record(method)}, final_path, step)
            print(f"saved final checkpoint {final_path}")
            if args.export_published:
                exported = export_published(model, args.export_published, merge=True)
                print(f"exported the merged model in the published layout: {exported}")
    log.close()
    # run_info.json marks a finished run (run_task.sh reuses it); a stopped one has resume.pt
    if rank == 0 and final_path is not None:
        run_info = {"method": method.method, "method_config": str(method), "notes": list(method.notes()),
                    "model_card": args.model_card, "trainable_params": trainable,
                    "total_params": total, "final_checkpoint": final_path,
                    "last_step": step, "max_step": max_step, "world_size": world,
                    "train_time_s": train_time, "resumed_from": resume_path,
                    "exported_published": exported}
        with open(os.path.join(args.work_dir, "run_info.json"), "w") as f:
            json.dump(run_info, f, indent=2)
    distributed_sync(args)
    return final_path


# ----------------------------------------------------------------------------------------------
# Resumable state: the trainable tensors (float; quantized NOLA keeps its latents), optimizer,
# scheduler, loss scaler, every rank's RNG and the step. The frozen backbone comes again from
# --init_checkpoint. Batches are a function of the step (BatchStream), so nothing else is needed.

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


def _save_checked(obj, path, step=None):
    try:
        check_finite_state(obj["model_state_dict"], path)
    except NonFiniteError as e:
        raise NonFiniteError(f"training diverged by step {step}: {e}{NONFINITE_HINT}") from None
    save_atomic(obj, path)


def _save_resume(path, model, optimizer, scheduler, scaler, args, step, full):
    rngs = all_gather_object(rng_state(args.device), args)
    if args.rank != 0:
        return
    sd = model.state_dict()
    trained = sd if full else {k: v for k, v in sd.items() if lora.is_adapter_key(k)}
    state = {"model_state_dict": trained, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else None,
             "rng": rngs, "step": step,
             "args": resume_settings(args)}
    _save_checked(state, path, step)


def _load_resume(path, model, optimizer, scheduler, scaler, args, full):
    if not os.path.isfile(path):
        raise SystemExit(f"--resume: {path} not found (it is written every --save_interval)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SystemExit(f"--resume: {path} is not a readable resumable state (torch.load with "
                         f"weights_only=True failed: {type(e).__name__})")
    if not isinstance(state, dict) or "optimizer" not in state or "step" not in state:
        raise SystemExit(f"--resume: {path} is not a resumable state written by gpt2_ft.py")
    allowed = [a.strip() for a in args.resume_allow_changes.split(",") if a.strip()]
    unknown = [a for a in allowed if a not in RESUME_SETTINGS]
    if unknown:
        raise SystemExit(f"--resume_allow_changes: unknown setting(s) {unknown} (choose from "
                         f"{', '.join(RESUME_SETTINGS)})")
    changed = changed_settings(state.get("args", {}), resume_settings(args), allowed)
    if changed:
        raise SystemExit(f"--resume: {path} was written with other settings, so the resumed run "
                         f"would be neither the old nor a new one: " + "; ".join(changed)
                         + ". Use the original settings, or --resume_allow_changes NAME[,NAME]")
    trained = state["model_state_dict"]
    own = model.state_dict()
    expect = set(own) if full else {k for k in own if lora.is_adapter_key(k)}
    if set(trained) != expect:
        missing, extra = sorted(expect - set(trained)), sorted(set(trained) - expect)
        raise SystemExit(f"--resume: {path} does not match this model (method flags or "
                         f"--model_card changed?): missing {missing[:5]}, unexpected {extra[:5]}")
    model.load_state_dict(trained, strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rngs = state["rng"]
    if len(rngs) != args.world_size and args.rank == 0:
        print(f"warning: {path} was written by {len(rngs)} process(es), now {args.world_size}")
    set_rng_state(rngs[min(args.rank, len(rngs) - 1)], args.device)
    return int(state["step"])


if __name__ == "__main__":
    main()

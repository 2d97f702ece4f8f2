"""The run of gpt2_ft.py (its command line, and what each flag means, are there): the data, the
model, the optimizer-step loop on traincore's TrainLoop, validation, checkpoints, the resumable
state and run_info.json."""
import math
import os
import sys
import time

import torch

from nlg.backbone import GPT2Backbone, open_backbone
from nlg.checkpoint import method_record
from nlg.data_utils import BatchStream, FT_Dataset, eval_batches
from nlg.model import lora
from nlg.optimizer import create_adam_optimizer_from_args, create_optimizer_scheduler
from traincore import (LossWatch, Precision, RunLog, TrainLoop, WorkDirBusy, all_reduce_sum,
                       allowed_changes, barrier, claim_work_dir, compiled, load_resume,
                       remove_stale_temporaries, save_finite, save_resume, seed_all, write_json_atomic)
from traincore.cli import interrupted_run
from traincore.settings_file import write_settings

# What a run writes in --work_dir (removed first by --overwrite).
RUN_OUTPUTS = ("model.", "resume.pt", "train_log.jsonl", "valid_log.jsonl", "run_info.json",
               "args.json", "tensorboard", ".resume.pt.", ".model.")
NONFINITE_HINT = (" (a lower --lr, --clip 1.0, or --fp16 -> --bf16 usually helps; the last "
                  "finite state is resume.pt, if one was written)")


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
    if args.rank == 0:   # every setting in a file; the log gets a short header (below)
        print(f"settings: {write_settings(args, os.path.join(args.work_dir, 'args.json'))}")
    backbone = open_backbone(args, method)
    train_data, valid_data = _load_data(args, backbone.vocab_size)
    model, full = _build_model(args, method, backbone)
    trainable, total = lora.count_parameters(model)
    stream = BatchStream(train_data, args.train_batch_size, args.world_size, args.rank,
                         args.random_seed, pin_memory=args.device.type == "cuda")
    # Like Microsoft's loop, training ends at --max_step or after --max_epoch, whichever is first.
    max_step = args.max_step
    if args.max_epoch is not None:
        by_epoch = max(1, args.max_epoch * stream.per_epoch // args.grad_acc)
        max_step = by_epoch if max_step is None else min(max_step, by_epoch)
    args.max_step = max_step
    if args.rank == 0:
        print(f"training: {max_step} steps, batch {args.train_batch_size} x {args.grad_acc} "
              f"accumulated x {args.world_size} process(es), lr {args.lr} ({args.scheduler}, "
              f"warmup {args.warmup_step}), seed {args.random_seed} -> {args.work_dir}")
    optimizer = create_adam_optimizer_from_args(model, args)
    scheduler = create_optimizer_scheduler(optimizer, args)
    precision = Precision.from_flags(args.fp16, args.bf16, args.device, tf32=args.tf32)
    precision.apply()
    scaler = precision.grad_scaler()
    sd = model.state_dict()
    trained = list(sd) if full else [k for k in sd if lora.is_adapter_key(k)]
    step, resume_path = _maybe_resume(args, model, trained, optimizer, scheduler, scaler)

    net = args.procs.wrap(compiled(model, backend=args.compile) if args.compile else model, broadcast_buffers=False)
    loop = TrainLoop(net, optimizer, scheduler, precision, scaler, clip=args.clip,
                     distributed=args.world_size > 1, step=step,
                     params=[p for p in model.parameters() if p.requires_grad])
    steps = _Steps(args, method, backbone, model, full, trained, stream, valid_data, precision,
                   loop, step)
    t_start, cpu_start = time.time(), time.process_time()
    net.train()
    try:
        loop.run(steps.groups(), steps.loss_of, steps.after_step)
    except KeyboardInterrupt:
        raise interrupted_run(loop.step, args.max_step, steps.saved_step,
                              f"--save_interval {args.save_interval}") from None
    finally:
        steps.log.close()
    # CPU time of this process (all its threads): comparable between runs that shared the cores
    return _finish(args, method, model, loop.step, dict(
        trainable=trainable, total=total, train_time=time.time() - t_start,
        train_cpu=time.process_time() - cpu_start, peak_mem=_peak_memory_mb(args.device),
        resume_path=resume_path), backbone)


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


def _load_data(args, vocab_size):
    train_data = FT_Dataset(args.train_data, args.train_batch_size, args.seq_len,
                            joint_lm=args.obj == "jlm")
    valid_data = FT_Dataset(args.valid_data, args.valid_batch_size, args.seq_len)
    for data in (train_data, valid_data):
        data.check_vocab(vocab_size)
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
    return train_data, valid_data


def _build_model(args, method, backbone):
    """The model (only the trained tensors requiring grad) on its device; full: every tensor
    trains (no adapter)."""
    model, info = backbone.build(args, method)
    if args.rank == 0:
        print(f"method: {method.method}{' ' + str(method) if method.is_adapter else ''}")
        for note in method.notes():
            print(f"note: {note}")
        print(f"loaded: {info}")
    full = not method.is_adapter
    model.to(args.device)
    if args.rank == 0:
        print(lora.parameter_report(model))
    return model, full


def _maybe_resume(args, model, trained, optimizer, scheduler, scaler):
    """(step, resume.pt path or None): where this run starts. Rank 0's file decides for every
    process (traincore.read_resume): the others need not share its work dir."""
    if not args.resume:
        return 0, None
    auto = args.resume == "auto"
    path = os.path.join(args.work_dir, "resume.pt") if auto else args.resume
    allowed = allowed_changes(args.resume_allow_changes, RESUME_SETTINGS)
    state = load_resume(path, model, trained, optimizer, scheduler, scaler, resume_settings(args),
                        allowed, args.device, args.rank, args.world_size, missing_ok=auto)
    if state is None:
        if args.rank == 0:   # --resume on a fresh work dir: nothing to continue yet
            print(f"--resume: no {path} yet: starting at step 0")
        return 0, None
    if args.rank == 0:
        print(f"resumed from {path} at step {state['step']}")
    return int(state["step"]), path


class _Steps:
    """gpt2_ft's part of the loop: its batches, its loss, and what happens after each step."""

    def __init__(self, args, method, backbone, model, full, trained, stream, valid_data,
                 precision, loop, start_step):
        self.args, self.method, self.model, self.full, self.trained = args, method, model, full, trained
        self.backbone = backbone
        self.stream, self.valid_data, self.precision, self.loop = stream, valid_data, precision, loop
        self.start_step = start_step
        self.saved_step = start_step if start_step else None   # of the last resume.pt
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
            gs = [s * args.grad_acc + i for i in range(args.grad_acc)]
            micro = [self.stream.batch(g) for g in gs]
            # The global count normalises every rank's loss. It is a function of the step that
            # every rank computes on the host: no all-reduce, no host-to-device copy per step.
            n_tok = sum(self.stream.global_tokens(g) for g in gs)
            denom = (n_tok + 0.0001) / args.world_size   # DDP averages gradients over ranks
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
                sd = self.backbone.periodic_state(self.model, self.full)
                save_finite({"model_state_dict": sd, **checkpoint_records(self.method, self.backbone)},
                            os.path.join(args.work_dir, f"model.{step}.pt"), sd, step, NONFINITE_HINT)
            save_resume(os.path.join(args.work_dir, "resume.pt"), self.model, self.trained,
                        self.loop.optimizer, self.loop.scheduler, self.loop.scaler, step,
                        resume_settings(args), args.device, main=args.rank == 0,
                        hint=NONFINITE_HINT)
            self.saved_step = step
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


def checkpoint_records(method, backbone):
    """What a model.<step>.pt records beside its tensors: the method, and the backbone unless
    it is GPT-2 (whose files stay as they were)."""
    record = backbone.record()
    return {**method_record(method), **({"backbone": record} if record else {})}


def _finish(args, method, model, step, run, backbone=None):
    """The final checkpoint and run_info.json (it marks a finished run: run_task.sh reuses it; a
    stopped one has resume.pt). backbone: the one trained (default: GPT-2)."""
    if backbone is None:
        backbone = GPT2Backbone(args, method)
    final_path = exported = None
    if step >= args.max_step:
        final_path = os.path.join(args.work_dir, f"model.{step}.pt")
        if args.rank == 0:
            sd = backbone.final_state(model)
            save_finite({"model_state_dict": sd, **checkpoint_records(method, backbone)},
                        final_path, sd, step, NONFINITE_HINT)
            print(f"saved final checkpoint {final_path}")
            if args.export_published:
                exported = backbone.export(model, args.export_published)
                print(f"exported the merged model in the published layout: {exported}")
            write_json_atomic({
                "method": method.method, "method_config": str(method), "notes": list(method.notes()),
                **backbone.run_info(), "trainable_params": run["trainable"],
                "total_params": run["total"], "final_checkpoint": final_path, "last_step": step,
                "max_step": args.max_step, "world_size": args.world_size,
                "train_time_s": run["train_time"], "train_cpu_s": run["train_cpu"],
                "peak_mem_mb": run["peak_mem"], "resumed_from": run["resume_path"],
                "exported_published": exported, "task": getattr(args, "task", None),
                "random_seed": args.random_seed, "settings": resume_settings(args)},
                os.path.join(args.work_dir, "run_info.json"))
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
                   "adam_beta2", "adam_epislon", "clip", "label_smooth", "fp16", "bf16", "tf32",
                   "independent_layer_init", "method", "backbone")


def resume_settings(args):
    out = {k: getattr(args, k, None) for k in RESUME_SETTINGS
           if k not in ("method", "tf32", "backbone")}
    if getattr(args, "tf32", False):     # recorded only when on: files from before --tf32 resume
        out["tf32"] = True
    if getattr(args, "backbone", "gpt2") != "gpt2":     # likewise: GPT-2 runs record none
        out["backbone"] = {"spec": args.backbone,
                           "target_modules": getattr(args, "hf_target_modules", None)}
    out["method"] = args.method_config.to_dict() if getattr(args, "method_config", None) else None
    return out

"""run_glue.py's training loop: gradient accumulation, a resumable state, the run log.

The resumable state (<output_dir>/resume.pt, written every --save_steps optimizer steps and at
every epoch end) holds the trainable tensors, optimizer, scheduler, loss scaler, every process's
RNG, the position in the data (epoch, batch) and the per-epoch evaluations so far. Batches are a
function of (seed, epoch) (DistributedSampler), so `--resume` continues bit for bit: it skips the
batches already consumed in the current epoch and restores the RNG that dropout draws from.
"""
import json
import math
import os
import time

import torch

from traincore import (LossWatch, changed_settings, check_finite_state, read_jsonl, rng_state,
                       set_rng_state)

# What --resume must see unchanged (they decide what the steps compute).
RESUME_SETTINGS = ("task_name", "model_card", "init_checkpoint", "adapter_checkpoint",
                   "max_seq_length", "per_device_train_batch_size", "gradient_accumulation_steps",
                   "learning_rate", "classifier_lr", "num_train_epochs", "max_steps",
                   "warmup_ratio", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
                   "max_grad_norm", "seed", "cls_dropout", "fp16", "bf16", "max_train_samples",
                   "world_size", "method")


def resume_settings(args, env, method):
    out = {k: getattr(args, k, None) for k in RESUME_SETTINGS if k not in ("world_size", "method")}
    out.update(world_size=env.world, method=method.to_dict())
    return out


class RunLog:
    """train_log.jsonl and TensorBoard scalars (main process)."""

    def __init__(self, args, env, start_step):
        self.f = self.tb = None
        if not env.main:
            return
        path = os.path.join(args.output_dir, "train_log.jsonl")
        keep = []
        if start_step and os.path.isfile(path):   # drop what a killed run logged after its state
            keep = [r for r in read_jsonl(path) if r.get("step", 0) <= start_step]
        self.f = open(path, "w")
        for r in keep:
            self.f.write(json.dumps(r) + "\n")
        if not getattr(args, "no_tensorboard", False):
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(os.path.join(args.output_dir, "tensorboard"),
                                        purge_step=start_step + 1 if start_step else None)
            except ImportError:
                pass

    def write(self, rec):
        if self.f is None:
            return
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        if self.tb is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, rec["step"])

    def close(self):
        if self.f is not None:
            self.f.close()
        if self.tb is not None:
            self.tb.close()


def _save_resume(path, model, opt, sched, scaler, env, step, epoch, batch, tracking, settings,
                 save):
    rngs = env.gather(rng_state(next(model.parameters()).device))
    if not env.main:
        return
    trained = {k: v for k, v in model.state_dict().items()
               if k in {n for n, p in model.named_parameters() if p.requires_grad}}
    check_finite_state(trained, path)
    state = {"model_state_dict": trained, "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else None, "rng": rngs,
             "step": step, "epoch": epoch, "batch": batch,
             "tracking": json.dumps(tracking), "settings": settings}
    save(state, path)


def _load_resume(path, model, opt, sched, scaler, env, settings, allowed):
    if not os.path.isfile(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SystemExit(f"--resume: {path} is not readable ({type(e).__name__})") from None
    changed = changed_settings(state.get("settings", {}), settings, allowed)
    if changed:
        raise SystemExit(f"--resume: {path} was written with other settings: "
                         + "; ".join(changed) + ". Use the original settings, or "
                         "--resume_allow_changes NAME[,NAME]")
    missing = model.load_state_dict(state["model_state_dict"], strict=False).unexpected_keys
    if missing:
        raise SystemExit(f"--resume: {path} holds tensors this model does not have: {missing[:5]}")
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rngs = state["rng"]
    set_rng_state(rngs[min(env.rank, len(rngs) - 1)], next(model.parameters()).device)
    return state


def train(model, ddp, loader, sampler, args, env, device, log, settings, on_epoch_end,
          tracking, hooks):
    """hooks: autocast(args, device), build_optimizer(model, args, device),
    linear_schedule(opt, warmup, total), save(state, path) of run_glue.py."""
    autocast, build_optimizer = hooks["autocast"], hooks["build_optimizer"]
    linear_schedule, save = hooks["linear_schedule"], hooks["save"]
    acc = args.gradient_accumulation_steps
    per_epoch = math.ceil(len(loader) / acc)
    total = args.max_steps if args.max_steps > 0 else math.ceil(per_epoch * args.num_train_epochs)
    epochs = math.ceil(total / per_epoch)
    warmup = math.ceil(total * args.warmup_ratio)
    opt = build_optimizer(model, args, device)
    sched = linear_schedule(opt, warmup, total)
    scaler = torch.amp.GradScaler("cuda") if args.fp16 else None
    params = [p for p in model.parameters() if p.requires_grad]
    resume_path = os.path.join(args.output_dir, "resume.pt")
    step, start_epoch, skip = 0, 0, 0
    if args.resume:
        allowed = [a.strip() for a in args.resume_allow_changes.split(",") if a.strip()]
        state = _load_resume(resume_path, model, opt, sched, scaler, env, settings, allowed)
        if state is not None:
            step, start_epoch, skip = int(state["step"]), int(state["epoch"]), int(state["batch"])
            tracking.update(json.loads(state["tracking"]))
            log(f"resumed from {resume_path} at step {step} (epoch {start_epoch}, batch {skip})")
        else:
            log(f"--resume: no {resume_path} yet: starting at step 0")
    log(f"training: {total} steps ({per_epoch} per epoch, {env.world} process(es) x batch "
        f"{args.per_device_train_batch_size} x {acc} accumulated), warmup {warmup}")
    runlog = RunLog(args, env, step)
    watch = LossWatch(device)
    t0, run_steps = time.time(), 0
    model.train()
    hint = " (a lower --learning_rate or --max_grad_norm 1.0 usually helps)"
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        micro = 0
        for b, (_, ids, mask, labels) in enumerate(loader):
            if epoch == start_epoch and b < skip:
                continue
            ids, mask, labels = (t.to(device, non_blocking=True) for t in (ids, mask, labels))
            last = micro == acc - 1 or b == len(loader) - 1
            sync = ddp.no_sync() if (env.on and not last) else _nullcontext()
            with sync:
                with autocast(args, device):
                    loss, _ = ddp(ids, mask, labels=labels)
                loss = loss / acc
                (scaler.scale(loss) if scaler is not None else loss).backward()
            micro += 1
            if not last:
                continue
            micro = 0
            if scaler is not None:
                scaler.unscale_(opt)
            if args.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            run_steps += 1
            watch.update(loss, step)
            if step % args.logging_steps == 0 or step == total:
                watch.check(hint)       # .item() syncs with the device: only on logging steps
                runlog.write({"step": step, "epoch": epoch, "loss": loss.item() * acc,
                              "lr": sched.get_last_lr()[0],
                              "elapsed_s": round(time.time() - t0, 2)})
                log(f"step {step}/{total} | epoch {epoch} | loss {loss.item() * acc:.4f}")
            stopping = args.stop_after_steps is not None and run_steps >= args.stop_after_steps
            if step % args.save_steps == 0 or stopping:
                watch.check(hint)
                _save_resume(resume_path, model, opt, sched, scaler, env, step, epoch, b + 1,
                             tracking, settings, save)
            if stopping and step < total:
                runlog.close()
                log(f"stopping after {run_steps} steps at step {step}; continue with --resume")
                return step, False
            if step >= total:
                break
        on_epoch_end(epoch, step)
        if step >= total:
            break
        watch.check(hint)
        _save_resume(resume_path, model, opt, sched, scaler, env, step, epoch + 1, 0, tracking,
                     settings, save)
    watch.check(hint)
    runlog.close()
    return step, True


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

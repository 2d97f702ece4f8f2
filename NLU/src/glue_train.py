"""run_glue.py's part of the training loop (traincore.TrainLoop does the steps): the epochs of a
DistributedSampler, gradient accumulation within an epoch, the resumable state, the run log.

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

from traincore import (LossWatch, Precision, RunLog, TrainLoop, allowed_changes, load_resume,
                       save_resume)
from traincore.cli import interrupted_run

# What --resume must see unchanged (they decide what the steps compute).
RESUME_SETTINGS = ("task_name", "model_card", "init_checkpoint", "adapter_checkpoint",
                   "max_seq_length", "per_device_train_batch_size", "gradient_accumulation_steps",
                   "learning_rate", "classifier_lr", "num_train_epochs", "max_steps",
                   "warmup_ratio", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
                   "max_grad_norm", "seed", "cls_dropout", "fp16", "bf16", "tf32",
                   "max_train_samples", "world_size", "method")
HINT = " (a lower --learning_rate or --max_grad_norm 1.0 usually helps)"


def resume_settings(args, procs, method):
    out = {k: getattr(args, k, None) for k in RESUME_SETTINGS
           if k not in ("world_size", "method", "tf32")}
    if getattr(args, "tf32", False):     # recorded only when on: files from before --tf32 resume
        out["tf32"] = True
    out.update(world_size=procs.world, method=method.to_dict())
    return out


def linear_schedule(optimizer, warmup, total):
    """Hugging Face's linear warmup then linear decay to 0."""
    def f(step):
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


def _groups(loader, acc, skip):
    """(batches consumed, micro-batches) per optimizer step of one epoch: `acc` batches, fewer for
    the epoch's last step; the first `skip` batches (consumed before a resume) are passed over."""
    group = []
    for b, batch in enumerate(loader):
        if b < skip:
            continue
        group.append(batch)
        if len(group) == acc or b == len(loader) - 1:
            yield b + 1, group
            group = []


class GlueTraining:
    """One run's optimizer, schedule, loop, log and resumable state."""

    def __init__(self, model, ddp, loader, sampler, args, procs, log, settings, tracking,
                 build_optimizer):
        self.model, self.loader, self.sampler, self.args = model, loader, sampler, args
        self.procs, self.log, self.settings, self.tracking = procs, log, settings, tracking
        self.acc = args.gradient_accumulation_steps
        self.per_epoch = math.ceil(len(loader) / self.acc)
        self.total = args.max_steps if args.max_steps > 0 else \
            math.ceil(self.per_epoch * args.num_train_epochs)
        self.epochs = math.ceil(self.total / self.per_epoch)
        self.warmup = math.ceil(self.total * args.warmup_ratio)
        self.device = procs.device
        opt = build_optimizer(model, args, self.device)
        precision = Precision.from_flags(args.fp16, args.bf16, self.device, tf32=args.tf32)
        self.loop = TrainLoop(ddp, opt, linear_schedule(opt, self.warmup, self.total), precision,
                              precision.grad_scaler(), clip=args.max_grad_norm,
                              distributed=procs.distributed,
                              params=[p for p in model.parameters() if p.requires_grad])
        self.trained = [n for n, p in model.named_parameters() if p.requires_grad]
        self.resume_path = os.path.join(args.output_dir, "resume.pt")
        self.watch = LossWatch(self.device)
        self.epoch = self.run_steps = 0
        self.last_loss = None
        self.saved_step = None      # the step of the last resume.pt

    def _save(self, epoch, batch):
        lp = self.loop
        save_resume(self.resume_path, self.model, self.trained, lp.optimizer, lp.scheduler,
                    lp.scaler, lp.step, self.settings, self.device, main=self.procs.main,
                    extra={"epoch": epoch, "batch": batch, "tracking": json.dumps(self.tracking)},
                    hint=HINT)
        self.saved_step = lp.step

    def _resume(self):
        """(epoch, batches to skip) where this run starts."""
        if not self.args.resume:
            return 0, 0
        lp = self.loop
        # rank 0's file decides for every process (traincore.read_resume)
        state = load_resume(self.resume_path, self.model, self.trained, lp.optimizer, lp.scheduler,
                            lp.scaler, self.settings,
                            allowed_changes(self.args.resume_allow_changes, RESUME_SETTINGS),
                            self.device, self.procs.rank, self.procs.world, log=self.log,
                            missing_ok=True)
        if state is None:
            self.log(f"--resume: no {self.resume_path} yet: starting at step 0")
            return 0, 0
        lp.step = self.saved_step = int(state["step"])
        epoch, skip = int(state["epoch"]), int(state["batch"])
        self.tracking.update(json.loads(state["tracking"]))
        self.log(f"resumed from {self.resume_path} at step {lp.step} (epoch {epoch}, batch {skip})")
        return epoch, skip

    def loss_of(self, net, batch):
        _, ids, mask, labels, rows = (t.to(self.device, non_blocking=True) for t in batch)
        loss, _ = net(ids, mask, labels=labels, token_rows=rows)
        self.last_loss = loss / self.acc
        return self.last_loss

    def after_step(self, step, _lr, batches_done):
        args, loss = self.args, self.last_loss
        self.run_steps += 1
        self.watch.update(loss, step)
        if step % args.logging_steps == 0 or step == self.total:
            self.watch.check(HINT)       # .item() syncs with the device: only on logging steps
            value = loss.item() * self.acc
            self.runlog.write("train", {"step": step, "epoch": self.epoch, "loss": value,
                                        "lr": self.loop.scheduler.get_last_lr()[0],
                                        "elapsed_s": round(time.time() - self.t0, 2)},
                              echo=f"step {step}/{self.total} | epoch {self.epoch} | loss {value:.4f}")
        self.runlog.step()
        self.stopped = args.stop_after_steps is not None and self.run_steps >= args.stop_after_steps
        if step % args.save_steps == 0 or self.stopped:
            self.watch.check(HINT)
            self._save(self.epoch, batches_done)
        if self.stopped and step < self.total:
            self.log(f"stopping after {self.run_steps} steps at step {step}; continue with --resume")
            return True
        self.stopped = False
        return step >= self.total

    def run(self, on_epoch_end):
        """Train to the last step (True) or until --stop_after_steps (False); on_epoch_end(epoch,
        step) evaluates after every epoch and at the last step."""
        args = self.args
        start_epoch, skip = self._resume()
        self.log(f"training: {self.total} steps ({self.per_epoch} per epoch, {self.procs.world} "
                 f"process(es) x batch {args.per_device_train_batch_size} x {self.acc} "
                 f"accumulated), warmup {self.warmup}")
        self.runlog = RunLog(args.output_dir, ("train",), self.loop.step, self.total,
                             main=self.procs.main, tensorboard=not args.no_tensorboard)
        self.t0, self.stopped = time.time(), False
        self.model.train()
        try:
            for epoch in range(start_epoch, self.epochs):
                self.epoch = epoch
                self.sampler.set_epoch(epoch)
                self.loop.run(_groups(self.loader, self.acc, skip if epoch == start_epoch else 0),
                              self.loss_of, self.after_step)
                if self.stopped:
                    return False
                on_epoch_end(epoch, self.loop.step)
                if self.loop.step >= self.total:
                    break
                self.watch.check(HINT)
                self._save(epoch + 1, 0)
            self.watch.check(HINT)
            return True
        except KeyboardInterrupt:
            raise interrupted_run(self.loop.step, self.total, self.saved_step,
                                  f"--save_steps {args.save_steps} and every epoch") from None
        finally:
            self.runlog.close()

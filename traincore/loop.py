"""The optimizer steps both trainers share: micro-batches accumulated into one update, under the
run's precision, with DDP synchronising only on the last micro-batch of a step.

A trainer supplies the groups (one list of micro-batches per optimizer step, with its data
position), `loss_of` (a micro-batch -> the loss to back-propagate, already divided so that the
group's sum is the step's loss) and `after_step` (logging, evaluation, saving; True stops).
"""
import contextlib
from typing import Any, Callable, Iterable, List, Optional, Tuple

import torch


class TrainLoop:
    def __init__(self, net: torch.nn.Module, optimizer, scheduler, precision, scaler=None,
                 clip: float = 0.0, distributed: bool = False, step: int = 0, params=None):
        self.net, self.optimizer, self.scheduler = net, optimizer, scheduler
        self.precision, self.scaler, self.clip = precision, scaler, clip
        self.distributed, self.step = distributed, step
        # the tensors clipped together (default: every parameter the optimizer updates)
        self.params = list(params) if params is not None else \
            [p for g in optimizer.param_groups for p in g["params"]]

    def run(self, groups: Iterable[Tuple[Any, List[Any]]],
            loss_of: Callable[[torch.nn.Module, Any], torch.Tensor],
            after_step: Callable[[int, float, Any], Optional[bool]]) -> bool:
        """Train on every group; True when after_step asked to stop."""
        for position, group in groups:
            for i, batch in enumerate(group):
                last = i == len(group) - 1
                sync = self.net.no_sync() if self.distributed and not last else contextlib.nullcontext()
                with sync:
                    with self.precision.autocast():
                        loss = loss_of(self.net, batch)
                    (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            lr = self.update()
            self.step += 1
            if after_step(self.step, lr, position):
                return True
        return False

    def update(self) -> float:
        """One optimizer step on the accumulated gradients; returns the learning rate it used."""
        opt, scaler = self.optimizer, self.scaler
        if scaler is not None:
            scaler.unscale_(opt)
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        lr = opt.param_groups[0]["lr"]
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        self.scheduler.step()
        return lr

"""AdamW and learning-rate schedules with Microsoft's formulas (examples/NLG/src/optimizer.py); its
flags are in optimizer_flags.py.

AdamW (Microsoft's / the old Hugging Face variant, which differs from torch.optim.AdamW):
    m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
    step = lr * sqrt(1 - b2^t) / (1 - b1^t)   (--correct_bias; plain lr without it)
    p -= step * m / (sqrt(v) + eps);   then p -= lr * wd * p   (decoupled decay, after the update)
computed with torch._foreach_* kernels over all parameters of a group at once.

Schedules (factor of --lr at optimizer update k, counted from 0, as LambdaLR gives it):
    linear:   k / warmup during warmup, then max(0, (max_step - k) / (max_step - warmup))
    cosine:   k / warmup during warmup, then 0.5 (1 + cos(pi min(k, max_step) / max_step))
    constant: k / warmup during warmup, then 1
    cycle:    piecewise linear through (--i_steps, --i_lrs), absolute learning rates
    inv_sqrt, dev_perf: no schedule (constant --lr), as in Microsoft's code.
"""
import math

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class AdamW(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0,
                 correct_bias=True):
        if lr < 0.0:
            raise ValueError(f"invalid learning rate {lr}: must be >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}: each must be in [0, 1)")
        if eps < 0.0:
            raise ValueError(f"invalid epsilon {eps}: must be >= 0")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        correct_bias=correct_bias)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("AdamW does not support sparse gradients")
            b1, b2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            grads, exp_avgs, exp_avg_sqs, step_sizes = [], [], [], []
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                size = lr
                if group["correct_bias"]:
                    size = lr * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
                step_sizes.append(-size)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
            torch._foreach_mul_(exp_avgs, b1)
            torch._foreach_add_(exp_avgs, grads, alpha=1.0 - b1)
            torch._foreach_mul_(exp_avg_sqs, b2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - b2)
            denoms = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_add_(denoms, eps)
            torch._foreach_addcdiv_(params, exp_avgs, denoms, step_sizes)
            if wd > 0.0:
                torch._foreach_add_(params, params, alpha=-lr * wd)
        return loss


def create_grouped_parameters(model, no_decay_bias):
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not no_decay_bias:
        return [{"params": [p for _, p in params]}]
    no_decay = ("bias", "layer_norm.weight", "ln_1.weight", "ln_2.weight", "ln_f.weight")
    return [
        {"params": [p for n, p in params if not any(nd in n for nd in no_decay)]},
        {"params": [p for n, p in params if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
    ]


def create_adam_optimizer_from_args(model, args, grouped_parameters=None):
    if grouped_parameters is None:
        grouped_parameters = create_grouped_parameters(model, args.no_decay_bias)
    grouped_parameters = [g for g in grouped_parameters if g["params"]]
    if not grouped_parameters:
        raise ValueError("no trainable parameters: the method marks nothing as trainable")
    return AdamW(grouped_parameters, lr=args.lr, betas=(args.adam_beta1, args.adam_beta2),
                 eps=args.adam_epislon, weight_decay=args.weight_decay,
                 correct_bias=args.correct_bias)


def lr_factor(scheduler, step, warmup_step, max_step, base_lr=1.0, i_steps=None, i_lrs=None):
    """The multiplier of --lr used by optimizer update `step` (0-based)."""
    if scheduler == "cycle":
        for a, b, la, lb in zip(i_steps, i_steps[1:], i_lrs, i_lrs[1:]):
            if a <= step < b:
                w = min(max((step - a) / (b - a + 1e-6), 0.0), 1.0)
                return (w * lb + (1.0 - w) * la) / base_lr
        return i_lrs[-1] / base_lr
    if scheduler not in ("linear", "cosine", "constant"):
        return 1.0
    if step < warmup_step:
        return step / max(1, warmup_step)
    if scheduler == "linear":
        return max(0.0, (max_step - step) / max(1, max_step - warmup_step))
    if scheduler == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, max_step) / max(1, max_step)))
    return 1.0


def create_optimizer_scheduler(optimizer, args):
    """LambdaLR over lr_factor; args.max_step must be set (finetune.train derives it first)."""
    i_steps = i_lrs = None
    if args.scheduler == "cycle":
        i_steps = [int(s) for s in str(args.i_steps).split(",")]
        i_lrs = [float(s) for s in str(args.i_lrs).split(",")]
        if len(i_steps) != len(i_lrs):
            raise ValueError(f"--i_steps and --i_lrs need the same number of entries "
                             f"({len(i_steps)} vs {len(i_lrs)})")
    return LambdaLR(optimizer, lambda k: lr_factor(args.scheduler, k, args.warmup_step,
                                                   args.max_step, args.lr, i_steps, i_lrs))

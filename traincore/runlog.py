"""What a run reports while it trains: JSON-lines files (one per stream: train, valid, ...),
TensorBoard scalars and a progress bar with ETA, all on the main process.

A resumed run keeps the records up to its resumed step and appends (what a killed run logged
after its last resumable state is dropped; so is a partial last line). The bar shows only on a
terminal; off a terminal (a log file) each printed record says the step out of the total, the
time elapsed and the time left: `| train | step 40/120 (33%) | loss 2.1 | ... | 1m10s elapsed,
ETA 2m20s`.
"""
import json
import os
import sys
import time
from typing import Optional, Sequence

from .jsonlog import read_jsonl
from .progress import _secs


def _keep_until(path: str, last_step: int) -> None:
    if os.path.isfile(path):
        keep = [r for r in read_jsonl(path) if r.get("step", 0) <= last_step]
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in keep)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class RunLog:
    def __init__(self, folder: str, streams: Sequence[str] = ("train",), start_step: int = 0,
                 total: Optional[int] = None, main: bool = True, tensorboard: bool = True,
                 progress: bool = True, desc: str = "train"):
        self.enabled = main
        self.files, self.tb, self.bar = {}, None, None
        self.total, self.start_step, self.t0 = total, start_step, time.time()
        if not main:
            return
        os.makedirs(folder, exist_ok=True)
        for s in streams:
            path = os.path.join(folder, f"{s}_log.jsonl")
            if start_step > 0:
                _keep_until(path, start_step)
            self.files[s] = open(path, "a" if start_step > 0 else "w")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(os.path.join(folder, "tensorboard"),
                                        purge_step=start_step + 1 if start_step else None)
            except ImportError:
                print("tensorboard is not installed: no TensorBoard scalars")
        if progress and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start_step, desc=desc, unit="step",
                            dynamic_ncols=True, mininterval=1.0)

    def step(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def write(self, stream: str, record: dict, echo: Optional[str] = None) -> None:
        """Append `record` (it has a "step") to <stream>_log.jsonl, add its numbers to TensorBoard
        and print `echo` (default: `| stream | step N | key value ...`)."""
        if not self.enabled:
            return
        f = self.files[stream]
        f.write(json.dumps(record) + "\n")
        f.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{stream}/{k}", v, record["step"])
        if self.bar is not None:
            self.bar.set_postfix({k: _fmt(v) for k, v in record.items() if k != "step"},
                                 refresh=False)
        if self.bar is not None:
            if echo is None:
                echo = f"| {stream} | " + " | ".join(f"{k} {_fmt(v)}" for k, v in record.items())
            self.bar.write(echo)
            return
        if echo is None:
            echo = f"| {stream} | " + " | ".join(
                self.where(v) if k == "step" else f"{k} {_fmt(v)}" for k, v in record.items())
        print(echo + self.eta(record.get("step")), flush=True)

    def where(self, step) -> str:
        """`step 40/120 (33%)`, or `step 40` when the total is unknown."""
        if not self.total:
            return f"step {step}"
        return f"step {step}/{self.total} ({100 * step / self.total:.0f}%)"

    def eta(self, step) -> str:
        """` | 1m10s elapsed, ETA 2m20s` from this run's pace since it (re)started."""
        if step is None or not self.total:
            return ""
        elapsed = time.time() - self.t0
        out = f" | {_secs(elapsed)} elapsed"
        done = step - self.start_step
        if 0 < done and step < self.total:
            out += f", ETA {_secs(elapsed / done * (self.total - step))}"
        return out

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files = {}
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None

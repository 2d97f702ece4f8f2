"""Progress with an ETA for any long step (encoding, training, beam search, scoring, the demo).

On a terminal: a tqdm bar. Elsewhere (a log file, CI): no bar, but a line every `every_s`
seconds and one at the end, `desc: 30/120 contexts (25%), 12s elapsed, ETA 36s`, so a log shows
that a run is alive and how long it has left.
"""
import sys
import time
from typing import Optional


def _secs(t: float) -> str:
    t = int(round(t))
    return f"{t // 3600}h{t % 3600 // 60:02d}m" if t >= 3600 else \
        f"{t // 60}m{t % 60:02d}s" if t >= 60 else f"{t}s"


class Progress:
    def __init__(self, total: Optional[int], desc: str, unit: str = "it", enabled: bool = True,
                 every_s: float = 30.0, stream=None, tty: Optional[bool] = None, initial: int = 0):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.done = self.start_done = initial
        self.t0 = self.t_last = time.time()
        self.bar = None
        tty = self.stream.isatty() if tty is None else tty
        if enabled and tty:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=f" {unit}",
                            file=self.stream, dynamic_ncols=True, mininterval=0.5)

    def line(self) -> str:
        elapsed = time.time() - self.t0
        out = f"{self.desc}: {self.done}"
        if self.total:
            out += f"/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            out += f" {self.unit}"
        out += f", {_secs(elapsed)} elapsed"
        new = self.done - self.start_done
        if self.total and 0 < new and self.done < self.total:
            out += f", ETA {_secs(elapsed / new * (self.total - self.done))}"
        return out

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.time()
        if now - self.t_last >= self.every_s and (self.total is None or self.done < self.total):
            self.t_last = now
            print(self.line(), file=self.stream, flush=True)

    def write(self, msg: str) -> None:
        """A message that does not tear the bar."""
        if self.bar is not None:
            self.bar.write(msg, file=self.stream)
        else:
            print(msg, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        else:
            print(self.line(), file=self.stream, flush=True)
        self.enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

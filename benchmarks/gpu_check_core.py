"""What the parts of benchmarks/gpu_check.py share: the run's setting (a GPU, or the tiny model
on a CPU), each part's time budget, the result rows and their summary, synthesized E2E-like
data, and the model FLOPs of a training step."""
import contextlib
import io
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LORA_SHARED_DIR", ROOT.parent / "shared"))
EOS = 50256                    # <|endoftext|>; E2E decoding also ends on 628 ("\n\n")
VOCAB = 50257                  # GPT-2's
# E2E valid, GPT-2 BPE: contexts (MR + eos) 15-41 tokens, completions (" " + ref + eos) 7-84
E2E_CONTEXT, E2E_COMPLETION = (15, 41), (7, 50)
# on a GPU where size does not matter (methods, processes): GPT-2's vocabulary, a small body
SMALL_CARD = {"n_embd": 256, "n_layer": 4, "n_head": 4}
# every part on a CPU: GPT-2's code with a 1,024-token vocabulary (GPT-2's 50,257 made the LM
# head, the beam search's scoring and HF's generate most of a CPU run's time)
TOY_CARD = {"vocab_size": 1024, "n_embd": 64, "n_layer": 2, "n_head": 4}


class Setting:
    """The machine and the mode: `gpu` (CUDA visible and --tiny not given: GPT-2 M / L) or
    tiny (TOY_CARD on the CPU; every part runs, what needs a GPU is reported as skipped)."""

    def __init__(self, work: Path, quick: bool = False, tiny: bool = False):
        self.gpu = torch.cuda.is_available() and not tiny
        self.quick = quick
        self.device = torch.device("cuda", torch.cuda.current_device()) if self.gpu \
            else torch.device("cpu")
        self.gpus = torch.cuda.device_count() if self.gpu else 0
        self.name = torch.cuda.get_device_name(self.device) if self.gpu else "cpu"
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.peaks = {}            # precision -> FLOP/s of the GEMM probe (gemm part)
        self.train_eager = {}      # (card, shape, precision) -> eager figures (compiled rows)
        self.skipped = []          # one line per thing a CPU run leaves out
        self.vocab = VOCAB if self.gpu else TOY_CARD["vocab_size"]

    def pick(self, gpu, quick=None, tiny=None):
        """The value for this mode: tiny on a CPU, else quick under --quick, else gpu."""
        if not self.gpu:
            return gpu if tiny is None else tiny
        return quick if self.quick and quick is not None else gpu

    def small_card(self) -> str:
        """A model card for the parts where the model's size does not matter."""
        path = self.work / "small_card.json"
        path.write_text(json.dumps(SMALL_CARD if self.gpu else TOY_CARD))
        return str(path)

    def card(self, gpu_card: str) -> str:
        """gpu_card on a GPU, the toy card on a CPU."""
        return gpu_card if self.gpu else self.small_card()

    def card_name(self, card: str) -> str:
        """How rows name a model: gpt2.md, gpt2.lg, small_card (a GPU's JSON card), toy."""
        if not card.endswith(".json"):
            return card
        return Path(card).stem if self.gpu else "toy"

    def skip(self, what: str) -> str:
        if what not in self.skipped:
            self.skipped.append(what)
        return what

    def sync(self):
        if self.gpu:
            torch.cuda.synchronize(self.device)


# ----------------------------------------------------------------------------------------------
# Result rows, parts and their budgets

@dataclass
class Row:
    check: str
    status: str                 # PASS, FAIL or SKIPPED
    figure: str = ""
    reason: str = ""            # FAIL: what went wrong; SKIPPED: why; PASS: what was left out
    data: dict = field(default_factory=dict)


class TimeUp(BaseException):
    """A part ran past its hard limit (BaseException: a check's own `except Exception` must
    not swallow it)."""


def one_line(e: BaseException) -> str:
    text = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    if isinstance(e, SystemExit) and not isinstance(e.code, str):
        text = f"exit status {e.code}"
    return f"{type(e).__name__}: {text}"[:240]


class Part:
    """One part of the check: its rows and its time budget (seconds). Checks ask left() before
    optional work and report what they leave out as SKIPPED rows."""

    def __init__(self, name: str, budget: float, setting: Setting):
        self.name, self.budget, self.setting = name, budget, setting
        self.t0 = time.perf_counter()
        self.rows = []
        self.log = setting.work / f"{name}.log"

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def add(self, check, status, figure="", reason="", **data):
        row = Row(check, status, figure, reason, data)
        self.rows.append(row)
        print(f"  {status:7s} {check}: {figure}{'  (' + reason + ')' if reason else ''}", flush=True)
        return row

    def passed(self, check, figure, reason="", **data):
        return self.add(check, "PASS", figure, reason, **data)

    def failed(self, check, reason, figure="", **data):
        return self.add(check, "FAIL", figure, reason, **data)

    def skipped(self, check, reason, **data):
        return self.add(check, "SKIPPED", "", reason, **data)

    def verdict(self, check, ok, figure, why_not, **data):
        return self.add(check, "PASS" if ok else "FAIL", figure, "" if ok else why_not, **data)

    def attempt(self, check, fn, *args):
        """fn(*args), or a FAIL row with the one-line reason (the traceback goes to the part's
        log) and None: one configuration's failure does not stop the others."""
        try:
            return fn(*args)
        except Exception as e:
            self.trace(e)
            self.failed(check, one_line(e))
            return None

    def trace(self, e):
        with open(self.log, "a") as f:
            traceback.print_exception(type(e), e, e.__traceback__, file=f)


@contextlib.contextmanager
def hard_limit(seconds: float):
    """Raise TimeUp in the main thread after `seconds` (a hung part stops; the rest still run)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(signum, frame):
        raise TimeUp(f"past its hard limit of {seconds:.0f} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1.0))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class Plan:
    name: str
    run: object                  # run(setting, part)
    budget: float                # seconds this part may take
    minimum: float               # below this much time left, the part is skipped


def run_parts(plans, setting: Setting, total_budget: float):
    """Every part in order, each within its budget: what earlier parts overran comes off the
    later ones' (each keeps its minimum while the total allows, else it is SKIPPED). A part
    that raises is a FAIL row with the one-line reason, and the next part runs."""
    start = time.perf_counter()
    rows = []
    for i, plan in enumerate(plans):
        later = sum(p.minimum for p in plans[i + 1:])
        left = total_budget - (time.perf_counter() - start)
        budget = min(plan.budget, left - later)
        if budget < plan.minimum:
            rows.append(Row(plan.name, "SKIPPED", reason=f"time budget spent ({max(left, 0):.0f} s "
                                                         f"of {total_budget:.0f} s left)"))
            print(f"-- {plan.name}: SKIPPED ({rows[-1].reason})", flush=True)
            continue
        part = Part(plan.name, budget, setting)
        cpu0 = _cpu_seconds()
        print(f"-- {plan.name} (budget {budget:.0f} s)", flush=True)
        try:
            with hard_limit(budget + max(20.0, budget / 4)):
                plan.run(setting, part)
            if not part.rows:
                part.failed(plan.name, "the check reported nothing")
        except (Exception, TimeUp, SystemExit) as e:
            part.trace(e)
            part.failed(plan.name, one_line(e) + f" (traceback: {part.log})")
        finally:
            torch.set_float32_matmul_precision("highest")
            if setting.gpu:
                torch.cuda.empty_cache()
        for row in part.rows:
            row.data.setdefault("part", plan.name)
            row.data.setdefault("part_s", round(time.perf_counter() - part.t0, 1))
            row.data.setdefault("part_cpu_s", round(_cpu_seconds() - cpu0, 1))
        rows += part.rows
    return rows


def _cpu_seconds() -> float:
    """CPU time of this process and of the processes it waited for (the commands it ran)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def summary(rows, setting: Setting, total_s: float) -> str:
    w = max([len(r.check) for r in rows] + [5])
    lines = [f"== gpu_check summary: {setting.name}, torch {torch.__version__}, "
             f"{'GPU' if setting.gpu else 'tiny model on the CPU'}"
             f"{', --quick' if setting.quick else ''} ==",
             f"{'check':{w}s}  {'status':7s}  figure / reason"]
    for r in rows:
        text = " | ".join(x for x in (r.figure, r.reason) if x)
        lines.append(f"{r.check:{w}s}  {r.status:7s}  {text}")
    if not rows:
        lines.append("(no checks ran)")
    counts = {s: sum(r.status == s for r in rows) for s in ("PASS", "FAIL", "SKIPPED")}
    lines.append(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIPPED']} skipped")
    for s in setting.skipped:
        lines.append(f"skipped: {s}")
    lines.append(f"total time {total_s:.0f} s ({total_s / 60:.1f} min)")
    return "\n".join(lines)


def write_report(path: Path, rows, setting: Setting, total_s: float, argv):
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": setting.name,
              "gpus": setting.gpus, "mode": "gpu" if setting.gpu else "tiny-cpu",
              "quick": setting.quick, "torch": torch.__version__, "argv": list(argv),
              "total_s": round(total_s, 1), "gemm_flops_per_s": setting.peaks,
              "skipped": setting.skipped,
              "checks": [{"check": r.check, "status": r.status, "figure": r.figure,
                          "reason": r.reason, "data": r.data} for r in rows]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")


# ----------------------------------------------------------------------------------------------
# Processes and in-process command lines

@contextlib.contextmanager
def native_stderr_to(log: Path):
    """What C++ code writes to file descriptor 2 (the profiler's start / stop lines) goes to
    `log` meanwhile, not between the summary's rows."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log, "a") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()


def call_main(main, argv, log: Path):
    """One of the project's commands run in this process, `main(argv)`, its prints going to
    `log`; a SystemExit with an error status becomes a RuntimeError naming the command's own
    message (its last line of output)."""
    buf = io.StringIO()
    with open(log, "a") as f:
        tee = _Tee(f, buf)
        try:
            with contextlib.redirect_stdout(tee), contextlib.redirect_stderr(tee):
                return main([str(a) for a in argv])
        except SystemExit as e:
            if e.code in (None, 0):
                return None
            lines = [ln.strip() for ln in buf.getvalue().splitlines() if ln.strip()]
            msg = e.code if isinstance(e.code, str) else lines[-1] if lines else f"exit status {e.code}"
            raise RuntimeError(msg) from None


def run_command(cmd, log: Path, timeout: float, env=None, cwd=ROOT):
    """Run a command (its output to `log`) in a process group of its own, so that a timeout
    (or the part's hard limit) stops it with every process it started (torchrun's workers,
    the compiler's); an error naming the log's last line if it fails."""
    with open(log, "a") as f:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(timeout, 1))
        except BaseException as e:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if isinstance(e, subprocess.TimeoutExpired):
                raise RuntimeError(f"{Path(str(cmd[1])).name} ... ran past {timeout:.0f} s "
                                   f"(log: {log})") from None
            raise
    if rc != 0:
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        raise RuntimeError(f"exit {rc}: {tail[-1] if tail else ''} (log: {log})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python() -> str:
    return sys.executable


# ----------------------------------------------------------------------------------------------
# Data: token ids shaped like E2E's (the real valid split where ../shared has it and its vocab)

def e2e_examples(n: int, seed: int = 0, vocab: int = VOCAB):
    """n (context, completion) token-id pairs of E2E valid's shapes: the split's own lines
    encoded with GPT-2's vocabulary when ../shared/data holds them, else random ids with E2E's
    length ranges; each part ends with the vocabulary's last id (GPT-2's <|endoftext|>)."""
    real = _e2e_valid() if vocab == VOCAB else None
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if real:
            out.append(real[(seed * 7919 + i) % len(real)])
            continue
        c = rng.randint(*E2E_CONTEXT) - 1
        m = rng.randint(*E2E_COMPLETION) - 1
        out.append(([rng.randrange(vocab - 1) for _ in range(c)] + [vocab - 1],
                    [rng.randrange(vocab - 1) for _ in range(m)] + [vocab - 1]))
    return out


def distinct_contexts(n: int, seed: int = 1, vocab: int = VOCAB):
    """n distinct contexts: E2E valid's distinct MRs where ../shared has them (547), the rest
    synthesized with E2E's context lengths. Returns (contexts, how many are real)."""
    seen, out = set(), []
    for ctx, _ in ((_e2e_valid() if vocab == VOCAB else None) or []):
        if len(out) < n and tuple(ctx) not in seen:
            seen.add(tuple(ctx))
            out.append(ctx)
    real = len(out)
    rng = random.Random(seed)
    while len(out) < n:
        ctx = [rng.randrange(vocab - 1) for _ in range(rng.randint(*E2E_CONTEXT) - 1)] + [vocab - 1]
        if tuple(ctx) not in seen:
            seen.add(tuple(ctx))
            out.append(ctx)
    return out, real


_E2E = {}


def _e2e_valid():
    if "rows" not in _E2E:
        _E2E["rows"] = None
        path, vocab = SHARED / "data" / "e2e" / "valid.txt", SHARED / "data" / "vocab"
        if path.is_file() and (vocab / "encoder.json").is_file():
            from nlg.encoder import get_encoder
            enc = get_encoder(str(vocab))
            rows = []
            for line in path.read_text(encoding="utf-8").splitlines():
                if "||" in line:
                    mr, ref = line.split("||", 1)
                    rows.append((enc.encode(mr) + [enc.eos_id],
                                 enc.encode(" " + ref.strip()) + [enc.eos_id]))
            _E2E["rows"] = rows or None
    return _E2E["rows"]


def fixed_examples(n: int, context: int, completion: int, seed: int = 0, vocab: int = VOCAB):
    rng = random.Random(seed)
    return [([rng.randrange(vocab) for _ in range(context)],
             [rng.randrange(vocab) for _ in range(completion)]) for _ in range(n)]


def write_jsonl(path: Path, examples):
    with open(path, "w") as f:
        for ctx, comp in examples:
            f.write(json.dumps({"context": list(ctx), "completion": list(comp)}) + "\n")
    return path


# ----------------------------------------------------------------------------------------------
# FLOPs

def lora_step_flops(config, lengths, loss_tokens: int) -> float:
    """Model FLOPs of one LoRA training step over sequences of these (unpadded) lengths:
    every frozen weight 2 FLOPs per token forward and 2 for the input gradient (frozen: no
    weight gradient), except the first layer's q, k, v projection, whose input (the frozen
    embeddings) needs no gradient; causal attention 2 T^2 d per layer forward (scores and
    values, the causal half), twice that backward; the LM head 4 d V per loss position (logits
    are computed only there). The adapters' own FLOPs (rank 4) are left out: about 1% at
    d = 256, less at GPT-2 M's 1024."""
    d, layers, vocab = config.n_embd, config.n_layer, config.vocab_size
    blocks = 12 * layers * d * d
    return (sum(4 * blocks * t - 2 * 3 * d * d * t + 6 * layers * d * t * t for t in lengths)
            + 4 * d * vocab * loss_tokens)


def fmt_rate(x: float, unit: str = "FLOP/s") -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"

"""Command-line errors the same way in every script: one line, `<script>: <what> (<how to fix>)`,
exit status 2 for bad input and 130 for Ctrl-C, before anything long is printed. No traceback
for bad input or an interruption (LORA_DEBUG=1 or --debug shows it); a traceback still shows for
a bug (an exception no check foresaw).

Under a launcher (torchrun, torch.distributed.launch) only rank 0 prints the line, and it prints
it once the launcher has exited, so that the launcher's own report of the failed process (a
traceback and a box, some 40 lines) does not bury it: a small process started for that waits for
the launcher to end (launcher.py). The other ranks print nothing; every rank leaves its line in
the launcher's error file (TORCHELASTIC_ERROR_FILE), which its box shows.

Every entry point runs its main through `run(prog, main, ...)`.
"""
import os
import shlex
import signal
import sys
import traceback

BAD_INPUT = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
             PermissionError, UnicodeDecodeError)
DEBUG_ENV = "LORA_DEBUG"
DEBUG_FLAG = "--debug"
# set by run_task.sh / run_glue_task.sh: the command that continues a run they started
RESUME_COMMAND_ENV = "LORA_RESUME_COMMAND"
INTERRUPTED = 130       # what a shell reports for a process ended by SIGINT


def message(e: BaseException) -> str:
    """An exception's text without KeyError's quotes."""
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


class UsageExit(SystemExit):
    """Exit status 2 (130 for an interruption); str() is the line the user saw (what callers in
    the same process match)."""

    def __init__(self, line: str, code: int = 2):
        super().__init__(code)
        self.line = line

    def __str__(self):
        return self.line


class Interrupted(KeyboardInterrupt):
    """Ctrl-C with what the run had reached and how to continue it: str() is that sentence
    (without the script's name)."""


def debugging(argv=None) -> bool:
    """LORA_DEBUG=1 in the environment, or --debug on the command line: tracebacks shown."""
    argv = sys.argv[1:] if argv is None else argv
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes") \
        or DEBUG_FLAG in argv


def setup_parser(parser, group=None) -> None:
    """--debug (in `group`, default the parser), and argparse's own errors (a missing or unknown
    flag, a bad value) as one line too: argparse prints the whole usage first, some 40 lines
    for the trainers."""
    (group or parser).add_argument(
        DEBUG_FLAG, action="store_true",
        help=f"show the traceback behind an error or Ctrl-C ({DEBUG_ENV}=1 does the same for "
             f"every script)")
    prog = parser.prog

    def error(msg):
        usage_error(prog, f"{msg} (--help lists the flags)")

    parser.error = error


def report(line: str) -> None:
    """Print `line` as the last word of this command (see the module's docstring)."""
    from . import launcher
    sys.stdout.flush()      # what was printed before comes first, also in a log file
    rank = os.environ.get("RANK")
    if rank not in (None, "", "0"):
        if not launcher.leave_in_error_file(line) and os.environ.get("LOCAL_RANK") == "0":
            print(line, file=sys.stderr, flush=True)   # another machine's own terminal
        return
    launcher.leave_in_error_file(line)
    if not launcher.print_after_launcher(line):
        print(line, file=sys.stderr, flush=True)


def usage_error(prog: str, msg: str) -> "NoReturn":  # noqa: F821
    """Report `prog: msg` (see report) and exit 2; called while handling an exception, its
    traceback comes first when debugging()."""
    if debugging() and sys.exc_info()[1] is not None:
        traceback.print_exc()
    line = f"{os.path.basename(prog)}: {msg}"
    report(line)
    raise UsageExit(line)


def run(prog: str, main, *args, **kwargs):
    """main(*args, **kwargs), with bad input reported by usage_error and Ctrl-C as one line
    (exit 130); tracebacks only when debugging()."""
    name = os.path.basename(prog)
    try:
        return main(*args, **kwargs)
    except BAD_INPUT as e:
        usage_error(name, message(e))
    except UsageExit:
        raise
    except SystemExit as e:
        if not isinstance(e.code, str):
            raise
        # `raise SystemExit("script: what")`: Python would print it on every rank
        report(e.code)
        raise UsageExit(e.code, 1) from None
    except KeyboardInterrupt as e:
        # the launcher forwards a second SIGINT: it must not cut this report short
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if debugging():
                traceback.print_exc()
            line = f"{name}: {e}" if isinstance(e, Interrupted) and str(e) else \
                f"{name}: stopped (Ctrl-C)"
            report(line)
        finally:
            signal.signal(signal.SIGINT, previous)
        raise UsageExit(line, INTERRUPTED) from None


def command_line() -> str:
    """How this run was started, as a shell line: the launcher's command under torchrun /
    torch.distributed.launch, else this process's (`python <script> <args>`)."""
    from . import launcher
    parent = launcher.launcher_command()
    if parent:
        return shlex.join(parent)
    mine, tail = launcher.own_command(), sys.argv[1:]
    # run in-process (runpy, a test), this process's command is not the script's
    script = os.path.basename(sys.argv[0])
    if mine and len(mine) > len(tail) and mine[len(mine) - len(tail):] == tail \
            and os.path.basename(mine[len(mine) - len(tail) - 1]) == script:
        return shlex.join(mine)
    return shlex.join(["python"] + sys.argv)


def continue_command(flag: str = "--resume", drop=("--overwrite", "--overwrite_output_dir")) -> str:
    """The command that continues this run: the task script's (RESUME_COMMAND_ENV, it resumes
    by itself), else this command with `flag` added (None: a command that resumes by itself) and
    a flag that would start afresh dropped."""
    given = os.environ.get(RESUME_COMMAND_ENV)
    if given:
        return given
    words = shlex.split(command_line())
    words = [w for w in words if w not in drop]
    if flag is not None and flag not in words:
        words.append(flag)
    return shlex.join(words)


def interrupted_run(step: int, total: int, saved_step, save_every: str,
                    flag: str = "--resume") -> Interrupted:
    """The Ctrl-C sentence of a training run: where it stopped, what --resume starts from and
    the command that does it. saved_step: the step of the last resumable state (None: none yet;
    save_every says when the first one comes, e.g. '--save_interval 1000'); flag: what the
    command needs to resume (continue_command)."""
    where = f"stopped by Ctrl-C after step {step} of {total}"
    if saved_step is None:
        kept = f"no resumable state yet (one is saved every {save_every}): it starts again at step 0"
    elif saved_step == step:
        kept = f"the resumable state holds step {saved_step}"
    else:
        kept = f"the resumable state holds step {saved_step} (saved every {save_every})"
    return Interrupted(f"{where}; {kept}; continue with: {continue_command(flag)}")

"""What a process started by torchrun / torch.distributed.launch (the elastic agent) needs to know
of its launcher: whether there is one, its command line, and how to have the last word.

When a worker fails, the agent prints its own traceback and a box naming the failed ranks after
the worker has exited, so a worker's one-line error would end up 40 lines above the end. Rank 0
therefore hands its line to a small detached process that waits for the agent to exit and only
then writes the line to the same stderr (a test reading the output to its end, or a log file,
gets it last). Every rank also leaves its line in the error file the agent reads
(TORCHELASTIC_ERROR_FILE): its box shows it, also where the agent sends the workers' output to
log files (--redirects, --tee).
"""
import json
import os
import subprocess
import sys
import time
from typing import List, Optional

WAIT_S = 900            # the most the helper waits for the launcher (it stops its workers first)

# Run with `python -I -S -c`: the standard library only, no site packages, no torch.
_PRINT_AFTER = r"""
import os, select, sys, time
pid, line, wait_s = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
try:
    fd = os.pidfd_open(pid)             # readable once the process has exited
    select.select([fd], [], [], wait_s)
except (AttributeError, OSError):
    end = time.time() + wait_s
    while time.time() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        except PermissionError:
            pass
        time.sleep(0.05)
sys.stderr.write(line + "\n")
sys.stderr.flush()
"""


def _cmdline(pid) -> Optional[List[str]]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    words = [w.decode("utf-8", "replace") for w in raw.split(b"\0")]
    return words[:-1] if words and words[-1] == "" else words or None


def own_command() -> Optional[List[str]]:
    """This process's command line as started (None where /proc is not there)."""
    return _cmdline("self")


def launcher_pid() -> Optional[int]:
    """The elastic agent's pid when this process is one of its workers (it sets
    TORCHELASTIC_RUN_ID and is the parent: torchrun, torch.distributed.launch, accelerate
    launch), else None."""
    if not os.environ.get("TORCHELASTIC_RUN_ID"):
        return None
    parent = os.getppid()
    words = _cmdline(parent)
    if words is not None and not any(k in w for w in words
                                     for k in ("torch.distributed", "torchrun", "accelerate")):
        return None          # a process started by a worker inherits the variable
    return parent


def launcher_command() -> Optional[List[str]]:
    pid = launcher_pid()
    return _cmdline(pid) if pid is not None else None


def print_after_launcher(line: str) -> bool:
    """Have `line` printed on this process's stderr once the launcher has exited; False when
    there is no launcher (or the helper could not start): print it yourself."""
    pid = launcher_pid()
    if pid is None:
        return False
    try:
        sys.stderr.flush()
        subprocess.Popen([sys.executable, "-I", "-S", "-c", _PRINT_AFTER, str(pid), line,
                          str(WAIT_S)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         start_new_session=True)     # a second Ctrl-C does not reach it
    except OSError:
        return False
    return True


def leave_in_error_file(line: str) -> bool:
    """Write `line` where the launcher's report of this process shows it; False without one."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or launcher_pid() is None:
        return False
    try:
        with open(path, "w") as f:
            json.dump({"message": line, "timestamp": int(time.time())}, f)
    except OSError:
        return False
    return True

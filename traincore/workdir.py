"""One run per work dir.

A run holds an exclusive `flock` on <work_dir>/.lock for its whole life; the kernel drops it
when the process dies however it dies, so a killed run never leaves the folder stuck. The lock
file names the holder (pid, host, command) for the message another run gets. A finished run
(or an interrupted one that can be resumed) is not overwritten unless asked; then its files go first, so two
runs' files never mix.
"""
import fcntl
import os
import shutil
import socket
import sys
from typing import Iterable


class WorkDirBusy(RuntimeError):
    pass


_HELD = {}


def claim_work_dir(work_dir: str, resuming: bool = False, overwrite: bool = False,
                   occupied: Iterable[str] = ("run_info.json",),
                   outputs: Iterable[str] = (), overwrite_flag: str = "--overwrite",
                   resume_flag: str = "--resume") -> None:
    """Lock `work_dir` for this process (idempotent); refuse a busy or an occupied folder.

    occupied: files that mean an earlier run (finished, or interrupted but resumable) owns the
    folder; outputs: names or name prefixes of the files a run writes, removed first when
    overwrite is given."""
    work_dir = os.path.abspath(work_dir)
    if work_dir in _HELD:
        return
    os.makedirs(work_dir, exist_ok=True)
    path = os.path.join(work_dir, ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise WorkDirBusy(f"{work_dir} is in use by another run ({holder}): wait for it, or "
                          f"give another --work_dir / --output_dir") from None
    found = [n for n in occupied if os.path.exists(os.path.join(work_dir, n))]
    if found and not resuming:
        if not overwrite:
            os.close(fd)
            how = f"{resume_flag} continues it, " if resume_flag else ""
            raise WorkDirBusy(f"{work_dir} holds an earlier run ({', '.join(found)}): {how}"
                              f"{overwrite_flag} replaces it, or give another folder")
        for name in os.listdir(work_dir):
            if name != ".lock" and any(name == o or name.startswith(o) for o in outputs):
                full = os.path.join(work_dir, name)
                shutil.rmtree(full) if os.path.isdir(full) else os.unlink(full)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}: "
                  f"{' '.join(sys.argv)[:300]}\n".encode(), 0)
    _HELD[work_dir] = fd   # kept open: the lock lives as long as this process


def release_work_dir(work_dir: str) -> None:
    fd = _HELD.pop(os.path.abspath(work_dir), None)
    if fd is not None:
        os.close(fd)

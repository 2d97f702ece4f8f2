"""Files a run writes: whole or not at all, with the permissions the user's umask gives.

A save goes to `.<name>.<random>.tmp` in the same folder, is fsynced, then renamed over the final
name, so a kill mid-write leaves the previous file (or none), never a truncated one under the
final name; `remove_stale_temporaries` clears what a killed run left behind.
"""
import errno
import json
import os
import shutil
import tempfile

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _disk_full(e: BaseException, folder: str) -> bool:
    """torch.save reports a full disk as RuntimeError('... file write failed'); an OSError says
    ENOSPC."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return True
    if isinstance(e, RuntimeError) and "write failed" in str(e):
        try:
            return shutil.disk_usage(folder).free < 64 * 2**20
        except OSError:
            return False
    return False


def write_atomic(path, write) -> None:
    """Call write(binary file) on a temporary file, then rename it to `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; keep the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _disk_full(e, folder):
            raise OSError(errno.ENOSPC, f"no space left on the device of {folder} while writing "
                          f"{path} ({shutil.disk_usage(folder).free // 2**20} MiB free); the "
                          f"previous file, if any, is kept") from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def save_atomic(obj, path) -> None:
    """torch.save (or safetensors, by the suffix) of `obj`, atomically."""
    if os.fspath(path).endswith(".safetensors"):
        from safetensors.torch import save
        write_atomic(path, lambda f: f.write(save(obj)))
    else:
        write_atomic(path, lambda f: torch.save(obj, f))


def save_finite(obj, path, tensors=None, step=None, hint: str = "") -> None:
    """save_atomic, refused (NonFiniteError naming the step) when a floating tensor of `tensors`
    (default: obj itself, a state dict) holds nan or inf: no diverged state is ever written."""
    from .guard import NonFiniteError, check_finite_state
    try:
        check_finite_state(obj if tensors is None else tensors, os.fspath(path))
    except NonFiniteError as e:
        when = "" if step is None else f" by step {step}"
        raise NonFiniteError(f"training diverged{when}: {e}{hint}") from None
    save_atomic(obj, path)


def write_json_atomic(obj, path) -> None:
    write_atomic(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode("utf-8")))


def write_text_atomic(text: str, path) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def remove_stale_temporaries(folder, names=("",)) -> int:
    """Temporary files of saves a killed run left behind (.<name>.<random>.tmp, for names
    starting with one of `names`); call it while holding the work dir's lock, so that no save of
    another run is in flight."""
    removed = 0
    for n in os.listdir(folder) if os.path.isdir(folder) else ():
        if n.endswith(".tmp") and any(n.startswith("." + p) for p in names):
            os.unlink(os.path.join(folder, n))
            removed += 1
    return removed

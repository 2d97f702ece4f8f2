"""nlg/cpu_memory.py: after keep_freed_memory(), memory a decode step frees is reused by the
next step instead of faulting in fresh pages (glibc only)."""
import os
import platform
import subprocess
import sys

import pytest

from nlg.cpu_memory import keep_freed_memory

# A decode step's pattern: three 30 MB blocks allocated, written, freed; the page faults of
# three more such steps after two to warm up (glibc adapts its thresholds on the first frees).
CHILD = r"""
import ctypes, resource, sys
from nlg.cpu_memory import keep_freed_memory
if sys.argv[1] == "keep" and not keep_freed_memory():
    sys.exit("keep_freed_memory() did not take")
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
N = 30 << 20
def step():
    blocks = [libc.malloc(N) for _ in range(3)]
    for b in blocks:
        ctypes.memset(b, 1, N)
    for b in blocks:
        libc.free(b)
step(); step()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")


def _faults(mode):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("NLG_CPU_MALLOC", None)
    out = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


@glibc
def test_freed_blocks_are_reused_without_faults():
    step_pages = 3 * (30 << 20) // 4096
    if _faults("default") < step_pages:
        pytest.skip("this glibc keeps such blocks by itself")
    assert _faults("keep") < step_pages // 10


@glibc
def test_opt_outs_leave_malloc_alone(monkeypatch):
    monkeypatch.setenv("NLG_CPU_MALLOC", "default")
    assert keep_freed_memory() is False
    monkeypatch.delenv("NLG_CPU_MALLOC")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")      # the user's own choice stands
    assert keep_freed_memory() is False

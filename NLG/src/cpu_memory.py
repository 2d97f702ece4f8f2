"""glibc's malloc while decoding on a CPU: keep freed memory for the next step.

Why: every beam step allocates its logits and their log-softmax (160 x 50257 floats, 32 MB each
for GPT-2 S on the CPU) and frees them again. glibc hands blocks that size out as fresh mmaps,
or trims them off the heap when freed, so each step touches new pages and faults on every one
of them: decoding 32 E2E contexts faulted 3.5 GB in, 2-3% of the run's CPU time spent in the
kernel. With the mmap threshold at glibc's largest (32 MiB) and the trim threshold at 1 GiB, a
step reuses the pages the last one freed: on the 2-core dev machine (2026-12-01), 600 E2E lines
ran at 77-79% of the GEMM probe in three runs against 68-75% in the three runs paired with them.

The cost: up to 1 GiB of freed memory stays with the process until it ends. NLG_CPU_MALLOC=default
in the environment leaves malloc alone, as do MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ set
by the user (their values stand); other C libraries than glibc are never touched.
"""
import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3           # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20                              # the largest glibc accepts on 64-bit
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Set the thresholds above for this process; whether they were set."""
    if os.environ.get("NLG_CPU_MALLOC", "keep") == "default" or platform.libc_ver()[0] != "glibc":
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; the mmap threshold first, as setting either one turns off
    # glibc's own adjustment of both
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1

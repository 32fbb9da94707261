"""Process-level settings for the compute tasks.

glibc's allocator returns large freed blocks to the kernel (``mmap`` above a threshold, heap trim
above another) and every training step then faults the same pages back in, zero-filled: with the
defaults more than a third of a training process's CPU time was system time (see
``benchmarks/README.md``, "Training throughput"). Keeping freed memory in the heap removes that
cost. It is the same as starting Python with ``MALLOC_MMAP_MAX_=0`` and a large
``MALLOC_TRIM_THRESHOLD_``, but it can be applied from inside a running process (the Prefect task
that trains), so deployments and ``pno run`` get it alike.

``PNO_KEEP_FREED_MEMORY=0`` turns it off; on a C library other than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from functools import cache

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30  # mallopt takes a C int: 1 GiB, the most that fits in 2**31


@cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse (once per process); True when applied."""
    if os.environ.get("PNO_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # mallopt(int param, int value) returns 1 on success
    ok_trim = libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(TRIM_THRESHOLD_BYTES)) == 1
    ok_mmap = libc.mallopt(M_MMAP_MAX, ctypes.c_int(0)) == 1
    return ok_trim and ok_mmap

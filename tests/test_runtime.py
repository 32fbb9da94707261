"""The allocator setting of the compute tasks (pno/runtime.py) takes effect, and can be refused."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# allocate 256 MiB, touch it, free it: how much of it is still resident afterwards (MiB)
PROBE = """
import ctypes, os, sys
import psutil
from pno.runtime import keep_freed_memory
applied = keep_freed_memory()
proc = psutil.Process()
before = proc.memory_info().rss
buf = ctypes.create_string_buffer(256 << 20)
ctypes.memset(buf, 1, 256 << 20)
del buf
print(applied, (proc.memory_info().rss - before) / 2**20)
"""

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="the setting is glibc's")


def _probe(setting: str) -> tuple[bool, float]:
    env = {**os.environ, "PNO_KEEP_FREED_MEMORY": setting}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0] == "True", float(out[1])


@glibc
def test_freed_memory_stays_in_the_heap_when_applied() -> None:
    applied, kept = _probe("1")
    assert applied
    assert kept > 200  # the freed block is kept for reuse, not returned to the kernel


@glibc
def test_default_allocator_returns_freed_memory_when_turned_off() -> None:
    applied, kept = _probe("0")
    assert not applied
    assert kept < 50  # glibc's default: a large block is mmapped and unmapped on free

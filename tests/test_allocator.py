"""Keeping freed memory: fewer page faults for the same work (glibc only)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

WORK = """
import ctypes, resource, sys, torch
from flowfit.allocator import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
else:  # glibc's initial thresholds, pinned (they adapt to a process's history otherwise)
    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(-3, 128 * 1024) and libc.mallopt(-1, 128 * 1024)
x = torch.randn(4096, 128)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):  # what a chunked inference does: the same large temporaries, again and again
    y = torch.relu(x @ torch.ones(128, 128))
    z = torch.relu(y) + 1
    del y, z
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")
def test_kept_memory_is_reused_instead_of_faulted_in_again() -> None:
    """With glibc's initial thresholds every 2 MB tensor is mapped afresh and faulted in page
    by page; with keep_freed_memory they come from the heap and stay. (glibc adapts its
    thresholds to the blocks a process frees, so the real default lies in between and depends
    on the process's history: benchmarks/allocator.py measures it.)"""
    faults = {
        kind: int(subprocess.run([sys.executable, "-c", WORK, kind], capture_output=True, text=True, check=True).stdout)
        for kind in ("default", "kept")
    }
    assert faults["kept"] * 5 < faults["default"], faults

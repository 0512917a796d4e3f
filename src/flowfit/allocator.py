"""Keeping freed memory for reuse: on Linux (glibc), scoring and sampling run up to 1.7
times faster.

PyTorch on CPU asks the C library for each tensor's memory and gives it back when the
tensor dies. glibc's defaults return large blocks straight to the system (blocks above
128 KiB are mapped on their own, and the heap shrinks whenever enough lies free at its top),
so each chunk of a long inference gets its tensors as fresh pages, every page a fault the
kernel must serve and zero. Scoring 100,000 points with an NSF in a fresh process took 1.06
million page faults and ran at 353,000 points a second; with :func:`keep_freed_memory`,
62,000 faults and 586,000 points a second (RealNVP, whose larger blocks move glibc's adaptive
thresholds by themselves: 1.03 times; training steps: no change; ``benchmarks/allocator.py``,
results in ``benchmarks/results/allocator.md``).

The ``flowfit`` command calls it in its own process. A library must not change its host
process's allocator on import, so in Python it is yours to call: the cost is that up to
:data:`TRIM_BYTES` of freed memory stays with the process instead of going back to the
system, and blocks up to :data:`MMAP_BYTES` come from the heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: Blocks at least this large are still mapped on their own, and unmapped when freed (glibc's
#: own ceiling for the threshold it adapts: its ``DEFAULT_MMAP_THRESHOLD_MAX`` on 64 bits).
MMAP_BYTES = 32 * 2**20
#: The heap gives memory back to the system only when more than this lies free at its top.
TRIM_BYTES = 64 * 2**20
#: glibc's ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Whether :func:`keep_freed_memory` has set the thresholds in this process.
_kept = False


def keep_freed_memory() -> bool:
    """Set glibc's thresholds (:data:`MMAP_BYTES`, :data:`TRIM_BYTES`) for this process;
    False where the C library is not glibc (nothing is changed then)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    global _kept
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES))
    return _kept


def keeps_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` has set this process's thresholds: then blocks of
    tens of megabytes are reused without page faults, and inference takes larger chunks of rows
    (:meth:`flowfit.Flow.rows_per_chunk`)."""
    return _kept

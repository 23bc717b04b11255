"""Process-wide tuning for slimseg's entry points (the CLI, the study's workers, benchmark scripts).

Importing slimseg changes nothing in its host process; :func:`tune_process` is the explicit opt-in.
It imports no torch, so an entry point can call it before torch's first allocation.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_process() -> None:
    """Huge pages for torch's large CPU tensors and glibc malloc thresholds that keep freed tensor
    memory for reuse (see ``benchmarks/core.py alloc`` and ``malloc``).

    torch reads ``THP_MEM_ALLOC_ENABLE`` at its first CPU allocation, so call this first; a value the
    user set (0 opts out) is kept.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    tune_malloc()


@functools.lru_cache(maxsize=1)
def tune_malloc() -> bool:
    """Let glibc keep freed memory instead of unmapping it after every training step or tile batch.

    Each step frees and reallocates the same activations; with glibc's default thresholds (or Dask
    workers' ``MALLOC_TRIM_THRESHOLD_=65536``) each is a fresh ``mmap`` the kernel zeroes again.
    Returns False where the C library is not glibc (nothing changes).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 256 << 20))

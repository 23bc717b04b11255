"""Device choice and CPU feature detection (bf16 autocast pays only where the CPU has AMX)."""

from __future__ import annotations

import ctypes
import functools
import sys
from pathlib import Path

import torch

from .errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' asked for, but no CUDA GPU is available; use --device auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("device 'mps' asked for, but Apple MPS is not available; use --device auto or cpu")
    if name not in ("cpu", "cuda", "mps"):
        raise InputError(f"unknown device {name!r}; choose one of: auto, cpu, cuda, mps")
    return torch.device(name)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_summary() -> dict[str, bool | str]:
    f = cpu_flags()
    return {
        "avx2": "avx2" in f,
        "avx512": "avx512f" in f,
        "avx512_vnni": "avx512_vnni" in f,
        "avx512_bf16": "avx512_bf16" in f,
        "amx": "amx_bf16" in f and "amx_tile" in f,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def use_bf16(setting: str, device: torch.device) -> bool:
    """bf16 autocast: 'on', 'off', or 'auto' = CUDA with bf16 support, or a CPU with native bf16
    arithmetic (AMX or AVX512-BF16: 3x faster training measured here); elsewhere bf16 is emulated and slow."""
    if setting in ("on", "off"):
        return setting == "on"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = cpu_summary()
        return bool(cpu["amx"] or cpu["avx512_bf16"]) and torch.backends.cpu.get_cpu_capability() == "AVX512"
    return False


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.lru_cache(maxsize=1)
def tune_malloc() -> bool:
    """Let glibc keep freed tensor memory for reuse instead of unmapping it after every step.

    Every training step and every tile batch frees and reallocates the same activations. With glibc's
    default thresholds (or Dask workers' ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes the mmap
    threshold at 128 KiB) each of them is a fresh ``mmap`` whose pages the kernel zeroes again.
    Measured here (``benchmarks/core.py malloc``, huge pages on): training 1.01x faster in a plain
    process and 1.83x in a Dask worker. In prediction, with torch's huge pages (see
    ``slimseg/__init__``), it adds little for one model alone (``benchmarks/core.py alloc``: under 5%
    at batch 8; batch 1 in a worker thread was 1.4x slower, batch 2, the default, unchanged), but when
    several models take turns, as in ``slimseg benchmark``, the float model ran 1.2x faster with it,
    the pruned one 1.3x.
    Returns False where the C library is not glibc (nothing changes).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 256 << 20))

"""Device choice and CPU feature detection (bf16 autocast pays only where the CPU has native bf16)."""

from __future__ import annotations

import functools
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
    arithmetic (AMX or AVX512-BF16); elsewhere bf16 is emulated and slow."""
    if setting in ("on", "off"):
        return setting == "on"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = cpu_summary()
        return bool(cpu["amx"] or cpu["avx512_bf16"]) and torch.backends.cpu.get_cpu_capability() == "AVX512"
    return False

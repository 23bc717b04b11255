"""Robust per-image intensity normalisation: percentile ``pmin`` -> 0, ``pmax`` -> 1, per channel or joint."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import NormConfig

_MAX_SAMPLES = 1 << 22  # percentiles of huge images from a regular subsample


def per_channel(cfg: NormConfig, n_channels: int) -> bool:
    """Whether the channels are normalised each on its own: as ``cfg.per_channel`` says, else all but
    3 channels (RGB keeps its colour balance, as slimseg always did)."""
    if cfg.per_channel is not None:
        return bool(cfg.per_channel)
    return n_channels not in (1, 3)


@dataclass(frozen=True)
class Normalizer:
    """Percentiles measured on one image, applied to it whole or tile by tile. ``lo`` and ``hi`` are
    numbers, or one per channel."""

    lo: float | tuple[float, ...]
    hi: float | tuple[float, ...]

    @classmethod
    def fit(cls, image: np.ndarray, cfg: NormConfig) -> Normalizer:
        if image.ndim == 3 and per_channel(cfg, image.shape[-1]):
            fits = [cls._fit(image[..., c].reshape(-1), cfg) for c in range(image.shape[-1])]
            return cls(tuple(lo for lo, _ in fits), tuple(hi for _, hi in fits))
        return cls(*cls._fit(image.reshape(-1), cfg))

    @staticmethod
    def _fit(flat: np.ndarray, cfg: NormConfig) -> tuple[float, float]:
        step = max(1, flat.size // _MAX_SAMPLES)
        lo, hi = np.percentile(flat[::step], (cfg.pmin, cfg.pmax))
        lo, hi = float(lo), float(hi)
        if hi - lo < 1e-6:  # a flat image: keep it finite
            hi = lo + 1.0
        return lo, hi

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        """(H, W) or (H, W, C) raw pixels -> (C, H, W) float32."""
        lo, hi = np.asarray(self.lo, np.float64), np.asarray(self.hi, np.float64)
        out = (np.asarray(tile, dtype=np.float32) - lo.astype(np.float32)) * (1.0 / (hi - lo)).astype(np.float32)
        return out[None] if out.ndim == 2 else np.moveaxis(out, -1, 0)

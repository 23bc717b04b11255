"""Robust per-image intensity normalisation: percentile ``pmin`` -> 0, ``pmax`` -> 1."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import NormConfig

_MAX_SAMPLES = 1 << 22  # percentiles of huge images from a regular subsample


@dataclass(frozen=True)
class Normalizer:
    """Percentiles measured on one image, applied to it whole or tile by tile."""

    lo: float
    hi: float

    @classmethod
    def fit(cls, image: np.ndarray, cfg: NormConfig) -> Normalizer:
        flat = image.reshape(-1)
        step = max(1, flat.size // _MAX_SAMPLES)
        lo, hi = np.percentile(flat[::step], (cfg.pmin, cfg.pmax))
        lo, hi = float(lo), float(hi)
        if hi - lo < 1e-6:  # a flat image: keep it finite
            hi = lo + 1.0
        return cls(lo, hi)

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        """(H, W) or (H, W, C) raw pixels -> (C, H, W) float32."""
        out = (np.asarray(tile, dtype=np.float32) - np.float32(self.lo)) * np.float32(1.0 / (self.hi - self.lo))
        return out[None] if out.ndim == 2 else np.moveaxis(out, -1, 0)

"""Tile positions and blending weights (pure numpy), shared by training validation and prediction."""

from __future__ import annotations

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap``
    shared pixels between neighbours; the last tile ends at ``length``. ``tile`` must be <= ``length``."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def blend_window(height: int, width: int, overlap: int) -> np.ndarray:
    """A (height, width) weight that ramps linearly over ``overlap`` pixels at each edge, so
    overlapping tiles blend smoothly. Never zero, so a pixel seen by one tile keeps its value."""

    def ramp(n: int) -> np.ndarray:
        if overlap <= 0:
            return np.ones(n, np.float32)
        i = np.arange(n, dtype=np.float32)
        return np.minimum(1.0, np.minimum(i + 0.5, n - i - 0.5) / overlap).astype(np.float32)

    return np.outer(ramp(height), ramp(width))

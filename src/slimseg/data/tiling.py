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


def plan_tiles(length: int, tile: int, overlap: int, multiple: int = 1) -> tuple[int, list[int]]:
    """(size, starts) of the fewest tiles of at most ``tile`` pixels covering ``[0, length)`` with at
    least ``overlap`` shared pixels between neighbours, each as small as that allows: a multiple of
    ``multiple`` (so the model pads nothing) or, as one tile, the whole length. Starts are spread
    evenly and the last tile ends at ``length``."""
    if length <= tile:
        return length, [0]
    top = tile - tile % multiple
    if top <= overlap:
        raise ValueError(f"tile {tile} holds no multiple of {multiple} above the overlap {overlap}")
    n = -(-(length - overlap) // (top - overlap))
    size = -(-(length + (n - 1) * overlap) // n)
    size = min(-(-size // multiple) * multiple, top, length)
    if n == 1:
        return size, [0]
    return size, [i * (length - size) // (n - 1) for i in range(n)]

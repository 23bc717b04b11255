"""Object size: the median diameter of labelled objects, and the scale at which a model sees them as it
was trained to.

A U-Net trained on small patches of small nuclei sees too little of a nucleus three times their size:
it splits it or loses its edges. :func:`rescale_factor` halves the image (1/2, 1/4, ...) until the
objects are at most twice the size of those the model was trained on; prediction runs again at that
scale and the probabilities are resized back (:func:`slimseg.predict.predict`). Only ever down: a
smaller image costs a fraction of the first pass (1/4 at half scale), and doubling images of small
objects did not help on the development images (``docs/accuracy.md``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

MIN_OBJECTS = 3  # fewer objects than this say nothing reliable about their size
MIN_SIDE = 64  # never rescale an image below this many pixels a side
MAX_RATIO = 2.0  # objects up to this many times the trained diameter are predicted as they are


def median_diameter(labels: Iterable[np.ndarray]) -> float:
    """The median equivalent diameter (pixels: that of a disc of the same area) of the objects of all
    ``labels`` arrays pooled; 0 when they hold fewer than :data:`MIN_OBJECTS`."""
    areas = []
    for lab in labels:
        flat = np.asarray(lab).ravel()
        if flat.size and flat.max() > flat.size:  # sparse ids (a user's labels may number objects freely)
            ids, counts = np.unique(flat, return_counts=True)
            areas.append(counts[ids != 0])
        else:
            counts = np.bincount(flat)[1:]
            areas.append(counts[counts > 0])
    pooled = np.concatenate(areas) if areas else np.zeros(0)
    if len(pooled) < MIN_OBJECTS:
        return 0.0
    return float(2 * np.sqrt(np.median(pooled) / np.pi))


def rescale_factor(diameter: float, trained: float, shape: tuple[int, ...]) -> float:
    """The power of two (1, 1/2, 1/4, ...) that brings objects of ``diameter`` to at most
    :data:`MAX_RATIO` times ``trained`` (the model's) in an image of ``shape`` (H, W, ...), without taking
    a side below :data:`MIN_SIDE`; 1 where either diameter is unknown (0)."""
    factor = 1.0
    if diameter > 0 and trained > 0:
        while diameter * factor > MAX_RATIO * trained and min(shape[:2]) * factor / 2 >= MIN_SIDE:
            factor /= 2
    return factor


def resize(array: np.ndarray, size: tuple[int, int], channel_last: bool) -> np.ndarray:
    """float32 ``array`` resized to ``size`` (H, W) bilinearly, anti-aliased when shrinking; its channels
    on the last axis (``channel_last``, or a 2D array) or the first."""
    a = np.asarray(array, np.float32)
    t = torch.from_numpy(np.ascontiguousarray(a))
    t = t[None, None] if a.ndim == 2 else (t.permute(2, 0, 1)[None] if channel_last else t[None])
    shrink = size[0] < a.shape[-3 if channel_last and a.ndim == 3 else -2]
    out = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=shrink)[0]
    if a.ndim == 2:
        return out[0].numpy()
    return out.permute(1, 2, 0).contiguous().numpy() if channel_last else out.numpy()


__all__ = ["median_diameter", "rescale_factor", "resize", "MAX_RATIO"]

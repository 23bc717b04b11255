"""The classical baseline: Otsu threshold, then a distance-transform watershed."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu

from .data.checks import as_image
from .instances import split_instances


def otsu_watershed(image: np.ndarray, min_distance: int = 5, min_size: int = 8) -> np.ndarray:
    """uint32 instance labels of bright objects on a dark background."""
    img = as_image(image).astype(np.float32)
    smooth = gaussian(img, sigma=1)
    if smooth.max() == smooth.min():
        return np.zeros(img.shape, np.uint32)
    fg = ndi.binary_fill_holes(smooth > threshold_otsu(smooth))
    dist = ndi.distance_transform_edt(fg)
    comp, _ = ndi.label(fg)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=comp, exclude_border=False)
    seeds = np.zeros(fg.shape, bool)
    seeds[tuple(peaks.T)] = True
    return split_instances(fg, seeds, landscape=dist, min_size=min_size)

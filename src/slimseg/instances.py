"""From probability maps to instance labels: touching nuclei split by a seeded watershed.

Foreground components holding one seed (or none) are one object each; only components
holding several seeds are split, by a watershed on the centredness map inside their bounding
box. Memory stays a few bytes per pixel, so gigapixel images are fine.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed


def count_objects(labels: np.ndarray) -> int:
    """The number of distinct non-zero ids in non-negative integer ``labels`` (any shape, ids may have
    gaps). Labels numbered about as densely as slimseg writes them take one pass of ``np.bincount``,
    several times faster than ``np.unique``, which sorts every pixel; sparse ids (up to 4e9 in a user's
    file) take ``np.unique``, so that no table of every possible id is allocated."""
    flat = np.ravel(labels)
    if flat.size == 0:
        return 0
    if int(flat.max()) > 4 * flat.size:
        ids = np.unique(flat)
        return int(ids.size - (ids[0] == 0))
    return int(np.count_nonzero(np.bincount(flat.astype(np.intp, copy=False))[1:]))


def split_instances(foreground: np.ndarray, seeds: np.ndarray, landscape: np.ndarray | None = None,
                    min_size: int = 0) -> np.ndarray:
    """uint32 instance labels from a boolean ``foreground`` and boolean ``seeds`` (inside it).

    ``landscape`` is high inside objects and low between them (the predicted centredness, or a
    distance transform); by default the distance to background of each component.
    """
    seeds = seeds & foreground
    comp, n = ndi.label(foreground)
    if n == 0:
        return comp.astype(np.uint32)
    seed_lab, n_seeds = ndi.label(seeds)
    # each seed lies inside one component: count seeds per component from the seed pixels alone
    # (scipy's ndi.maximum with an index argsorts the whole image: gigabytes on large images)
    comp_of_seed = np.zeros(n_seeds + 1, np.int64)
    comp_of_seed[seed_lab[seeds]] = comp[seeds]
    seeds_per_comp = np.bincount(comp_of_seed[1:], minlength=n + 1)
    next_id = n + 1
    boxes = ndi.find_objects(comp)
    for k in np.flatnonzero(seeds_per_comp >= 2):
        box = boxes[k - 1]
        mask = comp[box] == k
        if landscape is None:
            height = ndi.distance_transform_edt(mask)
        else:
            height = landscape[box].astype(np.float32)
        local = watershed(-height, np.where(mask, seed_lab[box], 0), mask=mask)
        ids = np.unique(local[local > 0])
        region = comp[box]
        for j, s in enumerate(ids[1:]):  # the first piece keeps id k, the others get new ids
            region[local == s] = next_id + j
        next_id += max(len(ids) - 1, 0)
    del seed_lab
    if min_size > 1:
        sizes = np.bincount(comp.ravel())
        small = sizes < min_size
        small[0] = False
        if small.any():
            comp[small[comp]] = 0
    return comp.view(np.uint32) if comp.dtype == np.int32 else comp.astype(np.uint32)


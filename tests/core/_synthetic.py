"""Synthetic test images: bright noisy disks with their instance labels."""

import numpy as np


def make_disks(n_images=4, size=48, seed=0, n_disks=4, radius=5):
    """Bright noisy disks on a dark background, with their instance labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n_images):
        lab = np.zeros((size, size), np.uint16)
        for k in range(1, n_disks + 1):
            cy, cx = rng.integers(radius + 1, size - radius - 1, 2)
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = k
        img = (lab > 0) * 150.0 + rng.normal(20, 8, (size, size))
        images.append(np.clip(img, 0, 255).astype(np.uint8))
        labels.append(lab)
    return images, labels

"""Training targets, the train/validation split by image, and random augmented patches."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from ..errors import InputError


def targets_from_labels(labels: np.ndarray) -> np.ndarray:
    """(2, H, W) uint8 targets scaled to 0..255: the foreground, and a soft *centredness* map: each
    pixel's distance to its object's edge divided by the object's largest such distance (1 at the
    centre, falling to 0 at the rim and between touching objects). Above 0.5 it marks one core per
    object, the seeds that split touching nuclei."""
    fg = labels > 0
    inner = fg & ~find_boundaries(labels, mode="inner")
    dist = ndi.distance_transform_edt(inner).astype(np.float32)
    n = int(labels.max())
    peak = np.zeros(n + 1, np.float32)
    if n:
        peak[1:] = ndi.maximum(dist, labels, index=np.arange(1, n + 1))
    centred = np.where(fg, dist / np.maximum(peak[labels], 1.0), 0.0)
    # objects too thin to have an inner part still get a core: their own pixels
    centred[fg & (peak[labels] == 0)] = 1.0
    return np.stack([fg * 255, np.round(centred * 255)]).astype(np.uint8)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) image indices: a seeded shuffle, at least one image on each side when
    ``val_fraction > 0`` and there are two images or more."""
    if n < 1:
        raise InputError("no images to split")
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    return sorted(order[n_val:]), sorted(order[:n_val])


MIN_REGION = 32  # the narrowest region a single image is split into (pixels)


def split_regions(image: np.ndarray, labels: np.ndarray, val_fraction: float, name: str = "image"
                  ) -> tuple[list[str], list[np.ndarray], list[np.ndarray]] | None:
    """A single annotated image cut across its longer side into a training region (first) and a
    validation region (the last ``val_fraction`` of it, second), as (names, images, labels); None where
    ``val_fraction`` is 0 or a region would be narrower than :data:`MIN_REGION` pixels."""
    axis = 0 if image.shape[0] >= image.shape[1] else 1
    length = image.shape[axis]
    cut = length - int(round(length * val_fraction))
    if val_fraction <= 0 or cut < MIN_REGION or length - cut < MIN_REGION:
        return None
    side = "rows" if axis == 0 else "columns"
    names, images, label_parts = [], [], []
    for lo, hi in ((0, cut), (cut, length)):
        index = (slice(lo, hi), slice(None)) if axis == 0 else (slice(None), slice(lo, hi))
        names.append(f"{name} [{side} {lo}-{hi}]")
        images.append(np.ascontiguousarray(image[index]))
        label_parts.append(np.ascontiguousarray(labels[index]))
    return names, images, label_parts


class PatchSampler:
    """Random (patch, target) batches from normalised images, with optional augmentation (``augment``):
    the 8 flips/rotations, a zoom by a random factor between ``1/zoom`` and ``zoom`` (log-uniform: other
    microscopes and magnifications show nuclei at other sizes; the centredness target is scale-free, so
    it zooms with the image), and intensity changes a new screen brings (gain, offset, gamma, blur,
    noise). Images smaller than the patch are reflect-padded (their target padding counts as background)."""

    def __init__(self, images: list[np.ndarray], targets: list[np.ndarray], patch: int, seed: int,
                 augment: bool = True, zoom: float = 1.0) -> None:
        if not images:
            raise InputError("no training images")
        if zoom < 1:
            raise InputError(f"zoom must be >= 1 (1 = no zoom), got {zoom}")
        self.patch, self.augment, self.zoom = patch, augment, zoom
        self.rng = np.random.default_rng(seed)
        self.images, self.targets = [], []
        for img, tgt in zip(images, targets):
            ph, pw = max(0, patch - img.shape[-2]), max(0, patch - img.shape[-1])
            if ph or pw:
                mode = "reflect" if min(img.shape[-2:]) > max(ph, pw) else "symmetric"
                img = np.pad(img, ((0, 0), (0, ph), (0, pw)), mode=mode)
                tgt = np.pad(tgt, ((0, 0), (0, ph), (0, pw)))
            self.images.append(img)
            self.targets.append(tgt)
        area = np.array([im.shape[-2] * im.shape[-1] for im in self.images], dtype=np.float64)
        self.weights = np.sqrt(area) / np.sqrt(area).sum()

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, y): float32 (N, C, P, P) images and uint8 (N, 2, P, P) targets (0..255)."""
        xs, ys = [], []
        for k in self.rng.choice(len(self.images), size=size, p=self.weights):
            x, y = self._crop(self.images[k], self.targets[k])
            if self.augment:
                k90 = int(self.rng.integers(4))
                x, y = np.rot90(x, k90, (1, 2)), np.rot90(y, k90, (1, 2))
                if self.rng.random() < 0.5:
                    x, y = x[:, :, ::-1], y[:, :, ::-1]
                x = self._intensity(np.ascontiguousarray(x, dtype=np.float32))
            xs.append(x)
            ys.append(y)
        return np.ascontiguousarray(np.stack(xs), dtype=np.float32), np.ascontiguousarray(np.stack(ys))

    def _crop(self, img: np.ndarray, tgt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A random patch, zoomed by a random factor when augmenting with ``zoom > 1``."""
        p = self.patch
        side = p
        if self.augment and self.zoom > 1:
            side = int(round(p / np.exp(self.rng.uniform(-np.log(self.zoom), np.log(self.zoom)))))
            side = max(8, min(side, img.shape[-2], img.shape[-1]))
        y0 = self.rng.integers(0, img.shape[-2] - side + 1)
        x0 = self.rng.integers(0, img.shape[-1] - side + 1)
        x, y = img[:, y0:y0 + side, x0:x0 + side], tgt[:, y0:y0 + side, x0:x0 + side]
        if side == p:
            return x, y
        import torch
        import torch.nn.functional as F

        def resize(a: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]
            return F.interpolate(t, size=(p, p), mode="bilinear", align_corners=False, antialias=side > p)[0].numpy()

        return resize(x), np.clip(np.round(resize(y)), 0, 255).astype(np.uint8)

    def _intensity(self, x: np.ndarray) -> np.ndarray:
        """Gain and offset always; gamma, blur and noise each on a third of the patches."""
        rng = self.rng
        if rng.random() < 1 / 3:  # gamma on the [0, 1] range the normalisation maps to
            lo, hi = float(x.min()), float(x.max())
            if hi > lo:
                x = lo + (hi - lo) * ((x - lo) / (hi - lo)) ** np.float32(np.exp(rng.uniform(-0.4, 0.4)))
        if rng.random() < 1 / 3:
            x = ndi.gaussian_filter(x, (0, *(2 * [rng.uniform(0.5, 1.5)])))
        x = x * np.float32(rng.uniform(0.75, 1.25)) + np.float32(rng.uniform(-0.1, 0.1))
        if rng.random() < 1 / 3:
            x = x + rng.normal(0, rng.uniform(0.01, 0.08), x.shape).astype(np.float32)
        return x.astype(np.float32, copy=False)

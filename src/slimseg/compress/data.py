"""The images a compression run calibrates and fine-tunes on: checked, normalised, split like training."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import NormConfig
from ..data.checks import as_image, check_pairs
from ..data.normalize import Normalizer
from ..data.patches import PatchSampler, targets_from_labels
from ..errors import InputError


@dataclass
class CompressData:
    """Normalised (C, H, W) float32 images, and training targets where labels were given."""

    images: list[np.ndarray]
    targets: list[np.ndarray] | None
    notes: list[str] = field(default_factory=list)
    labels: list[np.ndarray] | None = None  # the instance labels (for re-tuning thresholds)

    def subset(self, indices: Sequence[int]) -> CompressData:
        pick = [int(i) for i in indices]
        return CompressData([self.images[i] for i in pick],
                            [self.targets[i] for i in pick] if self.targets is not None else None, [],
                            [self.labels[i] for i in pick] if self.labels is not None else None)

    def sampler(self, patch: int, seed: int, augment: bool) -> PatchSampler:
        targets = self.targets or [np.zeros((2, *im.shape[-2:]), np.uint8) for im in self.images]
        return PatchSampler(self.images, targets, patch, seed, augment)


def prepare_data(images: Sequence[np.ndarray], labels: Sequence[np.ndarray] | None, norm: NormConfig,
                 in_channels: int, names: Sequence[str] | None = None,
                 exclude: Sequence[str] = (), needs_labels: bool = False) -> CompressData:
    """Check and normalise the data. Images named in ``exclude`` (the model's validation split) are
    left out, so a compressed model is scored on images none of its steps saw."""
    images = list(images) if images is not None else []
    if not images:
        raise InputError("no calibration images were given; give the images the model will segment "
                         "(a folder with images/ and labels/)")
    if needs_labels and labels is None:
        raise InputError("this method fine-tunes the model, so it needs label images beside the images")
    if labels is not None:
        images, labels = check_pairs(images, labels, in_channels, names)
    else:
        images = [as_image(im, in_channels, name=f"calibration image {i}") for i, im in enumerate(images)]
    notes = []
    if names is not None and exclude:
        names = list(names)
        if len(names) != len(images):
            raise InputError(f"{len(names)} names for {len(images)} images")
        excluded = set(exclude)
        keep = [i for i, n in enumerate(names) if n not in excluded]
        if not keep:
            notes.append("all given images are in the model's validation split; using them anyway")
        elif len(keep) < len(images):
            notes.append(f"left out {len(images) - len(keep)} images of the model's validation split")
            images = [images[i] for i in keep]
            labels = [labels[i] for i in keep] if labels is not None else None
    normed = [Normalizer.fit(im, norm)(im) for im in images]
    targets = [targets_from_labels(lab) for lab in labels] if labels is not None else None
    if targets is not None and needs_labels and not any(t[0].any() for t in targets):
        raise InputError("the labels hold no objects (all pixels are 0); fine-tuning needs annotated objects")
    return CompressData(normed, targets, notes, list(labels) if labels is not None else None)


def calibration_batches(data: CompressData, n_patches: int, patch: int, batch: int,
                        seed: int) -> Iterator[torch.Tensor]:
    """``n_patches`` random patches (no augmentation) in batches of at most ``batch``."""
    sampler = data.sampler(patch, seed, augment=False)
    done = 0
    while done < n_patches:
        n = min(batch, n_patches - done)
        yield torch.from_numpy(sampler.batch(n)[0])
        done += n

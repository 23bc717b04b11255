"""The study's data: a fingerprint of the images and labels, and one held-out split for every run.

The held-out (test) images are chosen once by ``split_seed`` and never seen by training; each run's
trainer splits the remaining images into train and validation with the same ``split_seed``, so the
seeds of the grid vary initialisation and patch sampling only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.patches import split_indices
from ..errors import InputError


@dataclass
class StudyData:
    train_names: list[str]
    train_images: list[np.ndarray]
    train_labels: list[np.ndarray]
    test_names: list[str]
    test_images: list[np.ndarray]
    test_labels: list[np.ndarray]

    def info(self, fingerprint: str) -> dict[str, Any]:
        return {"fingerprint": fingerprint, "n_train_pool": len(self.train_names),
                "n_test": len(self.test_names), "test_names": list(self.test_names)}


def fingerprint(names: Sequence[str], images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> str:
    """SHA-256 over names, shapes, dtypes and pixels: the same data give the same fingerprint wherever
    the folder lives."""
    h = hashlib.sha256()
    for name, img, lab in zip(names, images, labels, strict=True):
        h.update(name.encode())
        for a in (np.asarray(img), np.asarray(lab)):
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def split(names: Sequence[str], images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
          test_fraction: float, split_seed: int) -> StudyData:
    """Hold out ``test_fraction`` of the images (seeded by ``split_seed``) for scoring."""
    if len(images) < 3:
        raise InputError(f"a study needs at least 3 annotated images (train, validation, test), got {len(images)}")
    pool, test = split_indices(len(images), test_fraction, split_seed)
    if not any(np.asarray(labels[i]).any() for i in test):
        raise InputError("the held-out images hold no objects; raise --test-fraction or change --split-seed")
    pick = lambda seq, idx: [seq[i] for i in idx]  # noqa: E731
    return StudyData(pick(list(names), pool), pick(list(images), pool), pick(list(labels), pool),
                     pick(list(names), test), pick(list(images), test), pick(list(labels), test))


def load(path: str, test_fraction: float, split_seed: int) -> tuple[StudyData, dict[str, Any]]:
    """Read ``DATA/images`` + ``DATA/labels``; return the split data and its description."""
    from ..data.folder import load_folder

    names, images, labels = load_folder(path)
    data = split(names, images, labels, test_fraction, split_seed)
    return data, data.info(fingerprint(names, images, labels))

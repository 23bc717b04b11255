"""Score a model (or the classical baseline) on images with ground-truth instance labels."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np

from .baseline import otsu_watershed
from .config import PredictConfig
from .data.checks import as_labels
from .errors import InputError
from .events import Progress
from .metrics import SegmentationScores
from .segmenter import Segmenter


def evaluate(segmenter: Segmenter, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
             cfg: PredictConfig | None = None, names: Sequence[str] | None = None
             ) -> Generator[Progress, None, dict[str, Any]]:
    """Yield progress per image; return the summary (see ``SegmentationScores.summary``) with a
    ``per_image`` list. ``cfg`` defaults to the model's own prediction settings."""

    def segment(img):
        return (yield from segmenter.predict(img, cfg)).labels

    return (yield from _score(segment, images, labels, names))


def evaluate_baseline(images, labels, names=None) -> Generator[Progress, None, dict[str, Any]]:
    """The same scores for Otsu threshold + distance-transform watershed."""

    def segment(img):
        return otsu_watershed(img)
        yield  # pragma: no cover - makes this a generator

    return (yield from _score(segment, images, labels, names))


def _score(segment: Callable, images, labels, names) -> Generator[Progress, None, dict[str, Any]]:
    images, labels = list(images), list(labels)
    if not images or len(images) != len(labels):
        raise InputError(f"need one label image per image to evaluate, got {len(images)} and {len(labels)}")
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    acc = SegmentationScores()
    per_image = []
    for i, (img, lab, name) in enumerate(zip(images, labels, names)):
        lab = as_labels(lab, np.asarray(img).shape[:2], name=f"labels of {name}")
        pred = yield from segment(img)
        per_image.append({"name": name, **acc.add(pred, lab)})
        yield Progress("evaluate", i + 1, len(images), name)
    return {**acc.summary(), "per_image": per_image}

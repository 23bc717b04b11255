"""Score a model (or the classical baseline) on images with ground-truth instance labels.

:func:`score_model` is the one scorer: :func:`evaluate_events` (CLI, study, compression benchmark) and the
Compare widget both call it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .baseline import otsu_watershed
from .config import PredictConfig
from .data.checks import as_labels
from .errors import InputError
from .events import Progress
from .metrics import SegmentationScores
from .segmenter import Segmenter

WARM_UP_CROP = 64  # side of the crop of the first image segmented, untimed, before the timed images


@dataclass
class ModelScores:
    """What :func:`score_model` measured of one model."""

    summary: dict[str, float]  # see SegmentationScores.summary
    per_image: list[dict[str, Any]]  # each image's name and scores
    latency_ms: float  # median end-to-end milliseconds per image; see score_model
    labels: list[np.ndarray] = field(default_factory=list)  # the predicted labels, when kept

    def report(self) -> dict[str, Any]:
        """The summary with a ``per_image`` list: what :func:`evaluate_events` returns."""
        return {**self.summary, "per_image": self.per_image}


def score_model(segmenter: Segmenter, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                cfg: PredictConfig | None = None, names: Sequence[str] | None = None, *,
                warm_up: bool = False, keep_labels: bool = False) -> Generator[Progress, None, ModelScores]:
    """Segment each image (``cfg`` defaults to the model's own prediction settings) and score it
    against its labels; yield progress per image (stage ``evaluate``).

    Latency is the median wall-clock time of segmenting one image end to end (normalisation, tiled
    model calls, blending, instance splitting): the time a user waits per image. With ``warm_up`` a
    ``WARM_UP_CROP``-square crop of the first image is segmented first, untimed, so that one-off costs
    (first-call allocation) do not land on the first image. ``keep_labels`` keeps the predictions."""

    def segment(img):
        return (yield from segmenter.predict_events(img, cfg)).labels

    return (yield from _score(segment, images, labels, names, warm_up, keep_labels))


def evaluate_events(segmenter: Segmenter, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                    cfg: PredictConfig | None = None, names: Sequence[str] | None = None
                    ) -> Generator[Progress, None, dict[str, Any]]:
    """Yield progress per image; return the summary (see ``SegmentationScores.summary``) with a
    ``per_image`` list. ``cfg`` defaults to the model's own prediction settings."""
    return (yield from score_model(segmenter, images, labels, cfg, names)).report()


def baseline_events(images, labels, names=None) -> Generator[Progress, None, dict[str, Any]]:
    """The same scores for Otsu threshold + distance-transform watershed."""

    def segment(img):
        return otsu_watershed(img)
        yield  # pragma: no cover - makes this a generator

    return (yield from _score(segment, images, labels, names)).report()


def _score(segment: Callable, images, labels, names, warm_up: bool = False, keep_labels: bool = False
           ) -> Generator[Progress, None, ModelScores]:
    images, labels = list(images), list(labels)
    if not images or len(images) != len(labels):
        raise InputError(f"need one label image per image to evaluate, got {len(images)} and {len(labels)}")
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    if warm_up:
        yield from segment(np.asarray(images[0])[:WARM_UP_CROP, :WARM_UP_CROP])
    acc = SegmentationScores()
    per_image, times, kept = [], [], []
    for i, (img, lab, name) in enumerate(zip(images, labels, names)):
        lab = as_labels(lab, np.asarray(img).shape[:2], name=f"labels of {name}")
        start = time.perf_counter()
        pred = yield from segment(img)
        times.append(time.perf_counter() - start)
        per_image.append({"name": name, **acc.add(pred, lab)})
        if keep_labels:
            kept.append(pred)
        yield Progress("evaluate", i + 1, len(images), name)
    return ModelScores(acc.summary(), per_image, 1000 * statistics.median(times), kept)

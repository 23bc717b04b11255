"""Choose the post-processing settings (foreground threshold, seed rule) that give the best instance F1
on validation images. Run once after training; the result is stored in the model file."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from .config import PredictConfig
from .metrics import pooled_instance_f1
from .predict import centre_peaks, labels_from_probabilities

THRESHOLDS = (0.4, 0.5, 0.6)
SEED_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # seeds = connected cores above the threshold
# seeds = h-maxima of the centredness of at least h (scale-free: the map is 1 at every object's centre),
# above a floor that only drops faint maxima in the background
SEED_HEIGHTS, SEED_FLOORS = (0.1, 0.15, 0.2, 0.3), (0.2, 0.4)


def instance_f1(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray], cfg: PredictConfig,
                peaks: Sequence[np.ndarray] | None = None) -> float:
    """Instance F1 (IoU >= 0.5, pooled over the images) of the instances ``cfg`` makes of ``probabilities``."""
    return pooled_instance_f1((labels_from_probabilities(p, cfg, None if peaks is None else peaks[i])
                               for i, p in enumerate(probabilities)), labels)


def candidates(base: PredictConfig = PredictConfig()) -> list[PredictConfig]:
    """The grid searched: each foreground threshold with each seed rule."""
    rules = [dict(seed_threshold=s, seed_h=0.0) for s in SEED_THRESHOLDS]
    rules += [dict(seed_threshold=f, seed_h=h) for h in SEED_HEIGHTS for f in SEED_FLOORS]
    return [dataclasses.replace(base, threshold=t, **rule) for rule in rules for t in THRESHOLDS]


def tune_thresholds(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                    base: PredictConfig = PredictConfig()) -> tuple[PredictConfig, float]:
    """(best config, its instance F1 pooled over the images) over :func:`candidates`; the first best wins,
    so connected-core seeds are kept unless h-maxima do better."""
    best, best_f1 = base, -1.0
    peaks: dict[float, list[np.ndarray]] = {}  # h -> each image's h-maxima, computed once
    for cfg in candidates(base):
        if cfg.seed_h > 0 and cfg.seed_h not in peaks:
            peaks[cfg.seed_h] = [centre_peaks(p[1], cfg.seed_h) for p in probabilities]
        f1 = instance_f1(probabilities, labels, cfg, peaks.get(cfg.seed_h))
        if f1 > best_f1 + 1e-9:
            best, best_f1 = cfg, f1
    return best, best_f1


def beats_start(tuned_f1: float, start_f1: float, n_objects: int) -> bool:
    """Whether thresholds tuned on a fine-tuning run's validation images should replace those its start
    model was tuned with: only if they score more than two standard errors of an instance F1 over
    ``n_objects`` ground-truth objects higher there. The best of many candidates on a few validation
    images is optimistic by about that much; the start model's thresholds were tuned on many more."""
    p = min(max(start_f1, 0.05), 0.95)
    return tuned_f1 - start_f1 > 2 * math.sqrt(p * (1 - p) / max(n_objects, 1))


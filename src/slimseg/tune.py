"""Choose the post-processing thresholds (foreground, seed) that give the best instance F1 on
validation images. Run once after training; the result is stored in the model file."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from .config import PredictConfig
from .metrics import pooled_instance_f1
from .predict import labels_from_probabilities

THRESHOLDS = (0.4, 0.5, 0.6)
SEED_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def instance_f1(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray], cfg: PredictConfig) -> float:
    """Instance F1 (IoU >= 0.5, pooled over the images) of the instances ``cfg`` makes of ``probabilities``."""
    return pooled_instance_f1((labels_from_probabilities(p, cfg) for p in probabilities), labels)


def tune_thresholds(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                    base: PredictConfig = PredictConfig()) -> tuple[PredictConfig, float]:
    """(best config, its instance F1 pooled over the images) over a small grid of thresholds."""
    best, best_f1 = base, -1.0
    for thr in THRESHOLDS:
        for seed_thr in SEED_THRESHOLDS:
            cfg = dataclasses.replace(base, threshold=thr, seed_threshold=seed_thr)
            f1 = instance_f1(probabilities, labels, cfg)
            if f1 > best_f1 + 1e-9:
                best, best_f1 = cfg, f1
    return best, best_f1

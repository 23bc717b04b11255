"""The Compare widget's numbers, as plain functions (no Qt): scoring several models on the same
images, the results table, its CSV file, and the false-positive / false-negative map."""

from __future__ import annotations

import csv
import statistics
import tempfile
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..errors import InputError
from ..events import Progress

# (key in a result row, column title); pixel scores are pooled over the images, instance scores at IoU 0.5
COLUMNS = (
    ("dice", "Dice"), ("jaccard", "Jaccard"), ("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
    ("instance_f1", "instance F1"), ("dsb_score", "DSB score"), ("size_mb", "file size (MB)"),
    ("latency_ms", "latency (ms/image)"),
)
FALSE_POSITIVE, FALSE_NEGATIVE = 1, 2


def cell(key: str, value: float) -> str:
    """A table cell: scores with 4 decimals, MB with 3, milliseconds with 1."""
    return f"{value:.3f}" if key == "size_mb" else f"{value:.1f}" if key == "latency_ms" else f"{value:.4f}"


def model_size_mb(mf: io.ModelFile) -> float:
    """The size of ``mf`` written as a model file, in MB (10^6 bytes)."""
    with tempfile.TemporaryDirectory() as tmp:
        return io.save(mf, Path(tmp) / f"model{io.SUFFIX}").stat().st_size / 1e6


def score_models(models: Sequence[tuple[str, io.ModelFile]], images: Sequence[np.ndarray],
                 truths: Sequence[np.ndarray], settings: dict[str, Any] | None = None
                 ) -> Generator[Progress, None, tuple[dict, dict]]:
    """Segment every image with every model, each with its own (tuned) prediction settings changed by
    ``settings``; return (rows: name -> scores, predictions: name -> labels per image). Latency is the
    median wall time of one image's segmentation (tiles + instances) after a warm-up run."""
    from ..metrics import SegmentationScores
    from ._session import runnable

    rows, predictions = {}, {}
    total = len(models) * len(images)
    for m, (name, mf) in enumerate(models):
        seg = runnable(mf, name)
        cfg = seg.settings(**(settings or {}))
        warm = images[0][:64, :64]
        yield from seg.predict(warm, cfg)
        acc, times, labels = SegmentationScores(), [], []
        for k, (image, truth) in enumerate(zip(images, truths)):
            start = time.perf_counter()
            pred = yield from seg.predict(image, cfg)
            times.append(time.perf_counter() - start)
            acc.add(pred.labels, truth)
            labels.append(pred.labels)
            yield Progress("compare", m * len(images) + k + 1, total, f"{name}: image {k + 1} of {len(images)}")
        summary = acc.summary()
        rows[name] = {**{key: summary[key] for key, _ in COLUMNS[:7]},
                      "size_mb": model_size_mb(mf), "latency_ms": 1000 * statistics.median(times)}
        predictions[name] = labels
    return rows, predictions


def write_csv(rows: dict[str, dict[str, float]], path: str | Path, overwrite: bool = False) -> Path:
    """One line per model with every column of :data:`COLUMNS`; refuses to replace a file unless asked."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        path = path.with_name(path.name + ".csv")
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; tick 'overwrite' or choose another file name")
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["model", *(key for key, _ in COLUMNS)])
        for name, row in rows.items():
            out.writerow([name, *(f"{row[key]:.6g}" for key, _ in COLUMNS)])
    return path


def error_map(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """uint8 map: :data:`FALSE_POSITIVE` where only the prediction is foreground, :data:`FALSE_NEGATIVE`
    where only the ground truth is, 0 elsewhere."""
    pred, truth = np.asarray(pred) != 0, np.asarray(truth) != 0
    if pred.shape != truth.shape:
        raise InputError(f"prediction shape {pred.shape} differs from ground truth shape {truth.shape}")
    out = np.zeros(pred.shape, np.uint8)
    out[pred & ~truth] = FALSE_POSITIVE
    out[truth & ~pred] = FALSE_NEGATIVE
    return out

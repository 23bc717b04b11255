"""The Compare widget's numbers, as plain functions (no Qt): scoring several models on the same
images, the results table, its CSV file, and the false-positive / false-negative map."""

from __future__ import annotations

import csv
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..errors import InputError
from ..events import Progress
from ..files import atomic_path

# (key in a result row, column title); pixel scores are pooled over the images, instance scores at IoU >= 0.5
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
    """The size of ``mf`` as a model file, in MB (10^6 bytes)."""
    return io.file_size(mf) / 1e6


def score_models(models: Sequence[tuple[str, io.ModelFile]], images: Sequence[np.ndarray],
                 truths: Sequence[np.ndarray], settings: dict[str, Any] | None = None
                 ) -> Generator[Progress, None, tuple[dict, dict]]:
    """Score every model on the same images with :func:`slimseg.evaluation.score_model` (warmed up, its
    end-to-end latency per image), each with its own (tuned) prediction settings changed by
    ``settings``; return (rows: name -> scores, predictions: name -> labels per image)."""
    from ..evaluation import score_model
    from ._session import runnable

    rows, predictions = {}, {}
    total = len(models) * len(images)
    for m, (name, mf) in enumerate(models):
        seg = runnable(mf, name)
        scores = yield from _overall_progress(
            score_model(seg, images, truths, seg.settings(**(settings or {})), warm_up=True, keep_labels=True),
            name, m * len(images), total)
        rows[name] = {**{key: scores.summary[key] for key, _ in COLUMNS[:7]},
                      "size_mb": model_size_mb(mf), "latency_ms": scores.latency_ms}
        predictions[name] = scores.labels
    return rows, predictions


def _overall_progress(job: Generator, name: str, done_before: int, total: int) -> Generator[Any, None, Any]:
    """``job``'s events, its per-image progress turned into the comparison's overall ``compare`` progress."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if isinstance(event, Progress) and event.stage == "evaluate":
            event = Progress("compare", done_before + event.done, total,
                             f"{name}: image {event.done} of {event.total}")
        yield event


def write_csv(rows: dict[str, dict[str, float]], path: str | Path, overwrite: bool = False) -> Path:
    """One line per model with every column of :data:`COLUMNS`; refuses to replace a file unless asked."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        path = path.with_name(path.name + ".csv")
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; tick 'overwrite' or choose another file name")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
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

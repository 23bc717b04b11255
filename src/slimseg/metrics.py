"""Pixel and instance metrics, as pure numpy functions plus an accumulator.

Aggregation is always stated:
- *pooled*: confusion counts summed over all images, then one score (big images weigh more);
- *per-image mean*: one score per image, then the mean (every image weighs the same).

Empty-mask policy: when a score's denominator is zero because both prediction and ground truth are
empty, the prediction is perfect and the score is 1.0 (``EMPTY_SCORE``). A score whose denominator is
zero for another reason (precision with no predicted pixels but some true ones) is 0.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

EMPTY_SCORE = 1.0
DSB_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))


@dataclass(frozen=True)
class Counts:
    tp: int
    fp: int
    fn: int
    tn: int

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)


def _check_pair(pred: np.ndarray, truth: np.ndarray) -> None:
    if pred.shape != truth.shape:
        raise InputError(f"prediction shape {pred.shape} differs from ground truth shape {truth.shape}")


def confusion(pred: np.ndarray, truth: np.ndarray) -> Counts:
    """Pixel counts of a binary prediction against binary ground truth (non-zero = foreground)."""
    _check_pair(pred, truth)
    p, t = np.asarray(pred) != 0, np.asarray(truth) != 0
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    return Counts(tp, fp, fn, p.size - tp - fp - fn)


def _ratio(num: float, den: float, both_empty: bool) -> float:
    if den == 0:
        return EMPTY_SCORE if both_empty else 0.0
    return num / den


def pixel_scores(c: Counts) -> dict[str, float]:
    """Dice, Jaccard, precision, recall, F1 (= Dice for binary masks) and pixel accuracy."""
    empty = c.tp + c.fp + c.fn == 0
    dice = _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, empty)
    return {
        "dice": dice,
        "jaccard": _ratio(c.tp, c.tp + c.fp + c.fn, empty),
        "precision": _ratio(c.tp, c.tp + c.fp, empty),
        "recall": _ratio(c.tp, c.tp + c.fn, empty),
        "f1": dice,
        "accuracy": _ratio(c.tp + c.tn, c.tp + c.fp + c.fn + c.tn, True),
    }


def _dense_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, each pixel's index into them): ``np.unique(return_inverse=True)``
    without its full sort where the labels are small non-negative integers (the usual case)."""
    a = labels.ravel()
    if a.dtype == bool:
        a = a.view(np.uint8)  # an index, not a mask, below
    if a.dtype.kind in "iu" and a.dtype != np.uint64 and a.size and a.min() >= 0 and a.max() < 4 * a.size + 65536:
        ids = np.flatnonzero(np.bincount(a))
        lut = np.zeros(int(ids[-1]) + 1, np.int64)
        lut[ids] = np.arange(len(ids))
        return ids, lut[a]
    ids, inv = np.unique(a, return_inverse=True)
    return ids, inv.ravel()


def iou_matrix(pred_labels: np.ndarray, true_labels: np.ndarray) -> np.ndarray:
    """IoU between every true object (rows) and every predicted object (columns); 0 is background."""
    _check_pair(pred_labels, true_labels)
    return iou_table(true_labels, pred_labels)[2]


def iou_table(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row object ids, column object ids, IoU matrix) of two label images of one shape (0 is background)."""
    t_ids, t_inv = _dense_ids(np.asarray(rows))
    p_ids, p_inv = _dense_ids(np.asarray(cols))
    inter = np.bincount(t_inv * len(p_ids) + p_inv, minlength=len(t_ids) * len(p_ids))
    inter = inter.reshape(len(t_ids), len(p_ids))
    t_area, p_area = inter.sum(1, keepdims=True), inter.sum(0, keepdims=True)
    # drop background rows/columns
    t_keep, p_keep = t_ids != 0, p_ids != 0
    inter = inter[np.ix_(t_keep, p_keep)]
    union = t_area[t_keep] + p_area[:, p_keep] - inter
    return t_ids[t_keep], p_ids[p_keep], np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def match_counts(iou: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """(TP, FP, FN) of a one-to-one matching at IoU > ``threshold``.

    For ``threshold >= 0.5`` a pair above it is unique in its row and column, so counting pairs is an
    exact one-to-one matching.
    """
    if threshold < 0.5:
        raise InputError("instance matching needs an IoU threshold >= 0.5 (one-to-one)")
    n_true, n_pred = iou.shape
    tp = int(np.count_nonzero(iou > threshold))
    return tp, n_pred - tp, n_true - tp


def instance_scores(pred_labels: np.ndarray, true_labels: np.ndarray) -> dict[str, float]:
    """Per-image instance scores: counts at IoU 0.5 and the DSB2018 score (mean over IoU
    0.5..0.95 of TP / (TP + FP + FN)). An image with no objects in either is scored 1.0."""
    iou = iou_matrix(pred_labels, true_labels)
    tp, fp, fn = match_counts(iou, 0.5)
    aps = []
    for thr in DSB_THRESHOLDS:
        a, b, c = match_counts(iou, float(thr))
        aps.append(_ratio(a, a + b + c, a + b + c == 0))
    return {"tp": tp, "fp": fp, "fn": fn, "dsb_score": float(np.mean(aps))}


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    empty = tp + fp + fn == 0
    precision = _ratio(tp, tp + fp, empty)
    recall = _ratio(tp, tp + fn, empty)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn, empty)
    return precision, recall, f1


def _pooled_prf(instance: list[dict[str, float]]) -> tuple[float, float, float]:
    """Instance precision, recall, F1 of per-image :func:`instance_scores`, pooled (counts summed)."""
    return prf(*(sum(int(s[k]) for s in instance) for k in ("tp", "fp", "fn")))


def pooled_dice(masks, truths) -> float:
    """Pixel Dice of binary masks against ground truth, pooled over the images (counts summed)."""
    total = sum((confusion(m, t) for m, t in zip(masks, truths, strict=True)), Counts(0, 0, 0, 0))
    return pixel_scores(total)["dice"]


def pooled_instance_f1(preds, truths) -> float:
    """Instance F1 at IoU 0.5 of paired instance-label images, pooled over them (counts summed)."""
    return _pooled_prf([instance_scores(p, t) for p, t in zip(preds, truths, strict=True)])[2]


@dataclass
class SegmentationScores:
    """Accumulates pixel and instance results image by image; :meth:`summary` states aggregation."""

    pixel: list[Counts] = field(default_factory=list)
    instance: list[dict[str, float]] = field(default_factory=list)

    def add(self, pred_labels: np.ndarray, true_labels: np.ndarray) -> dict[str, float]:
        """Score one image; return its pixel and instance scores."""
        pred_labels, true_labels = np.asarray(pred_labels), np.asarray(true_labels)
        self.pixel.append(confusion(pred_labels, true_labels))
        self.instance.append(instance_scores(pred_labels, true_labels))
        return {**pixel_scores(self.pixel[-1]), **self.instance[-1]}

    def summary(self) -> dict[str, float]:
        """Pixel scores pooled over images (keys ``dice``...), their per-image means (``*_mean``),
        instance P/R/F1 at IoU 0.5 pooled over images, and the DSB score as a per-image mean."""
        n = len(self.pixel)
        if n == 0:
            raise InputError("no images were scored")
        pooled = pixel_scores(sum(self.pixel[1:], self.pixel[0]))
        per_image = [pixel_scores(c) for c in self.pixel]
        out: dict[str, float] = {"n_images": n, **pooled}
        for key in ("dice", "jaccard", "precision", "recall"):
            out[f"{key}_mean"] = float(np.mean([s[key] for s in per_image]))
        out["instance_precision"], out["instance_recall"], out["instance_f1"] = _pooled_prf(self.instance)
        out["dsb_score"] = float(np.mean([s["dsb_score"] for s in self.instance]))
        return out


METRIC_KEYS = (
    "n_images", "dice", "jaccard", "precision", "recall", "f1",
    "instance_precision", "instance_recall", "instance_f1", "dsb_score",
)


def score_images(preds, truths) -> dict[str, float]:
    """Score paired sequences of instance-label images; see :meth:`SegmentationScores.summary`."""
    acc = SegmentationScores()
    for p, t in zip(preds, truths, strict=True):
        acc.add(p, t)
    return acc.summary()


def format_table(rows: dict[str, dict[str, float]], keys=METRIC_KEYS[1:]) -> str:
    """A fixed-width text table: one row per named result."""
    name_w = max([len(n) for n in rows] + [5])
    head = f"{'model':<{name_w}}  " + "  ".join(f"{k:>{max(len(k), 6)}}" for k in keys)
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        cells = "  ".join(f"{r.get(k, float('nan')):>{max(len(k), 6)}.4f}" for k in keys)
        lines.append(f"{name:<{name_w}}  {cells}")
    return "\n".join(lines)

"""Pixel and instance metrics, as pure numpy functions plus an accumulator.

Aggregation is always stated:
- *pooled*: confusion counts summed over all images, then one score (big images weigh more);
- *per-image mean*: one score per image, then the mean (every image weighs the same).

Instance matching counts as ``stardist.matching`` does: a true and a predicted object match at
IoU >= threshold (IoU rounded to float32), one-to-one, with as many matches as possible; pooled instance
scores sum TP/FP/FN over images first (``matching_dataset(by_image=False)``); the DSB score is each
image's mean over IoU 0.5..0.95 of TP / (TP + FP + FN), then the mean over images.

Empty-mask policy. Pixel scores: when a denominator is zero because both prediction and ground truth
are empty, the prediction is perfect and the score is 1.0 (``EMPTY_SCORE``); a denominator zero for
another reason (precision with no predicted pixels but some true ones) gives 0.0. Instance scores
(precision, recall, F1, accuracy, DSB) are 0.0 whenever TP is 0, also when both images hold no
objects, as in stardist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

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
    """(TP, FP, FN) of the one-to-one matching at IoU >= ``threshold`` with the most matches, for an
    IoU matrix (true objects as rows, predicted ones as columns)."""
    ok = _candidates(np.asarray(iou, np.float32), threshold)
    n_true, n_pred = iou.shape
    tp = _max_matches(*np.nonzero(ok))
    return tp, n_pred - tp, n_true - tp


def _candidates(iou32: np.ndarray, threshold: float) -> np.ndarray:
    if threshold < 0.5:
        raise InputError("instance matching needs an IoU threshold >= 0.5 (a pair above 0.5 is unique, "
                         "so only ties at 0.5 need an assignment)")
    return iou32 >= np.float32(threshold)  # compared in float32, as stardist does


def _max_matches(rows: np.ndarray, cols: np.ndarray) -> int:
    """Size of the largest one-to-one matching among candidate pairs (``rows[i]`` with ``cols[i]``).

    stardist's ``linear_sum_assignment`` with costs ``-(iou >= thr) - iou / (2 n)`` maximises this size
    (its tie-break term sums to at most 1/2). A pair alone in its row and column is matched on its own;
    only the rest (ties at IoU 0.5) go to a sparse maximum bipartite matching."""
    if rows.size == 0:
        return 0
    alone = (np.bincount(rows)[rows] == 1) & (np.bincount(cols)[cols] == 1)
    tp = int(np.count_nonzero(alone))
    if tp < rows.size:
        r_ids, r = np.unique(rows[~alone], return_inverse=True)
        c_ids, c = np.unique(cols[~alone], return_inverse=True)
        graph = csr_matrix((np.ones(r.size, np.int8), (r, c)), shape=(r_ids.size, c_ids.size))
        tp += int(np.count_nonzero(maximum_bipartite_matching(graph, perm_type="column") >= 0))
    return tp


def _overlapping_pairs(pred_labels: np.ndarray, true_labels: np.ndarray):
    """(number of true objects, of predicted objects, true index, predicted index, float32 IoU) of every
    pair of objects that overlap: a sparse :func:`iou_table`, cheap for thousands of objects."""
    _check_pair(pred_labels, true_labels)
    t_obj, n_t = _object_index(true_labels)
    p_obj, n_p = _object_index(pred_labels)
    t_area = np.bincount(t_obj[t_obj >= 0], minlength=n_t)
    p_area = np.bincount(p_obj[p_obj >= 0], minlength=n_p)
    both = (t_obj >= 0) & (p_obj >= 0)
    keys = t_obj[both] * max(n_p, 1) + p_obj[both]
    if n_t * n_p <= 4 * keys.size + 65536:
        inter = np.bincount(keys, minlength=n_t * n_p)
        keys = np.flatnonzero(inter)
        inter = inter[keys]
    else:
        keys, inter = np.unique(keys, return_counts=True)
    rows, cols = np.divmod(keys, max(n_p, 1))
    iou = (inter / (t_area[rows] + p_area[cols] - inter)).astype(np.float32)
    return n_t, n_p, rows, cols, iou


def _object_index(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """(each pixel's object index 0..n-1, or -1 on the background; n)."""
    ids, inv = _dense_ids(np.asarray(labels))
    keep = ids != 0
    index = np.cumsum(keep) - 1
    index[~keep] = -1
    return index[inv], int(np.count_nonzero(keep))


def instance_counts(pred_labels: np.ndarray, true_labels: np.ndarray,
                    thresholds=(0.5,)) -> list[tuple[int, int, int]]:
    """(TP, FP, FN) of one image at each IoU threshold (see the module docstring)."""
    n_t, n_p, rows, cols, iou = _overlapping_pairs(pred_labels, true_labels)
    out = []
    for thr in thresholds:
        ok = _candidates(iou, float(thr))
        tp = _max_matches(rows[ok], cols[ok])
        out.append((tp, n_p - tp, n_t - tp))
    return out


def instance_prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Instance precision, recall, F1 and accuracy TP / (TP + FP + FN); all 0.0 when TP is 0."""
    if tp == 0:
        return {"instance_precision": 0.0, "instance_recall": 0.0, "instance_f1": 0.0, "instance_accuracy": 0.0}
    return {"instance_precision": tp / (tp + fp), "instance_recall": tp / (tp + fn),
            "instance_f1": 2 * tp / (2 * tp + fp + fn), "instance_accuracy": tp / (tp + fp + fn)}


def instance_scores(pred_labels: np.ndarray, true_labels: np.ndarray) -> dict[str, float]:
    """Per-image instance scores: counts and :func:`instance_prf` at IoU >= 0.5, and the DSB2018 score
    (mean over IoU 0.5..0.95 of TP / (TP + FP + FN), 0 at a threshold without TP)."""
    counts = instance_counts(pred_labels, true_labels, DSB_THRESHOLDS)
    tp, fp, fn = counts[0]
    aps = [instance_prf(*c)["instance_accuracy"] for c in counts]
    return {"tp": tp, "fp": fp, "fn": fn, **instance_prf(tp, fp, fn), "dsb_score": float(np.mean(aps))}


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Instance precision, recall, F1 of counts (0.0 when TP is 0); see :func:`instance_prf`."""
    s = instance_prf(tp, fp, fn)
    return s["instance_precision"], s["instance_recall"], s["instance_f1"]


def _pooled(instance: list[dict[str, float]]) -> dict[str, float]:
    """Instance precision, recall, F1, accuracy of per-image :func:`instance_scores`, pooled (counts summed)."""
    return instance_prf(*(sum(int(s[k]) for s in instance) for k in ("tp", "fp", "fn")))


def pooled_dice(masks, truths) -> float:
    """Pixel Dice of binary masks against ground truth, pooled over the images (counts summed)."""
    total = sum((confusion(m, t) for m, t in zip(masks, truths, strict=True)), Counts(0, 0, 0, 0))
    return pixel_scores(total)["dice"]


def pooled_instance_f1(preds, truths) -> float:
    """Instance F1 at IoU >= 0.5 of paired instance-label images, pooled over them (counts summed)."""
    tp = fp = fn = 0
    for p, t in zip(preds, truths, strict=True):
        a, b, c = instance_counts(p, t)[0]
        tp, fp, fn = tp + a, fp + b, fn + c
    return instance_prf(tp, fp, fn)["instance_f1"]


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
        instance P/R/F1/accuracy at IoU >= 0.5 pooled over images, and the DSB score as a per-image mean."""
        n = len(self.pixel)
        if n == 0:
            raise InputError("no images were scored")
        pooled = pixel_scores(sum(self.pixel[1:], self.pixel[0]))
        per_image = [pixel_scores(c) for c in self.pixel]
        out: dict[str, float] = {"n_images": n, **pooled}
        for key in ("dice", "jaccard", "precision", "recall"):
            out[f"{key}_mean"] = float(np.mean([s[key] for s in per_image]))
        out.update(_pooled(self.instance))
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

"""Does slimseg.metrics count instances as stardist.matching does? Compares per-image TP/FP/FN,
precision, recall, F1, accuracy at IoU 0.5..0.95, the DSB score, and the values pooled over images
(``matching_dataset(by_image=False)``) on label images with perturbed copies as predictions; prints the
largest absolute difference.

    PYTHONPATH=src python benchmarks/matching_agreement.py [--data DIR] [--n 200] [--seed 0]

Needs ``stardist`` (and numba, scikit-image, csbdeep) in the running Python; only ``stardist.matching`` is
imported, by file path if the package itself does not import (it may want tensorflow). ``--data DIR``
takes ground truth from ``DIR/labels`` (else ``DIR``); without it the truths are synthetic disks.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from slimseg.metrics import (
    DSB_THRESHOLDS,
    SegmentationScores,
    instance_counts,
    instance_prf,
)

KEYS = ("tp", "fp", "fn", "precision", "recall", "f1", "accuracy")


def stardist_matching():
    try:
        from stardist import matching
        return matching
    except Exception:  # noqa: BLE001 - the package's __init__ may need tensorflow; the file does not
        spec = importlib.util.find_spec("stardist")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("stardist is not installed in this Python") from None
        path = Path(next(iter(spec.submodule_search_locations))) / "matching.py"
        mod_spec = importlib.util.spec_from_file_location("stardist_matching", path)
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)
        return mod


def disks(rng, shape: tuple[int, int], n: int) -> np.ndarray:
    lab = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for k in range(1, n + 1):
        r = rng.uniform(2, max(3, min(shape) / 12))
        cy, cx = rng.uniform(0, 1, 2) * shape
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    return lab


def halves(lab: np.ndarray, rng) -> np.ndarray:
    """Split objects into two halves of equal pixel counts (IoU exactly 0.5 each when even)."""
    out = lab.copy()
    nxt = int(lab.max()) + 1
    for k in np.unique(lab[lab > 0]):
        if rng.random() < 0.5:
            idx = np.flatnonzero(lab.ravel() == k)
            out.ravel()[idx[len(idx) // 2:]] = nxt
            nxt += 1
    return out


def perturb(lab: np.ndarray, rng) -> np.ndarray:
    """A prediction-like copy: one of shift, erode, dilate, split, merge, drop/add, noise; ids scrambled."""
    kind = rng.integers(7)
    if kind == 0:
        p = np.roll(lab, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
    elif kind == 1:
        p = np.where(ndimage.minimum_filter(lab, 3) == ndimage.maximum_filter(lab, 3), lab, 0)
    elif kind == 2:
        p = np.where(lab > 0, lab, ndimage.maximum_filter(lab, int(rng.integers(2, 5))))
    elif kind == 3:
        p = halves(lab, rng)
    elif kind == 4:
        p = (lab + 1) // 2  # merges neighbours in id order
    elif kind == 5:
        drop = rng.random(int(lab.max()) + 1) < 0.3
        drop[0] = False
        p = np.where(drop[lab], 0, lab)
        p = np.where((p == 0) & (disks(rng, lab.shape, 5) > 0), int(lab.max()) + 1, p)
    else:
        p = np.where(rng.random(lab.shape) < 0.15, rng.integers(0, 4, lab.shape), lab)
    ids = np.unique(p)
    new = np.zeros(int(ids.max()) + 1, np.int64)
    new[ids[ids > 0]] = rng.choice(np.arange(1, 50 * len(ids) + 2), int((ids > 0).sum()), replace=False)
    return new[p].astype(np.int32)


def truths(a, rng) -> list[np.ndarray]:
    if a.data:
        from slimseg.data.folder import list_images, read_image
        folder = Path(a.data) / "labels" if (Path(a.data) / "labels").is_dir() else Path(a.data)
        return [np.asarray(read_image(p)).astype(np.int32) for p in list_images(folder)]
    out = [disks(rng, tuple(rng.choice([32, 64, 128], 2)), int(rng.integers(0, 40))) for _ in range(a.n)]
    out += [np.zeros((16, 16), np.int32), disks(rng, (1024, 1024), 3000)]  # empty, and one with thousands of objects
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", help="a folder of ground-truth label images (or DATA with labels/)")
    ap.add_argument("--n", type=int, default=200, help="synthetic truths (without --data)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    sm = stardist_matching()
    rng = np.random.default_rng(a.seed)
    pairs = []
    for t in truths(a, rng):
        pairs += [(t, perturb(t, rng)), (t, perturb(t, rng)), (t, np.zeros_like(t)), (np.zeros_like(t), t)]
    thr = [float(x) for x in DSB_THRESHOLDS]
    worst, where = 0.0, ""
    t_ours = t_theirs = 0.0
    acc = SegmentationScores()
    for i, (t, p) in enumerate(pairs):
        s = time.perf_counter()
        counts = instance_counts(p, t, DSB_THRESHOLDS)
        mine = acc.add(p, t)
        t_ours += time.perf_counter() - s
        s = time.perf_counter()
        theirs = sm.matching(t, p, thresh=thr)
        t_theirs += time.perf_counter() - s
        for c, st, th in zip(counts, theirs, thr):
            ours = {"tp": c[0], "fp": c[1], "fn": c[2],
                    **{k.removeprefix("instance_"): v for k, v in instance_prf(*c).items()}}
            for k in KEYS:
                d = abs(ours[k] - getattr(st, k))
                if d > worst:
                    worst, where = d, f"image {i} IoU {th} {k}"
        d = abs(mine["dsb_score"] - float(np.mean([st.accuracy for st in theirs])))
        if d > worst:
            worst, where = d, f"image {i} dsb_score"
    summary = acc.summary()
    pooled = sm.matching_dataset([t for t, _ in pairs], [p for _, p in pairs], thresh=thr, by_image=False,
                                 show_progress=False)
    ds = {"instance_precision": pooled[0].precision, "instance_recall": pooled[0].recall,
          "instance_f1": pooled[0].f1, "instance_accuracy": pooled[0].accuracy}
    for k, v in ds.items():
        d = abs(summary[k] - v)
        if d > worst:
            worst, where = d, f"pooled {k}"
    n_obj = sum(int(len(np.unique(t)) - 1) for t, _ in pairs)
    print(f"{len(pairs)} image pairs, {n_obj} true objects, thresholds {thr[0]}..{thr[-1]}")
    print(f"pooled instance F1 at 0.5: slimseg {summary['instance_f1']:.6f}, stardist {pooled[0].f1:.6f}")
    print(f"time: slimseg {t_ours:.2f} s (pixel and instance scores), stardist.matching {t_theirs:.2f} s")
    print(f"max absolute difference: {worst:.3g}" + (f" ({where})" if worst else ""))
    raise SystemExit(0 if worst <= 1e-6 else 1)


if __name__ == "__main__":
    main()

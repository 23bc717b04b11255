"""Per-cell aggregation over seeds, ranking, and the paired test between two cells.

Aggregation, stated: the primary score of a run is its Dice per held-out image, averaged over the
images (``test_dice_mean``: every image weighs the same); ``test_dice`` pools all pixels of all
images (large images weigh more) and the instance F1 pools matches over images. A cell's score is
the mean (± sample standard deviation) of its runs' scores over seeds. The paired test compares two
cells image by image: each image's Dice is averaged over the cell's seeds, then a two-sided
Wilcoxon signed-rank test runs over the images (scipy), with a bootstrap 95% interval of the mean
difference. Ranking and test use the same per-image Dice, so they cannot contradict each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .grid import StudyConfig


@dataclass
class Cell:
    optimizer: str
    loss: str
    runs: list[dict[str, Any]] = field(default_factory=list)  # results rows, failed ones included

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] == "ok"]

    @property
    def name(self) -> str:
        return f"{self.optimizer} + {self.loss}"

    def values(self, metric: str) -> np.ndarray:
        return np.array([r[metric] for r in self.ok], dtype=float)

    def mean(self, metric: str) -> float:
        v = self.values(metric)
        return float(v.mean()) if v.size else float("nan")

    def std(self, metric: str) -> float:
        v = self.values(metric)
        return float(v.std(ddof=1)) if v.size > 1 else float("nan")

    def run_ids(self) -> list[str]:
        return [r["run_id"] for r in self.ok]


def cells(config: StudyConfig, rows: list[dict[str, Any]]) -> list[Cell]:
    """One cell per optimizer x loss of the grid (optimizer-major), holding its rows."""
    grid = {(o, lo): Cell(o, lo) for o in config.optimizers for lo in config.losses}
    for r in rows:
        cell = grid.get((r["optimizer"], r["loss"]))
        if cell is not None and int(r["seed"]) in config.seeds:
            cell.runs.append(r)
    return list(grid.values())


PRIMARY = "test_dice_mean"


def ranked(all_cells: list[Cell], metric: str = PRIMARY) -> list[Cell]:
    """Cells with at least one finished run, best mean first."""
    scored = [c for c in all_cells if c.ok]
    return sorted(scored, key=lambda c: -c.mean(metric))


def marginal(all_cells: list[Cell], by: str, metric: str = PRIMARY) -> dict[str, float]:
    """Mean over the cells of each optimizer (``by="optimizer"``) or loss of their cell means."""
    groups: dict[str, list[float]] = {}
    for c in all_cells:
        if c.ok:
            groups.setdefault(getattr(c, by), []).append(c.mean(metric))
    return {k: float(np.mean(v)) for k, v in groups.items()}


def image_f1(row: dict[str, Any]) -> float:
    tp, fp, fn = row["tp"], row["fp"], row["fn"]
    den = 2 * tp + fp + fn
    return 1.0 if den == 0 else 2 * tp / den


def per_image(details: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """Each held-out image's ``metric`` (``dice``, ``instance_f1``, ``dsb_score``, ...) averaged over
    the given runs' details; only images scored in every run."""
    scores: dict[str, list[float]] = {}
    for d in details:
        for row in d.get("per_image", []):
            v = image_f1(row) if metric == "instance_f1" else float(row[metric])
            scores.setdefault(row["name"], []).append(v)
    n = len(details)
    return {k: float(np.mean(v)) for k, v in scores.items() if len(v) == n}


def paired_test(a: dict[str, float], b: dict[str, float], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Is ``a`` better than ``b`` on the same images? Two-sided Wilcoxon signed-rank test of the
    per-image differences a - b, plus the mean difference with a bootstrap 95% interval."""
    from scipy.stats import wilcoxon

    names = sorted(set(a) & set(b))
    d = np.array([a[k] - b[k] for k in names], dtype=float)
    out: dict[str, Any] = {"n": len(names), "mean_diff": float("nan"), "ci95": (float("nan"), float("nan")),
                           "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum()),
                           "statistic": float("nan"), "p": float("nan")}
    if not names:
        return out
    out["mean_diff"] = float(d.mean())
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    out["ci95"] = (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)))
    if not np.any(d != 0):
        out["p"] = 1.0
        return out
    res = wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    out["statistic"], out["p"] = float(res.statistic), float(res.pvalue)
    return out


def fmt_pm(mean: float, std: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def find_cell(all_cells: list[Cell], optimizer: str, loss: str) -> Cell | None:
    for c in all_cells:
        if c.optimizer == optimizer and c.loss == loss:
            return c
    return None


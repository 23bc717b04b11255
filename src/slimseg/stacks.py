"""Stacks (Z, T or both before Y and X) segmented plane by plane into one labels array of their shape.

Object ids are unique across the stack: each plane's objects get ids after those of the planes before.
With ``stitch_threshold > 0`` an object is instead linked to the object of the previous z plane that it
overlaps best, where their IoU reaches the threshold (Cellpose's ``stitch_threshold``: 2D masks joined
into 3D objects; each object of the previous plane is continued by one object at most).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np

from .data.axes import Standard
from .errors import InputError
from .events import Progress
from .metrics import iou_table
from .predict import Prediction

PlanePredictor = Callable[[np.ndarray], Generator[Progress, None, Prediction]]


@dataclass
class StackResult:
    labels: np.ndarray  # uint32 (planes..., H, W); planes not done are 0
    probabilities: np.ndarray | None  # float16 foreground probability (planes..., H, W), when kept
    planes_done: int
    planes: int
    plane_axes: str = ""

    @property
    def complete(self) -> bool:
        return self.planes_done == self.planes


def link_axis(plane_axes: str) -> int | None:
    """The plane axis that objects are linked along: Z where the axes say so, else the last plane axis
    where its meaning is unknown (a plain stack); never time."""
    if "Z" in plane_axes:
        return plane_axes.index("Z")
    return len(plane_axes) - 1 if plane_axes.endswith("Q") else None


def relabel_after(labels: np.ndarray, start: int) -> tuple[np.ndarray, int]:
    """``labels`` with its objects renumbered ``start + 1, start + 2, ...``; and the last id given."""
    ids = np.unique(labels)
    ids = ids[ids != 0]
    lut = np.zeros(int(ids[-1]) + 1 if len(ids) else 1, np.uint32)
    lut[ids] = np.arange(start + 1, start + 1 + len(ids), dtype=np.uint32)
    return lut[labels], start + len(ids)


def stitch(labels: np.ndarray, previous: np.ndarray, threshold: float, start: int) -> tuple[np.ndarray, int]:
    """``labels`` of one plane with each object taking the id of the object of ``previous`` it overlaps
    best (IoU >= ``threshold``, one-to-one), the others new ids after ``start``; and the last id given."""
    ids, prev_ids, iou = iou_table(labels, previous)
    lut = np.zeros(int(ids[-1]) + 1 if len(ids) else 1, np.uint32)
    if len(ids) and len(prev_ids):
        iou = np.where(iou >= threshold, iou, 0.0)
        best_row = iou.argmax(axis=0)  # each previous object is continued by its best match only
        kept = np.zeros_like(iou)
        cols = np.arange(iou.shape[1])
        kept[best_row, cols] = iou[best_row, cols]
        linked = kept.max(axis=1) > 0
        lut[ids[linked]] = prev_ids[kept[linked].argmax(axis=1)]
    else:
        linked = np.zeros(len(ids), bool)
    new = ids[~linked]
    lut[new] = np.arange(start + 1, start + 1 + len(new), dtype=np.uint32)
    return lut[labels], start + len(new)


class StackJob:
    """Segment every plane of ``stack`` with ``predict_plane``: :meth:`run` is the generator (progress
    of each plane's tiles and one ``Progress("planes", k, n)`` per plane); :meth:`result` holds the
    planes done so far, also after a stop."""

    def __init__(self, predict_plane: PlanePredictor, stack: Standard, stitch_threshold: float = 0.0,
                 keep_probabilities: bool = False) -> None:
        if not 0 <= stitch_threshold <= 1:
            raise InputError(f"stitch_threshold must lie in [0, 1] (0 = no stitching), got {stitch_threshold}")
        self.predict_plane, self.stack = predict_plane, stack
        self.stitch_threshold, self.keep_probabilities = stitch_threshold, keep_probabilities
        shape = stack.data.shape[: len(stack.plane_axes) + 2]
        self.labels = np.zeros(shape, np.uint32)
        self.probabilities = np.zeros(shape, np.float16) if keep_probabilities else None
        self.n_planes = int(np.prod(stack.plane_shape, dtype=np.int64))
        self.done = 0
        self.last_id = 0

    def run(self) -> Generator[Progress, None, StackResult]:
        axis = link_axis(self.stack.plane_axes)
        for index, plane in self.stack.planes():
            pred = yield from self.predict_plane(plane)
            if not index:  # a 2D image keeps the ids the model gave
                labels, self.last_id = pred.labels, int(pred.labels.max(initial=0))
            elif self.stitch_threshold > 0 and axis is not None and index[axis] > 0:
                before = index[:axis] + (index[axis] - 1,) + index[axis + 1:]
                labels, self.last_id = stitch(pred.labels, self.labels[before], self.stitch_threshold, self.last_id)
            else:
                labels, self.last_id = relabel_after(pred.labels, self.last_id)
            self.labels[index] = labels
            if self.probabilities is not None:
                self.probabilities[index] = pred.probabilities[0]
            self.done += 1
            message = f"plane {self.done} of {self.n_planes}" if self.n_planes > 1 else ""
            yield Progress("planes", self.done, self.n_planes, message)
        return self.result()

    def result(self) -> StackResult:
        return StackResult(self.labels, self.probabilities, self.done, self.n_planes, self.stack.plane_axes)


__all__ = ["StackJob", "StackResult", "stitch", "relabel_after", "link_axis"]

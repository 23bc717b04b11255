"""Helpers shared by the napari widget tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt

TINY = {"depth": 2, "base_width": 4, "batch": 4, "patch": 32, "patches_per_epoch": 8}


def click(qtbot, button):
    """A real mouse click on a magicgui button."""
    qtbot.mouseClick(button.native, Qt.MouseButton.LeftButton)


def tick(qtbot, checkbox):
    """A real click on a check box's box (its centre may lie right of a short label, outside the button)."""
    from qtpy.QtCore import QPoint

    qtbot.mouseClick(checkbox.native, Qt.MouseButton.LeftButton, pos=QPoint(6, checkbox.native.height() // 2))


def messages(notes, severity: str | None = None) -> str:
    return "\n".join(m for s, m in notes if severity is None or s == severity)


def quadrants(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[0] // 2, a.shape[1] // 2
    return np.stack([a[:h, :w], a[:h, w:], a[h:, :w], a[h:, w:]])


def set_form(widget, **values):
    for name, value in values.items():
        getattr(widget, name).value = value


def wait_job(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: widget.job is not None and not widget.job.running, timeout=timeout)

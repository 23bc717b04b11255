"""A small live plot of training: the loss of every step from the first seconds, and the validation
Dice of each epoch when it comes; x is the step.

matplotlib draws it off the GUI thread, into a plain Agg canvas (no Qt object: one worker thread, see
:func:`_renderer`), and the GUI thread only shows the finished picture in a QLabel. A redraw costs 100-250 ms
of Python, which on the GUI thread stalled napari's event loop during training."""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache

POLL_MS = 100  # how soon a requested redraw is started, and how often a running one is looked at


@cache
def _renderer() -> ThreadPoolExecutor:
    """The one thread that draws every plot's figure (figures are never drawn on two threads at once)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="slimseg-plot")


class TrainingPlot:
    """``.native`` is the Qt widget; :meth:`add_step` and :meth:`add_epoch` append, and the plot is redrawn
    in the background at most ten times a second however fast the steps come."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QLabel

        self.figure = Figure(figsize=(3.2, 2.2), dpi=90)
        # a fixed layout: matplotlib's constrained layout doubled the time of each redraw
        self.figure.subplots_adjust(left=0.17, right=0.83, bottom=0.2, top=0.95)
        self.canvas = FigureCanvasAgg(self.figure)
        self.native = QLabel()
        self.native.setMinimumHeight(170)
        self.native.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.loss_ax = self.figure.add_subplot()
        self.dice_ax = self.loss_ax.twinx()
        self._reset()
        (self._step_line,) = self.loss_ax.plot([], [], "-", lw=0.8, color="tab:orange", alpha=0.6,
                                               label="train loss (step)")
        (self._loss_line,) = self.loss_ax.plot([], [], "o", ms=3, color="tab:red", label="train loss (epoch)")
        (self._dice_line,) = self.dice_ax.plot([], [], "-o", ms=3, color="tab:blue", label="val Dice")
        self.loss_ax.set_xlabel("step", fontsize=8)
        self.loss_ax.set_ylabel("train loss", fontsize=8, color="tab:orange")
        self.dice_ax.set_ylabel("val Dice", fontsize=8, color="tab:blue")
        self.dice_ax.set_ylim(0, 1)
        for ax in (self.loss_ax, self.dice_ax):
            ax.tick_params(labelsize=7)
        self.frames = 0  # pictures shown so far
        self._dirty = self._polling = False
        self._drawing: Future | None = None
        self._redraw()

    def _reset(self) -> None:
        self.steps: list[int] = []
        self.step_loss: list[float] = []
        self.epochs: list[int] = []
        self.epoch_steps: list[int] = []  # the step each epoch ended at (its x)
        self.loss: list[float] = []
        self.dice: list[float] = []

    def clear(self) -> None:
        self._reset()
        self._redraw()

    def add_step(self, step: int, loss: float) -> None:
        self.steps.append(step)
        self.step_loss.append(loss)
        self._redraw()

    def add_epoch(self, epoch: int, step: int, train_loss: float, val_dice: float) -> None:
        self.epochs.append(epoch)
        self.epoch_steps.append(step)
        self.loss.append(train_loss)
        self.dice.append(val_dice if math.isfinite(val_dice) else math.nan)
        self._redraw()

    # -- on the GUI thread: ask for a picture of the data as it is now, show it when it is drawn ----------
    def _redraw(self) -> None:
        self._dirty = True
        self._poll_soon()

    def _poll_soon(self) -> None:
        if not self._polling:
            from qtpy.QtCore import QTimer

            self._polling = True
            QTimer.singleShot(POLL_MS, self._poll)

    def _poll(self) -> None:
        self._polling = False
        if self._drawing is not None:
            if not self._drawing.done():
                self._poll_soon()
                return
            picture, self._drawing = self._drawing.result(), None
            try:
                self._show(*picture)
            except RuntimeError:  # the panel's QLabel is gone
                return
        if self._dirty:
            self._dirty = False
            data = (list(self.steps), list(self.step_loss), list(self.epoch_steps), list(self.loss), list(self.dice))
            self._drawing = _renderer().submit(self._draw, *data)
            self._poll_soon()

    def _show(self, width: int, height: int, rgba: bytes) -> None:
        from qtpy.QtGui import QImage, QPixmap

        image = QImage(rgba, width, height, 4 * width, QImage.Format.Format_RGBA8888)
        self.native.setPixmap(QPixmap.fromImage(image))  # QPixmap copies the pixels
        self.frames += 1

    # -- on the drawing thread: matplotlib only, no Qt ----------------------------------------------------
    def _draw(self, steps: list[int], step_loss: list[float], epoch_steps: list[int], loss: list[float],
              dice: list[float]) -> tuple[int, int, bytes]:
        self._step_line.set_data(steps, step_loss)
        self._loss_line.set_data(epoch_steps, loss)
        self._dice_line.set_data(epoch_steps, dice)
        if steps:
            self.loss_ax.set_xlim(0, max(steps[-1], 1) * 1.02)
            self.loss_ax.relim()
            self.loss_ax.autoscale_view(scalex=False)
        self.canvas.draw()
        width, height = self.canvas.get_width_height()
        return width, height, bytes(self.canvas.buffer_rgba())


class TextPlot:
    """The fallback without matplotlib: the latest step and epochs as text, and how to get the plot."""

    HINT = "install matplotlib (pip install matplotlib) to see the live training plot"

    def __init__(self) -> None:
        from qtpy.QtWidgets import QLabel

        self.native = QLabel(self.HINT)
        self.native.setWordWrap(True)
        self.clear()

    def clear(self) -> None:
        self.steps: list[int] = []
        self.step_loss: list[float] = []
        self.epochs: list[int] = []
        self.epoch_steps: list[int] = []
        self.loss: list[float] = []
        self.dice: list[float] = []

    def add_step(self, step: int, loss: float) -> None:
        self.steps.append(step)
        self.step_loss.append(loss)
        self._show()

    def add_epoch(self, epoch: int, step: int, train_loss: float, val_dice: float) -> None:
        self.epochs.append(epoch)
        self.epoch_steps.append(step)
        self.loss.append(train_loss)
        self.dice.append(val_dice)
        self._show()

    def _show(self) -> None:
        rows = [f"epoch {e}: loss {lo:.4f}, val Dice {d:.4f}" for e, lo, d in
                zip(self.epochs[-4:], self.loss[-4:], self.dice[-4:])]
        if self.steps:
            rows.append(f"step {self.steps[-1]}: loss {self.step_loss[-1]:.4f}")
        self.native.setText("\n".join(rows))


def make_plot() -> TrainingPlot | TextPlot:
    """The live plot, or a text fallback where matplotlib is missing."""
    try:
        return TrainingPlot()
    except ImportError:
        return TextPlot()

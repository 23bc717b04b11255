"""A small live plot of training: the loss of every step from the first seconds, and the validation
Dice of each epoch when it comes; x is the step.

matplotlib draws the figure in a thread of its own into a pixel buffer, and the panel shows the latest
buffer: a draw takes 50-200 ms on a 2-core CPU that is training, which on napari's GUI thread would stall
the event loop every time the plot changes; in a thread it only takes turns at the GIL (5 ms at a time).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_DRAW_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slimseg-plot")  # started at the first draw


class TrainingPlot:
    """``.native`` is the Qt widget; :meth:`add_step` and :meth:`add_epoch` append and redraw soon, off
    the GUI thread."""

    DPI = 90

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from superqt.utils import ensure_main_thread

        self.figure = Figure(figsize=(3.2, 2.2), dpi=self.DPI)
        self._canvas = FigureCanvasAgg(self.figure)
        # a fixed layout: matplotlib's constrained layout doubled the time of each redraw
        self.figure.subplots_adjust(left=0.17, right=0.83, bottom=0.2, top=0.95)
        self.native = _plot_label(self._redraw)
        self.loss_ax = self.figure.add_subplot()
        self.dice_ax = self.loss_ax.twinx()
        self._reset()
        self._pending = False  # a draw is scheduled on the GUI thread
        self._drawing = False  # the draw thread is busy with a snapshot
        self._stale = False  # the data changed while it was
        self._show_in_gui = ensure_main_thread(self._show)  # a queued Qt call from the draw thread
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

    def _redraw(self) -> None:
        """Redraw soon, at most ten times a second however fast the steps come."""
        if not self._pending:
            from qtpy.QtCore import QTimer

            self._pending = True
            QTimer.singleShot(100, self._draw)

    def _draw(self) -> None:
        """On the GUI thread: hand a copy of the data and the panel's size to the draw thread."""
        self._pending = False
        if self._drawing:  # one draw at a time; the newest data is drawn when it is done
            self._stale = True
            return
        try:
            ratio = self.native.devicePixelRatioF()
            size = (max(self.native.width(), 80) * ratio, max(self.native.height(), 60) * ratio)
        except RuntimeError:  # the panel's Qt widget is gone
            return
        data = (list(self.steps), list(self.step_loss), list(self.epoch_steps), list(self.loss), list(self.dice))
        self._drawing, self._stale = True, False
        _DRAW_THREAD.submit(self._render, data, size, ratio).add_done_callback(self._show_in_gui)

    def _render(self, data: tuple[list, ...], size: tuple[float, float], ratio: float) -> tuple[bytes, int, int,
                                                                                              float]:
        """In the draw thread, the only one that touches the figure after ``__init__``."""
        steps, step_loss, epoch_steps, loss, dice = data
        self._step_line.set_data(steps, step_loss)
        self._loss_line.set_data(epoch_steps, loss)
        self._dice_line.set_data(epoch_steps, dice)
        if steps:
            self.loss_ax.set_xlim(0, max(steps[-1], 1) * 1.02)
            self.loss_ax.relim()
            self.loss_ax.autoscale_view(scalex=False)
        self.figure.set_dpi(self.DPI * ratio)
        self.figure.set_size_inches(size[0] / (self.DPI * ratio), size[1] / (self.DPI * ratio))
        self._canvas.draw()
        width, height = self._canvas.get_width_height(physical=True)
        return bytes(self._canvas.buffer_rgba()), width, height, ratio

    def _show(self, future: Any) -> None:
        from qtpy.QtGui import QImage, QPixmap

        self._drawing = False
        pixels, width, height, ratio = future.result()  # a failed draw raises here, in napari's event loop
        image = QImage(pixels, width, height, 4 * width, QImage.Format.Format_RGBA8888)
        pixmap = QPixmap.fromImage(image)  # a copy: ``pixels`` may go
        pixmap.setDevicePixelRatio(ratio)
        try:
            self.native.setPixmap(pixmap)
        except RuntimeError:  # the panel's Qt widget is gone
            return
        if self._stale:
            self._redraw()


def _plot_label(on_resize: Any) -> Any:
    """A QLabel that shows the drawn figure, asks for a new draw when resized and never grows to its picture."""
    from qtpy.QtCore import QSize
    from qtpy.QtWidgets import QLabel, QSizePolicy

    class PlotLabel(QLabel):
        def sizeHint(self) -> QSize:
            return QSize(288, 198)

        def resizeEvent(self, event: Any) -> None:
            super().resizeEvent(event)
            on_resize()

    label = PlotLabel()
    label.setMinimumSize(120, 170)
    label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
    return label


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

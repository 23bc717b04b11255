"""A small live plot of training: the loss of every step from the first seconds, and the validation
Dice of each epoch when it comes (matplotlib in a Qt canvas); x is the step."""

from __future__ import annotations

import math


class TrainingPlot:
    """``.native`` is the Qt widget; :meth:`add_step` and :meth:`add_epoch` append and redraw when Qt is idle."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 2.2), dpi=90)
        # a fixed layout: matplotlib's constrained layout doubled the time of each redraw
        self.figure.subplots_adjust(left=0.17, right=0.83, bottom=0.2, top=0.95)
        self.native = FigureCanvasQTAgg(self.figure)
        self.native.setMinimumHeight(170)
        self.loss_ax = self.figure.add_subplot()
        self.dice_ax = self.loss_ax.twinx()
        self._reset()
        self._pending = False
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
        self.native.draw_idle()

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
        self._pending = False
        try:
            self._draw_lines()
        except RuntimeError:  # the panel's Qt canvas is gone
            pass

    def _draw_lines(self) -> None:
        self._step_line.set_data(self.steps, self.step_loss)
        self._loss_line.set_data(self.epoch_steps, self.loss)
        self._dice_line.set_data(self.epoch_steps, self.dice)
        if self.steps:
            self.loss_ax.set_xlim(0, max(self.steps[-1], 1) * 1.02)
            self.loss_ax.relim()
            self.loss_ax.autoscale_view(scalex=False)
        self.native.draw_idle()


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

"""A small live plot of training loss and validation Dice per epoch (matplotlib in a Qt canvas)."""

from __future__ import annotations

import math


class TrainingPlot:
    """``.native`` is the Qt widget; :meth:`add` appends one epoch and redraws when Qt is idle."""

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
        self.epochs: list[int] = []
        self.loss: list[float] = []
        self.dice: list[float] = []
        (self._loss_line,) = self.loss_ax.plot([], [], "-o", ms=3, color="tab:orange", label="train loss")
        (self._dice_line,) = self.dice_ax.plot([], [], "-o", ms=3, color="tab:blue", label="val Dice")
        self.loss_ax.set_xlabel("epoch", fontsize=8)
        self.loss_ax.set_ylabel("train loss", fontsize=8, color="tab:orange")
        self.dice_ax.set_ylabel("val Dice", fontsize=8, color="tab:blue")
        self.dice_ax.set_ylim(0, 1)
        for ax in (self.loss_ax, self.dice_ax):
            ax.tick_params(labelsize=7)
        self.native.draw_idle()

    def clear(self) -> None:
        self.epochs, self.loss, self.dice = [], [], []
        self._redraw()

    def add(self, epoch: int, train_loss: float, val_dice: float) -> None:
        self.epochs.append(epoch)
        self.loss.append(train_loss)
        self.dice.append(val_dice if math.isfinite(val_dice) else math.nan)
        self._redraw()

    def _redraw(self) -> None:
        self._loss_line.set_data(self.epochs, self.loss)
        self._dice_line.set_data(self.epochs, self.dice)
        if self.epochs:
            self.loss_ax.set_xlim(0.5, max(self.epochs) + 0.5)
            self.loss_ax.relim()
            self.loss_ax.autoscale_view(scalex=False)
        self.native.draw_idle()


class TextPlot:
    """The fallback without matplotlib: the last epochs as text, and how to get the plot."""

    def __init__(self) -> None:
        from qtpy.QtWidgets import QLabel

        self.native = QLabel("install matplotlib (pip install matplotlib) to see the live training plot")
        self.native.setWordWrap(True)
        self.epochs: list[int] = []
        self.loss: list[float] = []
        self.dice: list[float] = []

    def clear(self) -> None:
        self.epochs, self.loss, self.dice = [], [], []

    def add(self, epoch: int, train_loss: float, val_dice: float) -> None:
        self.epochs.append(epoch)
        self.loss.append(train_loss)
        self.dice.append(val_dice)
        rows = [f"epoch {e}: loss {lo:.4f}, val Dice {d:.4f}" for e, lo, d in
                zip(self.epochs[-5:], self.loss[-5:], self.dice[-5:])]
        self.native.setText("\n".join(rows))


def make_plot() -> TrainingPlot | TextPlot:
    """The live plot, or a text fallback where matplotlib is missing."""
    try:
        return TrainingPlot()
    except ImportError:
        return TextPlot()

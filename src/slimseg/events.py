"""Events yielded by long jobs (training, fine-tuning, tiled prediction), and a helper to drain them.

Every long job in slimseg is a generator: it yields these small frozen dataclasses and *returns* its
result. The CLI and tests drain it with :func:`run`; the napari widgets hand it to a worker thread, so
each ``yield`` is both a progress tick and a point where Stop takes effect.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

R = TypeVar("R")


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of ``stage`` are finished (``total`` may be 0 when unknown)."""

    stage: str
    done: int
    total: int
    message: str = ""


@dataclass(frozen=True)
class StepEnd:
    """One optimisation step finished."""

    step: int
    epoch: int
    loss: float
    lr: float


@dataclass(frozen=True)
class EpochEnd:
    """One epoch finished and was validated (``val_dice`` is NaN without validation data)."""

    epoch: int
    step: int
    train_loss: float
    val_dice: float
    best_val_dice: float
    is_best: bool
    elapsed_s: float
    lr: float


@dataclass(frozen=True)
class Message:
    """Something the user should read (a fallback taken, a budget reached, ...)."""

    text: str


def run(gen: Generator[Any, None, R], on_event: Callable[[Any], None] | None = None) -> R:
    """Drain a job generator, passing each event to ``on_event``, and return the job's result."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)


def until_stopped(gen: Generator[Any, None, Any], stop: threading.Event,
                  on_stop: Callable[[], Any]) -> Generator[Any, None, Any]:
    """Relay ``gen``'s events; once ``stop`` is set (a :class:`threading.Event`: a widget's Stop, the
    command line's Ctrl-C), close ``gen`` at its next event and return ``on_stop()``."""
    while True:
        if stop.is_set():
            gen.close()
            return on_stop()
        try:
            event = next(gen)
        except StopIteration as end:
            return end.value
        yield event


def format_event(event: Any) -> str | None:
    """A one-line, human-readable form of an event for logs (None for events too small to print)."""
    if isinstance(event, EpochEnd):
        star = " *" if event.is_best else ""
        return (
            f"epoch {event.epoch:3d}  step {event.step:5d}  loss {event.train_loss:.4f}  "
            f"val dice {event.val_dice:.4f}{star}  lr {event.lr:.2e}  {event.elapsed_s:6.1f}s"
        )
    if isinstance(event, Message):
        return event.text
    if isinstance(event, Progress) and event.message:
        return f"{event.stage}: {event.message}"
    return None


def print_progress(event: Any) -> None:
    """Print an event's line to stderr (the command line's progress; results go to stdout)."""
    line = format_event(event)
    if line:
        print(line, file=sys.stderr, flush=True)

"""Core generators in a worker thread: events to the GUI, errors to notifications, Stop that keeps results.

A job body is a generator function taking a :class:`threading.Event`; it yields the core's events and
returns its result. :meth:`Job.stop` sets the event, and a body built with :func:`until_stopped` ends at
the next ``yield`` *normally*, returning its best result so far (computed in the worker thread).

Every job connects ``errored`` (superqt would otherwise re-raise a worker's exception in the event loop)
and re-raises a RuntimeError as :class:`JobRuntimeError` (superqt would otherwise drop it silently). The
worker thread runs at a lower CPU priority, so napari stays responsive while training saturates the CPU,
and while any job runs the objects the process already held are frozen out of CPython's cyclic garbage
collector (:func:`hold_old_objects`).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from collections.abc import Callable, Generator
from typing import Any

from ..errors import InputError
from ..events import until_stopped  # noqa: F401 (the widgets import it from here)

log = logging.getLogger(__name__)


class JobRuntimeError(Exception):
    """A RuntimeError raised in a job (torch raises many). superqt's generator worker swallows a
    RuntimeError with only a warning, and without ``finished``: the widget would wait forever."""


def background_priority(niceness: int = 10) -> None:
    """Lower the calling thread's CPU priority (Linux; elsewhere a no-op) so that napari's GUI thread
    wins the CPU when a job saturates it. Threads the job starts (torch's OpenMP pool) inherit it."""
    if sys.platform.startswith("linux"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), niceness))
        except (AttributeError, OSError):
            pass


_jobs_running = 0  # jobs between their start and their end (both on the GUI thread)
_froze = False  # whether the freeze in place now is ours


def hold_old_objects(hold: bool) -> None:
    """``True`` when a job starts, ``False`` when it ends (on the GUI thread). From the start of the first
    job to the end of the last, every object the process held before is out of CPython's cyclic garbage
    collection (:func:`gc.freeze`, :func:`gc.unfreeze` after): a full collection that the job's allocations
    set off (the threshold tuning after Stop sets off one) traverses only what was made since, a few ms,
    not napari's ~600,000 objects, which held the GIL, and with it napari's event loop, for 300-400 ms.
    A freeze another library made is left as it is."""
    global _jobs_running, _froze
    if hold:
        if _jobs_running == 0 and gc.get_freeze_count() == 0:
            gc.freeze()
            _froze = True
        _jobs_running += 1
    elif _jobs_running:
        _jobs_running -= 1
        if _jobs_running == 0 and _froze:
            gc.unfreeze()
            _froze = False


def notify_error(err: BaseException, what: str) -> None:
    """Tell the user: bad input as an error notification naming the fix; anything else with its
    traceback (napari's notification has a 'View traceback' button)."""
    from napari.utils.notifications import ErrorNotification, notification_manager, show_error

    if isinstance(err, JobRuntimeError) and err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, InputError):
        show_error(f"{what}: {err}")
        return
    if isinstance(err, ModuleNotFoundError) and err.name:
        package = err.name.split(".")[0]
        show_error(f"{what} needs the optional package {package!r}, which is not installed; install the extras "
                   f"with: pip install 'napari-slimseg[compress]' (or pip install {package}), then restart napari")
        return
    log.error("%s failed", what, exc_info=(type(err), err, err.__traceback__))
    note = ErrorNotification(err)
    note.message = f"{what} failed ({type(err).__name__}: {err}). Please report this with the traceback."
    notification_manager.dispatch(note)


class Job:
    """One long job: ``body(stop_event)`` run by superqt's ``GeneratorWorker``, started at once.

    ``on_finished`` runs last, after success, stop or error.
    """

    def __init__(self, body: Callable[[threading.Event], Generator[Any, None, Any]], what: str, *,
                 on_event: Callable[[Any], None], on_done: Callable[[Any], None],
                 on_finished: Callable[[], None] | None = None) -> None:
        from superqt.utils import create_worker

        self.stop_event = threading.Event()
        self.running = True

        def errored(err: BaseException) -> None:
            notify_error(err, what)

        def finished() -> None:
            self.running = False
            hold_old_objects(False)
            if on_finished is not None:
                on_finished()

        def run(stop: threading.Event) -> Generator[Any, None, Any]:
            background_priority()
            try:
                return (yield from body(stop))
            except RuntimeError as err:  # superqt takes a RuntimeError for "worker deleted" and drops it
                raise JobRuntimeError(str(err)) from err

        self.worker = create_worker(run, self.stop_event, _start_thread=False, _connect={
            "yielded": on_event, "returned": on_done, "errored": errored, "finished": finished})
        hold_old_objects(True)
        self.worker.start()

    def stop(self) -> None:
        """Ask the job to end at its next step and return what it has (the best model so far)."""
        self.stop_event.set()


class JobHost:
    """What every widget with a long job shares: one job at a time, Stop, and stop when the widget
    closes. ``_on_finished`` (the job's last callback) re-enables ``run_button``/``stop_button``."""

    job: Job | None = None
    closed = False  # the widget left napari: the job may still end, but must not touch it

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def stop(self, *_: Any) -> None:
        if self.running:
            self.job.stop()

    def _on_close(self) -> None:
        self.closed = True
        self.stop()

    def _on_finished(self) -> None:
        if not self.closed:
            self.run_button.enabled, self.stop_button.enabled = True, False


def on_close(widget: Any, callback: Callable[[], None]) -> None:
    """Call ``callback`` once when the Qt ``widget`` leaves its dock (napari's close button removes the
    dock and un-parents the widget) or is destroyed (the viewer window closed)."""
    from qtpy.QtCore import QEvent, QObject

    fired = [False]

    def fire(*_: Any) -> None:
        if not fired[0]:
            fired[0] = True
            callback()

    class _Watcher(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
            if event.type() == QEvent.Type.ParentChange and obj.parent() is None:
                fire()
            return False

    watcher = _Watcher(widget)
    widget.installEventFilter(watcher)
    widget.destroyed.connect(fire)

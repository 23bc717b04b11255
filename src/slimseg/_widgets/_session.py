"""The models trained or compressed in one napari viewer, shared by that viewer's slimseg widgets,
and how the widgets run them.

One store per viewer (weakly keyed, so it goes away with the viewer): the Train widget adds its
results, the Compress widget its compressed models, and the Predict, Compare and Compress widgets
list them next to "from file".
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any

from psygnal import Signal

from .. import io
from ..errors import InputError


class SessionModels:
    """Named in-memory model files (float and compressed); ``changed`` fires on every addition."""

    changed = Signal()

    def __init__(self) -> None:
        self._models: dict[str, io.ModelFile] = {}
        # while a Train widget fine-tunes a model: (its model-list entry or file, what it trains on)
        self.retraining: tuple[str, str] | None = None

    def add(self, name: str, model: io.ModelFile) -> str:
        """Store ``model`` under ``name`` (made unique with a number); return the name used."""
        base, n = name, 2
        while name in self._models:
            name, n = f"{base} ({n})", n + 1
        self._models[name] = model
        self.changed.emit()
        return name

    def replace(self, name: str, model: io.ModelFile) -> None:
        """Put a new version of the model ``name`` in its place (its thresholds tuned after a Stop)."""
        self.get(name)
        self._models[name] = model
        self.changed.emit()

    def names(self) -> list[str]:
        return list(self._models)

    def get(self, name: str) -> io.ModelFile:
        try:
            return self._models[name]
        except KeyError:
            raise InputError(f"no model {name!r} in this session; train one or load a model file") from None

    def __len__(self) -> int:
        return len(self._models)


# The one module-level mutable state, on purpose: the per-viewer model store all of a viewer's widgets
# share (weak keys: it goes with its viewer).
_STORES: weakref.WeakKeyDictionary[Any, SessionModels] = weakref.WeakKeyDictionary()


def session_models(viewer: Any) -> SessionModels:
    """The model store of ``viewer`` (created on first use). napari hands each plugin widget its own
    proxy of the viewer; the store is keyed by the viewer behind it, so all widgets share it."""
    viewer = getattr(viewer, "__wrapped__", viewer)
    store = _STORES.get(viewer)
    if store is None:
        store = _STORES[viewer] = SessionModels()
    return store


_RUNNABLES: OrderedDict[int, tuple[io.ModelFile, Any]] = OrderedDict()  # the last few, newest last
_RUNNABLES_KEPT = 4
_RUNNABLES_LOCK = threading.Lock()  # the widgets call from worker threads


def runnable(mf: io.ModelFile, name: str = "model"):
    """A :class:`~slimseg.segmenter.Segmenter` for use inside napari. PT2E int8 models never compile in
    napari's process ("cached" engine): compiling loads Inductor's code generation (and triton where
    installed) after napari's OpenGL context is up, which crashed a peer plugin under Mesa. They run
    the packages already compiled for a tile shape (by ``slimseg compress``, or by an earlier run), and
    for a shape not compiled yet the oneDNN kernels without code generation, while a separate process
    compiles it for the next run (:mod:`slimseg.kinds.background`).

    The last few are kept, per model file object: building one is seconds for an int8 model (its graph
    is rebuilt and lowered), which every Segment or Compare click paid again, and the Compress widget's
    measurement builds the one Predict then uses (``name`` only names it in errors while it is built).
    Each entry holds its model file, so an id is never reused while it is cached."""
    from ..segmenter import from_model_file

    key = id(mf)
    with _RUNNABLES_LOCK:
        entry = _RUNNABLES.get(key)
        if entry is not None:
            _RUNNABLES.move_to_end(key)
            return entry[1]
    seg = from_model_file(mf, name, engine="cached")  # outside the lock: other models need not wait
    with _RUNNABLES_LOCK:
        _RUNNABLES[key] = (mf, seg)
        while len(_RUNNABLES) > _RUNNABLES_KEPT:
            _RUNNABLES.popitem(last=False)
    return seg

"""Choosing models in a widget: this session's models (trained or compressed here), the built-in models
(:mod:`slimseg.models`), or model files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit, Select

from .. import io
from ..errors import InputError
from ._session import session_models

FROM_FILE = "from file..."
BUILTIN = "built-in: "  # the prefix of a built-in model's entry in a model list


def builtin_choices() -> list[str]:
    """One entry per built-in model (listed whether or not shipped: choosing one that is not says so)."""
    from .. import models

    return [BUILTIN + name for name in models.names()]


def is_builtin(choice: Any) -> bool:
    return isinstance(choice, str) and choice.startswith(BUILTIN)


def load_builtin(choice: str) -> io.ModelFile:
    """The model file of a built-in entry; InputError where it is not shipped in this version."""
    from ..models import resolve_model

    return io.load(resolve_model(choice[len(BUILTIN):]))
FILTER = f"slimseg models (*{io.SUFFIX});;all files (*)"


def _is_set(path: Any) -> bool:
    return path is not None and str(path) not in ("", ".")


def load_file(path: Any) -> io.ModelFile:
    if not _is_set(path):
        raise InputError(f"no model file chosen; pick a {io.SUFFIX} file or a model trained in this session")
    return io.load(Path(path))


def model_path(target: Any) -> Path:
    """The model file a file field names (``.slimseg`` added when there is no suffix)."""
    if not _is_set(target):
        raise InputError(f"choose a file name to save to (e.g. nuclei{io.SUFFIX})")
    path = Path(str(target))
    return path.with_suffix(io.SUFFIX) if not path.suffix else path


def save_model(viewer: Any, name: str | None, target: Any, overwrite: bool) -> Path:
    """Write the session model ``name`` to ``target`` (``.slimseg`` added when there is no suffix)."""
    if name is None:
        raise InputError("no model to save yet; run the widget first")
    path = model_path(target)
    try:
        return io.save(session_models(viewer).get(name), path, overwrite=overwrite)
    except InputError as err:
        raise InputError(str(err).replace("pass --overwrite (overwrite=True)", "tick 'overwrite'")) from None
    except OSError as err:
        raise InputError(f"cannot write {path}: {err}") from None


def start_entry(mf: io.ModelFile, entries: Any) -> str | None:
    """The model list's entry of the model ``mf`` was fine-tuned from (a session or built-in model), if listed."""
    source = ((mf.meta.get("training") or {}).get("init") or {}).get("source")
    for entry in (source, BUILTIN + str(source)):
        if source is not None and entry in entries:
            return entry
    return None


class ModelPicker(Container):
    """One model: a drop-down of this session's models plus "from file..." with a file field."""

    def __init__(self, viewer: Any, label: str = "model") -> None:
        self.store = session_models(viewer)
        self.choice = ComboBox(label=label, choices=lambda _w: [*self.store.names(), *builtin_choices(), FROM_FILE],
                               tooltip="a model trained or compressed in this session, a built-in model, or a "
                                       "model file")
        self.file = FileEdit(label="model file", mode="r", filter=FILTER)
        super().__init__(widgets=[self.choice, self.file], labels=True)
        self.margins = (0, 0, 0, 0)
        if not len(self.store):  # a shipped built-in where there is one; else the file field (not a dead entry)
            from .. import models

            shipped = models.available_names()
            self.choice.value = BUILTIN + shipped[0] if shipped else FROM_FILE
        self.choice.changed.connect(self._show_file)
        self.store.changed.connect(self._models_changed)
        self._show_file()

    def _show_file(self, *_: Any) -> None:
        self.file.visible = self.choice.value == FROM_FILE

    def _models_changed(self) -> None:
        self.choice.reset_choices()
        unset = self.choice.value == FROM_FILE and not _is_set(self.file.value)
        newest = self.store.names()[-1] if len(self.store) else None
        if newest is not None and (unset or is_builtin(self.choice.value)
                                   or start_entry(self.store.get(newest), [self.choice.value])):
            # the newest model, rather than an empty file field, or the retrained version of the chosen one
            self.choice.value = newest

    def reference(self) -> str:
        """The chosen model as the Train widget's 'start from' can find it again: a session model's or
        built-in entry's name, or the model file's path."""
        if self.choice.value == FROM_FILE or self.choice.value is None:
            return str(self.file.value)
        return self.choice.value

    def selected(self) -> tuple[str, io.ModelFile]:
        """(name, model file content); raises InputError with the fix for a missing or bad file."""
        if self.choice.value == FROM_FILE or self.choice.value is None:
            return Path(str(self.file.value)).name, load_file(self.file.value)
        if is_builtin(self.choice.value):
            return self.choice.value[len(BUILTIN):], load_builtin(self.choice.value)
        return self.choice.value, self.store.get(self.choice.value)


class ModelsPicker(Container):
    """Several models: a multi-select list of this session's models plus any number of model files."""

    def __init__(self, viewer: Any) -> None:
        self.store = session_models(viewer)
        self.session = Select(label="session models", choices=lambda _w: [*self.store.names(), *builtin_choices()],
                              tooltip="models trained or compressed in this session, and the built-in models "
                                      "(Ctrl-click for several)")
        self.files = FileEdit(label="model files", mode="rm", filter=FILTER)
        super().__init__(widgets=[self.session, self.files], labels=True)
        self.margins = (0, 0, 0, 0)
        self.session.native.setMaximumHeight(90)
        self._seen = set(self.store.names())
        self.store.changed.connect(self._models_changed)

    def _models_changed(self) -> None:
        chosen = list(self.session.value)
        self.session.reset_choices()
        for name in self.store.names():  # a fine-tuned model arrives: choose it with the model it started from
            if name not in self._seen:
                self._seen.add(name)
                start = start_entry(self.store.get(name), self.session.choices)
                if start is not None:
                    chosen += [n for n in (start, name) if n not in chosen]
        self.session.value = [n for n in chosen if n in self.store.names() or is_builtin(n)]

    def selected(self) -> list[tuple[str, io.ModelFile]]:
        out = [(name[len(BUILTIN):], load_builtin(name)) if is_builtin(name) else (name, self.store.get(name))
               for name in self.session.value]
        files = self.files.value or ()
        for path in ([files] if isinstance(files, (str, Path)) else files):
            if _is_set(path):
                out.append((Path(str(path)).name, load_file(path)))
        if not out:
            raise InputError("no models chosen; select session models and/or add model files")
        return out

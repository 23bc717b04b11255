"""Built-in models: names that every door taking a model file also takes (``slimseg predict nuclei``,
``slimseg.load("nuclei")``, the widgets' model lists).

The table below is the one place built-ins are declared; their files ship inside this package (the
model card is ``README.md`` beside them). :func:`resolve_model` turns a path or a built-in name into a
model file path: a path that exists always wins over a name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

HERE = Path(__file__).resolve().parent
RETRAIN_HINT = "python scripts/train_pretrained.py DATA --out nuclei.slimseg (see slimseg/models/README.md)"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    file: str  # file name inside this package
    description: str
    train_hint: str = RETRAIN_HINT  # how to make one where the file is not shipped

    @property
    def path(self) -> Path:
        return HERE / self.file

    @property
    def available(self) -> bool:
        return self.path.is_file()


# name -> built-in model; tests swap in their own table (monkeypatch ``BUILTINS``).
BUILTINS: dict[str, BuiltinModel] = {
    "nuclei": BuiltinModel("nuclei", "nuclei.slimseg",
                           "2D nuclei in fluorescence images (grey), trained on DSB2018 (BBBC038v1)"),
}


def names() -> list[str]:
    return list(BUILTINS)


def available_names() -> list[str]:
    """The built-ins whose file is shipped in this installation."""
    return [n for n, m in BUILTINS.items() if m.available]


def builtin(name: str) -> BuiltinModel:
    """The built-in ``name``; an InputError listing the names for one that does not exist."""
    key = str(name).strip().lower()
    if key not in BUILTINS:
        raise InputError(f"{name!r} is neither a model file nor a built-in model; built-in names: "
                         f"{', '.join(BUILTINS) or '(none)'} (slimseg models lists them)")
    return BUILTINS[key]


def is_builtin_name(text: object) -> bool:
    return isinstance(text, str) and text.strip().lower() in BUILTINS


def resolve_model(path_or_name: str | os.PathLike) -> Path:
    """The model file ``path_or_name`` names: an existing path as given, else a built-in's shipped file.
    Raises InputError for a name that is no built-in (listing the names) and for a built-in whose
    file is not shipped in this version (saying how to train one)."""
    path, text = Path(path_or_name), str(path_or_name)
    if path.exists():
        return path
    if not is_builtin_name(text):
        if os.sep in text or "/" in text or path.suffix:
            return path  # a path: the loader says it is missing
        builtin(text)  # raises, listing the names
    model = builtin(text)
    if not model.available:
        raise InputError(f"the built-in model {model.name!r} is not shipped in this version of slimseg; "
                         f"train one with {model.train_hint}, then give its file")
    return model.path


def describe() -> list[dict[str, object]]:
    """One row per built-in: name, availability, description, file (for ``slimseg models``)."""
    return [{"name": m.name, "available": m.available, "description": m.description, "file": str(m.path)}
            for m in BUILTINS.values()]


__all__ = ["BuiltinModel", "BUILTINS", "names", "available_names", "builtin", "is_builtin_name", "resolve_model",
           "describe"]

"""Command-line options made from config dataclasses, so each setting is declared once: in its field.

``add_options(parser, TrainConfig)`` offers ``--batch-size`` for ``batch_size`` and so on, with the
field's default; the type comes from the annotation, ``choices`` from a ``Literal[...]`` or a registry,
the help from the field's metadata (see ``slimseg.config.option``). ``config_from_args`` reads them back.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from .config import ModelConfig, literal_choices

C = TypeVar("C")


def flag_of(field: dataclasses.Field) -> str:
    """``--batch-size`` for ``batch_size``; ``--no-augment`` for a flag that turns a True default off."""
    if field.metadata.get("flag"):
        return field.metadata["flag"]
    return ("--no-" if field.default is True else "--") + field.name.replace("_", "-")


def cli_fields(cls: type, only: Collection[str] | None = None, exclude: Collection[str] = ()) -> list[dataclasses.Field]:
    """The fields of ``cls`` offered on the command line (not marked ``cli=False``), narrowed to ``only``
    and without ``exclude``, in declaration order."""
    fields = dataclasses.fields(cls)
    _known(cls, {*(only or ()), *exclude}, {f.name for f in fields})
    return [f for f in fields if f.metadata.get("cli", True) and (only is None or f.name in only)
            and f.name not in exclude]


def add_options(parser: Any, cls: type, *, only: Collection[str] | None = None, exclude: Collection[str] = (),
                defaults: Mapping[str, Any] | None = None, helps: Mapping[str, str] | None = None,
                required: Collection[str] = ()) -> list[str]:
    """Add one option per command-line field of ``cls`` to ``parser`` (an ArgumentParser or group); a
    command's own ``defaults``, ``helps`` and ``required`` fields replace the dataclass's. Returns the
    field names, which are also the options' ``dest``."""
    defaults, helps = dict(defaults or {}), dict(helps or {})
    fields = cli_fields(cls, only, exclude)
    _known(cls, {*defaults, *helps, *required}, {f.name for f in fields})
    hints = typing.get_type_hints(cls)
    literals = literal_choices(cls)
    for f in fields:
        kind = _value_type(hints[f.name])
        kw: dict[str, Any] = {"dest": f.name, "default": defaults.get(f.name, f.default)}
        if kind is bool:
            kw["action"] = "store_false" if f.default is True else "store_true"
        else:
            kw["type"] = kind
            if f.name in literals:
                kw["choices"] = literals[f.name]
            if f.metadata.get("choices"):
                kw["choices"] = _registry(f.metadata["choices"]).names()
        if f.name in required or kw["default"] is dataclasses.MISSING:
            kw["required"] = True
            del kw["default"]
        text = helps.get(f.name, f.metadata.get("help", ""))
        if f.metadata.get("names"):
            text = text.format(names=", ".join(_registry(f.metadata["names"]).names()))
        parser.add_argument(flag_of(f), help=text or None, **kw)
    return [f.name for f in fields]


def values_from_args(cls: type, args: Any, only: Collection[str] | None = None) -> dict[str, Any]:
    """Field name -> value of each option :func:`add_options` added to the parsed ``args`` (``only``: of
    these fields, where the command has options of its own under other fields' names)."""
    return {f.name: getattr(args, f.name) for f in cli_fields(cls, only) if hasattr(args, f.name)}


def config_from_args(cls: type[C], args: Any, **changes: Any) -> C:
    """``cls`` from the parsed options (fields without one keep their defaults), ``changes`` on top."""
    return cls(**{**values_from_args(cls, args), **changes})  # type: ignore[call-arg]


def add_model_options(parser: Any) -> None:
    """``--depth`` and ``--base-width`` (of ``ModelConfig.from_depth``), defaulting to ModelConfig's own,
    and ``--in-channels`` (default: counted from the images)."""
    default = ModelConfig()
    parser.add_argument("--depth", type=int, default=default.depth)
    parser.add_argument("--base-width", type=int, default=default.widths[0])
    parser.add_argument("--in-channels", type=int, default=None,
                        help="input channels of the model (default: counted from the images: 1 grey, 3 RGB, ...)")


def model_config_from_args(args: Any, in_channels: int | None = None, **kw: Any) -> ModelConfig:
    """The model settings of the options; ``in_channels`` is what the data have, which ``--in-channels``
    overrides."""
    chosen = getattr(args, "in_channels", None) or in_channels
    if chosen is not None:
        kw["in_channels"] = chosen
    return ModelConfig.from_depth(args.depth, args.base_width, **kw)


def _value_type(hint: Any) -> type:
    """``int``, ``float``, ``str`` or ``bool`` of a field's annotation (``X | None`` gives ``X``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _value_type(rest[0])
    elif origin is typing.Literal and len({type(a) for a in args}) == 1:
        return type(args[0])
    elif origin is tuple and args == (int, Ellipsis):
        return int_list
    elif hint in (int, float, str, bool):
        return hint
    raise TypeError(f"no command-line type for {hint!r}; give the field cli=False or a simpler type")


def int_list(text: str) -> tuple[int, ...]:
    """``"0,2"`` -> ``(0, 2)``: the command-line form of a ``tuple[int, ...]`` field."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers, "
                                         "e.g. 0,2") from None


def _registry(ref: str) -> Any:
    """The registry ``"module:NAME"`` refers to (imported now: building a parser may load it)."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _known(cls: type, names: set[str], valid: set[str]) -> None:
    unknown = sorted(names - valid)
    if unknown:
        raise ValueError(f"{cls.__name__} offers no command-line field {', '.join(unknown)}")


__all__ = ["flag_of", "cli_fields", "add_options", "values_from_args", "config_from_args", "add_model_options",
           "model_config_from_args", "int_list"]

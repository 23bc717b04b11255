"""Model kinds: how each kind of model file is stored and run, in one table.

A model file names its kind (``io.ModelFile.kind``). :data:`KINDS` maps each name to a :class:`Kind`
record, and :func:`load` turns a file into a :class:`Runnable` through it. A kind's module is
imported by the table only when a file of that kind is loaded (the int8 kinds pull in torchao,
Inductor or ONNX Runtime). Nothing here imports :mod:`slimseg.compress` (which makes the compressed
kinds) or :mod:`slimseg.segmenter` (which wraps a runnable for prediction).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InputError, ModelFileError

if TYPE_CHECKING:
    import torch

    from ..io import ModelFile

# How an int8 PT2E model runs: "compile" (AOTInductor packages of fused oneDNN kernels, one per tile shape,
# cached: kinds.compile_cache; compiling needs a C++ compiler),
# "lowered" (the same kernels without code generation), "reference" (the converted graph as it is),
# "auto" (compile where a C++ compiler is found, else lowered), "cached" (packages already compiled, else
# lowered while another process compiles the shape: kinds.background; what napari uses).
ENGINES = ("auto", "compile", "lowered", "reference", "cached")


@dataclass(frozen=True)
class Kind:
    """One kind of model file. Its module (``slimseg.kinds.<module>``) has
    ``load(mf, meta[, engine]) -> Runnable``, writing what it runs on into ``meta["runtime"]``."""

    name: str
    module: str
    layout: str | None = None  # meta key describing the stored tensors, with its "format" version
    version: int = 0  # newest layout version this slimseg reads (and the one it writes)
    extra: str | None = None  # the pip extra of the optional packages it runs on
    engines: tuple[str, ...] = ()  # the int8 engines it accepts; () where it has no choice

    def loader(self) -> Callable[..., Runnable]:
        return importlib.import_module(f"{__name__}.{self.module}").load


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("float", "float32"),  # float32 weights of the U-Net
    Kind("float-sparse", "sparse", layout="sparse", version=1),  # kept conv weights + a bit mask
    # int8 conv weights, per-channel scales, float32 biases, activation ranges; graph rebuilt on loading
    Kind("int8-pt2e", "pt2e_runner", layout="int8", version=1, extra="compress", engines=ENGINES),
    Kind("int8-onnx", "onnx_int8", layout="int8", version=1, extra="compress"),  # ONNX Runtime graph bytes
)}


@dataclass(frozen=True)
class Runnable:
    """A loaded model: a callable on (N, C, H, W) float batches, and the float module where there is one."""

    model_fn: Callable[[torch.Tensor], torch.Tensor]
    module: torch.nn.Module | None = None


def kind_of(name: str, source: str = "model") -> Kind:
    """The record of kind ``name``; ``source`` names the model in the error."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise ModelFileError(f"{source}: unknown model kind {name!r} (this slimseg reads "
                             f"{', '.join(KINDS)}); upgrade napari-slimseg") from None


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise InputError(f"unknown int8 engine {engine!r}; choose one of {', '.join(ENGINES)}")
    return engine


def stored_layout(mf: ModelFile, name: str) -> dict[str, Any]:
    """The layout description of the tensors of ``mf``, a file of kind ``name`` (``meta[layout]``),
    refused where its format version is missing or newer than this slimseg reads."""
    kind = KINDS[name]
    info = mf.meta.get(kind.layout) if kind.layout else None
    info = info if isinstance(info, dict) else {}
    version = info.get("format")
    if not isinstance(version, int) or version > kind.version:
        raise ModelFileError(f"this {kind.name} model has layout version {version}, newer than this slimseg "
                             f"reads ({kind.version}); upgrade napari-slimseg")
    return info


def load(mf: ModelFile, meta: dict[str, Any], engine: str = "auto", source: str = "model") -> Runnable:
    """Run ``mf`` as its kind says; ``meta`` (the runnable's own metadata) gets ``runtime`` notes.
    ``engine`` applies to the kinds that choose one (``Kind.engines``) and is ignored by the others."""
    check_engine(engine)
    kind = kind_of(mf.kind, source)
    try:
        load_kind = kind.loader()
        return load_kind(mf, meta, engine) if kind.engines else load_kind(mf, meta)
    except ImportError as err:
        hint = f"; pip install 'napari-slimseg[{kind.extra}]'" if kind.extra else ""
        raise ModelFileError(f"{source}: model kind {kind.name!r} needs an optional dependency ({err}){hint}") from None

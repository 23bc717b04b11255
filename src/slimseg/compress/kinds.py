"""Loaders of the compressed model kinds, registered in :data:`slimseg.segmenter.MODEL_KINDS`.

Each loader imports its heavy dependencies (torchao, torch.compile, ONNX Runtime) only when called.
"""

from __future__ import annotations

from .. import io
from ..segmenter import MODEL_KINDS, Segmenter


@MODEL_KINDS.register("int8-pt2e")
def _load_int8_pt2e(mf: io.ModelFile) -> Segmenter:
    from . import pt2e

    return pt2e.load(mf)


@MODEL_KINDS.register("int8-onnx")
def _load_int8_onnx(mf: io.ModelFile) -> Segmenter:
    from . import onnx_int8

    return onnx_int8.load(mf)


@MODEL_KINDS.register("float-sparse")
def _load_float_sparse(mf: io.ModelFile) -> Segmenter:
    from . import prune

    return prune.load_sparse(mf)

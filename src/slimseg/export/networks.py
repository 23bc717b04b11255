"""The network of a slimseg model file in the forms other tools run: TorchScript and ONNX.

Both take inputs whose height and width are multiples of the model's ``size_multiple`` (the U-Net's
own padding stays outside the graph, as in :mod:`slimseg.kinds.fold`) with any batch size, and
return the two logit maps (foreground, centredness); a sigmoid turns them into slimseg's probabilities.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import io
from ..errors import InputError
from ..kinds.fold import Core, dynamic_example
from ..model import UNet, can_fold, fold_batchnorm
from ..segmenter import Segmenter, from_model_file

FLOAT_KINDS = ("float", "float-sparse")  # float weights (a sparse file holds zeros, stored compactly)
INT8_ONNX = "int8-onnx"  # an ONNX QDQ graph: standard ONNX operators, so the spec's onnx weights hold it
REFUSED = {
    "int8-pt2e": "its int8 graph runs torchao's PT2E quantised operators, which neither TorchScript nor "
                 "ONNX as the bioimage.io spec describes them can hold; export the float model it was "
                 "made from, or compress that with --backend onnx (an int8 ONNX graph exports)",
}


@dataclass
class Source:
    """What an export needs of a model file: slimseg's own runnable, and the network to write."""

    kind: str
    segmenter: Segmenter
    net: UNet | None = None  # the float U-Net (BatchNorm folded where it can be: the function slimseg runs)
    onnx: bytes | None = None  # the stored ONNX graph of an int8-onnx model

    @property
    def formats(self) -> tuple[str, ...]:
        """The network formats this model can be written as."""
        return ("torchscript", "onnx") if self.net is not None else ("onnx",)


def open_source(path: str | Path) -> Source:
    """Load a model file for export; refuse kinds no exchange format can hold, saying why."""
    mf = io.load(path)
    if mf.kind in REFUSED:
        raise InputError(f"{path}: a {mf.kind} model cannot be exported: {REFUSED[mf.kind]}")
    if mf.kind not in FLOAT_KINDS + (INT8_ONNX,):
        raise InputError(f"{path}: model kind {mf.kind!r} cannot be exported (exportable kinds: "
                         f"{', '.join(FLOAT_KINDS + (INT8_ONNX,))})")
    seg = from_model_file(mf, str(path))
    if mf.kind == INT8_ONNX:
        return Source(mf.kind, seg, onnx=mf.tensors["onnx"].tobytes())
    module = seg.module
    if module is None:
        raise InputError(f"{path}: this {mf.kind} model has no float network to export")
    net = fold_batchnorm(module) if can_fold(module) else module.eval()
    return Source(mf.kind, seg, net=net.eval())


def _example(net: UNet) -> torch.Tensor:
    # batch 2 and two size steps: neither the tracer nor the exporter may take a 1 for a constant
    return dynamic_example(net.config.in_channels, net.config.size_multiple)[0][0]


def _traced(net: UNet) -> torch.jit.ScriptModule:
    """A traced TorchScript module (the U-Net has no data-dependent control flow, so a trace is exact)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice: the spec still names the format
        return torch.jit.trace(Core(net).eval(), _example(net), check_trace=False)


def write_onnx(net: UNet, path: Path, traced: torch.jit.ScriptModule | None = None) -> None:
    """An ONNX graph with a dynamic batch, height and width (height and width multiples of the step),
    converted from the traced TorchScript module by torch.onnx's TorchScript-based exporter (seconds,
    where the dynamo exporter takes tens); torch.export's exporter where that one is gone."""
    axes = {0: "batch", 2: "y", 3: "x"}
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)  # the exporter's notes (e.g. torchvision absent) are not for the user
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
            try:
                torch.onnx.export(traced or _traced(net), (_example(net),), str(path), dynamo=False, input_names=["raw"],
                                  output_names=["logits"], dynamic_axes={"raw": axes, "logits": axes})
            except (TypeError, ValueError, NotImplementedError, RuntimeError):
                _write_onnx_dynamo(net, path)
    finally:
        log.setLevel(level)


def _write_onnx_dynamo(net: UNet, path: Path) -> None:
    from ..compress.onnx_int8 import export_onnx

    export_onnx(net, path, input_name="raw")


def onnx_opset(path: Path) -> int:
    """The default-domain opset a saved ONNX graph imports."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def write_network(source: Source, fmt: str, path: Path) -> None:
    """Write ``source``'s network as ``fmt`` (``torchscript`` or ``onnx``) to ``path``."""
    write_networks(source, {fmt: path})


def write_networks(source: Source, paths: dict[str, Path]) -> None:
    """Write ``source``'s network in each format of ``paths`` (format -> path), tracing it once."""
    for fmt in paths:
        if fmt not in source.formats:
            raise InputError(f"a {source.kind} model exports as {' or '.join(source.formats)}, not {fmt}: "
                             "its int8 graph exists only as ONNX")
    if source.onnx is not None:
        paths["onnx"].write_bytes(source.onnx)
        return
    traced = _traced(source.net)
    if "torchscript" in paths:
        traced.save(str(paths["torchscript"]))
    if "onnx" in paths:
        write_onnx(source.net, paths["onnx"], traced)

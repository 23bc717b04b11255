"""Export a slimseg model for other tools: a bioimage.io model package, or the bare network.

``export_model(path, out, ExportConfig(format="bioimageio"))`` writes a bioimage.io package (spec 0.5:
TorchScript and ONNX weights, test tensors, normalisation, documentation); ``format="onnx"`` or
``"torchscript"`` writes the network alone. Float and float-sparse models export in every format,
int8-onnx models as ONNX (their QDQ graph); int8-pt2e models are refused with the reason.
"""

from __future__ import annotations

from pathlib import Path

from .config import FORMATS, ExportConfig

__all__ = ["FORMATS", "ExportConfig", "export_model"]


def export_model(model: str | Path, out: str | Path, cfg: ExportConfig | None = None,
                 overwrite: bool = False) -> Path:
    """Write ``model`` (a model file or built-in name) to ``out`` as ``cfg.format``; never replaces ``out``
    unless ``overwrite``."""
    from .. import io
    from ..files import atomic_path
    from ..models import resolve_model
    from .networks import open_source, write_network

    cfg = cfg or ExportConfig()
    out = io.check_writable(out, overwrite)
    model = resolve_model(model)
    source = open_source(model)
    if cfg.format == "bioimageio":
        from .bioimageio import write_bioimageio

        return write_bioimageio(source, out, cfg, Path(model))
    with atomic_path(out) as part:
        write_network(source, cfg.format, part)
    return out

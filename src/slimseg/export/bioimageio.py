"""A bioimage.io model package (spec 0.5) of a slimseg model, built with ``bioimageio.spec``.

The package holds the network (TorchScript with an ONNX child, or the int8 ONNX graph alone), the
normalisation as ``scale_range`` preprocessing, a ``sigmoid`` postprocessing that gives slimseg's two
probability maps, test tensors computed by slimseg itself from a real image, a cover, and a README
that explains how slimseg turns the two maps into instances. Nothing is fetched from the network.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

from .._version import __version__
from ..config import to_dict
from ..data.normalize import per_channel
from ..errors import InputError
from ..events import run
from ..files import atomic_path
from .card import DSB2018, cover_image, readme, trained_on_sample
from .config import ExportConfig
from .networks import Source, onnx_opset, write_networks

TEST_SIZE = 256  # the test image is cropped to at most this many pixels a side (a small package)


def _spec():
    try:
        from bioimageio.spec import save_bioimageio_package
        from bioimageio.spec.model import v0_5
    except ImportError as err:
        raise InputError(f"bioimage.io export needs bioimageio.spec ({err}); "
                         "pip install 'napari-slimseg[export]'") from None
    return v0_5, save_bioimageio_package


def test_image(source: Source, cfg: ExportConfig) -> np.ndarray:
    """The real image the test tensors come from, cropped to whole size steps: (H, W) or (H, W, 3)."""
    from ..data.checks import as_image
    from ..data.folder import read_image
    from ..sample import sample_dir

    path = Path(cfg.test_image) if cfg.test_image else sorted((sample_dir("test") / "images").glob("*.tif"))[0]
    image = read_image(path)
    channels = source.segmenter.model_config.in_channels
    if channels > 1 and image.ndim == 2:
        image = np.repeat(image[..., None], channels, axis=-1)  # the shipped sample is grey
    image = as_image(image, channels, name=str(path))
    m = source.segmenter.model_config.size_multiple
    h, w = (min(n, TEST_SIZE) // m * m for n in image.shape[:2])
    if not h or not w:
        raise InputError(f"{path}: the test image ({image.shape[0]}x{image.shape[1]}) is smaller than one "
                         f"size step of this model ({m} pixels); give a larger --test-image")
    return image[:h, :w]


def slimseg_probabilities(source: Source, image: np.ndarray) -> np.ndarray:
    """slimseg's own probabilities of ``image`` (one tile: the image fits), float32 (2, H, W)."""
    seg = source.segmenter
    settings = seg.settings(tile=max(32, *image.shape[:2]), overlap=0, tta=False, rescale=False)
    return run(seg.predict_events(image, settings)).probabilities.astype(np.float32)


def write_bioimageio(source: Source, out: Path, cfg: ExportConfig, model_path: Path) -> Path:
    """Write the package zip to ``out`` (atomically) and return ``out``."""
    v0_5, save_package = _spec()
    norm = source.segmenter.norm
    if norm.pmax <= 1:
        raise InputError(f"the spec's scale_range needs max_percentile > 1; this model normalises to "
                         f"percentile {norm.pmax}")
    image = test_image(source, cfg)
    probs = slimseg_probabilities(source, image)
    with tempfile.TemporaryDirectory(prefix="slimseg-bioimageio-") as tmp:
        d = Path(tmp)
        raw = image[None].astype(np.float32) if image.ndim == 2 else np.moveaxis(image, -1, 0).astype(np.float32)
        np.save(d / "test_input.npy", raw[None])
        np.save(d / "test_output.npy", probs[None])
        tifffile.imwrite(d / "sample_input.tif", image)
        tifffile.imwrite(d / "sample_output.tif", probs, compression="zlib")
        cover_image(image, probs, d / "cover.png")
        on_sample = trained_on_sample(source.segmenter.meta)
        (d / "README.md").write_text(readme(source, cfg, model_path, on_sample), encoding="utf-8")
        weights = _weights(v0_5, source, d)
        try:
            descr = _describe(v0_5, source, cfg, d, weights, on_sample)
        except ValueError as err:  # pydantic's ValidationError: a bad licence id, DOI, name, ...
            raise InputError(f"the bioimage.io description is invalid: {err}") from None
        with atomic_path(out) as part:
            save_package(descr, output_path=part)
    return out


def _weights(v0_5: Any, source: Source, d: Path):
    onnx_path, ts_path = d / "weights.onnx", d / "weights.torchscript.pt"
    if source.net is None:  # int8 ONNX: the graph slimseg itself runs is the only weights entry
        write_networks(source, {"onnx": onnx_path})
        return v0_5.WeightsDescr(onnx=v0_5.OnnxWeightsDescr(
            source=onnx_path, opset_version=onnx_opset(onnx_path),
            comment="int8 ONNX QDQ graph (per-channel int8 weights, uint8 activations), as slimseg runs it"))
    write_networks(source, {"torchscript": ts_path, "onnx": onnx_path})
    return v0_5.WeightsDescr(
        torchscript=v0_5.TorchscriptWeightsDescr(
            source=ts_path, pytorch_version=v0_5.Version(torch.__version__.split("+")[0]),
            comment="traced from the slimseg U-Net (BatchNorm folded into the convolutions)"),
        onnx=v0_5.OnnxWeightsDescr(
            source=onnx_path, opset_version=onnx_opset(onnx_path), parent="torchscript",
            comment="converted from the TorchScript module by torch.onnx"))


def _describe(v0_5: Any, source: Source, cfg: ExportConfig, d: Path, weights: Any, on_sample: bool):
    mc, norm = source.segmenter.model_config, source.segmenter.norm
    m = mc.size_multiple
    channels = {1: ["grey"], 3: ["red", "green", "blue"]}.get(mc.in_channels) or [
        f"channel{i}" for i in (mc.channels or range(mc.in_channels))]
    joint = mc.in_channels > 1 and not per_channel(norm, mc.in_channels)  # percentiles over all channels
    size = v0_5.ParameterizedSize(min=m, step=m)
    space_in = [v0_5.SpaceInputAxis(id=v0_5.AxisId(a), size=size) for a in ("y", "x")]
    space_out = [v0_5.SpaceOutputAxis(id=v0_5.AxisId(a), size=v0_5.SizeReference(
        tensor_id=v0_5.TensorId("raw"), axis_id=v0_5.AxisId(a))) for a in ("y", "x")]
    scale = v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(
        axes=[v0_5.AxisId(a) for a in (("channel", "y", "x") if joint or mc.in_channels == 1 else ("y", "x"))],
        min_percentile=float(norm.pmin), max_percentile=float(norm.pmax)))
    inputs = [v0_5.InputTensorDescr(
        id=v0_5.TensorId("raw"), description="raw image, any intensity range (normalised per image)",
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[v0_5.Identifier(c) for c in channels]), *space_in],
        test_tensor=v0_5.FileDescr(source=d / "test_input.npy"),
        sample_tensor=v0_5.FileDescr(source=d / "sample_input.tif"),
        data=v0_5.IntervalOrRatioDataDescr(type="float32"), preprocessing=[scale])]
    outputs = [v0_5.OutputTensorDescr(
        id=v0_5.TensorId("probabilities"),
        description="foreground probability; centredness (1 at a nucleus' centre, 0 at its rim)",
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[v0_5.Identifier("foreground"),
                                                                v0_5.Identifier("centredness")]), *space_out],
        test_tensor=v0_5.FileDescr(source=d / "test_output.npy"),
        sample_tensor=v0_5.FileDescr(source=d / "sample_output.tif"),
        data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        postprocessing=[v0_5.SigmoidDescr()])]
    cite = [v0_5.CiteEntry(text=DSB2018["text"], doi=v0_5.Doi(DSB2018["doi"]))] if on_sample else []
    cite += [v0_5.CiteEntry(text=text, doi=v0_5.Doi(doi)) for text, doi in cfg.cite]
    training = source.segmenter.meta.get("training") or {}
    return v0_5.ModelDescr(
        name=cfg.name or "slimseg nucleus U-Net",
        description=(f"A {mc.depth}-level 2D U-Net (widths {list(mc.widths)}) from napari-slimseg for nucleus "
                     "instance segmentation: foreground and centredness probabilities; touching nuclei are "
                     "split by a seeded watershed (see the README)."),
        authors=[v0_5.Author(name=a) for a in cfg.authors],
        cite=cite, license=v0_5.LicenseId(cfg.license),
        tags=["nuclei", "instance-segmentation", "semantic-segmentation", "fluorescence-light-microscopy",
              "2d", "unet", "pytorch", "slimseg"],
        documentation=v0_5.FileDescr(source=d / "README.md"), covers=[v0_5.FileDescr(source=d / "cover.png")],
        inputs=inputs, outputs=outputs, weights=weights,
        config=v0_5.Config(
            bioimageio=v0_5.BioimageioConfig(
                architecture_type="U-Net", model_parameter_count=training.get("parameters"),
                modality="fluorescence microscopy", target_structure=["nuclei"], task="instance segmentation"),
            slimseg=json.loads(json.dumps({  # plain lists and numbers for YAML
                "version": __version__, "kind": source.kind, "model_config": to_dict(mc), "norm": to_dict(norm),
                "predict": to_dict(source.segmenter.predict_config)}))))

"""int8 as an ONNX Runtime model: static QDQ quantisation (per-channel int8 weights, uint8
activations, MinMax calibration on the user's patches), stored as bytes inside the model file
(kind ``int8-onnx``), so it loads without unpickling and runs wherever ONNX Runtime does."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import io
from ..errors import InputError, ModelFileError
from ..model import UNet
from ..segmenter import Segmenter, predict_config_of
from .fold import Core, padded
from .pt2e import _dynamic

KIND = "int8-onnx"
FORMAT = 1
INPUT = "x"


def export_onnx(net: UNet, path: Path) -> None:
    """Export the padding-free U-Net to ONNX with a dynamic batch, height and width."""
    import logging

    args, dynamic = _dynamic(net.config.in_channels, net.config.size_multiple)
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)  # the exporter logs notes (e.g. torchvision absent) the user need not read
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(Core(net.eval()), args, dynamo=True, dynamic_shapes=dynamic,
                                        input_names=[INPUT], output_names=["logits"], verbose=False)
            program.save(str(path))
    finally:
        log.setLevel(level)


def quantize(net: UNet, batches: Iterable[torch.Tensor], norm, meta: dict[str, Any]) -> io.ModelFile:
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as err:
        raise InputError(f"the onnx backend needs onnx, onnxscript and onnxruntime ({err}); "
                         "pip install 'napari-slimseg[compress]'") from None

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {INPUT: x.numpy()}

    with tempfile.TemporaryDirectory(prefix="slimseg-onnx-") as tmp:
        f32, pre, q = Path(tmp, "f32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        export_onnx(net, f32)
        quant_pre_process(str(f32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        data = np.frombuffer(q.read_bytes(), np.uint8).copy()
    meta = dict(meta)
    meta["int8"] = {"format": FORMAT, "target": "ONNX Runtime, static QDQ",
                    "weights": "int8, symmetric, per output channel", "activations": "uint8, affine, per tensor",
                    "calibration": "MinMax"}
    return io.ModelFile(net.config, norm, {"onnx": data}, KIND, meta)


def load(mf: io.ModelFile, threads: int | None = None) -> Segmenter:
    info = mf.meta.get("int8") or {}
    if not isinstance(info.get("format"), int) or info["format"] > FORMAT:
        raise ModelFileError(f"this ONNX int8 model has layout version {info.get('format')}, newer than "
                             f"this slimseg reads ({FORMAT}); upgrade napari-slimseg")
    if "onnx" not in mf.tensors:
        raise ModelFileError("the ONNX int8 model file lacks its ONNX graph; re-run slimseg compress")
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ModelFileError(f"this model needs ONNX Runtime ({err}); pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    # no busy-waiting after each run: the spinning threads took the CPU from whatever ran next (the
    # next model in slimseg benchmark ran 2x slower at batch 1; ONNX Runtime itself lost nothing)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(mf.tensors["onnx"].tobytes(), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - ORT raises its own types for a bad graph
        raise ModelFileError(f"ONNX Runtime cannot load the stored graph ({err})") from None

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {INPUT: x.numpy()})[0])

    meta = dict(mf.meta)
    meta["runtime"] = f"ONNX Runtime {ort.__version__}, CPU, {opts.intra_op_num_threads} threads"
    return Segmenter(padded(run, mf.model_config.size_multiple), mf.model_config, mf.norm, KIND, meta,
                     predict_config=predict_config_of(meta))

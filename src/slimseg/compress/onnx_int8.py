"""int8 as an ONNX Runtime model: static QDQ quantisation (per-channel int8 weights, uint8
activations, MinMax calibration on the user's patches) of the exported U-Net, stored as kind
``int8-onnx`` (:mod:`slimseg.kinds.onnx_int8`)."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .. import io
from ..errors import InputError
from ..kinds.fold import Core, dynamic_example
from ..kinds.onnx_int8 import INPUT, to_model_file
from ..model import UNet


def export_onnx(net: UNet, path: Path, input_name: str = INPUT) -> None:
    """Export the padding-free U-Net to ONNX (torch.export) with a dynamic batch, height and width."""
    import logging

    args, dynamic = dynamic_example(net.config.in_channels, net.config.size_multiple)
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)  # the exporter logs notes (e.g. torchvision absent) the user need not read
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(Core(net.eval()), args, dynamo=True, dynamic_shapes=dynamic,
                                        input_names=[input_name], output_names=["logits"], verbose=False)
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
        # 7-bit weights (reduce_range): without VNNI (AVX2, AVX-512F alone) ONNX Runtime multiplies u8 x s8
        # pairs into 16-bit sums that saturate with full-range weights (its quantisation docs): on an AVX2
        # CPU the tests' model had logits 2.2% off float on average (worst 8%) instead of 0.4% (1.2%); this
        # portable backend is the one slimseg picks for such CPUs
        quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        onnx = q.read_bytes()
    return to_model_file(onnx, net.config, norm, meta, calibration="MinMax")

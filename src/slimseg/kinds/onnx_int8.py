"""Kind ``int8-onnx``: a statically quantised ONNX Runtime QDQ graph (per-channel int8 weights, uint8
activations), stored as bytes inside the model file, so it loads without unpickling and runs
wherever ONNX Runtime does."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import io
from ..config import ModelConfig, NormConfig
from ..errors import ModelFileError
from . import KINDS, Runnable, stored_layout
from .fold import padded

KIND = "int8-onnx"
INPUT = "x"  # the graph's input name


def to_model_file(onnx: bytes, config: ModelConfig, norm: NormConfig, meta: dict[str, Any],
                  calibration: str) -> io.ModelFile:
    """The model file of a quantised ONNX graph (its serialised bytes) of a U-Net of ``config``."""
    meta = dict(meta)
    meta["int8"] = {"format": KINDS[KIND].version, "target": "ONNX Runtime, static QDQ",
                    "weights": "int8, symmetric, per output channel", "activations": "uint8, affine, per tensor",
                    "calibration": calibration}
    return io.ModelFile(config, norm, {"onnx": np.frombuffer(onnx, np.uint8).copy()}, KIND, meta)


def load(mf: io.ModelFile, meta: dict[str, Any], threads: int | None = None) -> Runnable:
    stored_layout(mf, KIND)
    if "onnx" not in mf.tensors:
        raise ModelFileError("the ONNX int8 model file lacks its ONNX graph; re-run slimseg compress")
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ModelFileError(f"this model needs ONNX Runtime ({err}); pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    # no busy-waiting after each run: the spinning threads take the CPU from whatever runs next
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(mf.tensors["onnx"].tobytes(), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - ORT raises its own types for a bad graph
        raise ModelFileError(f"ONNX Runtime cannot load the stored graph ({err})") from None

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {INPUT: x.numpy()})[0])

    meta["runtime"] = f"ONNX Runtime {ort.__version__}, CPU, {opts.intra_op_num_threads} threads"
    return Runnable(padded(run, mf.model_config.size_multiple))

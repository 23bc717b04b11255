"""The compression settings, and the registry of compression methods (filled in ``methods.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ..config import check_choices, option
from ..errors import InputError
from ..registry import Registry

# method name -> generator function(model_file, data, cfg) -> ModelFile; see slimseg.compress.methods
COMPRESS_METHODS: Registry = Registry("compression method")

QUANTIZING = ("ptq", "qat", "prune-ptq")
PRUNING = ("prune-unstructured", "prune-structured", "prune-ptq")
FINE_TUNING = ("qat", "prune-unstructured", "prune-structured", "prune-ptq")
Backend = Literal["auto", "pt2e", "onnx"]
BACKENDS: tuple[str, ...] = get_args(Backend)
DEFAULT_RATIO = 0.5


@dataclass
class CompressConfig:
    """How to compress a float model.

    ``ratio``: the sparsity (fraction of conv weights set to zero) for ``prune-unstructured``, or the
    fraction of channels removed from every conv layer for ``prune-structured``/``prune-ptq``
    (parameters then shrink by about ``1-(1-ratio)**2``); None means 0.5. ``minutes`` bounds the
    fine-tuning (QAT and pruning; 0 skips it for pruning), ``max_steps`` optionally too, whichever
    ends first. ``backend`` is the int8 target: ``pt2e`` (PyTorch, x86 oneDNN kernels), ``onnx``
    (an ONNX Runtime QDQ model stored inside the model file), or ``auto``: ``pt2e`` on CPUs with
    VNNI or AMX int8 instructions, ``onnx`` on the others, where ONNX Runtime's int8 kernels are the
    faster ones (see ``slimseg.compress.methods.int8_backend``).
    """

    method: str = option("ptq", choices="slimseg.compress:COMPRESS_METHODS")
    ratio: float | None = option(None, "pruning: sparsity (prune-unstructured) or fraction of channels removed "
                                 f"(prune-structured, prune-ptq); default {DEFAULT_RATIO:g}")
    minutes: float = option(1.0, "fine-tuning budget for qat and pruning (default %(default)g)")
    calibration_patches: int = 64
    seed: int = 0
    backend: Backend = option("auto", "int8 target: pt2e (PyTorch, oneDNN int8 kernels compiled by Inductor), onnx "
                              "(ONNX Runtime, portable), or auto (default): pt2e on CPUs with VNNI/AMX, onnx on "
                              "others; slimseg benchmark shows which is faster on your CPU")
    patch_size: int = option(256, cli=False)
    batch_size: int = option(8, cli=False)
    lr: float | None = option(None, "fine-tuning learning rate (default: a fraction of the training optimizer's "
                              "default)")
    max_steps: int | None = option(None, "also stop fine-tuning after this many steps")
    # re-estimate BatchNorm statistics before folding and quantising
    recalibrate_bn: bool = option(True, "keep the model's BatchNorm statistics instead of re-estimating them",
                                  flag="--no-bn-recalibration")

    def __post_init__(self) -> None:
        COMPRESS_METHODS[self.method]  # raises an InputError that lists the valid names
        self.method = str(self.method).strip().lower()
        ratio = self.ratio
        checks = [
            (ratio is None or self.method in PRUNING,
             f"ratio applies to the pruning methods ({', '.join(PRUNING)}), not to {self.method!r}"),
            (ratio is None or 0 < ratio < 1, f"ratio must lie strictly between 0 and 1, got {ratio}"),
            (self.minutes >= 0, f"minutes must be >= 0, got {self.minutes}"),
            (self.method != "qat" or self.minutes > 0 or bool(self.max_steps),
             "qat needs a fine-tuning budget: minutes > 0"),
            (self.calibration_patches >= 1, f"calibration_patches must be >= 1, got {self.calibration_patches}"),
            (self.patch_size >= 16 and self.patch_size % 16 == 0,
             f"patch_size must be a multiple of 16 and >= 16, got {self.patch_size}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.max_steps is None or self.max_steps >= 0, f"max_steps must be >= 0, got {self.max_steps}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        check_choices(self)

    @property
    def pruning_ratio(self) -> float:
        return DEFAULT_RATIO if self.ratio is None else float(self.ratio)

    @property
    def fine_tunes(self) -> bool:
        return self.method in FINE_TUNING and (self.minutes > 0 or bool(self.max_steps))

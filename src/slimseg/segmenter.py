"""A runnable model: a callable on image batches, plus the configs it was made with.

Every model kind (the float U-Net, and each compressed kind) loads from the model file into a
:class:`Segmenter`, so prediction and evaluation take one path whatever the kind.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import io
from .config import ModelConfig, NormConfig, PredictConfig
from .errors import ModelFileError
from .events import Progress, run
from .model import UNet
from .predict import Prediction, predict
from .registry import Registry

ModelFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Segmenter:
    model_fn: ModelFn
    model_config: ModelConfig
    norm: NormConfig
    kind: str = "float"
    meta: dict[str, Any] = field(default_factory=dict)
    module: torch.nn.Module | None = None  # the float module where there is one

    def predict(self, image: np.ndarray, cfg: PredictConfig = PredictConfig()) -> Generator[Progress, None, Prediction]:
        return predict(self.model_fn, image, self.norm, cfg, self.model_config.in_channels)

    def predict_labels(self, image: np.ndarray, cfg: PredictConfig = PredictConfig()) -> np.ndarray:
        return run(self.predict(image, cfg)).labels

    @classmethod
    def from_module(cls, model: UNet, norm: NormConfig, meta: dict[str, Any] | None = None) -> Segmenter:
        model = model.eval()
        return cls(model, model.config, norm, "float", meta or {}, model)


# kind -> loader(ModelFile) -> Segmenter; compressed kinds register theirs in slimseg.compress
MODEL_KINDS: Registry[Callable[[io.ModelFile], Segmenter]] = Registry("model kind")


@MODEL_KINDS.register("float")
def _load_float(mf: io.ModelFile) -> Segmenter:
    model = UNet(mf.model_config)
    try:
        model.load_state_dict(mf.state_dict())
    except RuntimeError as err:
        raise ModelFileError(f"the weights do not fit the model settings stored beside them: {err}") from None
    return Segmenter.from_module(model, mf.norm, mf.meta)


def load_segmenter(path: str | Path) -> Segmenter:
    """Load any slimseg model file (float or compressed) for prediction."""
    mf = io.load(path)
    if mf.kind not in MODEL_KINDS:
        try:
            from . import compress  # noqa: F401  (registers the compressed kinds)
        except ImportError as err:
            raise ModelFileError(f"{path}: model kind {mf.kind!r} needs an optional dependency: {err}") from None
    if mf.kind not in MODEL_KINDS:
        raise ModelFileError(f"{path}: unknown model kind {mf.kind!r}; upgrade napari-slimseg")
    seg = MODEL_KINDS[mf.kind](mf)
    seg.meta.setdefault("path", str(path))
    return seg

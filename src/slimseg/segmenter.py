"""A runnable model: a callable on image batches, plus the configs it was made with.

Every model kind (the float U-Net, and each compressed kind; :mod:`slimseg.kinds`) loads from the
model file into a :class:`Segmenter`, so prediction and evaluation take one path whatever the kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import io, kinds
from .config import ModelConfig, NormConfig, PredictConfig, from_dict
from .events import Progress, run
from .kinds import float32
from .model import UNet
from .predict import Prediction, predict

ModelFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Segmenter:
    model_fn: ModelFn
    model_config: ModelConfig
    norm: NormConfig
    kind: str = "float"
    meta: dict[str, Any] = field(default_factory=dict)
    module: torch.nn.Module | None = None  # the float module where there is one
    # thresholds tuned on the validation images after training (stored in the model file)
    predict_config: PredictConfig = field(default_factory=PredictConfig)

    def predict(self, image: np.ndarray, cfg: PredictConfig | None = None) -> np.ndarray:
        """The instance labels of ``image`` (uint32, 0 = background)."""
        return run(self.predict_events(image, cfg)).labels

    def predict_events(self, image: np.ndarray, cfg: PredictConfig | None = None
                       ) -> Generator[Progress, None, Prediction]:
        """Tiled prediction as a generator of progress events returning the :class:`Prediction`
        (labels and probabilities); ``cfg`` defaults to the model's own (tuned) settings."""
        return predict(self.model_fn, image, self.norm, cfg or self.predict_config, self.model_config.in_channels)

    def settings(self, **changes: Any) -> PredictConfig:
        """The model's own prediction settings with some changed (``tile=256, tta=True``, ...)."""
        return dataclasses.replace(self.predict_config, **changes)

    @classmethod
    def from_module(cls, model: UNet, norm: NormConfig, meta: dict[str, Any] | None = None) -> Segmenter:
        """A float U-Net, run as :func:`slimseg.kinds.float32.runnable` runs it (eval mode, BatchNorm
        folded, channels-last). ``module`` stays the model as given."""
        runnable = float32.runnable(model)
        meta = meta or {}
        return cls(runnable.model_fn, model.config, norm, "float", meta, runnable.module, predict_config_of(meta))


def predict_config_of(meta: dict[str, Any]) -> PredictConfig:
    """The prediction settings stored in a model file's metadata (defaults where absent)."""
    stored = meta.get("predict")
    if not isinstance(stored, dict):
        return PredictConfig()
    try:
        return from_dict(PredictConfig, stored)
    except (TypeError, ValueError):
        return PredictConfig()


def from_model_file(mf: io.ModelFile, source: str = "model", engine: str = "auto") -> Segmenter:
    """A runnable model from model-file content (loaded, or in memory); ``source`` names it in errors.
    ``engine`` is the int8 engine (:data:`slimseg.kinds.ENGINES`) where the kind chooses one."""
    meta = dict(mf.meta)
    runnable = kinds.load(mf, meta, engine, source)
    return Segmenter(runnable.model_fn, mf.model_config, mf.norm, mf.kind, meta, runnable.module,
                     predict_config_of(meta))


def load_segmenter(path: str | Path, engine: str = "auto") -> Segmenter:
    """Load any slimseg model file (float or compressed) for prediction; ``engine`` as in
    :func:`from_model_file`."""
    seg = from_model_file(io.load(path), str(path), engine)
    seg.meta.setdefault("path", str(path))
    return seg

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
from .config import ChannelConfig, ModelConfig, NormConfig, PredictConfig, from_dict
from .data.axes import Standard, standardize
from .events import Progress, run
from .kinds import float32
from .model import UNet
from .predict import Prediction, predict
from .stacks import StackJob

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

    def predict(self, image: Any, cfg: PredictConfig | None = None, channels: ChannelConfig | None = None
                ) -> np.ndarray:
        """The instance labels of ``image`` (uint32, 0 = background): a 2D image, or a stack (Z, T, ...
        before Y and X) segmented plane by plane into labels of its shape; channels on any axis that
        :func:`slimseg.data.axes.standardize` can tell, or that ``channels`` names."""
        return run(self.stack_job(image, cfg, channels).run()).labels

    def predict_events(self, image: np.ndarray, cfg: PredictConfig | None = None
                       ) -> Generator[Progress, None, Prediction]:
        """Tiled prediction of one 2D image ((H, W), or (H, W, C) channel-last) as a generator of progress
        events returning the :class:`Prediction` (labels and probabilities); ``cfg`` defaults to the
        model's own (tuned) settings. Stacks: :meth:`stack_job`."""
        return predict(self.model_fn, image, self.norm, cfg or self.predict_config, self.model_config.in_channels,
                       multiple=self.model_config.size_multiple)

    def standardize(self, image: Any, channels: ChannelConfig | None = None, name: str = "image") -> Standard:
        """``image`` (an array, or a reader's ``ImageData``) in the core's layout for this model: its
        channel count, and the channels it was trained on unless ``channels`` chooses others."""
        channels = channels or ChannelConfig()
        return standardize(image, in_channels=self.model_config.in_channels,
                           channels=channels.channels or self.model_config.channels,
                           channel_axis=channels.channel_axis, name=name)

    def stack_job(self, image: Any, cfg: PredictConfig | None = None, channels: ChannelConfig | None = None,
                  keep_probabilities: bool = False, name: str = "image") -> StackJob:
        """A :class:`~slimseg.stacks.StackJob` over the planes of ``image`` (one plane for a 2D image):
        ``job.run()`` is the generator, ``job.result()`` the planes done so far."""
        cfg = cfg or self.predict_config
        stack = image if isinstance(image, Standard) else self.standardize(image, channels, name)
        return StackJob(lambda plane: self.predict_events(plane, cfg), stack, cfg.stitch_threshold,
                        keep_probabilities)

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
    """The model's own prediction settings stored in its metadata: those tuned with it (thresholds, seeds,
    smallest object, batch size: the fields kept off the command line). How to run it (tile, overlap,
    flips, stitching) is this version's default, whatever the file was written with; defaults where absent."""
    stored = meta.get("predict")
    if not isinstance(stored, dict):
        return PredictConfig()
    own = {f.name for f in dataclasses.fields(PredictConfig) if f.metadata.get("cli") is False}
    try:
        return from_dict(PredictConfig, {k: v for k, v in stored.items() if k in own})
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
    """Load any slimseg model file (float or compressed), or a built-in model by name
    (:func:`slimseg.models.resolve_model`), for prediction; ``engine`` as in :func:`from_model_file`."""
    from .models import resolve_model

    path = resolve_model(path)
    seg = from_model_file(io.load(path), str(path), engine)
    seg.meta.setdefault("path", str(path))
    return seg

"""The blocking Python API: ``slimseg.train``, ``slimseg.load``, ``slimseg.evaluate``.

Each call drains a generator of progress events (``Trainer.fit``, ``Segmenter.predict_events``,
``slimseg.evaluation.evaluate_events``); GUIs and progress bars use those generators directly.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import ChannelConfig, ModelConfig, PredictConfig, TrainConfig
from .errors import InputError
from .events import print_progress, run

if TYPE_CHECKING:
    from .segmenter import Segmenter
    from .training import TrainResult

Images = "str | os.PathLike | Sequence[np.ndarray]"


def _reporter(progress: bool | Callable[[Any], None]) -> Callable[[Any], None] | None:
    if callable(progress):
        return progress
    return print_progress if progress else None


def _data(images: Any, labels: Any, names: Sequence[str] | None, what: str,
          channels: ChannelConfig | None = None, in_channels: int | None = None):
    """(names, images, labels) from a DATA folder (images/ + labels/) or from arrays, as 2D planes with
    channels last: stacks give one pair per plane, channels are found or chosen by ``channels``."""
    if isinstance(images, (str, os.PathLike)):
        if labels is not None:
            raise InputError(f"{what}: give a DATA folder or images and labels, not both")
        from .data.folder import load_folder

        return load_folder(images, channels, in_channels)
    if labels is None:
        raise InputError(f"{what}: give the instance labels of the images (or a DATA folder)")
    images, labels = list(images), list(labels)
    chosen = channels is not None and (channels.channels is not None or channels.channel_axis is not None)
    if not chosen and all(_is_plane(i, lb) for i, lb in zip(images, labels)):
        return names, images, labels  # already what the core takes (or check_pairs says why not)
    from .data.axes import training_planes

    channels = channels or ChannelConfig()
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    out: tuple[list, list, list] = ([], [], [])
    for img, lab, nm in zip(images, labels, names):
        for part, got in zip(out, training_planes(img, lab, channels=channels.channels, in_channels=in_channels,
                                                   channel_axis=channels.channel_axis, name=nm)):
            part.extend(got)
    return out


def _is_plane(image: Any, labels: Any) -> bool:
    """A 2D image, or one with channels last, next to 2D labels."""
    shape, label_shape = np.shape(image), np.shape(labels)
    return len(label_shape) == 2 and (len(shape) == 2 or (len(shape) == 3 and shape[:2] == label_shape))


def _config(cls: type, base: Any, options: dict[str, Any]) -> Any:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise InputError(f"unknown {cls.__name__} option(s) {', '.join(unknown)}; choose from: {', '.join(sorted(fields))}")
    return dataclasses.replace(base or cls(), **options)


def train(images: Any, labels: Sequence[np.ndarray] | None = None, *, config: TrainConfig | None = None,
          model: ModelConfig | None = None, names: Sequence[str] | None = None,
          progress: bool | Callable[[Any], None] = False, channels: Sequence[int] | None = None,
          channel_axis: int | None = None, init: Any = None, **options: Any) -> TrainResult:
    """Train a U-Net on ``images`` and their instance ``labels`` (or a DATA folder) and return the result
    (``result.save(path)``, ``result.segmenter()``). ``options`` are :class:`TrainConfig` fields, e.g.
    ``minutes=5, optimizer="rmsprop"``; ``progress=True`` prints progress to stderr. Ctrl-C stops training
    and returns the best model so far. Stacks train as one image per plane; ``channels`` (indices along
    ``channel_axis``, found from the shapes where not given) are recorded in the model. ``init`` (a
    float model file, a built-in name, or a loaded model file) fine-tunes that model instead of training a
    new one: its architecture and normalisation are kept, and unless set the learning rate is a tenth of
    the optimizer's own and ``epochs`` is :data:`slimseg.config.FINETUNE_EPOCHS`."""
    from .config import FINETUNE_EPOCHS
    from .training import Trainer

    start = None
    if init is not None:
        from .start import load_start

        start = load_start(init)
        if config is None and "epochs" not in options:
            options["epochs"] = FINETUNE_EPOCHS
        if channels is None:
            channels = start.model_file.model_config.channels
    chosen = ChannelConfig(tuple(channels) if channels is not None else None, channel_axis)
    in_channels = start.model_file.model_config.in_channels if start is not None else None
    names, images, labels = _data(images, labels, names, "train", chosen, in_channels)
    if start is not None:
        model = None
    elif model is None and chosen.channels is not None:
        model = ModelConfig(in_channels=len(chosen.channels), channels=chosen.channels)
    elif model is not None and chosen.channels is not None and model.channels is None:
        model = dataclasses.replace(model, in_channels=len(chosen.channels), channels=chosen.channels)
    trainer = Trainer(images, labels, _config(TrainConfig, config, options), model, names=names, init=start)
    try:
        return run(trainer.fit(), _reporter(progress))
    except KeyboardInterrupt:
        warnings.warn("training interrupted: returning the best model so far", stacklevel=2)
        return trainer.result()


def load(path: str | Path, engine: str = "auto") -> Segmenter:
    """Load a slimseg model file (any kind), or a built-in model by name (``load("nuclei")``; ``slimseg
    models`` lists them), for prediction: ``load(path).predict(image) -> labels``."""
    from .segmenter import load_segmenter

    return load_segmenter(path, engine=engine)


def evaluate(model: Segmenter | str | Path, images: Any, labels: Sequence[np.ndarray] | None = None, *,
             names: Sequence[str] | None = None, progress: bool | Callable[[Any], None] = False,
             channels: Sequence[int] | None = None, channel_axis: int | None = None,
             **settings: Any) -> dict[str, Any]:
    """Score ``model`` (a loaded model or a model file) on images with ground-truth instance labels (or a
    DATA folder): pixel and instance scores, pooled and per image. ``settings`` change the model's own
    :class:`PredictConfig` (``tta=True``, ...)."""
    from .evaluation import evaluate_events

    seg = load(model) if isinstance(model, (str, os.PathLike)) else model  # a file or a built-in name
    chosen = ChannelConfig(tuple(channels) if channels is not None else seg.model_config.channels, channel_axis)
    names, images, labels = _data(images, labels, names, "evaluate", chosen, seg.model_config.in_channels)
    cfg = _config(PredictConfig, seg.predict_config, settings)
    return run(evaluate_events(seg, images, labels, cfg, names=names), _reporter(progress))

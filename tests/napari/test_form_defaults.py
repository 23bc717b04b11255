"""Each widget's form starts from its config dataclass's defaults (written once, in slimseg.config)."""

from __future__ import annotations

import dataclasses

import pytest

from slimseg.compress import CompressConfig
from slimseg.config import ModelConfig, PredictConfig, TrainConfig
from slimseg.optim import default_lr

pytestmark = pytest.mark.gui


def test_forms_start_from_the_config_defaults(make_napari_viewer, monkeypatch):
    from slimseg import models
    from slimseg._widgets.compress import CompressWidget
    from slimseg._widgets.predict import PredictWidget
    from slimseg._widgets.train import TrainWidget

    viewer = make_napari_viewer()
    cfg, model_cfg = TrainWidget(viewer).configs()
    assert cfg == dataclasses.replace(TrainConfig(), lr=default_lr(TrainConfig().optimizer))
    assert model_cfg == ModelConfig()
    monkeypatch.setattr(models, "BUILTINS", {})  # no model chosen: the form shows the defaults, not its thresholds
    predict = PredictWidget(viewer)
    predict.own_thresholds.value = True
    assert dataclasses.replace(PredictConfig(), **predict.settings()) == PredictConfig()
    compress = CompressWidget(viewer)
    defaults = CompressConfig()
    assert compress.config() == dataclasses.replace(defaults, minutes=0.0)  # ptq does not fine-tune
    assert compress.minutes.value == defaults.minutes and compress.ratio.value == defaults.pruning_ratio

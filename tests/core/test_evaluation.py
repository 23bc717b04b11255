"""The one model scorer: scores, latency per image, kept predictions, and evaluate_events() on top of it."""

import numpy as np
import pytest
import torch

from slimseg.config import ModelConfig, NormConfig
from slimseg.errors import InputError
from slimseg.evaluation import WARM_UP_CROP, evaluate_events, score_model
from slimseg.events import Progress, run
from slimseg.metrics import score_images
from slimseg.model import UNet
from slimseg.segmenter import Segmenter


@pytest.fixture
def segmenter():
    torch.manual_seed(0)
    return Segmenter.from_module(UNet(ModelConfig(widths=(4, 8))), NormConfig())


def test_score_model_scores_times_and_keeps_predictions(segmenter, disks):
    images, labels = disks
    events = []
    scores = run(score_model(segmenter, images, labels, names=list("abcd"), keep_labels=True), events.append)
    assert [p.shape for p in scores.labels] == [im.shape for im in images]
    assert scores.summary == score_images(scores.labels, labels)  # the kept predictions are what was scored
    assert [r["name"] for r in scores.per_image] == list("abcd") and scores.latency_ms > 0
    mine = [(e.done, e.total, e.message) for e in events if isinstance(e, Progress) and e.stage == "evaluate"]
    assert mine == [(1, 4, "a"), (2, 4, "b"), (3, 4, "c"), (4, 4, "d")]
    assert run(evaluate_events(segmenter, images, labels, names=list("abcd"))) == scores.report()
    assert not run(score_model(segmenter, images, labels)).labels  # not kept unless asked


def test_warm_up_segments_a_crop_first_untimed(segmenter, monkeypatch):
    images = [np.zeros((100, 80), np.uint8), np.zeros((40, 50), np.uint8)]
    labels = [np.zeros(im.shape, np.uint16) for im in images]
    seen = []
    predict = segmenter.predict_events

    def spy(image, cfg=None):
        seen.append(image.shape)
        return predict(image, cfg)

    monkeypatch.setattr(segmenter, "predict_events", spy)
    scores = run(score_model(segmenter, images, labels, warm_up=True))
    assert seen == [(WARM_UP_CROP, WARM_UP_CROP), (100, 80), (40, 50)] and len(scores.per_image) == 2
    seen.clear()
    run(score_model(segmenter, images, labels))
    assert seen == [(100, 80), (40, 50)]


def test_score_model_needs_one_label_image_per_image(segmenter, disks):
    images, labels = disks
    with pytest.raises(InputError, match="one label image per image"):
        run(score_model(segmenter, images, labels[:2]))
    with pytest.raises(InputError, match="differs from its image"):
        run(score_model(segmenter, images[:1], [np.zeros((5, 5), np.uint16)]))

"""Built-in models in the widgets' lists, the Train widget's start-from choice and pair preselection."""

from __future__ import annotations

import numpy as np
import pytest

from slimseg._widgets._models import BUILTIN
from slimseg._widgets.predict import PredictWidget
from slimseg._widgets.train import NEW_MODEL, TrainWidget

pytestmark = pytest.mark.gui


def test_builtins_listed_and_the_one_pair_preselected(make_napari_viewer):
    viewer = make_napari_viewer()
    img = viewer.add_image(np.zeros((64, 64), np.float32), name="img")
    lab = viewer.add_labels(np.zeros((64, 64), np.uint16), name="lab")
    predict, train = PredictWidget(viewer), TrainWidget(viewer)
    assert BUILTIN + "nuclei" in predict.model.choice.choices
    assert train.image_layers.value == [img] and train.label_layers.value == [lab]
    assert train.start_from.value == NEW_MODEL and BUILTIN + "nuclei" in train.start_from.choices
    assert train.start_model() is None
    train.start_from.value = BUILTIN + "nuclei"  # not shipped yet: a clear message
    with pytest.raises(ValueError, match="not shipped"):
        train.start_model()
    viewer.add_labels(np.zeros((64, 64), np.uint16), name="lab2")
    assert TrainWidget(viewer).label_layers.value == []  # two Labels layers: ambiguous, nothing chosen

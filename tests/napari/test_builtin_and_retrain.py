"""Built-in models in the widgets' lists, the Train widget's start-from choice and pair preselection."""

from __future__ import annotations

import numpy as np
import pytest

from slimseg._widgets._models import BUILTIN
from slimseg._widgets.predict import PredictWidget
from slimseg._widgets.train import NEW_MODEL, TrainWidget

pytestmark = pytest.mark.gui


def test_builtins_listed_and_the_one_pair_preselected(make_napari_viewer, monkeypatch):
    from slimseg import models

    shipped = models.BUILTINS["nuclei"]
    if shipped.available:  # the shipped weights start a fine-tuning run
        from slimseg.start import load_start

        assert load_start("nuclei").model_file.model_config.in_channels == 1
    # as if this version did not ship the file: the widgets still list the name, and say so when chosen
    monkeypatch.setitem(models.BUILTINS, "nuclei", models.BuiltinModel("nuclei", "absent.slimseg", shipped.description))
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


def test_predict_correct_retrain_compare_loop(qtbot, make_napari_viewer, sample, model_file, notes):
    """The loop with real clicks: Predict -> correct the labels as with the brush -> Retrain from that
    model on the corrected layer -> a new, different model, compared with the old one."""
    from gui_helpers import TINY, click, messages, set_form, wait_job

    from slimseg import io
    from slimseg._widgets._layers import edited
    from slimseg._widgets._session import session_models
    from slimseg._widgets.compare import CompareWidget

    viewer = make_napari_viewer()
    image, truth = sample
    img = viewer.add_image(image, name="nuclei")
    viewer.add_labels(truth, name="truth")
    store = session_models(viewer)
    store.add("tiny", io.load(model_file))
    predict, train, compare = PredictWidget(viewer), TrainWidget(viewer), CompareWidget(viewer)
    for widget in (predict, train, compare):
        viewer.window.add_dock_widget(widget)
    predict.model.choice.value, predict.image.value = "tiny", img
    click(qtbot, predict.run_button)
    wait_job(qtbot, predict)
    seg = viewer.layers["nuclei segmentation"]
    assert seg.metadata["slimseg_image"] == "nuclei" and seg.metadata["slimseg_start"] == "tiny"
    click(qtbot, train.retrain_button)  # nothing corrected yet
    assert "has not been corrected" in messages(notes, "error") and not train.running

    # the user's corrections: erase an object, paint new ones with the brush (as napari's paint tool does)
    ids = [i for i in np.unique(seg.data) if i]
    if ids:
        seg.data[seg.data == ids[0]] = 0
        seg.refresh()
    seg.brush_size = 12
    new_id = int(seg.data.max()) + 1
    for k, t in enumerate(t for t in np.unique(truth[:, :480]) if t):
        ys, xs = np.nonzero(truth == t)
        seg.paint((int(ys.mean()), int(xs.mean())), new_id + k)
        if k == 11:
            break
    assert edited(seg)
    corrected = seg.data.copy()

    click(qtbot, predict.run_button)  # a later Predict never overwrites the corrected layer
    wait_job(qtbot, predict)
    assert np.array_equal(seg.data, corrected)
    assert len([lay for lay in viewer.layers if lay.name.startswith("nuclei segmentation")]) == 2
    assert "your corrections in 'nuclei segmentation' are kept" in predict.status.value

    set_form(train, epochs=2, val_fraction=0.2, **TINY)
    viewer.layers.selection.active = seg
    click(qtbot, train.retrain_button)  # one click: the corrected layer, its image, the model that made it
    assert train.running
    assert train.start_from.value == "tiny" and train.label_layers.value == [seg] and train.image_layers.value == [img]
    click(qtbot, predict.run_button)  # Predict with the model being retrained: a clear message
    assert "'tiny' is being retrained in the Train widget" in messages(notes, "error") and not predict.running
    wait_job(qtbot, train)
    new = store.get(train.last_model)
    assert new.meta["training"]["init"]["source"] == "tiny"
    old = store.get("tiny")
    assert set(new.tensors) == set(old.tensors)
    assert any(not np.array_equal(new.tensors[k], old.tensors[k]) for k in old.tensors)  # it learnt
    assert np.array_equal(seg.data, corrected)  # training read the layer, never wrote it
    assert predict.model.choice.value == train.last_model  # Predict now offers the retrained model

    assert set(compare.models.session.value) == {"tiny", train.last_model}  # before and after, chosen
    compare.image.value, compare.truth.value = img, viewer.layers["truth"]
    click(qtbot, compare.run_button)
    wait_job(qtbot, compare)
    assert list(compare.rows) == ["tiny", train.last_model] and compare.table.shape[1] == 2  # side by side

    seg.data[...] = 0  # everything erased: nothing to retrain on
    seg.refresh()
    click(qtbot, train.retrain_button)
    assert "holds no labels" in messages(notes, "error")

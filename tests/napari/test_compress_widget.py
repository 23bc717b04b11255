"""The Compress widget driven by clicks: PTQ and structured pruning of a tiny model on the sample layers,
then the compressed model predicts and compares next to its float source."""

from __future__ import annotations

import numpy as np
import pytest
from gui_helpers import click, messages, set_form, wait_job

from slimseg import io
from slimseg._widgets._models import FROM_FILE
from slimseg._widgets._session import session_models
from slimseg._widgets.compare import CompareWidget
from slimseg._widgets.compress import CompressWidget
from slimseg.compress.methods import int8_backend
from slimseg._widgets.predict import PredictWidget

pytestmark = pytest.mark.gui
SMALL = {"calibration_patches": 8, "patch": 32, "batch": 4}


@pytest.fixture
def compress_widget(viewer, model_file):
    session_models(viewer).add("tiny", io.load(model_file))
    widget = CompressWidget(viewer)
    viewer.window.add_dock_widget(widget)
    set_form(widget, image_layers=[viewer.layers["img"]], **SMALL)
    return widget


def test_ptq_then_predict_and_compare(qtbot, viewer, compress_widget, tmp_path, notes, built):
    widget = compress_widget
    assert widget.model.choice.value == "tiny"
    assert not widget.ratio.enabled and widget.backend.enabled  # fields follow the method
    click(qtbot, widget.run_button)
    wait_job(qtbot, widget, timeout=180_000)
    assert not messages(notes, "error")
    name = widget.last_model
    assert name == "tiny > ptq"
    compressed = session_models(viewer).get(name)
    kind = f"int8-{int8_backend('auto')[0]}"  # the widget's default backend is auto: chosen by the CPU
    assert compressed.kind == kind
    assert widget.table.shape == (5, 2)  # measures x (source, compressed)
    size_ratio = float(widget.table.data[1][1])  # row "size x", compressed column
    assert 0 < size_ratio < 1  # int8 weights: a smaller file
    assert "x the speed" in messages(notes, "info")

    widget.save_path.value = tmp_path / "tiny-int8"
    click(qtbot, widget.save_button)
    assert io.load(tmp_path / "tiny-int8.slimseg").kind == kind

    predict = PredictWidget(viewer)
    viewer.window.add_dock_widget(predict)
    predict.model.choice.value = name
    predict.image.value = viewer.layers["img"]
    click(qtbot, predict.run_button)
    wait_job(qtbot, predict, timeout=120_000)
    assert viewer.layers["img segmentation"].data.shape == (4, 256, 320)
    assert sum(mf is compressed for mf in built) == 1  # built to measure it, then reused to predict

    compare = CompareWidget(viewer)
    viewer.window.add_dock_widget(compare)
    compare.models.session.value = ["tiny", name]
    compare.image.value, compare.truth.value = viewer.layers["img"], viewer.layers["lab"]
    click(qtbot, compare.run_button)
    wait_job(qtbot, compare, timeout=120_000)
    assert list(compare.rows) == ["tiny", name]
    assert compare.rows[name]["size_mb"] < compare.rows["tiny"]["size_mb"]
    assert not messages(notes, "error")


def test_structured_pruning_shrinks_the_model(qtbot, viewer, compress_widget):
    widget = compress_widget
    widget.method.value = "prune-structured"
    assert widget.ratio.enabled and not widget.backend.enabled
    set_form(widget, ratio=0.5, minutes=0.0)
    click(qtbot, widget.run_button)
    wait_job(qtbot, widget, timeout=180_000)
    pruned = session_models(viewer).get(widget.last_model)
    source = session_models(viewer).get("tiny")
    assert pruned.kind == "float"
    assert sum(a.size for a in pruned.tensors.values()) < sum(a.size for a in source.tensors.values())


def test_compress_refuses_bad_input(qtbot, viewer, compress_widget, notes):
    widget = compress_widget
    widget.image_layers.value = []
    click(qtbot, widget.run_button)
    assert "choose at least one calibration Image layer" in messages(notes, "error")
    set_form(widget, image_layers=[viewer.layers["img"]], method="qat", minutes=0.5)
    click(qtbot, widget.run_button)
    assert "qat fine-tunes the model: choose the Labels layers" in messages(notes, "error")
    session_models(viewer).add("int8", io.ModelFile(session_models(viewer).get("tiny").model_config,
                                                    session_models(viewer).get("tiny").norm, {}, "int8-pt2e"))
    widget.model.choice.value = "int8"
    click(qtbot, widget.run_button)
    assert "'int8' is already compressed" in messages(notes, "error")
    widget.model.choice.value = FROM_FILE
    click(qtbot, widget.run_button)
    assert "no model file chosen" in messages(notes, "error")
    assert widget.job is None and widget.run_button.enabled
    assert len(viewer.layers) == 2 and np.asarray(viewer.layers["lab"].data).max() > 0

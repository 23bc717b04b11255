"""Predict and Compare widgets driven by clicks, on the shipped sample with a tiny trained model."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from gui_helpers import click, quadrants, tick, wait_job

from slimseg import io
from slimseg._widgets._models import FROM_FILE
from slimseg._widgets._session import session_models
from slimseg._widgets.compare import CompareWidget
from slimseg._widgets.predict import PredictWidget

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer_with_sample(make_napari_viewer, sample):
    viewer = make_napari_viewer()
    image, labels = sample
    viewer.add_image(image, name="nuclei", scale=(0.5, 0.25), translate=(10.0, 20.0))
    viewer.add_labels(labels, name="truth", scale=(0.5, 0.25), translate=(10.0, 20.0))
    return viewer


def test_predict_into_labels_layer_keeping_placement_and_updating_on_rerun(qtbot, viewer_with_sample, model_file,
                                                                           tmp_path):
    viewer = viewer_with_sample
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    mf = io.load(model_file)
    mf.meta["predict"] = {**mf.meta["predict"], "threshold": 0.4, "seed_threshold": 0.7}  # as tuned by training
    tuned_file = io.save(mf, tmp_path / "tuned.slimseg")
    widget.model.choice.value = FROM_FILE
    widget.model.file.value = tuned_file
    assert (widget.threshold.value, widget.seed_threshold.value) == (0.4, 0.7)  # shown, greyed out
    widget.image.value = viewer.layers["nuclei"]
    widget.tile.value, widget.overlap.value = 128, 16  # 512 x 640 -> 4 x 5 tiles
    widget.probabilities.value = True
    seen = []
    widget.run_button.changed.connect(lambda *_: widget.job.worker.yielded.connect(lambda e: seen.append(e.done)))
    click(qtbot, widget.run_button)
    wait_job(qtbot, widget)
    out = viewer.layers["nuclei segmentation"]
    assert out.data.shape == (512, 640) and np.issubdtype(out.data.dtype, np.integer)
    assert tuple(out.scale) == (0.5, 0.25) and tuple(out.translate) == (10.0, 20.0)
    prob = viewer.layers["nuclei foreground probability"]
    assert prob.data.shape == (512, 640) and 0 <= prob.data.min() and prob.data.max() <= 1
    assert len(set(seen)) >= 4 and max(seen) == 1000  # tiled prediction reports progress row by row
    assert widget.progress.value == 1000

    assert not widget.threshold.enabled  # the model's tuned thresholds unless the user asks
    widget.own_thresholds.value = True
    widget.threshold.value = 0.95  # a stricter threshold: fewer foreground pixels, same layer
    n_layers, before = len(viewer.layers), np.count_nonzero(out.data)
    click(qtbot, widget.run_button)
    wait_job(qtbot, widget)
    assert len(viewer.layers) == n_layers and viewer.layers["nuclei segmentation"] is out
    assert np.count_nonzero(out.data) <= before


def test_large_nuclei_are_predicted_at_their_scale_unless_unticked(qtbot, viewer_with_sample):
    """The sample's nuclei (~39 px) are more than twice the built-in model's training objects (13.7 px):
    the widget predicts as the core does, at half scale, and at the image's own scale once unticked."""
    from slimseg import load
    from slimseg._widgets._models import BUILTIN

    viewer = viewer_with_sample
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.choice.value, widget.image.value = BUILTIN + "nuclei", viewer.layers["nuclei"]
    widget.new_layer.value = True
    assert widget.rescale.value
    image = viewer.layers["nuclei"].data
    seg = load("nuclei")
    for rescale in (True, False):
        if not rescale:
            tick(qtbot, widget.rescale)
            assert widget.settings()["rescale"] is False
        n = len(viewer.layers)
        click(qtbot, widget.run_button)
        wait_job(qtbot, widget)
        assert len(viewer.layers) == n + 1
        assert np.array_equal(viewer.layers[-1].data, seg.predict(image, seg.settings(rescale=rescale)))
    ticked, unticked = viewer.layers[-2].data, viewer.layers[-1].data
    assert not np.array_equal(ticked, unticked)


def test_predict_stack_layer(qtbot, viewer_with_sample, model_file, sample):
    viewer = viewer_with_sample
    stack_layer = viewer.add_image(quadrants(sample[0]), name="stack")
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.choice.value = FROM_FILE
    widget.model.file.value = model_file
    widget.image.value = stack_layer
    click(qtbot, widget.run_button)
    wait_job(qtbot, widget)
    assert viewer.layers["stack segmentation"].data.shape == (4, 256, 320)


def test_compare_two_models_table_error_layer_csv(qtbot, viewer_with_sample, model_file, tmp_path):
    viewer = viewer_with_sample
    session_models(viewer).add("session copy", io.load(model_file))
    widget = CompareWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.models.session.value = ["session copy"]
    widget.models.files.value = [model_file]
    widget.image.value, widget.truth.value = viewer.layers["nuclei"], viewer.layers["truth"]
    click(qtbot, widget.run_button)
    wait_job(qtbot, widget)
    assert list(widget.rows) == ["session copy", "tiny.slimseg"]
    assert widget.table.shape == (9, 2)  # one column per model
    a, b = widget.rows.values()
    assert a["dice"] == pytest.approx(b["dice"]) and a["size_mb"] == pytest.approx(b["size_mb"])
    assert b["size_mb"] * 1e6 == pytest.approx(model_file.stat().st_size, rel=0.05)

    widget.error_model.value = "tiny.slimseg"
    click(qtbot, widget.error_button)
    errors = viewer.layers["nuclei errors"]
    assert tuple(errors.scale) == (0.5, 0.25) and set(np.unique(errors.data)) <= {0, 1, 2}
    truth = viewer.layers["truth"].data
    pred = widget.predictions["tiny.slimseg"][0]
    assert np.count_nonzero(errors.data == 2) == np.count_nonzero((truth > 0) & (pred == 0))

    widget.csv_path.value = tmp_path / "scores.csv"
    click(qtbot, widget.csv_button)
    with open(tmp_path / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == ["session copy", "tiny.slimseg"]
    assert set(rows[0]) >= {"dice", "jaccard", "precision", "recall", "f1", "instance_f1", "dsb_score",
                            "size_mb", "latency_ms"}


def test_segment_again_reuses_the_built_model(qtbot, viewer_with_sample, model_file, built):
    """Building a runnable model is seconds for int8 (its graph is rebuilt and lowered): a second click with
    the same session model reuses it, with the same labels; a model replaced in the store is built anew."""
    viewer = viewer_with_sample
    store = session_models(viewer)
    name = store.add("session copy", io.load(model_file))
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.choice.value = name
    widget.image.value = viewer.layers["nuclei"]
    runs = []
    for _ in range(2):
        click(qtbot, widget.run_button)
        wait_job(qtbot, widget)
        runs.append(viewer.layers["nuclei segmentation"].data.copy())
    assert built == [store.get(name)]
    assert np.array_equal(runs[0], runs[1]) and runs[0].max() > 0
    store.replace(name, io.load(model_file))
    click(qtbot, widget.run_button)
    wait_job(qtbot, widget)
    assert len(built) == 2 and built[1] is store.get(name)

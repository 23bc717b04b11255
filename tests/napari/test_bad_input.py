"""Bad input in the GUI: each case gets a clear notification, napari keeps running, and no user layer changes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from gui_helpers import TINY, click, messages, quadrants, set_form, wait_job

from slimseg._widgets._models import FROM_FILE
from slimseg._widgets._session import session_models
from slimseg._widgets.predict import PredictWidget
from slimseg._widgets.train import TrainWidget

pytestmark = pytest.mark.gui


def snapshot(viewer):
    return {layer.name: np.array(layer.data, copy=True) for layer in viewer.layers}


def assert_unchanged(viewer, before):
    for name, data in before.items():
        assert np.array_equal(viewer.layers[name].data, data), name


@pytest.fixture
def train(viewer):
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    set_form(widget, epochs=1000, val_fraction=0.25, **TINY)
    return widget


def test_train_without_layers(qtbot, viewer, train, notes):
    set_form(train, image_layers=[], label_layers=[])  # the one image/labels pair is preselected: unselect it
    click(qtbot, train.start_button)
    assert "choose an Image layer and its Labels layer" in messages(notes, "error")
    assert train.job is None and train.start_button.enabled


def test_train_shape_mismatch(qtbot, viewer, train, notes):
    before = snapshot(viewer)
    other = viewer.add_labels(np.zeros((4, 100, 100), np.uint16), name="small")
    set_form(train, image_layers=[viewer.layers["img"]], label_layers=[other])
    click(qtbot, train.start_button)
    text = messages(notes, "error")
    assert "'img' has shape (4, 256, 320) but labels layer 'small' has (4, 100, 100)" in text
    assert_unchanged(viewer, before)


def test_train_on_labels_without_objects(qtbot, viewer, train, notes):
    empty = viewer.add_labels(np.zeros((4, 256, 320), np.uint16), name="empty")
    before = snapshot(viewer)
    set_form(train, image_layers=[viewer.layers["img"]], label_layers=[empty])
    click(qtbot, train.start_button)
    wait_job(qtbot, train)  # the check runs in the worker: its error must come back as a notification
    assert "hold no objects" in messages(notes, "error")
    assert train.start_button.enabled and not train.stop_button.enabled
    assert_unchanged(viewer, before)


def test_train_bad_form_values(qtbot, viewer, train, notes):
    set_form(train, image_layers=[viewer.layers["img"]], label_layers=[viewer.layers["lab"]])
    train.lr.value = "0,001"
    click(qtbot, train.start_button)
    train.lr.value = "1e-3"
    train.loss.value = "bce+magic"
    click(qtbot, train.start_button)
    text = messages(notes, "error")
    assert "learning rate '0,001' is not a number" in text
    assert "unknown loss 'magic'; choose one of: bce" in text
    assert train.job is None


def test_train_mixed_rgb_and_grey_and_4d(qtbot, viewer, train, notes):
    rgb = viewer.add_image(np.zeros((256, 320, 3), np.uint8), rgb=True, name="rgb")
    set_form(train, image_layers=[viewer.layers["img"], rgb], label_layers=[viewer.layers["lab"]])
    click(qtbot, train.start_button)
    assert "mix RGB and grey" in messages(notes, "error")
    vol = viewer.add_image(np.zeros((2, 2, 16, 16), np.uint8), name="4d")
    set_form(train, image_layers=[vol], label_layers=[viewer.layers["lab"]])
    click(qtbot, train.start_button)
    assert "slimseg works on 2D images or a stack" in messages(notes, "error")


def test_train_twice_and_close_widget_while_training(qtbot, viewer, train, notes):
    before = snapshot(viewer)
    set_form(train, image_layers=[viewer.layers["img"]], label_layers=[viewer.layers["lab"]])
    click(qtbot, train.start_button)
    job = train.job
    click(qtbot, train.start_button)  # disabled while training: nothing happens
    assert train.job is job
    assert train.start() is None  # and a programmatic second start is refused with a message
    assert "already running; press Stop first" in messages(notes, "error")
    qtbot.waitUntil(lambda: len(train.plot.epochs) >= 1, timeout=60_000)
    viewer.window.remove_dock_widget(train.native)  # what the panel's close button does
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    assert "its panel was closed" in messages(notes, "info")
    assert len(session_models(viewer)) == 1  # the best model so far is kept for this session
    assert_unchanged(viewer, before)


def test_close_viewer_while_training(qtbot, make_napari_viewer, sample):
    viewer = make_napari_viewer()
    image, labels = sample
    img, lab = viewer.add_image(quadrants(image)), viewer.add_labels(quadrants(labels))
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    set_form(widget, image_layers=[img], label_layers=[lab], epochs=1000, val_fraction=0.25, **TINY)
    click(qtbot, widget.start_button)
    job = widget.job
    qtbot.waitUntil(lambda: widget.progress.value > 0, timeout=60_000)
    viewer.close()
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)  # the worker ends; nothing raises
    assert widget.closed


def test_predict_without_model_or_layer(qtbot, viewer, notes, monkeypatch):
    from slimseg import models

    monkeypatch.setattr(models, "BUILTINS", {})  # no shipped model to fall back on
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image.value = viewer.layers["img"]
    click(qtbot, widget.run_button)  # no session model, empty file field
    assert "no model file chosen" in messages(notes, "error")
    viewer.layers.clear()
    click(qtbot, widget.run_button)
    assert "no layer chosen" in messages(notes, "error")


@pytest.mark.parametrize("content, expected", [
    (b"PK\x03\x04 truncated zip", "not a slimseg model file"),
    (pickle.dumps({"weights": 1}), "pickle"),
    (b"", "not a slimseg model file"),
])
def test_predict_with_corrupt_model_file(qtbot, viewer, notes, tmp_path, content, expected):
    before = snapshot(viewer)
    bad = tmp_path / "bad.slimseg"
    bad.write_bytes(content)
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.choice.value = FROM_FILE
    widget.model.file.value = bad
    widget.image.value = viewer.layers["img"]
    click(qtbot, widget.run_button)
    assert expected in messages(notes, "error")
    assert widget.job is None and widget.run_button.enabled
    assert_unchanged(viewer, before)
    assert len(viewer.layers) == len(before)


def test_predict_rgb_layer_with_grey_model(qtbot, viewer, notes, model_file):
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    layer = viewer.add_image(rgb, rgb=True, name="colour")
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.choice.value = FROM_FILE
    widget.model.file.value = model_file
    widget.image.value = layer
    click(qtbot, widget.run_button)
    assert "layer 'colour': an RGB image of shape (64, 64, 3), but this model takes grey" in messages(notes, "error")


def test_worker_errors_become_notifications_not_reraised(qtbot, notes):
    """superqt re-raises a worker's exception in the event loop unless ``errored`` is handled: ours is."""
    from slimseg._widgets._worker import Job

    def needs_missing_package(stop):
        yield 1
        raise ModuleNotFoundError("No module named 'torchao'", name="torchao")

    def crashes(stop):
        yield 1
        raise RuntimeError("boom")

    done = []
    for body in (needs_missing_package, crashes):
        job = Job(body, "Compress", on_event=lambda e: None, on_done=done.append)
        qtbot.waitUntil(lambda: not job.running, timeout=10_000)
    text = messages(notes, "error")
    assert "needs the optional package 'torchao'" in text and "pip install 'napari-slimseg[compress]'" in text
    assert "Compress failed (RuntimeError: boom)" in text
    assert done == []


def test_stop_returns_the_jobs_result_so_far(qtbot):
    from slimseg._widgets._worker import Job, until_stopped

    def counter():
        n = 0
        while True:
            n += 1
            yield n

    seen, done = [], []

    def body(stop):
        return (yield from until_stopped(counter(), stop, lambda: f"stopped after {len(seen)}"))

    job = Job(body, "count", on_event=seen.append, on_done=done.append)
    qtbot.waitUntil(lambda: len(seen) >= 5, timeout=10_000)
    job.stop()
    qtbot.waitUntil(lambda: not job.running, timeout=10_000)
    assert done and done[0].startswith("stopped after")


def test_a_running_job_keeps_the_old_objects_out_of_full_garbage_collections(qtbot):
    """From the first job's start to the last job's end the objects napari held before are frozen (gc.freeze): a
    full collection during the job does not traverse them (it held napari's event loop 300-400 ms); after, they
    are collected as before."""
    import gc

    from slimseg._widgets._worker import Job, until_stopped

    def body(stop):
        def forever():
            while True:
                yield None
        return (yield from until_stopped(forever(), stop, lambda: "stopped"))

    assert gc.get_freeze_count() == 0
    first = Job(body, "one", on_event=lambda e: None, on_done=lambda r: None)
    frozen = gc.get_freeze_count()
    assert frozen > 1000
    second = Job(body, "two", on_event=lambda e: None, on_done=lambda r: None)
    assert gc.get_freeze_count() <= frozen  # one freeze for both, the first job's (frozen objects can still die)
    first.stop()
    qtbot.waitUntil(lambda: not first.running, timeout=10_000)
    assert gc.get_freeze_count() > frozen // 2  # the second still runs
    second.stop()
    qtbot.waitUntil(lambda: not second.running, timeout=10_000)
    assert gc.get_freeze_count() == 0

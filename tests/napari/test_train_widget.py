"""The Train widget driven by clicks: train on the sample layers, stop mid-way, keep the best model, save."""

from __future__ import annotations

import numpy as np
import pytest
from gui_helpers import TINY, click, messages, quadrants, set_form, tick, wait_job

from slimseg import io
from slimseg._widgets._session import session_models
from slimseg._widgets.train import TrainWidget, parse_lr

pytestmark = pytest.mark.gui


@pytest.fixture
def train_widget(make_napari_viewer, sample):
    viewer = make_napari_viewer()
    image, labels = sample
    img_layer = viewer.add_image(quadrants(image), name="nuclei stack")
    lab_layer = viewer.add_labels(quadrants(labels), name="nuclei stack labels")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    set_form(widget, image_layers=[img_layer], label_layers=[lab_layer], epochs=1000, val_fraction=0.25, **TINY)
    return viewer, widget


def test_lr_field_keeps_small_rates_readable(train_widget):
    _, widget = train_widget
    widget.lr.value = "1e-4"
    assert parse_lr(widget.lr.value) == pytest.approx(1e-4)
    widget.optimizer.value = "adam"  # the user typed their own rate: a new optimizer keeps it
    assert widget.lr.value == "1e-4"
    widget.lr.value = ""
    widget.optimizer.value = "sgd"
    assert float(widget.lr.value) == pytest.approx(0.05)  # an untouched field follows the optimizer's default
    with pytest.raises(ValueError, match="not a number"):
        parse_lr("fast")


def test_train_stop_keeps_best_and_saves(qtbot, train_widget, tmp_path, notes):
    viewer, widget = train_widget
    before = [layer.data.copy() for layer in viewer.layers]
    click(qtbot, widget.start_button)
    assert widget.running and not widget.start_button.enabled
    qtbot.waitUntil(lambda: len(widget.plot.epochs) >= 3, timeout=120_000)  # a live plot point per epoch
    click(qtbot, widget.stop_button)
    wait_job(qtbot, widget)
    assert widget.start_button.enabled and not widget.stop_button.enabled
    mf = session_models(viewer).get(widget.last_model)
    record = mf.meta["training"]
    history = record["history"]
    assert record["stop_reason"] == "stopped by user"
    assert 3 <= len(history) < 1000  # stopped long before the 1000 epochs asked for
    dice = [row["val_dice"] for row in history]
    assert record["best_epoch"] == 1 + int(np.argmax(dice))  # the best epoch, not the last one, is kept
    assert record["best_val_dice"] == pytest.approx(max(dice))
    assert widget.plot.dice[: len(dice)] == pytest.approx(dice[: len(widget.plot.dice)])
    assert "kept in this session" in messages(notes)

    widget.save_path.value = tmp_path / "nuclei"
    click(qtbot, widget.save_button)
    saved = tmp_path / "nuclei.slimseg"
    loaded = io.load(saved)
    assert set(loaded.tensors) == set(mf.tensors)
    assert all(np.array_equal(loaded.tensors[k], mf.tensors[k]) for k in mf.tensors)
    click(qtbot, widget.save_button)  # a second save must not overwrite silently
    assert "exists" in messages(notes, "error")
    for layer, data in zip(viewer.layers, before):
        assert np.array_equal(layer.data, data)  # the user's layers are untouched


def test_autosave_writes_the_model_when_training_is_stopped(qtbot, train_widget, tmp_path, notes):
    viewer, widget = train_widget
    target = tmp_path / "auto.slimseg"
    target.write_bytes(b"an older file")
    widget.save_path.value = target
    tick(qtbot, widget.autosave)
    assert widget.autosave.value
    click(qtbot, widget.start_button)  # the file exists and 'overwrite' is not ticked: refused before training
    assert not widget.running and "exists" in messages(notes, "error")
    assert target.read_bytes() == b"an older file"
    tick(qtbot, widget.overwrite)
    click(qtbot, widget.start_button)
    assert widget.running
    qtbot.waitUntil(lambda: len(widget.plot.epochs) >= 2, timeout=120_000)
    click(qtbot, widget.stop_button)
    wait_job(qtbot, widget)
    mf = session_models(viewer).get(widget.last_model)  # kept in the session as before, and in the file
    loaded = io.load(target)
    assert loaded.meta["training"]["stop_reason"] == "stopped by user"
    assert all(np.array_equal(loaded.tensors[k], mf.tensors[k]) for k in mf.tensors)
    assert f"saved to {target}" in messages(notes) and "saved to" in widget.status.value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.slimseg"]  # no temporary left beside it


def test_first_minute_loss_per_step_and_progress_in_steps(qtbot, train_widget, notes):
    """The plot has points long before the first epoch ends; the bar counts steps and stays put at Stop."""
    viewer, widget = train_widget
    set_form(widget, epochs=3, patches_per_epoch=4000)  # 1000 steps before the first validation
    click(qtbot, widget.start_button)
    qtbot.waitUntil(lambda: len(widget.plot.steps) >= 5, timeout=60_000)
    assert widget.plot.epochs == [] and widget.plot.steps[:3] == [1, 2, 3]
    assert all(np.isfinite(widget.plot.step_loss))
    assert widget.progress.max == 3 * 1000 and 0 < widget.progress.value < 1000  # steps, not epochs
    qtbot.waitUntil(lambda: "validation after step 1000" in widget.status.value, timeout=10_000)
    click(qtbot, widget.stop_button)
    wait_job(qtbot, widget)
    steps = widget.plot.steps[-1]
    assert widget.progress.value == steps < 1000  # where training stopped, not 100%
    assert "no model was kept" in messages(notes) and len(session_models(viewer)) == 0
    assert widget.start_button.enabled


def test_stop_gives_the_model_within_2_s_and_tunes_it_after(qtbot, train_widget, monkeypatch):
    """Stop hands the best model over at once; the threshold tuning (made slow here) follows in the
    worker while napari's event loop keeps running."""
    import time

    from qtpy.QtCore import QTimer

    from slimseg import training

    viewer, widget = train_widget
    tune = training.tune_thresholds

    def slow_tune(*args, **kwargs):
        time.sleep(4)
        return tune(*args, **kwargs)

    monkeypatch.setattr(training, "tune_thresholds", slow_tune)
    click(qtbot, widget.start_button)
    qtbot.waitUntil(lambda: len(widget.plot.epochs) >= 2, timeout=120_000)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(50)
    t0 = time.perf_counter()
    click(qtbot, widget.stop_button)
    qtbot.waitUntil(lambda: widget.last_model is not None, timeout=2_000)  # the old Stop tuned first: 4 s
    assert time.perf_counter() - t0 < 2.0
    mf = session_models(viewer).get(widget.last_model)
    assert mf.meta["training"]["stop_reason"] == "stopped by user"
    assert np.isnan(mf.meta["training"]["tuned_instance_f1"])  # not tuned yet, usable already
    assert "tuning its thresholds" in widget.status.value and not widget.save_button.enabled
    wait_job(qtbot, widget)
    timer.stop()
    tuned = session_models(viewer).get(widget.last_model)
    assert np.isfinite(tuned.meta["training"]["tuned_instance_f1"]) and widget.save_button.enabled
    assert all(np.array_equal(tuned.tensors[k], mf.tensors[k]) for k in mf.tensors)  # the same weights
    assert len(ticks) >= 40 and np.diff(ticks).max() < 1.0  # the event loop ran throughout the 4 s wrap-up
    assert widget.progress.value == widget.plot.steps[-1] < widget.progress.max
    assert widget.start_button.enabled and not widget.stop_button.enabled


def test_status_line_wraps_instead_of_widening_the_panel(qtbot, train_widget):
    _, widget = train_widget
    width = widget.native.width()
    widget.status.value = "saved to " + "/very/long/folder" * 20 + " and " + "word " * 60
    qtbot.wait(50)
    assert widget.native.width() <= max(width, widget.max_width)
    assert widget.status.native.height() > 2 * widget.status.native.fontMetrics().height()  # several lines


def test_the_live_plot_is_drawn_off_the_gui_thread_and_shown_when_ready(qtbot, monkeypatch):
    """matplotlib draws on the plot's own thread (a redraw took 100-250 ms on napari's); the QLabel shows each
    finished picture, and new points give a new picture."""
    import threading

    from slimseg._widgets._plot import TrainingPlot

    drawn_on = []
    draw = TrainingPlot._draw
    monkeypatch.setattr(TrainingPlot, "_draw", lambda self, *a: (drawn_on.append(threading.current_thread()),
                                                                  draw(self, *a))[1])
    plot = TrainingPlot()
    qtbot.addWidget(plot.native)
    qtbot.waitUntil(lambda: plot.frames >= 1, timeout=10_000)  # the empty axes
    empty = plot.native.pixmap().toImage()
    for step in range(1, 40):
        plot.add_step(step, 1.0 / step)
    plot.add_epoch(1, 39, 0.3, 0.8)
    qtbot.waitUntil(lambda: plot.frames >= 2 and plot._drawing is None and not plot._dirty, timeout=10_000)
    shown = plot.native.pixmap()
    assert not shown.isNull() and shown.width() == plot.canvas.get_width_height()[0]
    assert shown.toImage() != empty
    assert drawn_on and all(t is not threading.main_thread() for t in drawn_on)

"""Real microscopy layouts in the widgets, driven by clicks: a (10, 512, 512) stack segmented plane by plane,
Stop keeping the planes done, and models of several channels fed by several layers or a channel axis."""

from __future__ import annotations

import numpy as np
import pytest
from gui_helpers import TINY, click, messages, set_form, wait_job

from slimseg import io
from slimseg._widgets._models import FROM_FILE
from slimseg._widgets._session import session_models
from slimseg._widgets.predict import PredictWidget
from slimseg._widgets.train import TrainWidget
from slimseg.config import ModelConfig, NormConfig
from slimseg.model import UNet

pytestmark = pytest.mark.gui


@pytest.fixture
def stack(sample):
    """Ten 512 x 512 planes of the real sample, each shifted a little (a stand-in for a z-stack)."""
    image = sample[0]
    return np.stack([image[:, 8 * z: 8 * z + 512] for z in range(10)])


def predict_widget(viewer, model_file):
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.choice.value = FROM_FILE
    widget.model.file.value = model_file
    return widget


def record(widget, into):
    """Collect the job's progress events once Segment has started it."""
    widget.run_button.changed.connect(lambda *_: widget.job.worker.yielded.connect(into.append))


def test_a_10_plane_stack_gives_a_10_plane_labels_layer_with_unique_ids(qtbot, make_napari_viewer, model_file,
                                                                        stack):
    viewer = make_napari_viewer()
    layer = viewer.add_image(stack, name="zstack", scale=(2.0, 0.5, 0.5), translate=(4.0, 1.0, 1.0))
    viewer.dims.set_point(0, 0)  # the visible plane is the first: the whole stack is segmented all the same
    widget = predict_widget(viewer, model_file)
    widget.image.value = layer
    events = []
    record(widget, events)
    click(qtbot, widget.run_button)
    wait_job(qtbot, widget, timeout=120_000)
    out = viewer.layers["zstack segmentation"]
    assert out.data.shape == (10, 512, 512)
    assert tuple(out.scale) == (2.0, 0.5, 0.5) and tuple(out.translate) == (4.0, 1.0, 1.0)
    ids = [set(np.unique(plane)) - {0} for plane in out.data]
    assert all(ids), "every plane of the real sample holds nuclei"
    assert sum(len(i) for i in ids) == len(set().union(*ids))  # no id in two planes
    assert {f"plane {k} of 10" for k in range(1, 11)} <= {e.message for e in events}  # progress per plane
    values = [e.done for e in events]
    assert values == sorted(values) and values[-1] == 1000 and len(set(values)) >= 10
    assert "zstack" in widget.status.value and "stopped" not in widget.status.value

    widget.stitch.value = 0.3  # link the shifted planes' nuclei into 3D objects: fewer ids, same layer
    click(qtbot, widget.run_button)
    wait_job(qtbot, widget, timeout=120_000)
    assert viewer.layers["zstack segmentation"] is out
    assert len(np.unique(out.data)) < sum(len(i) for i in ids) + 1


def test_stop_keeps_the_planes_done(qtbot, make_napari_viewer, model_file, stack):
    viewer = make_napari_viewer()
    layer = viewer.add_image(stack, name="zstack")
    widget = predict_widget(viewer, model_file)
    widget.image.value = layer
    widget.tta.value = True  # slower planes, so that Stop lands mid-stack

    def stop_after_two(event):
        if event.message == "plane 3 of 10" and widget.stop_button.enabled:
            click(qtbot, widget.stop_button)

    widget.run_button.changed.connect(lambda *_: widget.job.worker.yielded.connect(stop_after_two))
    click(qtbot, widget.run_button)
    wait_job(qtbot, widget, timeout=120_000)
    out = viewer.layers["zstack segmentation"]
    done = sum(bool(plane.any()) for plane in out.data)
    assert out.data.shape == (10, 512, 512) and 2 <= done < 10
    assert not out.data[done:].any()  # planes after the stop stay empty
    assert f"stopped: {done} of 10 planes done" in widget.status.value


@pytest.fixture
def two_channel_model(tmp_path):
    """An (untrained) model of two input channels, as a model file."""
    cfg = ModelConfig(in_channels=2, widths=(4, 8))
    return io.save(io.from_module(UNet(cfg), cfg, NormConfig()), tmp_path / "two.slimseg")


def test_channels_from_several_layers_or_a_channel_axis(qtbot, make_napari_viewer, two_channel_model, sample, notes):
    viewer = make_napari_viewer()
    nuclei = sample[0][:256, :256]
    membrane = viewer.add_image(255 - nuclei, name="membrane")
    nuclei_layer = viewer.add_image(nuclei, name="nuclei")
    widget = predict_widget(viewer, two_channel_model)
    widget.image.value = nuclei_layer
    click(qtbot, widget.run_button)  # one grey layer for a model of two channels
    assert "this model takes 2 channels" in messages(notes, "error") and widget.job is None
    widget.more_channels.value = [membrane]
    click(qtbot, widget.run_button)
    wait_job(qtbot, widget)
    assert viewer.layers["nuclei segmentation"].data.shape == (256, 256)

    zc = viewer.add_image(np.stack([np.stack([nuclei, 255 - nuclei])] * 3), name="zc")  # (Z, C, Y, X)
    widget.more_channels.value = []
    widget.image.value = zc
    click(qtbot, widget.run_button)
    wait_job(qtbot, widget)
    out = viewer.layers["zc segmentation"]
    assert out.data.shape == (3, 1, 256, 256)  # the channel axis kept with length 1: napari lines it up
    widget.channels.value = "0,5"
    click(qtbot, widget.run_button)
    assert "channel 5 is out of range" in messages(notes, "error")


def test_train_on_channel_layers_records_their_count(qtbot, make_napari_viewer, sample):
    viewer = make_napari_viewer()
    image, labels = sample[0][:256, :256], sample[1][:256, :256]
    first = viewer.add_image(image, name="nuclei")
    second = viewer.add_image(np.sqrt(image.astype(np.float32)), name="membrane")
    truth = viewer.add_labels(labels, name="truth")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    set_form(widget, image_layers=[first, second], label_layers=[truth], as_channels=True, epochs=1,
             val_fraction=0.0, **TINY)
    assert "channels nuclei + membrane" in widget.pairs.value
    click(qtbot, widget.start_button)
    wait_job(qtbot, widget)
    store = session_models(viewer)
    assert len(store) == 1 and store.get(store.names()[0]).model_config.in_channels == 2

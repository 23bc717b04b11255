"""Lazy layers in the Predict widget, driven by clicks: dask-backed, zarr-backed and multiscale images are
segmented block by block into a zarr label store (never read whole) and shown as a lazy Labels layer that
equals the in-memory prediction; Stop keeps the blocks done."""

from __future__ import annotations

import numpy as np
import pytest
from gui_helpers import click, wait_job
from test_stacks_and_channels import predict_widget, record

pytestmark = pytest.mark.gui
da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")

BLOCK = 256  # the 512 x 640 sample in 2 x 3 blocks: objects cross the block borders


def same_objects(a, b) -> bool:
    """a and b are the same labelling up to renumbering."""
    a, b = np.asarray(a), np.asarray(b)
    pairs = set(zip(a.ravel().tolist(), b.ravel().tolist()))
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def in_memory(qtbot, viewer, widget, image):
    """The labels of the ordinary (in-memory) path for ``image``."""
    layer = viewer.add_image(np.array(image), name="in memory")
    widget.image.reset_choices()
    widget.image.value = layer
    click(qtbot, widget.run_button)
    wait_job(qtbot, widget)
    out = viewer.layers["in memory segmentation"]
    assert isinstance(out.data, np.ndarray)
    return out.data


def segment(qtbot, widget, layer, events=None):
    widget.image.reset_choices()
    widget.image.value = layer
    if events is not None:
        record(widget, events)
    click(qtbot, widget.run_button)
    wait_job(qtbot, widget)
    return widget.viewer.layers[f"{layer.name} segmentation"]


def test_a_dask_layer_goes_block_by_block_and_equals_the_in_memory_prediction(qtbot, make_napari_viewer,
                                                                              model_file, sample):
    image = sample[0]
    viewer = make_napari_viewer()
    widget = predict_widget(viewer, model_file)
    widget.block.value = BLOCK
    reference = in_memory(qtbot, viewer, widget, image)
    layer = viewer.add_image(da.from_array(image, chunks=128), name="lazy", scale=(0.5, 0.25), translate=(3.0, 7.0))
    events = []
    out = segment(qtbot, widget, layer, events)
    assert not isinstance(out.data, np.ndarray) and out.data.shape == image.shape  # a lazy Labels layer
    assert tuple(out.scale) == (0.5, 0.25) and tuple(out.translate) == (3.0, 7.0)
    assert same_objects(out.data, reference)
    assert {f"block {k} of 6" for k in range(1, 7)} <= {e.message for e in events}  # progress per block
    values = [e.done for e in events]
    assert values == sorted(values) and values[-1] == 1000 and len(set(values)) >= 6
    assert "labels in" in widget.status.value and "stopped" not in widget.status.value
    assert out.metadata["slimseg_store"].endswith("labels.zarr")


def test_a_multiscale_layer_uses_its_full_resolution(qtbot, make_napari_viewer, model_file, sample):
    image = sample[0]
    viewer = make_napari_viewer()
    widget = predict_widget(viewer, model_file)
    widget.block.value = BLOCK
    reference = in_memory(qtbot, viewer, widget, image)
    pyramid = [da.from_array(image, chunks=128), da.from_array(image[::2, ::2], chunks=128)]
    layer = viewer.add_image(pyramid, multiscale=True, name="pyramid", scale=(2.0, 2.0))
    out = segment(qtbot, widget, layer)
    assert out.data.shape == image.shape and tuple(out.scale) == (2.0, 2.0)
    assert same_objects(out.data, reference)


def test_a_zarr_layer_into_a_chosen_store_and_stop_keeps_the_blocks_done(qtbot, make_napari_viewer, model_file,
                                                                        sample, tmp_path, notes):
    image = sample[0]
    z = zarr.create_array(str(tmp_path / "image.zarr"), shape=image.shape, chunks=(128, 128), dtype=image.dtype)
    z[:] = image
    viewer = make_napari_viewer()
    widget = predict_widget(viewer, model_file)
    widget.block.value = BLOCK
    reference = in_memory(qtbot, viewer, widget, image)
    layer = viewer.add_image(z, name="zarr image")
    widget.store.value = tmp_path / "mine.zarr"
    out = segment(qtbot, widget, layer)
    assert (tmp_path / "mine.zarr" / "0").is_dir() and out.metadata["slimseg_store"] == str(tmp_path / "mine.zarr")
    assert same_objects(out.data, reference)

    click(qtbot, widget.run_button)  # the chosen store exists now: refused, nothing overwritten
    assert "exists already" in "\n".join(m for _, m in notes)

    widget.store.value = tmp_path / "stopped.zarr"
    widget.block.value = 128  # 20 blocks

    def stop_early(event):
        if event.message == "block 3 of 20" and widget.stop_button.enabled:
            click(qtbot, widget.stop_button)

    widget.run_button.changed.connect(lambda *_: widget.job.worker.yielded.connect(stop_early))
    click(qtbot, widget.run_button)
    wait_job(qtbot, widget)
    data = np.asarray(out.data)
    status = widget.status.value
    assert "stopped:" in status and "of 20 blocks done" in status
    done = int(status.split("stopped: ")[1].split(" of")[0])
    assert 3 <= done < 20
    assert data[:128, :128 * 3].any() and not data[384:, 512:].any()  # the first blocks kept, the last not done


def test_a_lazy_stack_goes_plane_by_plane(qtbot, make_napari_viewer, model_file, sample):
    viewer = make_napari_viewer()
    stack = da.from_array(np.stack([sample[0][:128, 64 * k: 64 * k + 128] for k in range(3)]), chunks=(1, 64, 64))
    widget = predict_widget(viewer, model_file)
    out = segment(qtbot, widget, viewer.add_image(stack, name="lazy stack"))
    assert out.data.shape == (3, 128, 128)
    ids = [set(np.unique(plane)) - {0} for plane in out.data]
    assert all(ids) and sum(len(i) for i in ids) == len(set().union(*ids))

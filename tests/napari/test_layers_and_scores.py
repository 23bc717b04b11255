"""The widgets' layer adapters and table numbers, without a window (napari's ViewerModel, plain numpy)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from napari.components import ViewerModel

from slimseg import io
from slimseg._widgets._layers import TAG, channels_of, edited, planes, put_layer, training_pairs
from slimseg._widgets._scores import FALSE_NEGATIVE, FALSE_POSITIVE, error_map, model_size_mb, score_models, write_csv
from slimseg._widgets._session import session_models
from slimseg.config import ModelConfig, NormConfig
from slimseg.errors import InputError
from slimseg.events import run
from slimseg.model import UNet


def test_planes_of_2d_stack_rgb_and_too_many_dims():
    v = ViewerModel()
    assert [p.shape for p in planes(v.add_image(np.zeros((5, 6))))] == [(5, 6)]
    assert [p.shape for p in planes(v.add_image(np.zeros((3, 5, 6))))] == [(5, 6)] * 3
    assert [p.shape for p in planes(v.add_image(np.zeros((5, 6, 3), np.uint8), rgb=True))] == [(5, 6, 3)]
    with pytest.raises(InputError, match=r"shape \(2, 3, 5, 6\).*2D images"):
        planes(v.add_image(np.zeros((2, 3, 5, 6))))
    with pytest.raises(InputError, match="no layer chosen"):
        planes(None)


def test_planes_are_copies():
    v = ViewerModel()
    layer = v.add_labels(np.ones((4, 4), np.uint16))
    planes(layer)[0][:] = 7
    assert (layer.data == 1).all()


def test_training_pairs_checks_counts_and_shapes():
    v = ViewerModel()
    img = v.add_image(np.zeros((2, 8, 8)), name="a")
    lab = v.add_labels(np.ones((2, 8, 8), np.uint8), name="a labels")
    names, images, labels = training_pairs([img], [lab])
    assert names == ["a[0]", "a[1]"] and len(images) == len(labels) == 2
    with pytest.raises(InputError, match="choose an Image layer"):
        training_pairs([], [lab])
    with pytest.raises(InputError, match="1 image layers but 2 labels layers"):
        training_pairs([img], [lab, lab])
    other = v.add_labels(np.ones((8, 9), np.uint8), name="wrong")
    with pytest.raises(InputError, match=r"'a' has shape \(2, 8, 8\) but labels layer 'wrong' has \(8, 9\)"):
        training_pairs([img], [other])


def test_channels_refuses_a_mix():
    v = ViewerModel()
    grey, rgb = v.add_image(np.zeros((4, 4))), v.add_image(np.zeros((4, 4, 3), np.uint8), rgb=True)
    assert channels_of([grey]) == 1 and channels_of([rgb]) == 3
    with pytest.raises(InputError, match="mix RGB and grey"):
        channels_of([grey, rgb])


def test_put_layer_updates_its_own_layer_and_keeps_placement():
    v = ViewerModel()
    image = v.add_image(np.zeros((2, 6, 6)), scale=(1, 0.5, 0.25), translate=(0, 10, 20))
    mine = v.add_labels(np.zeros((2, 6, 6), np.uint8), name="x labels")  # the user's own layer, same name
    first = put_layer(v, np.ones((2, 6, 6), np.uint8), "labels", "x labels", image, "k")
    assert first is not mine and first.metadata[TAG] == "k"
    assert tuple(first.scale) == (1, 0.5, 0.25) and tuple(first.translate) == (0, 10, 20)
    second = put_layer(v, np.full((2, 6, 6), 2, np.uint8), "labels", "x labels", image, "k")
    assert second is first and (first.data == 2).all() and len(v.layers) == 3
    assert (mine.data == 0).all()  # never touched
    third = put_layer(v, np.ones((2, 6, 6), np.uint8), "labels", "x labels", image, "k", new=True)
    assert third is not first and len(v.layers) == 4


def test_put_layer_never_overwrites_a_layer_the_user_edited():
    v = ViewerModel()
    image = v.add_image(np.zeros((6, 6)))
    first = put_layer(v, np.ones((6, 6), np.uint8), "labels", "x labels", image, "k")
    assert not edited(first)
    first.data[0, :3] = 7  # a brush stroke (napari paints into the array in place)
    first.refresh()
    assert edited(first)
    kept = first.data.copy()
    second = put_layer(v, np.full((6, 6), 2, np.uint8), "labels", "x labels", image, "k")
    assert second is not first and np.array_equal(first.data, kept) and (second.data == 2).all()
    third = put_layer(v, np.full((6, 6), 3, np.uint8), "labels", "x labels", image, "k")
    assert third is second and np.array_equal(first.data, kept)  # the unedited result is updated
    first.data = np.zeros((6, 6), np.uint8)  # replaced as a whole (e.g. all erased): still the user's
    assert edited(first)


def test_session_models_are_per_viewer_and_unique():
    a, b = ViewerModel(), ViewerModel()
    mf = io.from_module(UNet(ModelConfig(widths=(2, 4))), ModelConfig(widths=(2, 4)), NormConfig())
    assert session_models(a).add("m", mf) == "m"
    assert session_models(a).add("m", mf) == "m (2)"
    assert session_models(a).names() == ["m", "m (2)"] and len(session_models(b)) == 0
    with pytest.raises(InputError, match="no model 'z'"):
        session_models(a).get("z")


def test_error_map_hand_computed():
    pred = np.array([[0, 1, 1], [0, 0, 2]])
    truth = np.array([[0, 0, 3], [3, 0, 3]])
    assert error_map(pred, truth).tolist() == [[0, FALSE_POSITIVE, 0], [FALSE_NEGATIVE, 0, 0]]
    with pytest.raises(InputError, match="differs"):
        error_map(pred, truth[:1])


def test_score_models_table_and_csv(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cfg = ModelConfig(widths=(2, 4))
    mf = io.from_module(UNet(cfg), cfg, NormConfig())
    rng = np.random.default_rng(0)
    images = [rng.random((40, 48)).astype(np.float32) for _ in range(2)]
    truths = [np.zeros((40, 48), np.uint16), np.pad(np.ones((8, 8), np.uint16), ((16, 16), (20, 20)))]
    rows, preds = run(score_models([("a", mf), ("b", mf)], images, truths))
    assert list(rows) == ["a", "b"] and [p.shape for p in preds["a"]] == [(40, 48)] * 2
    for key in ("dice", "jaccard", "precision", "recall", "f1", "instance_f1", "dsb_score"):
        assert rows["a"][key] == pytest.approx(rows["b"][key])  # the same model scores the same
        assert 0 <= rows["a"][key] <= 1
    assert rows["a"]["size_mb"] == pytest.approx(model_size_mb(mf)) and rows["a"]["size_mb"] > 0
    assert rows["a"]["latency_ms"] > 0
    path = write_csv(rows, tmp_path / "table")
    assert path.name == "table.csv"
    with open(path) as fh:
        table = list(csv.DictReader(fh))
    assert [r["model"] for r in table] == ["a", "b"]
    assert float(table[0]["dice"]) == pytest.approx(rows["a"]["dice"], rel=1e-5)
    with pytest.raises(InputError, match="exists"):
        write_csv(rows, path)
    write_csv(rows, path, overwrite=True)

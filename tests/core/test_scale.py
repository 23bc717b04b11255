import math

import numpy as np
import pytest
import torch

from slimseg.config import PredictConfig
from slimseg.data.normalize import Normalizer
from slimseg.errors import InputError
from slimseg.events import run
from slimseg.metrics import instance_scores
from slimseg.predict import predict
from slimseg.scale import median_diameter, rescale_factor, resize


def squares(side, corners, shape=(40, 40)):
    lab = np.zeros(shape, np.uint16)
    for k, (y, x) in enumerate(corners, 1):
        lab[y:y + side, x:x + side] = k
    return lab


def test_median_diameter_is_that_of_a_disc_of_the_median_area_pooled_over_images():
    a = squares(4, [(0, 0), (10, 10)])  # two objects of 16 pixels
    b = squares(6, [(20, 20)])  # one of 36
    assert median_diameter([a, b]) == pytest.approx(2 * math.sqrt(16 / math.pi))
    c = squares(6, [(20, 20), (0, 30)])
    c[c == 2] = 5  # ids 1 and 5: a gap
    assert median_diameter([c, a]) == pytest.approx(2 * math.sqrt(26 / math.pi))  # median of 16, 16, 36, 36


def test_median_diameter_takes_sparse_ids_without_a_table_of_every_id():
    lab = squares(4, [(0, 0), (10, 10), (20, 20)]).astype(np.uint32)
    want = median_diameter([lab])
    lab[lab == 3] = 4_000_000_000  # a bincount would need 32 GB
    assert median_diameter([lab]) == pytest.approx(want) == pytest.approx(2 * math.sqrt(16 / math.pi))


def test_median_diameter_is_unknown_with_fewer_than_three_objects():
    assert median_diameter([squares(4, [(0, 0), (10, 10)])]) == 0.0
    assert median_diameter([np.zeros((5, 5), np.uint32)]) == 0.0
    assert median_diameter([]) == 0.0


@pytest.mark.parametrize("diameter, trained, shape, want", [
    (28, 14, (512, 512), 1.0),  # twice the trained size: as it is
    (29, 14, (512, 512), 0.5),
    (60, 14, (512, 512), 0.25),
    (200, 14, (512, 512), 0.125),  # 25 px at 1/8: a side of 64, the smallest allowed
    (200, 14, (256, 700), 0.25),  # the short side bounds it: 64 at 1/4
    (60, 14, (100, 100), 1.0),  # half of 100 is below 64
    (60, 0, (512, 512), 1.0),  # the model's size unknown
    (0, 14, (512, 512), 1.0),  # the objects' size unknown
    (3, 14, (512, 512), 1.0),  # small objects are never enlarged
])
def test_rescale_factor_halves_until_objects_are_at_most_twice_the_trained_size(diameter, trained, shape, want):
    assert rescale_factor(diameter, trained, shape) == want


def test_resize_keeps_the_layout_and_averages_when_shrinking():
    checker = (np.indices((16, 16)).sum(0) % 2).astype(np.float32)  # 1-pixel checkerboard
    small = resize(checker, (4, 4), channel_last=False)  # anti-aliased: its mean, not samples of 0 or 1
    assert small.shape == (4, 4)
    np.testing.assert_allclose(small, 0.5, atol=0.05)
    a = np.kron(np.array([[0, 4], [8, 12]], np.float32), np.ones((4, 4), np.float32))  # 8 x 8 blocks
    rgb = np.stack([a, a + 1, a + 2], -1)
    out = resize(rgb, (4, 4), channel_last=True)
    assert out.shape == (4, 4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 2] - out[..., 0], 2, atol=1e-5)
    first = resize(np.stack([a, a * 2]), (16, 16), channel_last=False)
    assert first.shape == (2, 16, 16)
    np.testing.assert_allclose(first[1], 2 * first[0], atol=1e-5)


def disc_image(radius, centres, size=256):
    yy, xx = np.mgrid[:size, :size]
    lab = np.zeros((size, size), np.uint16)
    for k, (cy, cx) in enumerate(centres, 1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = k
    return np.where(lab > 0, 200, 20).astype(np.uint8), lab


class ShapeRecorder:
    """A 'model' whose foreground and centredness are the (normalised) brightness: bright discs come out
    as one object each at any scale. It records the shapes it is called on."""

    def __init__(self):
        self.shapes = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape[-2:]))
        return torch.cat([x * 8 - 4, x * 8 - 4], dim=1)


LARGE = [(60, 60), (60, 190), (190, 60), (190, 190)]  # discs of diameter 41 in a 256 x 256 image


def test_large_objects_are_predicted_again_at_a_smaller_scale_with_full_size_labels():
    img, truth = disc_image(20, LARGE)
    model = ShapeRecorder()
    cfg = PredictConfig(trained_diameter=10.0, min_size=0)
    events = []
    pred = run(predict(model, img, Normalizer(0.0, 255.0), cfg), events.append)
    assert model.shapes == [(256, 256), (64, 64)]  # 41 px objects -> 1/4 scale: 10 px, within twice 10
    assert pred.labels.shape == (256, 256) and pred.probabilities.shape == (2, 256, 256)
    assert pred.probabilities.dtype == np.float16
    assert instance_scores(pred.labels, truth)["dsb_score"] > 0.8  # the same discs, at full resolution
    assert any("1/4 scale" in e.message for e in events)


def test_no_second_pass_for_objects_the_model_was_trained_for_or_when_turned_off():
    small_img, _ = disc_image(5, LARGE)
    large_img, _ = disc_image(20, LARGE)
    for img, cfg in [(small_img, PredictConfig(trained_diameter=10.0)),
                     (large_img, PredictConfig(trained_diameter=10.0, rescale=False)),
                     (large_img, PredictConfig(trained_diameter=0.0))]:  # an old model file: size unknown
        model = ShapeRecorder()
        run(predict(model, img, Normalizer(0.0, 255.0), cfg))
        assert model.shapes == [(256, 256)]


def test_a_given_diameter_chooses_the_scale_without_a_first_pass():
    img, truth = disc_image(20, LARGE)
    model = ShapeRecorder()
    pred = run(predict(model, img, Normalizer(0.0, 255.0), PredictConfig(trained_diameter=10.0, diameter=41.0)))
    assert model.shapes == [(64, 64)]
    assert instance_scores(pred.labels, truth)["instance_f1"] == 1.0


def test_diameters_must_not_be_negative():
    with pytest.raises(InputError, match="diameter is .* got -1.0"):
        PredictConfig(diameter=-1.0)
    with pytest.raises(InputError, match="trained_diameter is .* got nan"):
        PredictConfig(trained_diameter=float("nan"))

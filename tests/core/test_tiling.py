import numpy as np
import pytest

from slimseg.config import PredictConfig
from slimseg.data.normalize import Normalizer
from slimseg.data.tiling import plan_tiles, tile_starts
from slimseg.events import run
from slimseg.predict import predict_probabilities


@pytest.mark.parametrize("tile,overlap,multiple", [(512, 64, 8), (512, 64, 16), (256, 32, 16), (100, 10, 1), (64, 0, 8)])
def test_planned_tiles_cover_exactly_with_the_overlap_and_the_fewest_tiles(tile, overlap, multiple):
    for length in [*range(1, 700, 7), 1024, 2048, 4099]:
        size, starts = plan_tiles(length, tile, overlap, multiple)
        assert size <= tile and starts[0] == 0 and starts[-1] + size == length
        assert len(starts) == len(tile_starts(length, min(tile, length), overlap))  # no more tiles than before
        if len(starts) == 1:
            assert size == length
            continue
        assert size % multiple == 0
        assert all(b - a <= size - overlap and b > a for a, b in zip(starts, starts[1:]))  # overlap, no gaps
        # waste bound: one size step fewer could not cover the length with the overlap
        n = len(starts)
        assert n * (size - multiple) - (n - 1) * overlap < length


def test_planned_tiles_waste_little_on_a_520_by_696_image():
    (th, ys), (tw, xs) = plan_tiles(520, 512, 64, 8), plan_tiles(696, 512, 64, 8)
    computed = th * tw * len(ys) * len(xs)
    assert computed / (520 * 696) < 1.3  # square 512 tiles compute 2.9 times the image's pixels


def test_plan_tiles_refuses_a_tile_without_room_for_the_overlap():
    with pytest.raises(ValueError):
        plan_tiles(100, 20, 16, 16)


def test_planned_tiles_equal_the_whole_image_for_a_local_model():
    import torch

    seen = []

    def local(x):
        seen.append(tuple(x.shape[-2:]))
        return torch.cat([x * 4 - 2, x * 2 - 1], dim=1)

    img = np.random.default_rng(0).random((150, 230)).astype(np.float32)
    norm = Normalizer(0.0, 1.0)
    whole = run(predict_probabilities(local, img, norm, PredictConfig(tile=512, overlap=0)))
    planned = run(predict_probabilities(local, img, norm, PredictConfig(tile=96, overlap=16), multiple=8))
    np.testing.assert_allclose(planned.astype(np.float32), whole.astype(np.float32), atol=2e-3)
    assert set(seen[1:]) == {(88, 88)}  # 2x3 tiles of a multiple of 8, smaller than 96

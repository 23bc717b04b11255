import numpy as np
import pytest
import torch

from slimseg.baseline import otsu_watershed
from slimseg.config import ModelConfig, NormConfig, PredictConfig
from slimseg.data.normalize import Normalizer
from slimseg.events import Progress, run
from slimseg.instances import count_objects, split_instances
from slimseg.predict import image_probabilities, labels_from_probabilities, predict, predict_probabilities


def local_model(x: torch.Tensor) -> torch.Tensor:
    """A 'model' whose output at a pixel depends only on that pixel: tiling must not change it."""
    return torch.cat([x * 4 - 2, x * 2 - 1], dim=1)


def test_tiled_equals_whole_image_for_a_local_model():
    img = np.random.default_rng(0).random((70, 90)).astype(np.float32)
    norm = Normalizer(0.0, 1.0)
    whole = run(predict_probabilities(local_model, img, norm, PredictConfig(tile=512, overlap=0)))
    tiled = run(predict_probabilities(local_model, img, norm, PredictConfig(tile=32, overlap=8, batch_size=3)))
    want = 1 / (1 + np.exp(-(img * 4 - 2)))
    assert whole.shape == (2, 70, 90) and whole.dtype == np.float16
    np.testing.assert_allclose(whole[0], want, atol=2e-3)
    np.testing.assert_allclose(tiled.astype(np.float32), whole.astype(np.float32), atol=2e-3)


def test_progress_per_tile_row():
    img = np.zeros((100, 40), np.uint8)
    gen = predict_probabilities(local_model, img, NormConfig(), PredictConfig(tile=32, overlap=4))
    events = []
    out = run(gen, events.append)
    assert [e.done for e in events] == [1, 2, 3, 4] and all(isinstance(e, Progress) for e in events)
    assert out.shape == (2, 100, 40)


def test_image_probabilities_are_float32_with_progress_per_image():
    images = [np.zeros((100, 40), np.uint8), np.full((20, 30), 0.5, np.float32)]
    events = []
    out = run(image_probabilities(local_model, images, Normalizer(0.0, 1.0), PredictConfig(tile=32, overlap=4),
                                  stage="check"), events.append)
    assert [p.shape for p in out] == [(2, 100, 40), (2, 20, 30)] and all(p.dtype == np.float32 for p in out)
    np.testing.assert_allclose(out[1][0], 1 / (1 + np.exp(0.0)), atol=2e-3)
    mine = [(e.done, e.total) for e in events if e.stage == "check"]
    assert mine == [(1, 2), (2, 2)] and events[-1].stage == "check"
    assert [e.stage for e in events].count("predict") == 4 + 1  # the tile rows pass through
    assert not [e for e in run_events(image_probabilities(local_model, images, Normalizer(0.0, 1.0)))
                if e.stage != "predict"]  # no stage: tile rows only


def run_events(gen):
    events = []
    run(gen, events.append)
    return events


def test_blending_uses_all_tiles():
    """A model that marks tile borders: blended output must stay within the per-tile range."""
    img = np.ones((64, 64), np.float32)

    def offset_model(x):
        return torch.zeros(x.shape[0], 2, *x.shape[2:])

    out = run(predict_probabilities(offset_model, img, Normalizer(0.0, 1.0), PredictConfig(tile=32, overlap=8)))
    np.testing.assert_allclose(out.astype(np.float32), 0.5, atol=1e-3)


def test_split_instances_separates_touching_disks():
    yy, xx = np.mgrid[:30, :50]
    a = (yy - 15) ** 2 + (xx - 15) ** 2 <= 100
    b = (yy - 15) ** 2 + (xx - 32) ** 2 <= 100
    fg = a | b  # touching
    seeds = ((yy - 15) ** 2 + (xx - 15) ** 2 <= 9) | ((yy - 15) ** 2 + (xx - 32) ** 2 <= 9)
    lab = split_instances(fg, seeds)
    assert lab.dtype == np.uint32 and len(np.unique(lab)) == 3
    assert lab[15, 15] != lab[15, 32] and (lab > 0).sum() == fg.sum()
    # a component without a seed stays one object; tiny ones are dropped
    fg2 = fg.copy()
    fg2[0:3, 45:48] = True  # 9 pixels, no seed
    fg2[28, 0] = True  # 1 pixel
    lab2 = split_instances(fg2, seeds, min_size=4)
    assert len(np.unique(lab2)) == 4 and lab2[28, 0] == 0


def test_labels_from_probabilities_thresholds():
    probs = np.zeros((2, 10, 10), np.float16)
    probs[0, 2:6, 2:6] = 0.9
    probs[1, 3:5, 3:5] = 0.9
    lab = labels_from_probabilities(probs, PredictConfig(min_size=1))
    assert lab.max() == 1 and (lab > 0).sum() == 16
    assert labels_from_probabilities(probs, PredictConfig(threshold=0.95)).max() == 0


def test_predict_returns_labels_and_probabilities():
    img = np.zeros((40, 40), np.uint8)
    img[10:20, 10:20] = 200
    pred = run(predict(local_model, img, NormConfig(), PredictConfig(tile=32, overlap=4, min_size=1)))
    assert pred.labels.shape == (40, 40) and pred.probabilities.shape == (2, 40, 40)
    assert pred.labels[15, 15] > 0 and pred.labels[0, 0] == 0


def test_otsu_watershed_baseline_finds_disks(disks):
    images, labels = disks
    from slimseg.metrics import score_images
    preds = [otsu_watershed(im) for im in images]
    assert score_images(preds, labels)["instance_f1"] > 0.8


def test_predict_config_validation():
    from slimseg.errors import InputError
    with pytest.raises(InputError):
        PredictConfig(tile=64, overlap=40)
    with pytest.raises(InputError):
        PredictConfig(threshold=1.5)


def test_tta_averages_the_flips():
    img = np.random.default_rng(0).random((20, 24)).astype(np.float32)

    def left_biased(x):  # not flip-equivariant: output depends on the column index
        cols = torch.arange(x.shape[-1], dtype=torch.float32).expand_as(x)
        return torch.cat([cols / 10 - 1, x], dim=1)

    norm = Normalizer(0.0, 1.0)
    plain = run(predict_probabilities(left_biased, img, norm, PredictConfig(tile=64, overlap=0)))
    tta = run(predict_probabilities(left_biased, img, norm, PredictConfig(tile=64, overlap=0, tta=True)))
    cols = np.arange(24, dtype=np.float32)
    want = (2 / (1 + np.exp(-(cols / 10 - 1))) + 2 / (1 + np.exp(-((23 - cols) / 10 - 1)))) / 4
    np.testing.assert_allclose(tta[0, 5].astype(np.float32), want, atol=2e-3)
    assert not np.allclose(plain[0, 5].astype(np.float32), want, atol=1e-2)
    np.testing.assert_allclose(tta[1].astype(np.float32), plain[1].astype(np.float32), atol=2e-3)


def test_bf16_runs_the_network_under_bfloat16_autocast_and_only_when_asked():
    from slimseg.model import UNet

    torch.manual_seed(0)
    net = UNet(ModelConfig(widths=(4, 8))).eval()
    seen = []

    def model_fn(x):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return net(x)

    img = np.random.default_rng(1).random((48, 40)).astype(np.float32)
    norm = Normalizer(0.0, 1.0)
    plain = run(predict_probabilities(model_fn, img, norm, PredictConfig(tile=64, overlap=0))).astype(np.float32)
    assert seen == [False]
    half = run(predict_probabilities(model_fn, img, norm, PredictConfig(tile=64, overlap=0, bf16=True)))
    assert seen == [False, True]
    with torch.inference_mode():
        want = torch.sigmoid(net(torch.from_numpy(img)[None, None])).numpy()[0]
    np.testing.assert_allclose(plain, want, atol=1e-3)  # float16 storage only
    diff = np.abs(half.astype(np.float32) - want)
    assert 0 < diff.max() < 0.05  # bfloat16 keeps 8 bits of mantissa


def test_bf16_never_reaches_an_int8_kinds_kernels():
    from slimseg.kinds.fold import padded

    seen = []

    def kernels(x):
        seen.append(torch.is_autocast_enabled("cpu"))
        return torch.zeros(x.shape[0], 2, *x.shape[-2:])

    img = np.zeros((20, 28), np.float32)
    run(predict_probabilities(padded(kernels, 8), img, Normalizer(0.0, 1.0), PredictConfig(tile=64, overlap=0, bf16=True)))
    assert seen == [False]


@pytest.mark.parametrize("shape", [(40, 40), (70, 150), (200, 90)])
def test_batch_calls_are_the_calls_prediction_makes(shape):
    from slimseg.predict import batch_calls, batch_shapes

    calls = []

    def model_fn(x):
        h, w = x.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8  # as a padding model wrapper sees them
        calls.append((x.shape[0], x.shape[1], h + ph, w + pw))
        return torch.zeros(x.shape[0], 2, h, w)

    cfg = PredictConfig(tile=64, overlap=8, batch_size=2)
    run(predict_probabilities(model_fn, np.random.rand(*shape).astype(np.float32), NormConfig(), cfg, multiple=8))
    assert calls == batch_calls(*shape, cfg, 1, 8)
    assert batch_shapes(*shape, cfg, 1, 8) == set(calls)


def test_count_objects_counts_distinct_nonzero_ids():
    assert count_objects(np.zeros((3, 4), np.uint32)) == 0
    assert count_objects(np.array([[0, 7, 7], [2, 0, 9]], np.uint16)) == 3  # ids with gaps
    assert count_objects(np.array([[1, 1], [3, 3]], np.int32)) == 2  # no background pixel
    assert count_objects(np.zeros((2, 0), np.uint32)) == 0
    stack = np.stack([np.array([[0, 1]]), np.array([[4, 0]])]).astype(np.uint32)
    assert count_objects(stack) == 2
    sparse = np.array([[0, 4_000_000_000, 4_000_000_000], [7, 0, 0]], np.uint32)  # no 4e9-entry table
    assert count_objects(sparse) == 2 and count_objects(sparse[:1, 1:]) == 1

import numpy as np

from slimseg import io
from slimseg.config import ModelConfig, NormConfig, PredictConfig
from slimseg.model import UNet
from slimseg.segmenter import load_segmenter
from slimseg.tune import instance_f1, tune_thresholds


def test_tuning_picks_the_seed_threshold_that_splits_touching_objects():
    # two touching squares; the centredness is 0.65 between the two cores and 0.9 in them
    lab = np.zeros((10, 20), np.uint16)
    lab[2:8, 2:10], lab[2:8, 10:18] = 1, 2
    probs = np.zeros((2, 10, 20), np.float32)
    probs[0][lab > 0] = 0.95
    probs[1][lab > 0] = 0.65
    probs[1, 4:6, 4:7], probs[1, 4:6, 13:16] = 0.9, 0.9
    cfg, f1 = tune_thresholds([probs], [lab], PredictConfig(min_size=1))
    assert cfg.seed_threshold >= 0.7 and f1 == 1.0
    assert cfg.min_size == 1  # other settings kept
    assert instance_f1([probs], [lab], cfg) == f1
    # one merged object: IoU exactly 0.5 with each square, so it matches one of them (IoU >= 0.5): TP 1, FN 1
    assert instance_f1([probs], [lab], PredictConfig(min_size=1, seed_threshold=0.6)) == 2 / 3


def test_tuned_settings_travel_in_the_model_file(tmp_path):
    model = UNet(ModelConfig(widths=(4, 8)))
    mf = io.from_module(model, model.config, NormConfig(), predict={"threshold": 0.4, "seed_threshold": 0.7,
                                                                     "tile": 256, "overlap": 32})
    seg = load_segmenter(io.save(mf, tmp_path / "m.slimseg"))
    assert (seg.predict_config.threshold, seg.predict_config.seed_threshold) == (0.4, 0.7)
    assert seg.settings(tile=128, overlap=16) == PredictConfig(tile=128, overlap=16, threshold=0.4, seed_threshold=0.7)


def _two_blurred_cores():
    """Two touching squares whose centredness blurs together: 0.85 everywhere between the cores, which
    peak at 1.0 and 0.97, so every seed threshold of the tuning grid merges them."""
    lab = np.zeros((10, 24), np.uint16)
    lab[2:8, 2:12], lab[2:8, 12:22] = 1, 2
    probs = np.zeros((2, 10, 24), np.float32)
    probs[0][lab > 0] = 0.95
    probs[1][lab > 0] = 0.5
    probs[1, 3:7, 4:20] = 0.85
    probs[1, 4:6, 6:8], probs[1, 4:6, 16:18] = 1.0, 0.97
    return lab, probs


def test_h_maxima_seeds_split_cores_that_no_threshold_separates():
    from slimseg.predict import labels_from_probabilities
    from slimseg.tune import SEED_THRESHOLDS

    lab, probs = _two_blurred_cores()
    for t in SEED_THRESHOLDS:  # all below the 0.85 between the cores: one seed, one object
        assert labels_from_probabilities(probs, PredictConfig(min_size=1, seed_threshold=t)).max() == 1
    split = labels_from_probabilities(probs, PredictConfig(min_size=1, seed_threshold=0.2, seed_h=0.1))
    assert split.max() == 2 and instance_f1([probs], [lab], PredictConfig(min_size=1, seed_threshold=0.2,
                                                                        seed_h=0.1)) == 1.0
    # a peak rising less than h above the saddle (0.97 - 0.85 = 0.12) is no seed of its own
    assert labels_from_probabilities(probs, PredictConfig(min_size=1, seed_threshold=0.2, seed_h=0.15)).max() == 1
    cfg, f1 = tune_thresholds([probs], [lab], PredictConfig(min_size=1))
    assert f1 == 1.0 and cfg.seed_h == 0.1


def test_tuning_keeps_core_seeds_where_they_do_as_well():
    lab = np.zeros((10, 20), np.uint16)
    lab[2:8, 2:8], lab[2:8, 12:18] = 1, 2  # apart: every rule finds both
    probs = np.zeros((2, 10, 20), np.float32)
    probs[0][lab > 0], probs[1][lab > 0] = 0.95, 0.9
    cfg, f1 = tune_thresholds([probs], [lab], PredictConfig(min_size=1))
    assert f1 == 1.0 and cfg.seed_h == 0.0


def test_tuned_thresholds_replace_the_start_models_only_beyond_two_standard_errors():
    from slimseg.tune import beats_start

    # 100 objects at F1 0.8: standard error sqrt(0.8 * 0.2 / 100) = 0.04, so the bar is 0.08
    assert not beats_start(0.87, 0.80, 100)
    assert beats_start(0.89, 0.80, 100)
    assert beats_start(0.83, 0.80, 10_000)  # 2 x 0.004: many objects, a small gain counts
    assert not beats_start(0.99, 0.80, 0)  # no objects: nothing outvotes the start
    assert not beats_start(0.80, 0.80, 10 ** 9)  # a tie keeps the start

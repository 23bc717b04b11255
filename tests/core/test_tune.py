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

"""The blocking API a cellpose or stardist user can guess: slimseg.train / load / evaluate."""

import subprocess
import sys

import numpy as np
import pytest

import slimseg
from slimseg.config import ModelConfig
from slimseg.errors import InputError
from slimseg.segmenter import Segmenter
from slimseg.training import TrainResult

from _synthetic import make_disks


def test_train_save_load_predict_evaluate(tmp_path):
    images, labels = make_disks(4, size=64, seed=3)
    result = slimseg.train(images, labels, epochs=1, patches_per_epoch=8, batch_size=4, patch_size=32,
                           model=ModelConfig(widths=(4, 8)))
    assert isinstance(result, TrainResult) and result.train_config.epochs == 1
    path = result.save(tmp_path / "m.slimseg")
    model = slimseg.load(path)
    assert isinstance(model, Segmenter)
    labels_pred = model.predict(images[0])
    assert labels_pred.shape == images[0].shape and labels_pred.dtype == np.uint32
    scores = slimseg.evaluate(path, images[:2], labels[:2])
    assert scores["n_images"] == 2 and 0 <= scores["dice"] <= 1 and len(scores["per_image"]) == 2
    with pytest.raises(InputError, match="exists"):
        result.save(path)


def test_unknown_options_and_missing_labels_say_what_to_fix():
    images, labels = make_disks(2, size=32)
    with pytest.raises(InputError, match="unknown TrainConfig option.*epochz.*choose from"):
        slimseg.train(images, labels, epochz=3)
    with pytest.raises(InputError, match="labels"):
        slimseg.train(images)


def test_ctrl_c_returns_the_best_model_so_far(monkeypatch):
    import slimseg.training as training

    images, labels = make_disks(4, size=64)
    real_fit = training.Trainer.fit

    def interrupted(self):
        gen = real_fit(self)
        yield next(gen)
        raise KeyboardInterrupt

    monkeypatch.setattr(training.Trainer, "fit", interrupted)
    with pytest.warns(UserWarning, match="interrupted"):
        result = slimseg.train(images, labels, epochs=1, patches_per_epoch=4, batch_size=4, patch_size=32,
                               model=ModelConfig(widths=(4, 8)))
    assert isinstance(result, TrainResult)


def test_the_facade_stays_light():
    code = "import slimseg, sys; slimseg.train; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

import math

import numpy as np
import pytest
import torch

from slimseg.config import ModelConfig, TrainConfig
from slimseg.errors import InputError, TrainingFailedError
from slimseg.events import EpochEnd, Message, StepEnd, run
from slimseg.scale import median_diameter
from slimseg.training import FAILED_DICE, Trainer, to_model_file

TINY = ModelConfig(widths=(8, 16))


def cfg(**kw):
    base = dict(epochs=3, batch_size=4, patch_size=32, patches_per_epoch=16, device="cpu", bf16="off",
                lr=5e-3, optimizer="adam", loss="bce+dice")
    base.update(kw)
    return TrainConfig(**base)


def test_training_learns_disks_and_yields_events(disks):
    images, labels = disks
    events = []
    result = run(Trainer(images, labels, cfg(epochs=6), TINY).fit(), events.append)
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert len(epochs) == 6 and any(isinstance(e, StepEnd) for e in events)
    assert isinstance(events[0], Message)
    assert epochs[-1].train_loss < epochs[0].train_loss
    assert result.best_val_dice > 0.5 and not result.model.training
    assert result.best_val_dice == max(e.val_dice for e in epochs)
    assert len(result.split["val"]) == 1 and len(result.history) == 6
    trained = [labels[int(name.split()[-1])] for name in result.split["train"]]  # "image 3" -> labels[3]
    assert result.predict_config.trained_diameter == round(median_diameter(trained), 2) > 9  # radius-5 discs
    assert to_model_file(result).meta["predict"]["trained_diameter"] == result.predict_config.trained_diameter


def test_same_seed_same_result(disks):
    images, labels = disks
    a = run(Trainer(images, labels, cfg(epochs=1), TINY).fit())
    b = run(Trainer(images, labels, cfg(epochs=1), TINY).fit())
    for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        torch.testing.assert_close(v, w, msg=k)


def test_stopping_early_keeps_the_best_model(disks):
    images, labels = disks
    trainer = Trainer(images, labels, cfg(epochs=50), TINY)
    gen = trainer.fit()
    seen = 0
    for ev in gen:
        if isinstance(ev, EpochEnd):
            seen += 1
            if seen == 2:
                break
    gen.close()  # what a GUI Stop does
    result = trainer.result()
    assert result.best_epoch in (1, 2) and len(result.history) == 2
    assert math.isfinite(result.best_val_dice)
    mf = to_model_file(result)
    assert mf.meta["training"]["best_epoch"] == result.best_epoch


def test_a_quick_result_then_tuning_gives_the_full_result(disks):
    """A stop that must not wait: result(recalibrate=False, tune=False) first, tune() later."""
    images, labels = disks
    trainer = Trainer(images, labels, cfg(epochs=50), TINY)
    gen = trainer.fit()
    next(e for e in gen if isinstance(e, EpochEnd))
    gen.close()
    quick = trainer.result(recalibrate=False, tune=False)
    assert math.isnan(quick.tuned_instance_f1) and quick.best_epoch == 1
    weights = {k: v.clone() for k, v in quick.model.state_dict().items()}
    tuned = trainer.tune()
    assert tuned is quick and math.isfinite(tuned.tuned_instance_f1)
    full = trainer.result(recalibrate=False)  # the one-call form tunes the same way
    assert full.predict_config == tuned.predict_config
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(v, weights[k], msg=k)


def test_time_budget_and_early_stopping(disks):
    images, labels = disks
    result = run(Trainer(images, labels, cfg(epochs=1000, minutes=0.05), TINY).fit())
    assert result.stop_reason == "time budget" and result.history[-1]["elapsed_s"] < 30
    result = run(Trainer(images, labels, cfg(epochs=1000, patience=1, lr=1e-9), TINY).fit())
    assert result.stop_reason == "early stopping"


def test_steps_per_epoch_counts_a_last_partial_batch(disks):
    assert [cfg(patches_per_epoch=n).steps_per_epoch() for n in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]
    images, labels = disks
    events = []
    run(Trainer(images, labels, cfg(epochs=2, patches_per_epoch=10), TINY).fit(), events.append)
    assert [e.step for e in events if isinstance(e, EpochEnd)] == [3, 6]


def test_bad_names_fail_before_training(disks):
    images, labels = disks
    with pytest.raises(InputError, match="rmsprop"):
        Trainer(images, labels, cfg(optimizer="adamz"), TINY)
    with pytest.raises(InputError, match="jaccard"):
        Trainer(images, labels, cfg(loss="bce+iou"), TINY)
    with pytest.raises(InputError):
        TrainConfig(val_fraction=1.5)


def test_images_smaller_than_a_patch_are_padded():
    img = np.zeros((20, 24), np.uint8)
    img[5:12, 5:12] = 200
    lab = (img > 0).astype(np.uint8)
    result = run(Trainer([img, img], [lab, lab], cfg(epochs=1, patch_size=64), TINY).fit())
    assert len(result.history) == 1


def test_a_run_that_learned_nothing_raises_instead_of_returning_a_model(disks):
    images, labels = disks
    trainer = Trainer(images, labels, cfg(epochs=2, optimizer="sgd", lr=1e6, patches_per_epoch=8), TINY)
    with pytest.raises(TrainingFailedError, match=r"training failed.*validation Dice is 0.0000.*lower the learning"):
        run(trainer.fit())
    assert issubclass(TrainingFailedError, InputError)  # the CLI's exit code 2, the widgets' notification
    assert max(row["val_dice"] for row in trainer._result.history) < FAILED_DICE


def test_without_a_validation_split_the_dice_does_not_fail_a_run(disks):
    images, labels = disks
    # nothing to judge by (the Dice is NaN), so the run returns its model
    result = run(Trainer(images, labels, cfg(epochs=1, optimizer="sgd", lr=1e6, patches_per_epoch=8,
                                             val_fraction=0), TINY).fit())
    assert math.isnan(result.best_val_dice)

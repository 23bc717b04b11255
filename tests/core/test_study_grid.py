"""The study's configuration: names checked up front, fair runs, budgets (no Dask, no training)."""

from __future__ import annotations

import numpy as np
import pytest

from slimseg.cli import main
from slimseg.config import ModelConfig
from slimseg.errors import InputError
from slimseg.study.grid import RunSpec, check_names, differences, make_config
from slimseg.study.runner import check_budget, pending_runs


def _config(**kw):
    base = dict(optimizers="adam,rmsprop", losses="bce,bce+jaccard", seeds=2, minutes_per_run=0.5,
                model=ModelConfig(widths=(4, 8)), train={"patch_size": 32, "batch_size": 4, "patches_per_epoch": 8})
    base.update(kw)
    return make_config(**base)


def test_every_bad_name_is_listed_with_the_valid_ones():
    with pytest.raises(InputError) as err:
        make_config("adam,adamm,rmsprop,nesterov", "bce,dicee,bce+jacard", 2, 0.5)
    msg = str(err.value)
    for bad in ("adamm", "nesterov", "dicee", "bce+jacard"):
        assert bad in msg
    for valid in ("rmsprop", "adagrad", "jaccard", "focal", "tversky"):
        assert valid in msg


def test_cli_refuses_unknown_names_before_creating_anything(tmp_path, capsys):
    out = tmp_path / "study"
    code = main(["study", str(tmp_path / "no-data"), "--out", str(out), "--optimizers", "adam,lion",
                 "--losses", "dice", "--minutes-per-run", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "lion" in err and "rmsprop" in err
    assert not out.exists()


def test_losses_are_canonical_and_deduplicated():
    opts, losses = check_names(["adam"], ["BCE + Jaccard", "bce+jaccard", "0.5*bce+dice"])
    assert losses == ["bce+jaccard", "0.5*bce+dice"]


def test_runs_are_seed_major_with_file_safe_ids():
    cfg = _config(losses="bce,0.5*bce+dice")
    runs = cfg.runs()
    assert len(runs) == 2 * 2 * 2
    assert [r.seed for r in runs] == [0, 0, 0, 0, 1, 1, 1, 1]
    ids = {r.run_id for r in runs}
    assert len(ids) == len(runs)
    assert all("*" not in i and "/" not in i for i in ids)


def test_learning_rates_are_per_optimizer_defaults_unless_overridden():
    from slimseg.optim import default_lr

    cfg = _config()
    assert cfg.lrs == {"adam": default_lr("adam"), "rmsprop": default_lr("rmsprop")}
    cfg = _config(lr="rmsprop=5e-4")
    assert cfg.lrs["rmsprop"] == 5e-4 and cfg.lrs["adam"] == default_lr("adam")
    assert "rmsprop=0.0005" in cfg.lr_policy
    for bad in ("rmsprop", "rmsprop=-1", "sgd=0.1"):  # no value, negative, not in the grid
        with pytest.raises(InputError):
            _config(lr=bad)


def test_scoring_is_fixed_or_tuned():
    assert _config().scoring == "fixed" and _config(scoring="tuned").scoring == "tuned"
    with pytest.raises(InputError, match="fixed, tuned"):
        _config(scoring="best")


def test_a_budget_is_required_and_positive():
    with pytest.raises(InputError, match="budget"):
        _config(minutes_per_run=None, epochs=None)
    with pytest.raises(InputError, match="minutes"):
        _config(minutes_per_run=0)
    with pytest.raises(InputError, match="seeds"):
        _config(seeds=0)


def test_every_run_shares_the_split_seed_and_the_budget():
    cfg = _config(split_seed=7)
    tcs = [cfg.train_config(r) for r in cfg.runs()]
    assert {tc.split_seed for tc in tcs} == {7}
    assert {tc.minutes for tc in tcs} == {0.5}
    assert {tc.seed for tc in tcs} == {0, 1}
    assert {(tc.optimizer, tc.lr) for tc in tcs} == {("adam", cfg.lrs["adam"]), ("rmsprop", cfg.lrs["rmsprop"])}


def test_trainer_split_follows_split_seed_not_seed():
    from slimseg.config import TrainConfig
    from slimseg.training import Trainer

    rng = np.random.default_rng(0)
    images = [rng.random((32, 32), dtype=np.float32) for _ in range(10)]
    labels = [np.pad(np.ones((8, 8), np.uint16), 12) for _ in range(10)]
    model = ModelConfig(widths=(4, 8))

    def split(seed, split_seed):
        tc = TrainConfig(seed=seed, split_seed=split_seed, patch_size=32, val_fraction=0.3)
        return Trainer(images, labels, tc, model).split

    assert split(0, 5) == split(1, 5) == split(2, 5)
    assert split(0, None) != split(1, None)  # without split_seed the seed still decides (old behaviour)
    assert split(0, 5) != split(0, 6)


def test_budget_probe_refuses_a_budget_shorter_than_one_epoch():
    cfg = _config(minutes_per_run=0.5)
    probe = {"epoch_s": 45.0, "steps_per_epoch": 32, "step_s": 1.2, "val_s": 6.6}
    with pytest.raises(InputError, match="too small to finish one epoch"):
        check_budget(cfg, probe)
    assert check_budget(cfg, {**probe, "epoch_s": 20.0}) is None
    cfg = _config(minutes_per_run=1.0, epochs=5)
    warning = check_budget(cfg, {**probe, "epoch_s": 20.0})
    assert warning and "before 5 epochs" in warning
    assert check_budget(_config(minutes_per_run=None, epochs=3), probe) is None  # epoch budgets need no probe


def test_pending_runs_skip_finished_and_optionally_failed():
    cfg = _config()
    runs = cfg.runs()
    finished = {runs[0].key: {"status": "ok"}, runs[1].key: {"status": "failed"}}
    assert pending_runs(cfg, finished) == runs[2:]
    assert pending_runs(cfg, finished, retry_failed=True) == runs[1:]


def test_differences_name_the_changed_settings():
    a = _config().to_dict()
    b = _config(minutes_per_run=1.0, seeds=3).to_dict()
    diff = differences(a, b)
    assert any(d.startswith("minutes_per_run: 0.5 vs 1.0") for d in diff)
    assert any(d.startswith("seeds:") for d in diff)
    assert differences(a, _config().to_dict()) == []


def test_runspec_key():
    r = RunSpec("adam", "bce", 3, 1e-3)
    assert r.key == ("adam", "bce", 3)

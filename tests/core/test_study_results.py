"""The resumable results folder and the statistics of the report (no Dask, no training)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slimseg.config import ModelConfig
from slimseg.errors import InputError
from slimseg.study.grid import make_config
from slimseg.study.results import COLUMNS, ResultsStore, read_rows
from slimseg.study.stats import cells, marginal, paired_test, per_image, ranked


def _config(**kw):
    base = dict(optimizers="adam,sgd", losses="bce,dice", seeds=2, minutes_per_run=0.5,
                model=ModelConfig(widths=(4, 8)))
    base.update(kw)
    return make_config(**base)


def _ok(dice, f1=0.5):
    return {"status": "ok", "row": {"dice": dice, "instance_f1": f1, "epochs_run": 2, "steps": 8},
            "detail": {"history": [{"epoch": 1, "step": 4, "val_dice": 0.3, "train_loss": 0.7}],
                       "per_image": [{"name": "a", "dice": dice, "tp": 1, "fp": 0, "fn": 1}]}}


def test_rows_round_trip_and_a_retry_replaces_the_failed_row(tmp_path):
    cfg = _config()
    runs = cfg.runs()
    with ResultsStore(tmp_path / "s") as store:
        assert store.open(cfg) == {}
        store.record(runs[0], _ok(0.8))
        store.record(runs[1], {"status": "failed", "row": {"error": "InputError: the loss became NaN, x"}})
        store.record(runs[1], _ok(0.6))
    rows = read_rows(tmp_path / "s" / "results.csv")
    assert len(rows) == 3
    assert rows[1]["error"] == "InputError: the loss became NaN, x"  # commas survive quoting
    with ResultsStore(tmp_path / "s") as store:
        finished = store.open(cfg)
    assert set(finished) == {runs[0].key, runs[1].key}
    assert finished[runs[1].key]["status"] == "ok" and finished[runs[1].key]["test_dice"] == 0.6
    assert json.loads((tmp_path / "s" / "runs" / f"{runs[0].run_id}.json").read_text())["per_image"][0]["dice"] == 0.8


def test_a_row_cut_short_by_a_kill_is_dropped(tmp_path):
    cfg = _config()
    runs = cfg.runs()
    with ResultsStore(tmp_path) as store:
        store.open(cfg)
        store.record(runs[0], _ok(0.8))
    csv = tmp_path / "results.csv"
    with open(csv, "a") as fh:
        fh.write("sgd__bce__s0,sgd,bce,0,0.05,ok,,2,8")  # no newline: the writer was killed mid-row
    assert len(read_rows(csv)) == 1
    with ResultsStore(tmp_path) as store:
        assert set(store.open(cfg)) == {runs[0].key}
        store.record(runs[1], _ok(0.7))
    text = csv.read_text()
    assert text.count("\n") == 3 and text.splitlines()[0] == ",".join(COLUMNS)
    assert [r["run_id"] for r in read_rows(csv)] == [runs[0].run_id, runs[1].run_id]


def test_results_of_another_configuration_are_refused(tmp_path):
    with ResultsStore(tmp_path) as store:
        store.open(_config())
        store.record(_config().runs()[0], _ok(0.8))
    with pytest.raises(InputError) as err, ResultsStore(tmp_path) as store:
        store.open(_config(minutes_per_run=2.0))
    assert "different study configuration" in str(err.value) and "minutes_per_run: 0.5 vs 2.0" in str(err.value)
    with ResultsStore(tmp_path) as store:  # the same configuration reopens (resume)
        assert len(store.open(_config())) == 1


def test_a_configuration_without_results_may_change(tmp_path):
    with ResultsStore(tmp_path) as store:
        store.open(_config())
    with ResultsStore(tmp_path) as store:
        assert store.open(_config(minutes_per_run=2.0)) == {}
    assert json.loads((tmp_path / "study.json").read_text())["config"]["minutes_per_run"] == 2.0


def test_a_folder_of_other_files_is_refused(tmp_path):
    (tmp_path / "thesis.docx").write_text("mine")
    with pytest.raises(InputError, match="holds no slimseg study"):
        ResultsStore(tmp_path).open(_config())
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        ResultsStore(tmp_path / "file").open(_config())


def test_two_studies_cannot_write_one_folder(tmp_path):
    pytest.importorskip("fcntl")
    first = ResultsStore(tmp_path)
    first.open(_config())
    try:
        with pytest.raises(InputError, match="another slimseg study"):
            ResultsStore(tmp_path).open(_config())
    finally:
        first.close()
    with ResultsStore(tmp_path) as again:  # released
        again.open(_config())


def test_cells_rank_by_mean_and_ignore_failed_runs():
    cfg = _config()
    rows = []
    values = {("adam", "bce"): [0.8, 0.9], ("adam", "dice"): [0.7, 0.6], ("sgd", "bce"): [0.5, None],
              ("sgd", "dice"): [None, None]}
    for (o, lo), vs in values.items():
        for seed, v in enumerate(vs):
            rows.append({"run_id": f"{o}{lo}{seed}", "optimizer": o, "loss": lo, "seed": seed,
                         "status": "ok" if v is not None else "failed", "test_dice": v if v is not None else np.nan,
                         "test_instance_f1": 0.5})
    cs = cells(cfg, rows)
    order = ranked(cs, "test_dice")
    assert [c.name for c in order] == ["adam + bce", "adam + dice", "sgd + bce"]  # sgd+dice: no finished run
    assert order[0].mean("test_dice") == pytest.approx(0.85)
    assert order[0].std("test_dice") == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert np.isnan(order[2].std("test_dice"))  # one run: no spread
    assert marginal(cs, "optimizer", "test_dice") == pytest.approx({"adam": 0.75, "sgd": 0.5})
    assert marginal(cs, "loss", "test_dice") == pytest.approx({"bce": (0.85 + 0.5) / 2, "dice": 0.65})


def test_per_image_scores_average_over_seeds_on_common_images():
    d1 = {"per_image": [{"name": "a", "dice": 0.8, "tp": 2, "fp": 0, "fn": 2}, {"name": "b", "dice": 0.4, "tp": 0, "fp": 0, "fn": 0}]}
    d2 = {"per_image": [{"name": "a", "dice": 0.6, "tp": 1, "fp": 1, "fn": 0}]}
    assert per_image([d1, d2], "dice") == {"a": pytest.approx(0.7)}
    f1 = per_image([d1], "instance_f1")
    assert f1["a"] == pytest.approx(4 / 6) and f1["b"] == 1.0  # nothing to find, nothing found: perfect


def test_paired_test_on_known_differences():
    base = {f"im{i}": 0.5 + 0.01 * i for i in range(10)}
    better = {k: v + 0.1 for k, v in base.items()}
    t = paired_test(better, base)
    assert t["n"] == 10 and t["wins"] == 10 and t["losses"] == 0
    assert t["mean_diff"] == pytest.approx(0.1)
    assert t["p"] == pytest.approx(2 / 2**10)  # exact two-sided Wilcoxon: all 10 differences positive
    assert t["ci95"][0] == pytest.approx(0.1) and t["ci95"][1] == pytest.approx(0.1)
    same = paired_test(base, dict(base))
    assert same["p"] == 1.0 and same["ties"] == 10
    mixed = {k: v + (0.05 if i % 2 else -0.05) for i, (k, v) in enumerate(base.items())}
    assert paired_test(mixed, base)["p"] > 0.3  # five up, five down: no evidence either way


def test_a_folder_from_before_a_new_setting_still_resumes(tmp_path):
    cfg = _config()
    with ResultsStore(tmp_path) as store:
        store.open(cfg)
        store.record(cfg.runs()[0], _ok(0.8))
    study = json.loads((tmp_path / "study.json").read_text())
    del study["config"]["scoring"]  # written by a version without that setting: its default applies
    (tmp_path / "study.json").write_text(json.dumps(study))
    with ResultsStore(tmp_path) as store:
        assert len(store.open(cfg)) == 1
    with pytest.raises(InputError, match="scoring"), ResultsStore(tmp_path) as store:
        store.open(_config(scoring="tuned"))


def test_a_stop_while_a_run_is_written_comes_after_its_row(tmp_path, monkeypatch):
    import os
    import signal

    def stop(signum, frame):  # what `slimseg study` does on SIGTERM
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    cfg = _config()
    try:
        with ResultsStore(tmp_path) as store:
            store.open(cfg)
            write_json = store._write_json

            def interrupted(path, obj):  # a kill in the middle of writing the run's files
                os.kill(os.getpid(), signal.SIGTERM)
                write_json(path, obj)

            monkeypatch.setattr(store, "_write_json", interrupted)
            with pytest.raises(KeyboardInterrupt):
                store.record(cfg.runs()[0], _ok(0.8))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert len(read_rows(tmp_path / "results.csv")) == 1  # the run was recorded in full, then the stop came


@pytest.mark.parametrize("torn", [
    b"sgd__bce__s0,sgd,bce,0,0.05,ok,,2,8",  # a kill mid-row: no newline yet
    b"\0" * 40,  # a crash after the file grew but before its bytes reached the disk
    b"sgd__bce__s0,sgd,bce,0,0.05,ok,,2,8" + b"\0" * 17 + b"\n",  # the same, followed by a newline
    b"\xff\xfe,sgd,bce,,0.05,ok\n",  # bytes that are not UTF-8, and too few cells
])
def test_a_torn_last_row_is_skipped_and_repaired_not_fatal(tmp_path, torn):
    cfg = _config()
    runs = cfg.runs()
    with ResultsStore(tmp_path) as store:
        store.open(cfg)
        store.record(runs[0], _ok(0.8))
    csv = tmp_path / "results.csv"
    with open(csv, "ab") as fh:
        fh.write(torn)
    assert [r["run_id"] for r in read_rows(csv)] == [runs[0].run_id]
    with ResultsStore(tmp_path) as store:
        assert set(store.open(cfg)) == {runs[0].key}  # the torn run counts as not done: it runs again
        store.record(runs[1], _ok(0.7))
    assert [r["run_id"] for r in read_rows(csv)] == [runs[0].run_id, runs[1].run_id]
    assert read_rows(csv)[1]["test_dice"] == 0.7

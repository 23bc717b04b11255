"""``slimseg study`` end to end on a local Dask cluster with tiny models and synthetic nuclei:
the same code path as a real study (cluster, dispatch, client-side CSV, report)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")
tifffile = pytest.importorskip("tifffile")

from slimseg import io  # noqa: E402
from slimseg.cli import main  # noqa: E402
from slimseg.config import PredictConfig  # noqa: E402
from slimseg.study.results import read_rows  # noqa: E402
from slimseg.study.task import usable_cores  # noqa: E402

pytestmark = pytest.mark.slow
TINY = ["--patch-size", "32", "--batch-size", "4", "--patches-per-epoch", "8", "--depth", "2", "--base-width", "4",
        "--test-fraction", "0.3", "--val-fraction", "0.2"]


def make_data(root: Path, n: int = 10, size: int = 40) -> Path:
    """Bright disks on a noisy dark background, with their instance labels."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for k in range(n):
        lab = np.zeros((size, size), np.uint16)
        for i in range(3):
            cy, cx = rng.integers(8, size - 8, 2)
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= int(rng.integers(4, 7)) ** 2] = i + 1
        img = np.clip((lab > 0) * 150 + rng.normal(30, 10, lab.shape), 0, 255).astype(np.uint8)
        tifffile.imwrite(root / "images" / f"im{k}.tif", img)
        tifffile.imwrite(root / "labels" / f"im{k}.tif", lab)
    return root


def study_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["study", str(data), "--out", str(out), "--optimizers", "adam,rmsprop,sgd", "--losses", "bce,bce+jaccard",
            "--seeds", "1", "--epochs", "2", "--lr", "sgd=1e12", "--workers", "2", "--no-compress", *TINY, *extra]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    data = make_data(root / "data")
    out = root / "out"
    assert main(study_args(data, out)) == 0
    return data, out


def test_every_run_lands_once_in_the_csv(study):
    _, out = study
    rows = read_rows(out / "results.csv")
    keys = [(r["optimizer"], r["loss"], r["seed"]) for r in rows]
    assert sorted(keys) == sorted((o, lo, 0) for o in ("adam", "rmsprop", "sgd") for lo in ("bce", "bce+jaccard"))
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["optimizer"] for r in ok} == {"adam", "rmsprop"}
    for r in ok:
        assert 0 <= r["test_dice"] <= 1 and 0 <= r["test_instance_f1"] <= 1
        assert r["epochs_run"] == 2 and r["steps"] == 4 and r["first_epoch_complete"] == "True"
        assert r["test_n_images"] == 3 and r["torch_threads"] == max(1, usable_cores() // 2)  # cores / 2 workers
        assert r["train_s"] > 0 and r["wall_s"] >= r["train_s"] + r["eval_s"]
        mf = io.load(out / "models" / f"{r['run_id']}.slimseg")
        assert mf.meta["metrics"]["test"]["dice"] == pytest.approx(r["test_dice"])
        assert mf.meta["training"]["train_config"]["split_seed"] == 0
        detail = json.loads((out / "runs" / f"{r['run_id']}.json").read_text())
        assert detail["scoring"] == dataclasses.asdict(PredictConfig())  # one post-processing for every run
        assert len(detail["per_image"]) == 3 and len(detail["history"]) == 2
    assert len({r["worker"] for r in ok}) >= 1


def test_a_crashed_run_is_recorded_with_its_error_and_the_study_goes_on(study):
    _, out = study
    failed = [r for r in read_rows(out / "results.csv") if r["status"] == "failed"]
    assert {r["optimizer"] for r in failed} == {"sgd"} and len(failed) == 2
    assert all("NaN" in r["error"] for r in failed)  # lr 1e12 diverges; the trainer says so
    assert "| sgd | bce | 0 |" in (out / "report.md").read_text()


def test_every_run_uses_the_same_held_out_and_validation_split(study):
    _, out = study
    splits = {json.dumps(json.loads(p.read_text())["split"], sort_keys=True) for p in (out / "runs").glob("*.json")
              if json.loads(p.read_text())["status"] == "ok"}
    assert len(splits) == 1
    test_names = json.loads((out / "study.json").read_text())["config"]["data"]["test_names"]
    split = json.loads(splits.pop())
    assert not set(test_names) & (set(split["train"]) | set(split["val"]))


def test_report_shows_the_csv_means(study):
    _, out = study
    rows = [r for r in read_rows(out / "results.csv") if r["status"] == "ok"]
    best = max(rows, key=lambda r: r["test_dice_mean"])  # one seed: the cell mean is the run
    report = (out / "report.md").read_text()
    assert f"| 1 | {best['optimizer']} | {best['loss']} | {best['test_dice_mean']:.3f} | {best['test_dice']:.3f} |" in report
    assert "Wilcoxon signed-rank" in report and "RMSprop with BCE+Jaccard" in report
    for png in ("heatmap.png", "seeds.png", "curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in report
    with open(out / "per_image.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3 * len(rows)


def test_same_command_again_skips_finished_runs(study, capsys):
    data, out = study
    before = (out / "results.csv").read_bytes()
    assert main(study_args(data, out, "--no-report")) == 0
    assert "6 finished already, 0 to run" in capsys.readouterr().err
    assert (out / "results.csv").read_bytes() == before


def test_another_configuration_is_refused(study, capsys):
    data, out = study
    assert main(study_args(data, out, "--seeds", "2")) == 2
    err = capsys.readouterr().err
    assert "different study configuration" in err and "seeds" in err


def test_retry_failed_runs_only_the_failed_ones_again(study, capsys):
    data, out = study
    before = (out / "results.csv").read_text()
    assert main(study_args(data, out, "--no-report", "--retry-failed")) == 0
    assert "4 finished already, 2 to run" in capsys.readouterr().err
    after = (out / "results.csv").read_text()
    assert after.startswith(before)  # earlier rows untouched; retries appended
    n_before = len(read_rows(out / "results.csv")) - 2
    added = read_rows(out / "results.csv")[n_before:]
    assert sorted(r["run_id"] for r in added) == ["sgd__bce+jaccard__s0", "sgd__bce__s0"]


def test_compression_table_of_the_winner_goes_into_the_report(study):
    from slimseg.study.compression import compression_section, unavailable_reason

    pytest.importorskip("torch_pruning")
    if unavailable_reason():
        pytest.skip(unavailable_reason())
    _, out = study
    best = max((r for r in read_rows(out / "results.csv") if r["status"] == "ok"), key=lambda r: r["test_dice_mean"])
    text = compression_section(out, methods=("prune-structured",), minutes=0.05, max_steps=1)
    assert f"`{best['run_id']}`" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 3 and "prune-structured" in table[2]  # header, float reference, pruned model
    pruned = io.load(out / "compressed" / f"{best['run_id']}.prune-structured.slimseg")
    assert sum(pruned.model_config.widths) < sum(io.load(out / "models" / f"{best['run_id']}.slimseg").model_config.widths)
    assert main(["study-report", str(out)]) == 0
    assert text in (out / "report.md").read_text()


def test_tuned_scoring_uses_each_runs_own_thresholds(tmp_path):
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["study", str(data), "--out", str(out), "--optimizers", "adam", "--losses", "bce", "--seeds", "1",
                 "--epochs", "1", "--workers", "1", "--scoring", "tuned", "--no-report", *TINY]) == 0
    detail = json.loads((out / "runs" / "adam__bce__s0.json").read_text())
    assert detail["scoring"] == detail["tuned_predict_config"]
    mf = io.load(out / "models" / "adam__bce__s0.slimseg")
    assert detail["scoring"] == {**detail["scoring"], **mf.meta["predict"]}  # the thresholds the model carries


def test_unreachable_scheduler_fails_fast(tmp_path, capsys):
    data = make_data(tmp_path / "data")
    t = time.perf_counter()
    code = main(["study", str(data), "--out", str(tmp_path / "out"), "--optimizers", "adam", "--losses", "bce",
                 "--epochs", "1", "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "1", *TINY])
    assert code == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err
    assert time.perf_counter() - t < 15
    assert not (tmp_path / "out" / "results.csv").exists()


def test_budget_too_small_for_one_epoch_is_refused_before_any_run(tmp_path, capsys):
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    code = main(["study", str(data), "--out", str(out), "--optimizers", "adam", "--losses", "bce",
                 "--minutes-per-run", "0.00001", "--workers", "1", *TINY])
    assert code == 2
    assert "too small to finish one epoch" in capsys.readouterr().err
    assert not (out / "results.csv").exists()


def test_killed_study_resumes_where_it_stopped(tmp_path):
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "slimseg.cli", "study", str(data), "--out", str(out), "--optimizers",
            "adam,rmsprop", "--losses", "bce,dice", "--seeds", "2", "--epochs", "2", "--workers", "1",
            "--no-report", *TINY]
    src = str(Path(__file__).parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    csv_path = out / "results.csv"
    deadline = time.time() + 120
    while time.time() < deadline and len(read_rows(csv_path)) < 2 and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # like a batch system's time limit
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    first = read_rows(csv_path)
    first_text = csv_path.read_text()
    assert 2 <= len(first) < 8
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{len(first)} finished already, {8 - len(first)} to run" in result.stderr
    final = read_rows(csv_path)
    assert len(final) == 8 and len({r["run_id"] for r in final}) == 8
    assert csv_path.read_text().startswith(first_text)  # finished rows untouched
    rerun = {line.split("] ")[1].split(":")[0] for line in result.stderr.splitlines() if "] " in line and "study:" in line}
    assert len(rerun) == 8 - len(first)
    assert not any(f"{r['optimizer']} + {r['loss']}, seed {r['seed']}" in rerun for r in first)
    timing = json.loads((out / "timing.json").read_text())
    assert [s["ended"] for s in timing] == ["stopped", "finished"]  # the stopped session's time is kept
    assert [s["n_runs"] for s in timing] == [len(first), 8 - len(first)]


def test_a_dying_worker_does_not_stop_the_study(tmp_path):
    """Workers killed mid-study (OOM killer, a stray kill) are replaced, their runs redone and the data
    they held recomputed, so every run still finishes. (Data put on the cluster with ``scatter`` die with
    their workers: Dask keeps one replica, and a study on this machine once lost it that way.)"""
    psutil = pytest.importorskip("psutil")
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "slimseg.cli", "study", str(data), "--out", str(out), "--optimizers",
            "adam,rmsprop", "--losses", "bce,dice", "--seeds", "2", "--epochs", "2", "--workers", "2",
            "--no-report", *TINY]
    src = str(Path(__file__).parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(read_rows(out / "results.csv")) < 1 and proc.poll() is None:
        time.sleep(0.2)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 2, "expected two Dask worker processes"
    for w in workers:
        w.kill()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    rows = read_rows(out / "results.csv")
    assert len(rows) == 8 and {r["status"] for r in rows} == {"ok"}

"""What a worker does: train and score one run, or probe how long one epoch takes.

These functions know nothing of Dask (the runner submits them), so they run in a test or a plain
loop as well. A run never raises: any error comes back as a failed result with its message, so one
crashed run does not stop the study.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import statistics
import time
import traceback
from typing import Any

from ..config import PredictConfig
from ..host import tune_malloc
from .dataset import StudyData
from .grid import RunSpec, StudyConfig

PROBE_STEPS = 4
# The post-processing every run is scored with: PredictConfig defaults (thresholds 0.5), the same for all.
SCORING = PredictConfig()
# Pooled metrics of the held-out images kept in results.csv (keys of evaluate_events()'s summary).
METRICS = ("dice", "jaccard", "precision", "recall", "dice_mean", "jaccard_mean", "precision_mean",
           "recall_mean", "instance_precision", "instance_recall", "instance_f1", "dsb_score", "n_images")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """Set torch's thread count for this run: ``threads``, or this machine's cores shared evenly by
    the Dask worker's task slots (an existing cluster, where the client cannot know the machines)."""
    import torch

    if not threads:
        slots = 1
        try:
            from distributed import get_worker

            w = get_worker()
            slots = int(getattr(getattr(w, "state", w), "nthreads", 1) or 1)
        except (ImportError, ValueError):
            pass
        threads = max(1, usable_cores() // slots)
    torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def train_and_evaluate(run: RunSpec, config: StudyConfig, data: StudyData, threads: int | None = None
                       ) -> dict[str, Any]:
    """Train ``run`` on the training pool, score it on the held-out images.

    Returns ``{"status", "row", "detail", "model"}``: ``row`` holds the results.csv fields, ``detail``
    the curves and per-image scores, ``model`` the :class:`slimseg.io.ModelFile` (None if it failed).
    """
    t0 = time.perf_counter()
    row: dict[str, Any] = {"worker": f"{socket.gethostname()}:{os.getpid()}"}
    tune_malloc()  # the worker is slimseg's own process (Dask's malloc settings slow training)
    try:
        row["torch_threads"] = set_threads(threads)
        out = _train_and_evaluate(run, config, data)
        out["row"] = {**row, **out["row"], "wall_s": time.perf_counter() - t0}
        return out
    except Exception as err:  # noqa: BLE001 - any failure is recorded, the study goes on
        tb = traceback.format_exc(limit=8)
        row.update(error=f"{type(err).__name__}: {err}".replace("\n", " ")[:500], wall_s=time.perf_counter() - t0)
        return {"status": "failed", "row": row, "detail": {"traceback": tb}, "model": None}


def _train_and_evaluate(run: RunSpec, config: StudyConfig, data: StudyData) -> dict[str, Any]:
    from ..evaluation import evaluate_events
    from ..events import run as drain
    from ..training import Trainer, to_model_file

    tc = config.train_config(run)
    t0 = time.perf_counter()
    trainer = Trainer(data.train_images, data.train_labels, tc, config.model_config(), names=data.train_names)
    result = drain(trainer.fit())
    t1 = time.perf_counter()
    scoring = result.predict_config if config.scoring == "tuned" else SCORING
    seg = fast_segmenter(result, tc, scoring)
    metrics = drain(evaluate_events(seg, data.test_images, data.test_labels, scoring, names=data.test_names))
    per_image = metrics.pop("per_image")
    model = to_model_file(result, {"test": metrics})
    t2 = time.perf_counter()
    hist = result.history
    steps_per_epoch = tc.steps_per_epoch()
    row = {
        "epochs_run": len(hist),
        "steps": hist[-1]["step"] if hist else 0,
        "first_epoch_complete": bool(hist) and hist[0]["step"] >= steps_per_epoch,
        "stop_reason": result.stop_reason,
        "best_epoch": result.best_epoch,
        "best_val_dice": result.best_val_dice,
        "train_s": t1 - t0,
        "eval_s": t2 - t1,
        **{k: metrics[k] for k in METRICS},
    }
    detail = {"history": hist, "per_image": per_image, "split": result.split,
              "train_config": dataclasses.asdict(tc), "scoring": dataclasses.asdict(scoring),
              "tuned_predict_config": dataclasses.asdict(result.predict_config)}
    return {"status": "ok", "row": row, "detail": detail, "model": model}


def fast_segmenter(result, tc, scoring: PredictConfig = SCORING):
    """The trained model for scoring, run the way the trainer validates it: channels-last, and bf16
    autocast where the trainer uses it (every run is scored the same way, so the comparison stays
    fair), BatchNorm folded into the convs, post-processed with ``scoring`` (the study's fixed
    :data:`SCORING`, or the run's own tuned thresholds)."""
    import torch

    from ..device import resolve_device, use_bf16
    from ..model import fold_batchnorm
    from ..segmenter import Segmenter

    device = resolve_device(tc.device)
    bf16 = use_bf16(tc.bf16, device)
    model = fold_batchnorm(result.model.eval()).to(device)
    fmt = torch.channels_last if tc.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)

    def model_fn(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device).contiguous(memory_format=fmt)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return model(x).float().cpu()

    return Segmenter(model_fn, result.model_config, result.norm, "float", {}, model, scoring)


def probe_epoch(config: StudyConfig, data: StudyData, threads: int | None = None) -> dict[str, float]:
    """Time a few training steps and one validation of the study's first run; estimate one epoch.

    Returns ``step_s`` (median seconds per step), ``val_s``, ``init_s`` (data preparation, outside
    the budget), ``steps_per_epoch`` and ``epoch_s`` = steps_per_epoch * step_s + val_s.
    """
    from ..events import EpochEnd, StepEnd
    from ..training import Trainer

    set_threads(threads)
    tune_malloc()
    run = config.runs()[0]
    tc = config.train_config(run)
    steps_per_epoch = tc.steps_per_epoch()
    probe = dataclasses.replace(tc, epochs=1, minutes=None,
                                patches_per_epoch=min(tc.patches_per_epoch, PROBE_STEPS * tc.batch_size))
    t0 = time.perf_counter()
    trainer = Trainer(data.train_images, data.train_labels, probe, config.model_config(), names=data.train_names)
    t1 = time.perf_counter()
    gen = trainer.fit()
    stamps, val_s = [t1], 0.0
    try:
        for event in gen:
            now = time.perf_counter()
            if isinstance(event, StepEnd):
                stamps.append(now)
            elif isinstance(event, EpochEnd):
                val_s = now - stamps[-1]
                break
    finally:
        gen.close()
    diffs = [b - a for a, b in zip(stamps[1:], stamps[2:])] or [stamps[-1] - stamps[0]]
    step_s = statistics.median(diffs)
    return {"step_s": step_s, "val_s": val_s, "init_s": t1 - t0, "steps_per_epoch": steps_per_epoch,
            "epoch_s": steps_per_epoch * step_s + val_s}

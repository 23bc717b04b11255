"""The accuracy protocol: train with a fixed CPU budget on the dev set with a seeded 20 % of its images
held out, for several training seeds, and score the held-out images (instance F1 at IoU >= 0.5, DSB
score, pixel Dice, instance precision/recall), with the time-to-accuracy curve of each run (the model a
user stopping at 1, 2, 4, ... minutes would have, scored on the same held-out images).

    PYTHONPATH=src python benchmarks/accuracy.py DATA [--minutes 8] [--seeds 0,1,2] [--set FIELD=VALUE ...]
                                                 [--label NAME] [--json FILE]

``--set`` changes a TrainConfig field for an ablation row (``--set ema=0 --set patch_size=128``);
``--json`` appends the row (settings, per-seed scores, mean and spread) to FILE. The held-out split does
not depend on the training seed, so every row is scored on the same images.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

HOLDOUT_FRACTION, HOLDOUT_SEED = 0.2, 2018  # as scripts/train_pretrained.py --holdout
KEYS = ("instance_f1", "dsb_score", "dice", "instance_precision", "instance_recall")


def parse_sets(pairs: list[str]) -> dict:
    from slimseg.config import TrainConfig

    types = {f.name: f for f in dataclasses.fields(TrainConfig)}
    out = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        if key not in types:
            sys.exit(f"--set {pair}: no TrainConfig field {key!r}")
        out[key] = json.loads(text) if text[:1] in "-0123456789[{tfn" and text not in ("nan",) else text
    return out


def one_run(names, images, labels, held, settings: dict, curve: list[float], save_dir: str | None = None) -> dict:
    """Train once; score the held-out images with the final model and with the best model at each
    ``curve`` minute (as of the first epoch that ends past it)."""
    from slimseg.config import TrainConfig
    from slimseg.evaluation import score_model
    from slimseg.events import EpochEnd
    from slimseg.events import run as run_events
    from slimseg.training import Trainer

    h_names, h_images, h_labels = held
    trainer = Trainer(images, labels, TrainConfig(**settings), names=names)
    marks, snapshots = sorted(curve), []
    gen = trainer.fit()
    t0 = time.perf_counter()
    try:
        while True:
            event = next(gen)
            if isinstance(event, EpochEnd):
                while marks and event.elapsed_s >= marks[0] * 60:
                    snapshots.append((marks.pop(0), event.elapsed_s, event.step, trainer.best_state()))
    except StopIteration as stop:
        result = stop.value
    wall = time.perf_counter() - t0
    history = result.history
    final = run_events(score_model(result.segmenter(), h_images, h_labels, names=h_names)).summary
    if save_dir:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        result.save(Path(save_dir) / f"seed{settings.get('seed', 0)}.slimseg", overwrite=True,
                    metrics={"holdout": {k: final[k] for k in KEYS}})
    points = []
    for minute, elapsed, step, state in snapshots:
        trainer.load_best(state)
        scores = run_events(score_model(trainer.result().segmenter(), h_images, h_labels, names=h_names)).summary
        points.append({"minute": minute, "elapsed_s": round(elapsed, 1), "step": step,
                       **{k: scores[k] for k in KEYS}})
    return {"seed": settings.get("seed", 0), **{k: final[k] for k in KEYS}, "epochs": len(history),
            "steps": history[-1]["step"] if history else 0, "train_wall_s": round(wall, 1),
            "train_elapsed_s": round(history[-1]["elapsed_s"], 1) if history else 0.0,
            "best_epoch": result.best_epoch, "predict": dataclasses.asdict(result.predict_config),
            "curve": points}


def summarise(runs: list[dict]) -> dict:
    out = {}
    for k in KEYS:
        values = [r[k] for r in runs]
        out[k] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
                  "std": statistics.pstdev(values) if len(values) > 1 else 0.0}
    minutes = sorted({p["minute"] for r in runs for p in r["curve"]})
    out["curve"] = {m: statistics.fmean(p["instance_f1"] for r in runs for p in r["curve"] if p["minute"] == m)
                    for m in minutes}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="folder with images/ and labels/ (e.g. ../shared/data/dsb2018_fluo)")
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget per run (0: epochs only)")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds, one run each")
    ap.add_argument("--curve", default="1,2,4,8", help="minutes at which the best model so far is scored")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a TrainConfig field")
    ap.add_argument("--label", default="defaults", help="the row's name")
    ap.add_argument("--json", help="append the row to this JSON file")
    ap.add_argument("--save-models", metavar="DIR", help="also save each run's model file in DIR")
    a = ap.parse_args()

    from slimseg.config import TrainConfig
    from slimseg.data.folder import load_folder
    from slimseg.data.patches import split_indices
    from slimseg.host import tune_process

    tune_process()
    import torch

    names, images, labels = load_folder(a.data)
    keep, held_ix = split_indices(len(images), HOLDOUT_FRACTION, HOLDOUT_SEED)
    held = ([names[i] for i in held_ix], [images[i] for i in held_ix], [labels[i] for i in held_ix])
    train = ([names[i] for i in keep], [images[i] for i in keep], [labels[i] for i in keep])
    sets = parse_sets(a.set)
    base = {"minutes": a.minutes or None, **({"epochs": 10_000} if a.minutes else {}), **sets}
    curve = [float(m) for m in a.curve.split(",") if m] if a.minutes else []
    print(f"{len(keep)} training images, {len(held_ix)} held out; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; settings {base}", file=sys.stderr)
    runs = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        run = one_run(*train, held, {**base, "seed": seed}, curve, a.save_models)
        runs.append(run)
        print(json.dumps(run), file=sys.stderr)
    row = {"label": a.label, "settings": base, "defaults": dataclasses.asdict(TrainConfig()),
           "data": os.path.basename(os.path.normpath(a.data)), "held_out": len(held_ix),
           "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M"),
           "runs": runs, "summary": summarise(runs)}
    s = row["summary"]
    print(f"{a.label}: " + "  ".join(f"{k} {s[k]['mean']:.4f} [{s[k]['min']:.4f}, {s[k]['max']:.4f}]" for k in KEYS)
          + "  curve " + " ".join(f"{m:g}min:{f:.3f}" for m, f in s["curve"].items()))
    if a.json:
        path = Path(a.json)
        rows = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(rows + [row], indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Fine-tuning the built-in model against training from scratch, on a few images it never saw.

    PYTHONPATH=src python benchmarks/finetune.py DATA [--model nuclei] [--few 10] [--finetune-minutes 2]
                                                 [--scratch-minutes 8] [--json FILE]

The built-in model was trained with 20 % of DATA held out (scripts/train_pretrained.py --holdout, the split
of benchmarks/accuracy.py). Of those held-out images, ``--few`` (chosen by a fixed seed) are the user's
annotated images; the rest are scored (instance F1 at IoU >= 0.5, DSB score, Dice): the model as shipped,
the model fine-tuned on the few images for ``--finetune-minutes`` (``slimseg train --init``'s defaults: a
tenth of the learning rate), and a new U-Net trained on the same images from scratch for
``--scratch-minutes`` (the default recipe).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from accuracy import HOLDOUT_FRACTION, HOLDOUT_SEED, KEYS

FEW_SEED = 13


def train_and_score(images, labels, names, test, minutes: float, init=None, seed: int = 0) -> dict:
    from slimseg.config import TrainConfig
    from slimseg.evaluation import score_model
    from slimseg.events import run
    from slimseg.training import Trainer

    t = time.perf_counter()
    trainer = Trainer(images, labels, TrainConfig(minutes=minutes, epochs=10_000, seed=seed), names=names,
                      init=init)
    result = run(trainer.fit())
    wall = time.perf_counter() - t
    scores = run(score_model(result.segmenter(), test[1], test[2], names=test[0])).summary
    return {**{k: scores[k] for k in KEYS}, "train_wall_s": round(wall, 1), "epochs": len(result.history),
            "steps": result.history[-1]["step"] if result.history else 0, "best_epoch": result.best_epoch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("--model", default="nuclei", help="the start model (a built-in name or a file)")
    ap.add_argument("--few", type=int, default=10)
    ap.add_argument("--finetune-minutes", type=float, default=2.0)
    ap.add_argument("--scratch-minutes", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args()

    from slimseg.data.folder import load_folder
    from slimseg.data.patches import split_indices
    from slimseg.evaluation import score_model
    from slimseg.events import run
    from slimseg.host import tune_process
    from slimseg.segmenter import load_segmenter
    from slimseg.start import load_start

    tune_process()
    names, images, labels = load_folder(a.data)
    _, held = split_indices(len(images), HOLDOUT_FRACTION, HOLDOUT_SEED)
    order = np.random.default_rng(FEW_SEED).permutation(held)
    few, rest = [int(i) for i in order[: a.few]], [int(i) for i in order[a.few:]]
    pick = lambda ix: ([names[i] for i in ix], [images[i] for i in ix], [labels[i] for i in ix])  # noqa: E731
    (f_names, f_images, f_labels), test = pick(few), pick(rest)
    print(f"{len(few)} images to train on, {len(rest)} scored (all held out from the built-in model)",
          file=sys.stderr)
    shipped = run(score_model(load_segmenter(a.model), test[1], test[2], names=test[0])).summary
    rows = {"as shipped": {k: shipped[k] for k in KEYS}}
    rows[f"fine-tuned {a.finetune_minutes:g} min"] = train_and_score(
        f_images, f_labels, f_names, test, a.finetune_minutes, load_start(a.model), a.seed)
    print(json.dumps(rows), file=sys.stderr)
    rows[f"scratch {a.scratch_minutes:g} min"] = train_and_score(
        f_images, f_labels, f_names, test, a.scratch_minutes, None, a.seed)
    print("| start | instance F1 | DSB score | Dice | train wall |\n|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['instance_f1']:.3f} | {r['dsb_score']:.3f} | {r['dice']:.3f} | "
              f"{r.get('train_wall_s', 0):.0f} s |")
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "few": f_names, "scored": len(rest),
                                            "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()

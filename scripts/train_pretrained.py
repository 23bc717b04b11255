"""Train the built-in ``nuclei`` model (the recipe of src/slimseg/models/README.md).

    python scripts/train_pretrained.py DATA --out src/slimseg/models/nuclei.slimseg
    python scripts/train_pretrained.py DATA --out nuclei-holdout.slimseg --holdout

DATA holds images/ and labels/ (the DSB2018 BBBC038v1 nuclei, see the model card). Without
``--holdout`` every image trains (a few images are still held for the trainer's own validation, which
picks the best epoch and tunes the thresholds); with it, a seeded 20 % of the images is set aside
first, never seen in training, and scored at the end: the held-out figure the card reports.
Ctrl-C saves the best model so far.
"""

from __future__ import annotations

import argparse
import json
import sys

# The recipe: a long budget of steps, the defaults otherwise (slimseg's tuned optimizer, loss and schedule).
# A count of steps, not a time budget or early stopping: the cosine schedule then runs its whole course on
# any machine (early stopping after 30 epochs ended the previous run at 98 % of the peak learning rate).
RECIPE = {"epochs": 170, "minutes": None, "patience": None, "val_fraction": 0.1}
HOLDOUT_FRACTION, HOLDOUT_SEED = 0.2, 2018


def main(argv: list[str] | None = None) -> int:
    import slimseg
    from slimseg.data.folder import load_folder
    from slimseg.data.patches import split_indices

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="folder with images/ and labels/")
    p.add_argument("--out", required=True, help="model file to write")
    p.add_argument("--holdout", action="store_true", help="train on 80%% of DATA and score the other 20%%")
    p.add_argument("--minutes", type=float, default=RECIPE["minutes"],
                   help="also stop after this many minutes (default: none); the schedule then ends with whichever "
                        "comes first")
    p.add_argument("--epochs", type=int, default=RECIPE["epochs"], help="epochs of 128 steps (default %(default)d)")
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)

    names, images, labels = load_folder(a.data)
    held: list[int] = []
    if a.holdout:
        keep, held = split_indices(len(images), HOLDOUT_FRACTION, HOLDOUT_SEED)
        names, images, labels, held_data = ([names[i] for i in keep], [images[i] for i in keep],
                                            [labels[i] for i in keep],
                                            ([names[i] for i in held], [images[i] for i in held],
                                             [labels[i] for i in held]))
    options = {**RECIPE, "minutes": a.minutes, "epochs": a.epochs, "device": a.device}
    print(f"training on {len(images)} images ({'80% holdout split' if a.holdout else 'all of DATA'}): {options}",
          file=sys.stderr)
    result = slimseg.train(images, labels, names=names, progress=True, **options)
    metrics = {}
    if a.holdout:
        h_names, h_images, h_labels = held_data
        scores = slimseg.evaluate(result.segmenter(), h_images, h_labels, names=h_names, progress=True)
        scores.pop("per_image", None)
        metrics["holdout"] = {**scores, "fraction": HOLDOUT_FRACTION, "seed": HOLDOUT_SEED}
        print(json.dumps(metrics["holdout"], indent=1, default=float))
    metrics["recipe"] = {**options, "script": "scripts/train_pretrained.py", "holdout": a.holdout,
                         "images": len(images), "data_sha": _digest(names)}
    result.save(a.out, overwrite=a.overwrite, metrics=metrics)
    print(f"saved {a.out} (best validation Dice {result.best_val_dice:.4f}; stopped by {result.stop_reason})")
    return 0


def _digest(names: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]


if __name__ == "__main__":
    sys.exit(main())

"""The seed rule's share of the accuracy: one trained model's probabilities, post-processed with
connected-core seeds only (the rule before h-maxima) and with the full tuning grid (cores or h-maxima),
each tuned on the model's own validation images and scored on the held-out images of the accuracy
protocol (benchmarks/accuracy.py), with the post-processing time per megapixel of each.

    PYTHONPATH=src python benchmarks/seed_rules.py DATA MODEL [MODEL ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("models", nargs="+", help="model files trained on the protocol's 80 %% (accuracy.py --save-models)")
    ap.add_argument("--json")
    a = ap.parse_args()

    from accuracy import HOLDOUT_FRACTION, HOLDOUT_SEED

    from slimseg import io
    from slimseg.data.folder import load_folder
    from slimseg.data.patches import split_indices
    from slimseg.events import run
    from slimseg.metrics import score_images
    from slimseg.predict import labels_from_probabilities, predict_probabilities
    from slimseg.segmenter import load_segmenter
    from slimseg.tune import candidates, tune_thresholds

    names, images, labels = load_folder(a.data)
    _, held = split_indices(len(images), HOLDOUT_FRACTION, HOLDOUT_SEED)
    rows = []
    for path in a.models:
        seg = load_segmenter(path)
        val_names = set(io.load(path).meta["training"]["split"]["val"])
        val = [i for i, n in enumerate(names) if n in val_names]

        def probs(ix):
            return [run(predict_probabilities(seg.model_fn, images[i], seg.norm, seg.predict_config, 1,
                                              multiple=seg.model_config.size_multiple)).astype(np.float32)
                    for i in ix]

        p_val, p_held = probs(val), probs(held)
        megapixels = sum(images[i].size for i in held) / 1e6
        row = {"model": path}
        for rule in ("cores", "cores or h-maxima"):
            if rule == "cores":
                grid = [c for c in candidates(seg.predict_config) if c.seed_h == 0]
                best = max(grid, key=lambda c: score_images([labels_from_probabilities(p, c) for p in p_val],
                                                            [labels[i] for i in val])["instance_f1"])
            else:
                best, _ = tune_thresholds(p_val, [labels[i] for i in val], seg.predict_config)
            t = time.perf_counter()
            pred = [labels_from_probabilities(p, best) for p in p_held]
            seconds = time.perf_counter() - t
            s = score_images(pred, [labels[i] for i in held])
            row[rule] = {"config": {k: v for k, v in dataclasses.asdict(best).items()
                                    if k in ("threshold", "seed_threshold", "seed_h")},
                         **{k: s[k] for k in ("instance_f1", "dsb_score", "dice", "instance_precision",
                                              "instance_recall")},
                         "postprocess_s_per_megapixel": seconds / megapixels}
            print(f"{path} {rule}: {row[rule]}", flush=True)
        rows.append(row)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

"""Instance F1 / Dice of a model on the held-out (validation) images of DATA with square tiles (as
before tile planning) and with planned tiles, and whether the labels are identical.

    PYTHONPATH=src python benchmarks/tiling_accuracy.py MODEL DATA [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from slimseg import io
from slimseg.data.folder import load_folder
from slimseg.events import run
from slimseg.metrics import score_images
from slimseg.predict import labels_from_probabilities, predict_probabilities
from slimseg.segmenter import load_segmenter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--json")
    a = ap.parse_args()
    seg = load_segmenter(a.model)
    names, images, labels = load_folder(a.data)
    val = set((io.load(a.model).meta.get("training") or {}).get("split", {}).get("val", []))
    keep = [i for i, n in enumerate(names) if n in val] or list(range(len(names)))
    rows, same, seconds = {"square": [], "planned": []}, 0, {"square": 0.0, "planned": 0.0}
    cfg = seg.predict_config
    for i in keep:
        out = {}
        for name, multiple in (("square", None), ("planned", seg.model_config.size_multiple)):
            t = time.perf_counter()
            probs = run(predict_probabilities(seg.model_fn, images[i], seg.norm, cfg, seg.model_config.in_channels,
                                              multiple=multiple))
            out[name] = labels_from_probabilities(probs, cfg)
            seconds[name] += time.perf_counter() - t
            rows[name].append(out[name])
        same += bool(np.array_equal(out["square"], out["planned"]))
    truths = [labels[i] for i in keep]
    summary = {k: score_images(v, truths) for k, v in rows.items()}
    result = {"model": a.model, "images": len(keep), "identical_labels": same, "seconds": seconds, "mean": summary}
    print(json.dumps(result, indent=1))
    if a.json:
        open(a.json, "w").write(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Block-wise prediction at the scale in-memory prediction chooses: objects larger than the model's.

    python benchmarks/blockwise_scale.py nuclei HELD_OUT --max-side 360 --zoom 3

Takes the images of DATA (images/ + labels/) no larger than ``--max-side``, enlarges them ``--zoom`` times
(bilinear; labels nearest), as a stronger objective would show them, and predicts each in memory
(`slimseg.predict.predict`) and block by block into an OME-Zarr store (`slimseg.large.predict_large`), with
rescaling on and off. Prints the mean instance F1 @0.5 against the ground truth of both, and of the block-wise
labels against the in-memory ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    from skimage.transform import rescale

    from slimseg.data.folder import load_folder
    from slimseg.events import run
    from slimseg.large import LargeConfig, fit_normalizer, predict_large, read_labels
    from slimseg.metrics import instance_scores
    from slimseg.predict import predict
    from slimseg.segmenter import load_segmenter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("data", type=Path)
    ap.add_argument("--max-side", type=int, default=360)
    ap.add_argument("--zoom", type=int, default=3)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--margin", type=int, default=96)
    a = ap.parse_args()
    seg = load_segmenter(a.model)
    names, images, labels = load_folder(a.data)
    picked = [i for i, im in enumerate(images) if max(im.shape[:2]) <= a.max_side]
    work = Path(tempfile.mkdtemp())
    rows = {True: [], False: []}
    for i in picked:
        img = rescale(images[i].astype(np.float32), a.zoom, order=1, preserve_range=True, channel_axis=-1 if
                      images[i].ndim == 3 else None).astype(np.float32)
        gt = np.kron(labels[i], np.ones((a.zoom, a.zoom), labels[i].dtype))
        norm = fit_normalizer(img, seg.norm)
        for on in (True, False):
            cfg = dataclasses.replace(seg.predict_config, rescale=on)
            mem = run(predict(seg.model_fn, img, norm, cfg, seg.model_config.in_channels,
                              multiple=seg.model_config.size_multiple)).labels
            out = work / f"{i}_{on}.zarr"
            run(predict_large(seg, img, out, cfg=cfg, lcfg=LargeConfig(block=a.block, margin=a.margin)))
            blocks = read_labels(out)[:]
            rows[on].append([instance_scores(mem, gt)["instance_f1"], instance_scores(blocks, gt)["instance_f1"],
                             instance_scores(blocks, mem)["instance_f1"]])
    result = {"images": len(picked), "zoom": a.zoom, "block": a.block, "margin": a.margin}
    for on in (True, False):
        m = np.mean(rows[on], axis=0)
        result["rescale" if on else "no_rescale"] = {"f1_in_memory": m[0], "f1_block_wise": m[1],
                                                     "f1_block_wise_vs_in_memory": m[2],
                                                     "worst_block_wise_vs_in_memory": float(np.min(rows[on], 0)[2])}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

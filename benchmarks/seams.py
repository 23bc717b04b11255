"""Seams: block-wise prediction of a small mosaic against whole-image prediction of the same mosaic.

    OMP_NUM_THREADS=1 python benchmarks/seams.py MODEL /work/shared/data/dsb2018_fluo --size 2048 --block 512 --tiles

Builds the mosaic as benchmarks/large.py does, predicts it block by block into a label store and whole in
memory (same percentiles), and reports the pixels with equal labels after matching each whole-image object
to the block-wise object it overlaps most, and the whole-image objects that block-wise prediction splits
(those crossing block borders apart). ``--tiles`` also compares both with each mosaic tile predicted alone
(benchmarks/large.py's reference), which differs from the mosaic by its context and percentiles.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "src"))


def agreement(ref: np.ndarray, got: np.ndarray, block: int, y0: int = 0, x0: int = 0) -> dict:
    """Equal pixels after matching, and split objects of ``ref`` (overall and among those crossing blocks)."""
    mapped = np.zeros(int(ref.max(initial=0)) + 1, np.int64)
    n = split = cross = cross_split = 0
    for i, box in enumerate(ndi.find_objects(ref), 1):
        if box is None:
            continue
        mine = ref[box] == i
        vals, counts = np.unique(got[box][mine], return_counts=True)
        mapped[i] = vals[np.argmax(counts)]
        cut = int(((vals > 0) & (counts >= 0.1 * counts.sum())).sum() > 1)
        ys, xs = box[0].start + y0, box[1].start + x0
        crosses = int(ys // block != (box[0].stop - 1 + y0) // block or xs // block != (box[1].stop - 1 + x0) // block)
        n, split, cross, cross_split = n + 1, split + cut, cross + crosses, cross_split + (cut & crosses)
    agree = np.where(ref > 0, mapped[ref] == got, got == 0)
    return {"equal": int(agree.sum()), "pixels": int(agree.size), "objects": n, "split": split,
            "crossing_blocks": cross, "crossing_split": cross_split}


def summary(parts: list[dict]) -> dict:
    tot = {k: sum(p[k] for p in parts) for k in parts[0]}
    return {"pixels_equal": tot["equal"] / tot["pixels"], "objects": tot["objects"], "split": tot["split"],
            "split_fraction": tot["split"] / max(1, tot["objects"]), "crossing_blocks": tot["crossing_blocks"],
            "crossing_split": tot["crossing_split"]}


def main() -> None:
    import tifffile
    import zarr
    from large import build_mosaic

    from slimseg.events import run
    from slimseg.large import LargeConfig, fit_normalizer, predict_large, read_labels
    from slimseg.predict import predict
    from slimseg.segmenter import load_segmenter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("data", type=Path)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--margin", type=int, default=128)
    ap.add_argument("--tiles", action="store_true", help="also compare with each mosaic tile predicted alone")
    ap.add_argument("--work", type=Path, default=Path("/tmp/slimseg_seams_bench"))
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    mosaic = a.work / "mosaic.zarr"
    placed = build_mosaic(a.data, a.size, mosaic, 512)
    seg = load_segmenter(a.model)
    img = zarr.open_array(str(mosaic), mode="r")
    t = time.perf_counter()
    res = run(predict_large(seg, mosaic, a.work / "labels.zarr", lcfg=LargeConfig(a.block, a.margin), overwrite=True))
    blocks_s = time.perf_counter() - t
    got, full = read_labels(a.work / "labels.zarr")[:], np.asarray(img[:])
    t = time.perf_counter()
    whole = run(predict(seg.model_fn, full, fit_normalizer(img, seg.norm), seg.predict_config,
                        seg.model_config.in_channels, multiple=seg.model_config.size_multiple)).labels
    out = {"size": a.size, "block": a.block, "margin": a.margin, "blocks_s": blocks_s,
           "whole_s": time.perf_counter() - t, "objects_blocks": res.n_objects,
           "objects_whole": int(len(np.unique(whole)) - 1),
           "blocks_vs_whole": summary([agreement(whole, got, a.block)])}
    if a.tiles:
        vs_blocks, vs_whole = [], []
        for y, x, source in placed:
            h, w = tifffile.imread(source).shape[:2]
            ref = run(seg.predict_events(full[y:y + h, x:x + w])).labels
            vs_blocks.append(agreement(ref, got[y:y + h, x:x + w], a.block, y, x))
            vs_whole.append(agreement(ref, whole[y:y + h, x:x + w], a.block, y, x))
        out["tiles_vs_blocks"], out["tiles_vs_whole"] = summary(vs_blocks), summary(vs_whole)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

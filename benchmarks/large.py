"""Benchmark: a large mosaic of real nuclei predicted block by block, and a folder over --workers 2.

    python benchmarks/large.py MODEL /work/shared/data/dsb2018_fluo --size 20000 --out benchmarks/results/large.json

1. Builds a SIZE x SIZE uint16 mosaic of the data set's images (each scaled so its 1st / 99.8th
   percentiles become 1000 / 20000, so one set of percentiles fits every tile as it fits the tile alone;
   16-pixel background gaps) in a zarr store, strip by strip.
2. Predicts it into an OME-Zarr label store in a child process and reports its peak resident memory
   above its baseline (after loading the model).
3. Predicts every mosaic tile alone in memory and compares: per-pixel agreement after matching each
   reference object to the output object it overlaps most, and the reference objects that the output
   splits (objects cut by block borders).
4. A folder of N images: `slimseg predict` in one process vs --workers 2 (wall time, same outputs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
GAP, LO, HI = 16, 1000.0, 20000.0


def scaled(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float64)
    if img.ndim == 3:
        img = img.mean(-1)
    lo, hi = np.percentile(img, (1, 99.8))
    return np.clip(LO + (img - lo) * (HI - LO) / max(hi - lo, 1e-6), 0, 65535).astype(np.uint16)


def build_mosaic(data: Path, size: int, out: Path, chunk: int) -> list[tuple[int, int, str]]:
    import zarr

    files = sorted((data / "images").glob("*.tif"))
    z = zarr.create_array(str(out), shape=(size, size), chunks=(chunk, chunk), dtype="uint16",
                          fill_value=int(LO), overwrite=True)
    placed, k, y = [], 0, 0
    while y < size:
        x, row_h, tiles = 0, 0, []
        while x < size:
            img = scaled(tifffile.imread(files[k % len(files)]))
            h, w = img.shape
            if x + w > size or y + h > size:
                break
            tiles.append((x, img))
            placed.append((y, x, str(files[k % len(files)])))
            x, row_h, k = x + w + GAP, max(row_h, h), k + 1
        if not tiles:
            break
        strip = np.full((min(row_h, size - y), size), int(LO), np.uint16)
        for x0, img in tiles:
            strip[: img.shape[0], x0:x0 + img.shape[1]] = img
        z[y:y + strip.shape[0]] = strip
        y += row_h + GAP
    return placed


CHILD = r"""
import json, sys, time
from slimseg.segmenter import load_segmenter
from slimseg.large import LargeConfig, predict_large
from slimseg.events import run
def rss(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
model, src, out, block, margin = sys.argv[1:6]
seg = load_segmenter(model)
base = rss('VmRSS:')
t = time.perf_counter()
res = run(predict_large(seg, src, out, lcfg=LargeConfig(int(block), int(margin)), overwrite=True))
print(json.dumps({"baseline_rss": base, "peak_rss": rss('VmHWM:'), "seconds": time.perf_counter() - t,
                  "objects": res.n_objects, "blocks": res.n_blocks, "seam_pairs": res.n_merged}))
"""


def compare(model: str, mosaic: Path, labels_path: Path, placed, block: int) -> dict:
    import zarr

    from slimseg.events import run
    from slimseg.segmenter import load_segmenter

    from slimseg.large import fit_normalizer
    from slimseg.predict import predict

    seg = load_segmenter(model)
    img = zarr.open_array(str(mosaic), mode="r")
    out = zarr.open_group(str(labels_path), mode="r")["0"]
    # the tiles in memory, normalised as the block-wise run normalises the mosaic (its intensity sample):
    # what differs then is only what the blocks, their margins and the stitching do
    normalizer = fit_normalizer(img, seg.norm, min(256, block))
    # at the image's own scale, as block-wise prediction runs (in memory, a tile of large nuclei alone would
    # be predicted again at a smaller scale: docs/accuracy.md)
    cfg = dataclasses.replace(seg.predict_config, rescale=False)
    equal = total = n_ref = n_split = n_cross = n_cross_split = 0
    for y, x, source in placed:
        h, w = tifffile.imread(source).shape[:2]
        tile = np.asarray(img[y:y + h, x:x + w])
        ref = run(predict(seg.model_fn, tile, normalizer, cfg, seg.model_config.in_channels,
                          multiple=seg.model_config.size_multiple)).labels
        got = np.asarray(out[y:y + h, x:x + w])
        ids = np.unique(ref[ref > 0])
        mapped = np.zeros(int(ref.max(initial=0)) + 1, np.int64)
        for i in ids:
            vals, counts = np.unique(got[ref == i], return_counts=True)
            mapped[i] = vals[np.argmax(counts)]
            big = vals[(vals > 0) & (counts >= 0.1 * counts.sum())]
            cut = len(big) > 1
            ys, xs = np.nonzero(ref == i)
            crosses = (ys + y).min() // block != (ys + y).max() // block or (xs + x).min() // block != (xs + x).max() // block
            n_ref += 1
            n_split += int(cut)
            n_cross += int(crosses)
            n_cross_split += int(cut and crosses)
        agree = np.where(ref > 0, mapped[ref] == got, got == 0)
        equal += int(agree.sum())
        total += agree.size
    return {"pixels_equal_after_matching": equal / total, "reference_objects": n_ref,
            "reference_objects_split": n_split, "objects_crossing_block_borders": n_cross,
            "objects_crossing_block_borders_split": n_cross_split, "split_fraction": n_split / max(1, n_ref)}


def folder_bench(model: str, data: Path, n: int, work: Path) -> dict:
    folder = work / "folder"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for f in sorted((data / "images").glob("*.tif"))[:n]:
        shutil.copy(f, folder / f.name)
    times = {}
    for name, extra in (("one", []), ("workers2", ["--workers", "2"])):
        out = work / f"pred_{name}"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "slimseg.cli", "predict", model, str(folder), "--out", str(out),
                        *extra], check=True, env=ENV, stderr=subprocess.DEVNULL)
        times[name] = time.perf_counter() - t
    same = all(np.array_equal(tifffile.imread(p), tifffile.imread(work / "pred_workers2" / p.name))
               for p in sorted((work / "pred_one").iterdir()))
    return {"images": n, "one_process_s": times["one"], "workers2_s": times["workers2"],
            "speedup": times["one"] / times["workers2"], "same_outputs": same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("data", type=Path)
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--block", type=int, default=2048)
    ap.add_argument("--margin", type=int, default=128)
    ap.add_argument("--folder-images", type=int, default=100)
    ap.add_argument("--work", type=Path, default=Path("/tmp/slimseg_large_bench"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--note", default="2-core machine, nothing else running")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    a.work.mkdir(parents=True, exist_ok=True)
    mosaic, labels = a.work / "mosaic.zarr", a.work / "labels.zarr"
    t = time.perf_counter()
    placed = build_mosaic(a.data, a.size, mosaic, a.block)
    result = {"size": a.size, "block": a.block, "margin": a.margin, "tiles": len(placed),
              "build_s": time.perf_counter() - t, "cpu_count": os.cpu_count(),
              "note": a.note}
    child = subprocess.run([sys.executable, "-c", CHILD, a.model, str(mosaic), str(labels), str(a.block),
                            str(a.margin)], check=True, env=ENV, capture_output=True, text=True)
    large = json.loads(child.stdout.strip().splitlines()[-1])
    large["peak_above_baseline_gb"] = (large["peak_rss"] - large["baseline_rss"]) / 1e9
    result["large"] = large
    print(json.dumps(large), file=sys.stderr)
    result["compare"] = compare(a.model, mosaic, labels, placed, a.block)
    print(json.dumps(result["compare"]), file=sys.stderr)
    if a.folder_images:
        result["folder"] = folder_bench(a.model, a.data, a.folder_images, a.work)
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

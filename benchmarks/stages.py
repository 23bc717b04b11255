"""Where the time of ``slimseg predict`` goes, from a profiler (cProfile), per image and per command.

    PYTHONPATH=src python benchmarks/stages.py DATA NAME=MODEL ... [--sizes 256,520x696,1024,2048]
        [--images 6] [--json FILE]

For each size, a folder of ``--images`` images of that size is built from DATA's images (packed side by
side, each scaled to one intensity range, as ``benchmarks/large.py`` builds its mosaic). For each model
the whole command runs twice in fresh processes sharing one empty compile cache: the first run pays what
compiles, the second is what later runs cost. Each command runs under cProfile inside its process; its
cumulative times are summed into stages by the functions that do them:

- read: ``slimseg.data.readers.read``; write: ``slimseg.files.write_labels_tiff``
- normalise: ``Normalizer.fit`` and ``Normalizer.__call__``
- network: ``slimseg.predict._infer`` (the model on a batch of tiles, sigmoid included)
- tiling: the rest of ``predict_probabilities`` (cutting tiles, stacking batches, blending them back)
- instances: ``labels_from_probabilities`` (thresholds, seeds, watershed)
- load: ``load_segmenter`` (the model file, the runnable); start: the interpreter and imports, from the
  process's launch to the command's first line; compile: the first run's network time less the later's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from large import GAP, LO, scaled  # noqa: E402

CHILD = r"""
import sys, time
launched = float(sys.argv[1])
import cProfile, json, pstats
import slimseg.cli
started = time.time() - launched
prof = cProfile.Profile()
t = time.perf_counter()
prof.enable()
rc = slimseg.cli.main(sys.argv[2:])
prof.disable()
wall = time.perf_counter() - t
stats = pstats.Stats(prof).stats
STAGES = {("readers.py", "read"): "read", ("files.py", "write_labels_tiff"): "write",
          ("normalize.py", "fit"): "normalise", ("normalize.py", "__call__"): "normalise",
          ("predict.py", "_infer"): "network", ("predict.py", "predict_probabilities"): "probabilities",
          ("predict.py", "labels_from_probabilities"): "instances", ("segmenter.py", "load_segmenter"): "load"}
out = {"start": started, "command": wall}
for (path, _, name), (_, _, _, cum, _) in stats.items():
    key = (path.rsplit("/", 1)[-1], name)
    if key in STAGES and "slimseg" in path:
        out[STAGES[key]] = out.get(STAGES[key], 0.0) + cum
print(json.dumps(out))
sys.exit(rc)
"""


def build_folder(data: Path, shape: tuple[int, int], n: int, folder: Path) -> None:
    """``n`` uint16 images of ``shape``, each packed with the data set's images in turn (scaled as the
    large-mosaic benchmark scales them); an image larger than ``shape`` is cropped."""
    files = sorted((data / "images").glob("*.tif"))
    folder.mkdir(parents=True)
    k = 0
    for i in range(n):
        img = np.full(shape, int(LO), np.uint16)
        y = 0
        while y < shape[0]:
            x, row_h = 0, 0
            while x < shape[1]:
                tile = scaled(tifffile.imread(files[k % len(files)]))[: shape[0] - y, : shape[1] - x]
                k += 1
                img[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
                x, row_h = x + tile.shape[1] + GAP, max(row_h, tile.shape[0])
            y += row_h + GAP
        tifffile.imwrite(folder / f"img{i:03d}.tif", img, compression="zlib")


def profiled_run(model: str, folder: Path, cache: str) -> dict:
    out = tempfile.mkdtemp(prefix="stages-out-")
    env = {**os.environ, "SLIMSEG_CACHE_DIR": cache, "PYTHONPATH": str(ROOT / "src")}
    argv = ["predict", model, str(folder), "--out", out, "--overwrite"]
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CHILD, repr(time.time()), *argv], env=env, check=True,
                         capture_output=True, text=True)
    row = json.loads(res.stdout.strip().splitlines()[-1])
    row["process"] = time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    return row


def per_image(row: dict, n: int) -> dict:
    tiling = row.get("probabilities", 0.0) - row.get("network", 0.0) - row.get("normalise", 0.0)
    stages = {k: row.get(k, 0.0) / n for k in ("read", "normalise", "network", "instances", "write")}
    stages["tiling"] = tiling / n
    stages["other"] = (row["command"] - row.get("load", 0.0)) / n - sum(stages.values())
    return stages


def table(rows: list[dict]) -> str:
    """Milliseconds per image for the stages; seconds per command for the rest (imports on first use,
    counting and printing: "other"), the start, the load and the first run's compiling."""
    lines = ["| model | size | read | normalise | tiling | network | instances | write | per image | other, per "
             "command | start | load | compile (1st run) |", "|---|---|" + "---:|" * 11]
    keys = ("read", "normalise", "tiling", "network", "instances", "write")
    for r in rows:
        s, c = r["per_image_s"], r["command_s"]
        ms = [f"{1000 * s[k]:.0f}" for k in keys]
        lines.append(f"| {r['model']} | {r['size']} | " + " | ".join(ms) + f" | {1000 * sum(s[k] for k in keys):.0f} | "
                     f"{s['other'] * r['images']:.2f} s | {c['start']:.2f} s | {c['load']:.2f} s | "
                     f"{c['compile_first_run']:.1f} s |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("models", nargs="+", help="NAME=MODEL (a file or a built-in name)")
    ap.add_argument("--sizes", default="256,520x696,1024,2048")
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    from slimseg.compress.report import machine_info

    work = Path(tempfile.mkdtemp(prefix="stages-"))
    rows = []
    for size in a.sizes.split(","):
        h, _, w = size.partition("x")
        shape = (int(h), int(w or h))
        folder = work / f"{shape[0]}x{shape[1]}"
        build_folder(a.data, shape, a.images, folder)
        for name, model in (m.split("=", 1) for m in a.models):
            cache = tempfile.mkdtemp(prefix="stages-cache-")
            first, later = profiled_run(model, folder, cache), profiled_run(model, folder, cache)
            shutil.rmtree(cache, ignore_errors=True)
            row = {"model": name, "size": f"{shape[0]}x{shape[1]}", "images": a.images,
                   "per_image_s": per_image(later, a.images),
                   "command_s": {"process": later["process"], "start": later["start"], "load": later.get("load", 0.0),
                                 "compile_first_run": max(0.0, first.get("network", 0.0) - later.get("network", 0.0)),
                                 "first_process": first["process"]}}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print(table(rows))
    if a.json:
        a.json.write_text(json.dumps({"machine": machine_info(), "rows": rows}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()

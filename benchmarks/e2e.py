"""End to end: the whole ``slimseg predict`` command (subprocess, wall clock) on a folder of images,
beside the network-only time of the same tiles and the pixels' compute at the float32 matmul rate
measured in the same run (2048^2 matmul); int8 PT2E first (empty compile cache) and later runs.

    PYTHONPATH=src python benchmarks/e2e.py IMAGES NAME=MODEL[@bf16] ... [--gflop-per-pixel G] [--json FILE]
        [--build DATA --count 60 --shape 520x696]

``MODEL@bf16`` runs a float model with ``--bf16`` (its network under bfloat16 autocast), beside the
bfloat16 matmul rate of the same run.

An int8 model that compiles (PT2E) is also run once more after the compile cache is warmed as
`slimseg compress --data` warms it (for the tile shapes of images of these sizes).
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

from slimseg.host import tune_process

tune_process()  # as the command tunes itself (huge pages): before torch's first allocation
import torch  # noqa: E402


def matmul_gflops(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.rand(n, n).to(dtype), torch.rand(n, n).to(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / float(np.median(times)) / 1e9


def predict_seconds(model: str, images: str, cache: str, flags: tuple[str, ...] = ()) -> float:
    out = tempfile.mkdtemp(prefix="e2e-out-")
    env = {**os.environ, "SLIMSEG_CACHE_DIR": cache, "PYTHONPATH": "src"}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "slimseg.cli", "predict", model, images, "--out", out, "--overwrite", *flags],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def warm_seconds(model: str, files: list, cache: str) -> float:
    """What `slimseg compress` does after compressing: compile for the tile shapes of its images (in a
    child process, as compress runs in its own)."""
    code = ("import sys; from slimseg import io; from slimseg.compress.warm import warm_events; "
            "from slimseg.data.readers import read; from slimseg.events import run; "
            "run(warm_events(io.load(sys.argv[1]), [read(f).data for f in sys.argv[2:]]))")
    env = {**os.environ, "SLIMSEG_CACHE_DIR": cache, "PYTHONPATH": "src"}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, model, *map(str, files[:8])], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def network_seconds(model: str, shapes: list[tuple[int, ...]], cache: str, bf16: bool = False) -> float:
    os.environ["SLIMSEG_CACHE_DIR"] = cache
    from slimseg.segmenter import load_segmenter

    seg = load_segmenter(model)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        xs = [torch.rand(s) for s in shapes]
        for s in set(shapes):
            seg.model_fn(torch.rand(s))  # compile / warm every shape
        t = time.perf_counter()
        for x in xs:
            seg.model_fn(x)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images")
    ap.add_argument("models", nargs="+", help="NAME=PATH")
    ap.add_argument("--gflop-per-pixel", type=float, default=17.8 / 512 ** 2, help="float U-Net 16-32-64-128")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--build", metavar="DATA", help="first fill IMAGES (a new folder) with --count images of "
                    "--shape packed from DATA's images (as benchmarks/stages.py builds them)")
    ap.add_argument("--count", type=int, default=60)
    ap.add_argument("--shape", default="520x696")
    ap.add_argument("--note", default="2-core machine, nothing else running")
    a = ap.parse_args()
    if a.build:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from stages import build_folder

        h, _, w = a.shape.partition("x")
        build_folder(Path(a.build), (int(h), int(w or h)), a.count, Path(a.images))
    from slimseg.compress.report import machine_info
    from slimseg.data.folder import list_images
    from slimseg.data.readers import read
    from slimseg.predict import batch_calls
    from slimseg.segmenter import load_segmenter

    files = list_images(a.images)
    pixels = sum(int(np.prod(read(f).data.shape[-2:])) for f in files)
    rows, rates = {}, [matmul_gflops()]
    bf16_rate = matmul_gflops(dtype=torch.bfloat16)
    for name, spec in (m.split("=", 1) for m in a.models):
        path, _, mode = spec.partition("@")
        flags = ("--bf16",) if mode == "bf16" else ()
        seg = load_segmenter(path)
        shapes = []
        for f in files:
            h, w = read(f).data.shape[-2:]
            shapes += batch_calls(h, w, seg.predict_config, seg.model_config.in_channels,
                                  seg.model_config.size_multiple)
        cold = tempfile.mkdtemp(prefix="e2e-cache-")
        first = predict_seconds(path, a.images, cold, flags)  # empty cache: what compiles, compiles here
        row = {"kind": seg.kind, "bf16": bool(flags), "first_run_s": first}
        if seg.meta.get("runtime", "").endswith("compile"):
            # what `slimseg compress --data` leaves: the cache warmed for its images' sizes (here: these)
            shutil.rmtree(cold, ignore_errors=True)
            row["warm_at_compress_s"] = warm_seconds(path, files, cold)
            row["first_after_compress_s"] = predict_seconds(path, a.images, cold)
        later = [predict_seconds(path, a.images, cold, flags) for _ in range(a.repeats)]
        rates.append(matmul_gflops())
        net = network_seconds(path, shapes, cold, bool(flags))
        rows[name] = {**row, "later_runs_s": float(np.median(later)), "network_s": net}
        shutil.rmtree(cold, ignore_errors=True)
    rate = float(np.median(rates))
    compute = pixels * a.gflop_per_pixel / rate
    for r in rows.values():
        r["pixels_compute_s"] = (pixels * a.gflop_per_pixel / bf16_rate if r["bf16"] else
                                 compute if r["kind"] == "float" else compute / 4)
        r["later_over_compute"] = r["later_runs_s"] / r["pixels_compute_s"]
    result = {"images": len(files), "pixels": pixels, "matmul_gflops": rate, "bf16_matmul_gflops": bf16_rate,
              "machine": machine_info(),
              "note": a.note, "rows": rows}
    print(json.dumps(result, indent=1, default=str))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()

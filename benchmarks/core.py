"""Issue-2 benchmark: accuracy on held-out DSB2018 images, training/inference speed, prediction memory.

    python benchmarks/core.py accuracy /path/to/dsb2018_fluo [--minutes 10]
    python benchmarks/core.py speed
    python benchmarks/core.py memory [--size 8192]
    python benchmarks/core.py malloc [--steps 24 --repeats 3]
    python benchmarks/core.py alloc [--model FILE --repeats 3]

Each part prints its numbers and appends them as JSON to benchmarks/results/core.json.
Ratios are measured in one run, medians of several repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from slimseg.config import ModelConfig, TrainConfig
from slimseg.data.folder import load_folder
from slimseg.data.patches import split_indices
from slimseg.evaluation import baseline_events, evaluate_events
from slimseg.events import format_event, run
from slimseg.metrics import format_table
from slimseg.host import tune_process
from slimseg.training import Trainer

tune_process()  # as the CLI does: huge pages and glibc malloc thresholds (slimseg.host)
RESULTS = Path(__file__).parent / "results" / "core.json"


def _save(part: str, data: dict) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    all_ = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    all_[part] = {**data, "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.write_text(json.dumps(all_, indent=1))


def _log(e):
    line = format_event(e)
    if line:
        print(line, file=sys.stderr, flush=True)


def accuracy(data: str, minutes: float, seed: int, base_width: int) -> None:
    names, images, labels = load_folder(data)
    # hold out 20% of the images by a fixed seed; training splits its own validation off the rest
    train_idx, test_idx = split_indices(len(images), 0.2, seed=seed)
    pick = lambda idx, xs: [xs[i] for i in idx]  # noqa: E731
    cfg = TrainConfig(minutes=minutes, epochs=10_000, val_fraction=0.1, seed=seed, patience=None)
    t0 = time.perf_counter()
    trainer = Trainer(pick(train_idx, images), pick(train_idx, labels), cfg,
                      ModelConfig.from_depth(4, base_width), names=pick(train_idx, names))
    result = run(trainer.fit(), _log)
    train_s = time.perf_counter() - t0
    seg = result.segmenter()
    t_imgs, t_labs, t_names = pick(test_idx, images), pick(test_idx, labels), pick(test_idx, names)
    rows = {
        "slimseg U-Net": run(evaluate_events(seg, t_imgs, t_labs, names=t_names)),
        "slimseg U-Net + flip TTA": run(evaluate_events(seg, t_imgs, t_labs, seg.settings(tta=True), t_names)),
        "otsu+watershed": run(baseline_events(t_imgs, t_labs, t_names)),
    }
    whole = run(baseline_events(images, labels, names))
    for r in (*rows.values(), whole):
        r.pop("per_image")
    print(f"held-out images: {len(test_idx)} of {len(images)}; training wall time {train_s:.0f} s, "
          f"{len(result.history)} epochs, best epoch {result.best_epoch}; tuned post-processing "
          f"{result.predict_config} (validation instance F1 {result.tuned_instance_f1:.4f})")
    print(format_table(rows))
    print(f"baseline on the whole set: dice {whole['dice']:.4f}, instance F1 {whole['instance_f1']:.4f}")
    _save("accuracy", {"minutes": minutes, "train_wall_s": train_s, "epochs": len(result.history),
                       "n_test": len(test_idx), "n_train": len(train_idx), **{k: v for k, v in rows.items()},
                       "baseline_whole_set": whole, "config": vars(cfg) | {"base_width": base_width}})


def _median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def speed(repeats: int, base_width: int, compile_: bool) -> None:
    from slimseg.losses import parse_loss
    from slimseg.model import UNet

    cfg = ModelConfig.from_depth(4, base_width)
    loss_fn = parse_loss("bce+jaccard")
    x = torch.randn(8, 1, 256, 256)
    y = (torch.rand(8, 2, 256, 256) > 0.5).float()
    out = {"train_patches_per_s": {}, "infer_ms_per_512_tile": {}}
    variants = [("fp32", False, False, False), ("fp32 channels_last", True, False, False),
                ("bf16 autocast channels_last", True, True, False)]
    if compile_:
        variants.append(("bf16 autocast channels_last compiled", True, True, True))
    for name, cl, bf16, comp in variants:
        torch.manual_seed(0)
        model = UNet(cfg)
        xx = x
        if cl:
            model, xx = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        fwd = torch.compile(model) if comp else model
        opt = torch.optim.RMSprop(model.parameters(), 1e-3)

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = fwd(xx)
            loss = loss_fn(logits.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        t = _median_time(step, repeats, warmup=3 if comp else 2)
        out["train_patches_per_s"][name] = 8 / t
        print(f"train  {name:40s} {8 / t:6.1f} patches/s (256², batch 8)", flush=True)
    tile = torch.randn(1, 1, 512, 512)
    for name, cl, comp in [("fp32 eager", False, False), ("fp32 eager channels_last", True, False)] + (
            [("fp32 compiled channels_last", True, True)] if compile_ else []):
        model = UNet(cfg).eval()
        tt = tile
        if cl:
            model, tt = model.to(memory_format=torch.channels_last), tile.contiguous(memory_format=torch.channels_last)
        fwd = torch.compile(model) if comp else model
        with torch.inference_mode():
            t = _median_time(lambda: fwd(tt), repeats, warmup=3 if comp else 2)
        out["infer_ms_per_512_tile"][name] = t * 1000
        print(f"infer  {name:40s} {t * 1000:6.1f} ms per 512² tile (batch 1)", flush=True)
    base = out["train_patches_per_s"]["fp32"]
    for k, v in out["train_patches_per_s"].items():
        print(f"speed-up vs fp32 default layout: {k}: {v / base:.2f}x")
    _save("speed", {**out, "base_width": base_width, "repeats": repeats})


def _vm(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise RuntimeError(key)


def memory(size: int, model_path: str | None) -> None:
    """Peak memory rise while predicting a size x size mosaic of the shipped real nuclei images."""
    from slimseg.sample import load_sample
    from slimseg.segmenter import load_segmenter

    if model_path:
        seg = load_segmenter(model_path)
    else:  # a quick model, so that the instance step sees realistic objects
        names, images, labels = load_sample("train")
        cfg = TrainConfig(minutes=1, epochs=100, val_fraction=0)
        result = run(Trainer(images, labels, cfg).fit())
        seg = result.segmenter()
    _, tests, _ = load_sample("test")
    tile = max(tests, key=lambda a: a.size)
    seg.predict(tile)  # warm up kernels so one-off allocations are not counted
    reps = (-(-size // tile.shape[0]), -(-size // tile.shape[1]))
    image = np.ascontiguousarray(np.tile(tile, reps)[:size, :size])
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _vm("VmRSS:")
    t = time.perf_counter()
    labels = seg.predict(image)
    wall = time.perf_counter() - t
    peak = _vm("VmHWM:")
    rise = (peak - before) / 2**30
    out_gb = labels.nbytes / 2**30
    print(f"predict {size}x{size}: peak memory rise {rise:.2f} GiB (of which the uint32 label output "
          f"{out_gb:.2f} GiB; input {image.nbytes / 2**30:.2f} GiB), {wall:.0f} s")
    _save("memory", {"size": size, "peak_rise_gib": rise, "labels_gib": out_gb, "wall_s": wall})


_MALLOC_CHILD = """
import os, sys, time, torch
torch.set_num_threads(1)
import slimseg.host, slimseg.training
if sys.argv[1] == "1":
    slimseg.host.tune_malloc()
from slimseg.config import TrainConfig
from slimseg.events import StepEnd
from slimseg.sample import load_sample
_, imgs, labs = load_sample("train")
steps = int(sys.argv[2])
tc = TrainConfig(epochs=1, patches_per_epoch=8 * steps, batch_size=8, patch_size=128, optimizer="sgd")
n, t0, r0 = 0, 0.0, None
for ev in slimseg.training.Trainer(imgs, labs, tc).fit():
    if isinstance(ev, StepEnd):
        n += 1
        if n == 4:
            t0, r0 = time.perf_counter(), os.times()
        elif n == steps:
            t, r = time.perf_counter() - t0, os.times()
            print((n - 4) * 8 / t, r.system - r0.system)
            break
"""


def malloc(steps: int, repeats: int) -> None:
    """Training speed (1 thread, 8x128² patches) with and without ``slimseg.host.tune_malloc``, in a
    plain process and with the environment Dask gives its workers (MALLOC_TRIM_THRESHOLD_=65536)."""
    import os
    import subprocess

    variants = {(env, tune): [] for env in ("plain", "dask worker") for tune in (False, True)}
    for _ in range(repeats):
        for (env, tune), out in variants.items():
            e = {**os.environ, **({"MALLOC_TRIM_THRESHOLD_": "65536"} if env == "dask worker" else {})}
            res = subprocess.run([sys.executable, "-c", _MALLOC_CHILD, str(int(tune)), str(steps)], env=e,
                                 capture_output=True, text=True, check=True)
            out.append([float(v) for v in res.stdout.split()])
    result = {}
    for (env, tune), out in variants.items():
        speed_, sys_s = statistics.median(o[0] for o in out), statistics.median(o[1] for o in out)
        result[f"{env}, tune_malloc {'on' if tune else 'off'}"] = {"patches_per_s": speed_, "system_s": sys_s}
        print(f"{env:12s} tune_malloc {'on ' if tune else 'off'}: {speed_:5.2f} patches/s, "
              f"{sys_s:5.2f} s in the kernel ({steps - 4} steps)")
    for env in ("plain", "dask worker"):
        on, off = result[f"{env}, tune_malloc on"], result[f"{env}, tune_malloc off"]
        print(f"{env}: tune_malloc speed-up {on['patches_per_s'] / off['patches_per_s']:.2f}x")
    _save("malloc", {"variants": result, "steps": steps, "repeats": repeats})


_ALLOC_CHILD = """
import statistics, sys, threading, time, torch
import slimseg.host
from slimseg.config import ModelConfig, NormConfig
from slimseg.model import UNet
from slimseg.segmenter import Segmenter, load_segmenter
tune, where, path, calls = sys.argv[1] == "1", sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(2)
if tune:
    slimseg.host.tune_malloc()
seg = load_segmenter(path) if path else Segmenter.from_module(UNet(ModelConfig()), NormConfig())
out = []
def work():
    with torch.inference_mode():
        for b in (1, 8):
            x = torch.randn(b, 1, 512, 512)
            ts = []
            for i in range(calls + 2):
                t = time.perf_counter()
                seg.model_fn(x)
                ts.append(time.perf_counter() - t)
            out.append(1000 * statistics.median(ts[2:]))
threading.Thread(target=work).start() if where == "worker" else work()
while len(out) < 2:
    time.sleep(0.01)
print(*out)
"""


def alloc(model: str | None, repeats: int, calls: int) -> None:
    """Model-call latency (512² tiles, batch 1 and 8, 2 threads) with torch's huge pages
    (``THP_MEM_ALLOC_ENABLE``, which ``slimseg.host.tune_process`` sets for the CLI) and
    ``slimseg.host.tune_malloc`` each on and off, in the main thread (the CLI) and in a worker thread
    (napari), each variant in a fresh process, interleaved."""
    import os
    import subprocess

    variants = {(thp, tune, where): [] for where in ("main", "worker") for thp, tune in
                ((False, False), (True, False), (False, True), (True, True))}
    for _ in range(repeats):
        for (thp, tune, where), out in variants.items():
            e = {**os.environ, "THP_MEM_ALLOC_ENABLE": str(int(thp))}
            res = subprocess.run([sys.executable, "-c", _ALLOC_CHILD, str(int(tune)), where, model or "",
                                  str(calls)], env=e, capture_output=True, text=True, check=True)
            out.append([float(v) for v in res.stdout.split()])
    result = {}
    for (thp, tune, where), out in variants.items():
        b1, b8 = (statistics.median(o[i] for o in out) for i in (0, 1))
        off = variants[(False, False, where)]
        s1, s8 = (statistics.median(o[i] for o in off) / v for i, v in ((0, b1), (1, b8)))
        key = f"{where} thread, huge pages {'on' if thp else 'off'}, tune_malloc {'on' if tune else 'off'}"
        result[key] = {"b1_ms": b1, "b8_ms": b8, "speedup_b1": s1, "speedup_b8": s8}
        print(f"{key:50s} b1 {b1:6.1f} ms ({s1:.2f}x)  b8 {b8:6.1f} ms ({s8:.2f}x)")
    _save("alloc", {"variants": result, "model": model or "untrained default U-Net", "repeats": repeats,
                    "calls": calls})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    a = sub.add_parser("accuracy")
    a.add_argument("data")
    a.add_argument("--minutes", type=float, default=10)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--base-width", type=int, default=16)
    s = sub.add_parser("speed")
    s.add_argument("--repeats", type=int, default=7)
    s.add_argument("--base-width", type=int, default=16)
    s.add_argument("--compile", action="store_true", help="also time torch.compile (needs a C++ compiler)")
    m = sub.add_parser("memory")
    m.add_argument("--size", type=int, default=8192)
    m.add_argument("--model", help="a trained model file (default: train one for a minute on the sample)")
    ml = sub.add_parser("malloc")
    ml.add_argument("--steps", type=int, default=24)
    ml.add_argument("--repeats", type=int, default=3)
    al = sub.add_parser("alloc")
    al.add_argument("--model", help="a model file of any kind (default: an untrained default U-Net)")
    al.add_argument("--repeats", type=int, default=3)
    al.add_argument("--calls", type=int, default=5)
    args = p.parse_args()
    if args.part == "accuracy":
        accuracy(args.data, args.minutes, args.seed, args.base_width)
    elif args.part == "speed":
        speed(args.repeats, args.base_width, args.compile)
    elif args.part == "memory":
        memory(args.size, args.model)
    elif args.part == "malloc":
        malloc(args.steps, args.repeats)
    else:
        alloc(args.model, args.repeats, args.calls)


if __name__ == "__main__":
    main()

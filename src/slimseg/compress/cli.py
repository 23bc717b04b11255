"""``slimseg compress`` and ``slimseg benchmark`` (added to the CLI by ``slimseg.cli``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError
from ..kinds import ENGINES
from .config import BACKENDS


def add_commands(sub) -> None:
    p = sub.add_parser("compress", help="make a smaller/faster model: int8 (ptq, qat), pruning, or both",
                       description="Compress a float model. DATA (images/ + labels/) gives the calibration "
                       "images and, for qat and pruning, the fine-tuning data; images of the model's "
                       "validation split are left out. The output loads with slimseg predict/evaluate.")
    p.add_argument("model", help="float model file (from slimseg train)")
    p.add_argument("--method", required=True,
                   choices=["ptq", "qat", "prune-unstructured", "prune-structured", "prune-ptq"])
    p.add_argument("--data", required=True, help="folder with images/ and labels/ (ptq: images/ alone will do)")
    p.add_argument("--out", required=True, help="model file to write")
    p.add_argument("--ratio", type=float, default=None,
                   help="pruning: sparsity (prune-unstructured) or fraction of channels removed "
                        "(prune-structured, prune-ptq); default 0.5")
    p.add_argument("--minutes", type=float, default=1.0, help="fine-tuning budget for qat and pruning (default 1)")
    p.add_argument("--max-steps", type=int, default=None, help="also stop fine-tuning after this many steps")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="int8 target: pt2e (PyTorch, oneDNN int8 kernels via torch.compile), onnx (ONNX Runtime, "
                        "portable), or auto (default): pt2e on CPUs with VNNI/AMX, onnx on others; "
                        "slimseg benchmark shows which is faster on your CPU")
    p.add_argument("--calibration-patches", type=int, default=64)
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: a fraction of "
                   "the training optimizer's default)")
    p.add_argument("--no-bn-recalibration", action="store_true",
                   help="keep the model's BatchNorm statistics instead of re-estimating them")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("benchmark", help="compare models: size, parameters, latency, accuracy",
                       description="Measure models in one process, interleaved: file size, parameters, median "
                       "latency on 512x512 tiles (batch 1 and 8), speed-up and metric change vs the first "
                       "model, and the CPU flags int8 speed depends on.")
    p.add_argument("models", nargs="+", help="model files; the first is the reference")
    p.add_argument("--data", required=True, help="folder with images/ and labels/")
    p.add_argument("--images", default="val", choices=["val", "all"],
                   help="score on the first model's validation split (default, where the file records one) "
                        "or on all images")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--markdown", help="also write the table to this markdown file")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-metrics", action="store_true", help="measure size and speed only")
    p.add_argument("--int8-engine", default="auto", choices=ENGINES,
                   help="how int8-pt2e models run (as in slimseg predict); default auto")
    p.add_argument("--overwrite", action="store_true", help="replace --json/--markdown if they exist")
    p.set_defaults(func=cmd_benchmark)


def _progress(event) -> None:
    from ..events import format_event

    line = format_event(event)
    if line:
        print(line, file=sys.stderr, flush=True)


def _read_data(data: str, needs_labels: bool):
    from ..data.folder import list_images, load_folder, read_image

    root = Path(data)
    if (root / "labels").is_dir() or needs_labels:
        return load_folder(root)
    files = list_images(root / "images" if (root / "images").is_dir() else root)
    return [f.stem for f in files], [read_image(f) for f in files], None


def cmd_compress(a: argparse.Namespace) -> int:
    from .. import io
    from ..events import run
    from . import CompressConfig, compress

    out = io.check_writable(a.out, a.overwrite)
    src = Path(a.model)
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise InputError("--out names the input model; the input model file is never replaced, choose another name")
    cfg = CompressConfig(method=a.method, ratio=a.ratio, minutes=a.minutes, max_steps=a.max_steps,
                         backend=a.backend, calibration_patches=a.calibration_patches, lr=a.lr,
                         recalibrate_bn=not a.no_bn_recalibration, seed=a.seed)
    mf = io.load(src)
    names, images, labels = _read_data(a.data, cfg.fine_tunes)
    result = run(compress(mf, images, labels, cfg, names=names), _progress)
    io.save(result, out, overwrite=a.overwrite)
    comp = result.meta["compression"]
    before, after = src.stat().st_size, out.stat().st_size
    print(f"saved {out}: {result.kind} ({a.method}), {after / 1e6:.3f} MB = {after / before:.3f}x the input file, "
          f"{comp.get('parameters', 0):,} parameters ({comp.get('parameters', 0) / comp['source']['parameters']:.3f}x)")
    return 0


def cmd_benchmark(a: argparse.Namespace) -> int:
    import torch

    from .. import io
    from ..data.folder import load_folder
    from .report import benchmark, format_table, machine_info

    for f in (a.json, a.markdown):
        if f and Path(f).exists() and not a.overwrite:
            raise InputError(f"{f} exists; pass --overwrite or choose another file")
    if a.threads:
        torch.set_num_threads(a.threads)
    names, images, labels = load_folder(a.data)
    if a.images == "val":
        val = set((io.load(a.models[0]).meta.get("training") or {}).get("split", {}).get("val", []))
        keep = [i for i, n in enumerate(names) if n in val]
        if keep:
            names, images, labels = [names[i] for i in keep], [images[i] for i in keep], [labels[i] for i in keep]
            print(f"scoring on the {len(keep)} validation images of {Path(a.models[0]).name}", file=sys.stderr)
        else:
            print("the first model records no validation split within DATA: scoring on all images", file=sys.stderr)
    rows = benchmark(a.models, images, None if a.no_metrics else labels, names, on_event=_progress,
                     batch_sizes=a.batch_sizes, tile=a.tile, repeats=a.repeats, engine=a.int8_engine)
    machine = machine_info()
    print(format_table(rows, machine))
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": machine, "images": len(images), "rows": rows}, indent=1,
                                           default=str))
    if a.markdown:
        Path(a.markdown).write_text(format_table(rows, machine, markdown=True) + "\n")
    return 0

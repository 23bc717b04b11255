"""``slimseg compress`` and ``slimseg benchmark`` (their parsers, named in ``slimseg.cli.COMMANDS``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from ..kinds import ENGINES
from ..models import resolve_model


def compress_parser(p: argparse.ArgumentParser) -> None:
    from ..options import add_options
    from .config import CompressConfig

    p.description = ("Compress a float model. DATA (images/ + labels/) gives the calibration images and, for qat "
                     "and pruning, the fine-tuning data; images of the model's validation split are left out. The "
                     "output loads with slimseg predict/evaluate.")
    p.add_argument("model", help="float model file (from slimseg train) or built-in model name (slimseg models)")
    p.add_argument("--data", required=True, help="folder with images/ and labels/ (ptq: images/ alone will do)")
    p.add_argument("--out", required=True, help="model file to write")
    add_options(p, CompressConfig, required=("method",))
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-warm", dest="warm", action="store_false",
                   help="int8 PT2E: do not compile for the images' tile shapes now (the first predict then compiles)")
    p.set_defaults(func=cmd_compress)


def benchmark_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Measure models in one process, interleaved: file size, parameters, median model-call time on "
                     "512x512 tiles (batch 1 and 8), speed-up and metric change vs the first model, and the CPU "
                     "flags int8 speed depends on.")
    p.add_argument("models", nargs="+", help="model files or built-in model names; the first is the reference")
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


def _read_data(data: str, needs_labels: bool):
    from ..data.folder import list_images, load_folder, read_image

    root = Path(data)
    if (root / "labels").is_dir() or needs_labels:
        return load_folder(root)
    files = list_images(root / "images" if (root / "images").is_dir() else root)
    return [f.stem for f in files], [read_image(f) for f in files], None


def cmd_compress(a: argparse.Namespace) -> int:
    from .. import io
    from ..events import print_progress, run
    from ..options import config_from_args
    from . import CompressConfig, compress

    out = io.check_writable(a.out, a.overwrite)
    src = resolve_model(a.model)
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise InputError("--out names the input model; the input model file is never replaced, choose another name")
    cfg = config_from_args(CompressConfig, a)
    mf = io.load(src)
    names, images, labels = _read_data(a.data, cfg.fine_tunes)
    result = run(compress(mf, images, labels, cfg, names=names), print_progress)
    io.save(result, out, overwrite=a.overwrite)
    if a.warm:
        from .warm import warm_events

        run(warm_events(result, images), print_progress)
    comp = result.meta["compression"]
    before, after = src.stat().st_size, out.stat().st_size
    print(f"saved {out}: {result.kind} ({a.method}), {after / 1e6:.3f} MB = {after / before:.3f}x the input file, "
          f"{comp.get('parameters', 0):,} parameters ({comp.get('parameters', 0) / comp['source']['parameters']:.3f}x)")
    return 0


def cmd_benchmark(a: argparse.Namespace) -> int:
    import torch

    from .. import io
    from ..data.folder import load_folder
    from ..events import print_progress
    from ..files import write_json, write_text
    from .report import benchmark, format_table, machine_info

    for f in (a.json, a.markdown):
        if f and Path(f).exists() and not a.overwrite:
            raise InputError(f"{f} exists; pass --overwrite or choose another file")
    if a.threads:
        torch.set_num_threads(a.threads)
    names, images, labels = load_folder(a.data)
    if a.images == "val":
        val = set((io.load(resolve_model(a.models[0])).meta.get("training") or {}).get("split", {}).get("val", []))
        keep = [i for i, n in enumerate(names) if n in val]
        if keep:
            names, images, labels = [names[i] for i in keep], [images[i] for i in keep], [labels[i] for i in keep]
            print(f"scoring on the {len(keep)} validation images of {Path(a.models[0]).name}", file=sys.stderr)
        else:
            print("the first model records no validation split within DATA: scoring on all images", file=sys.stderr)
    rows = benchmark(a.models, images, None if a.no_metrics else labels, names, on_event=print_progress,
                     batch_sizes=a.batch_sizes, tile=a.tile, repeats=a.repeats, engine=a.int8_engine)
    machine = machine_info()
    print(format_table(rows, machine))
    if a.json:
        write_json(a.json, {"machine": machine, "images": len(images), "rows": rows}, default=str)
    if a.markdown:
        write_text(a.markdown, format_table(rows, machine, markdown=True) + "\n")
    return 0

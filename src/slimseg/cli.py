"""The ``slimseg`` command line: train, predict, evaluate, demo, export (and compress, benchmark, study).

Progress goes to stderr, results to stdout. Bad input exits with code 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from .errors import InputError, TrainingFailedError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


# Defaults a command sets differently from the dataclasses' (every other default is the dataclass's own).
DEMO_DEFAULTS = {"minutes": 2.5, "epochs": 200}
MODEL_HELP = "a model file, or a built-in model's name (slimseg models lists them)"


def _add_predict_options(p: argparse.ArgumentParser) -> None:
    from .config import PredictConfig
    from .options import add_options

    add_options(p, PredictConfig)


def _add_engine_option(p: argparse.ArgumentParser) -> None:
    from .kinds import ENGINES

    p.add_argument("--int8-engine", default="auto", choices=ENGINES,
                   help="how an int8-pt2e model runs: compile (AOTInductor, compiled once per tile shape and cached), "
                        "lowered (oneDNN kernels without "
                        "compiling), reference (slow, for checks), cached (compiled shapes from the cache, "
                        "others lowered while a background process compiles them), or auto (default): compile "
                        "where a C++ compiler is found, else lowered")


def _add_channel_options(p: argparse.ArgumentParser) -> None:
    from .config import ChannelConfig
    from .options import add_options

    add_options(p.add_argument_group("channels (see docs/data.md)"), ChannelConfig)


def _channels(a: argparse.Namespace, recorded: tuple[int, ...] | None = None):
    """The ChannelConfig of the options; a model's recorded channels where ``--channels`` is not given."""
    from .config import ChannelConfig
    from .options import config_from_args

    cfg = config_from_args(ChannelConfig, a)
    return cfg if cfg.channels is not None or recorded is None else ChannelConfig(recorded, cfg.channel_axis)


def _add_train_options(p: argparse.ArgumentParser, defaults: dict[str, Any] | None = None,
                       helps: dict[str, str] | None = None) -> None:
    from .config import TrainConfig
    from .options import add_model_options, add_options

    g = p.add_argument_group("training")
    add_options(g, TrainConfig, defaults=defaults, helps=helps)
    add_model_options(g)


def _add_init_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init", metavar="MODEL", help="fine-tune this float model (a file or a built-in name) instead "
                   "of training a new U-Net: its architecture and normalisation are kept (--depth and "
                   "--base-width do not apply), the default learning rate is a tenth of the optimizer's own and "
                   "the default --epochs is shorter; int8 and sparse models cannot be trained")


def _start(a: argparse.Namespace):
    """The --init model (checked before any data are read), or None; fills in the budget it implies."""
    from .config import FINETUNE_EPOCHS, TrainConfig
    from .start import load_start

    start = load_start(a.init) if getattr(a, "init", None) else None
    if getattr(a, "epochs", 0) is None:  # not given: the default of a fresh or a fine-tuning run
        a.epochs = FINETUNE_EPOCHS if start is not None else TrainConfig.epochs
    return start


class Stopped(Exception):
    """Training ended by Ctrl-C or SIGTERM; ``result`` is the best model so far (None before the first
    epoch ended: nothing worth saving yet)."""

    def __init__(self, result: Any) -> None:
        super().__init__("stopped")
        self.result = result


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """For the command's duration, the first Ctrl-C or SIGTERM sets the yielded event (training stops at
    its next step and the best model is saved) and a second one interrupts at once. Only the CLI entry
    point changes its process's signal handling; the previous handlers come back after."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        # os.write, not print: the signal can land while the main thread is inside a print to stderr, and
        # a buffered write from the handler then fails ("reentrant call inside BufferedWriter")
        os.write(2, (f"slimseg: {signal.Signals(signum).name}: stopping at the next step and saving the best model "
                     "so far (send it again to quit at once)\n").encode())

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _train(images, labels, names, a: argparse.Namespace, stop: threading.Event, validation_metrics: bool = True,
           start: Any = None):
    """Train with the CLI options; return (result, metrics on the validation split). Raises
    :class:`Stopped` once ``stop`` is set (or on KeyboardInterrupt)."""
    from . import checkpoint
    from .config import TrainConfig
    from .data.axes import count_channels
    from .evaluation import evaluate_events
    from .events import print_progress, run, until_stopped
    from .options import config_from_args, model_config_from_args
    from .training import Trainer

    cfg = config_from_args(TrainConfig, a)
    model_cfg = None if start is not None else model_config_from_args(a, count_channels(images, names),
                                                                      channels=getattr(a, "channels", None))
    trainer = Trainer(images, labels, cfg, model_cfg, names=names, init=start)
    if getattr(a, "resume", None):
        trainer.restore(checkpoint.load(a.resume))
    target = getattr(a, "checkpoint_target", None)
    try:
        result = run(until_stopped(trainer.fit(target, getattr(a, "checkpoint_every", None) or 1), stop,
                                   lambda: None), print_progress)
    except KeyboardInterrupt:  # raised in this process by a host without our handlers (or a test)
        stop.set()
    if stop.is_set():
        result = trainer.result(recalibrate=False) if trainer.epochs_done else None  # quick: a signal waits
        if result is not None:
            result.stop_reason = "interrupted"
        raise Stopped(result)
    metrics = None
    val = result.split.get("val", [])
    if validation_metrics and val:  # the trainer's validation images (regions of a single image, or images)
        metrics = _drain(evaluate_events(result.segmenter(), [img for img, _ in trainer.val],
                                         [lab for _, lab in trainer.val], names=val), stop, result)
        metrics.pop("per_image")
    return result, metrics


def _drain(gen, stop: threading.Event, result: Any, on_event=None) -> Any:
    """Run a job after training; raise :class:`Stopped` (keeping ``result``) if a stop comes first."""
    from .events import run, until_stopped

    out = run(until_stopped(gen, stop, lambda: None), on_event)
    if stop.is_set():
        raise Stopped(result)
    return out


def _save_stopped(result: Any, out: Path | None, overwrite: bool) -> int:
    """Save the best model of a stopped run (if any, and if there is somewhere to), say so; exit code 130."""
    from .training import to_model_file

    if result is None:
        print("interrupted before the first epoch ended: no model saved", file=sys.stderr)
    elif out is None:
        print("interrupted: no model saved (no --out given)", file=sys.stderr)
    else:
        from . import io

        io.save(to_model_file(result), out, overwrite=overwrite)
        print(f"interrupted: saved the best model so far to {out} (validation Dice {result.best_val_dice:.4f} "
              f"at epoch {result.best_epoch} of {len(result.history)})", file=sys.stderr)
    return EXIT_INTERRUPTED


def _checkpoint_options(a: argparse.Namespace, out: Path) -> None:
    """Check --checkpoint/--checkpoint-every/--resume before any work; sets ``a.checkpoint_target``."""
    from . import checkpoint

    a.checkpoint_target = None
    if a.checkpoint_every is not None and a.checkpoint_every < 1:
        raise InputError(f"--checkpoint-every takes a number of epochs >= 1, got {a.checkpoint_every}")
    if a.resume and not Path(a.resume).is_file():
        raise InputError(f"{a.resume}: no such checkpoint file (--resume)")
    if a.checkpoint_every is not None or a.checkpoint:
        target = Path(a.checkpoint) if a.checkpoint else out.with_suffix(checkpoint.SUFFIX)
        if target.resolve() == out.resolve():
            raise InputError("--checkpoint names the --out model file; give the checkpoint its own name")
        a.checkpoint_target = checkpoint.check_target(target, a.resume, a.overwrite)


def cmd_train(a: argparse.Namespace) -> int:
    from . import io
    from .data.folder import load_folder
    from .files import check_can_write
    from .metrics import format_table
    from .training import to_model_file

    out = io.check_writable(a.out, a.overwrite)
    check_can_write(out)
    _checkpoint_options(a, out)
    start = _start(a)
    if start is None:
        names, images, labels = load_folder(a.data, _channels(a))
    else:
        cfg = start.model_file.model_config
        names, images, labels = load_folder(a.data, _channels(a, cfg.channels), cfg.in_channels)
    with stop_on_signals() as stop:
        try:
            result, metrics = _train(images, labels, names, a, stop, start=start)
        except Stopped as stopped:
            return _save_stopped(stopped.result, out, a.overwrite)
        except TrainingFailedError as err:
            raise TrainingFailedError(f"{err} (--lr, --epochs); {out} was not written") from None
        io.save(to_model_file(result, {"validation": metrics} if metrics else None), out, overwrite=a.overwrite)
    if metrics:
        print(format_table({"validation": metrics}))
    print(f"saved {out} (best validation Dice {result.best_val_dice:.4f} at epoch {result.best_epoch}; "
          f"stopped by {result.stop_reason})")
    return EXIT_INTERRUPTED if stop.is_set() else 0


def cmd_predict(a: argparse.Namespace) -> int:
    from .config import PredictConfig
    from .data.folder import image_stem, list_images
    from .data.readers import read
    from .events import print_progress, run
    from .files import write_labels_tiff
    from .instances import count_objects
    from .options import values_from_args
    from .segmenter import load_segmenter

    files = list_images(a.input)
    out_dir = Path(a.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} is a file; --out takes a folder")
    if a.workers or a.scheduler or a.resume or a.out_format != "auto" or _any_large(files):
        return _predict_distributed(a, files, out_dir)
    seg = load_segmenter(a.model, a.int8_engine)
    targets = [out_dir / (image_stem(f) + ".tif") for f in files]
    clash = [t for t in targets if t.exists()]
    if clash and not a.overwrite:
        raise InputError(f"{len(clash)} output files exist already (e.g. {clash[0]}); pass --overwrite or "
                         "choose another --out folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = seg.settings(**values_from_args(PredictConfig, a))
    channels = _channels(a)
    for i, (f, t) in enumerate(zip(files, targets)):
        job = seg.stack_job(read(f), cfg, channels, name=str(f))
        labels = run(job.run(), print_progress).labels  # a stack: one labels plane per image plane
        write_labels_tiff(t, labels, job.stack.plane_axes)
        print(f"[{i + 1}/{len(files)}] {f.name}: {count_objects(labels)} objects -> {t}",
              file=sys.stderr, flush=True)
    return 0


def _any_large(files) -> bool:
    from .large import TIFF_MAX_PIXELS, image_pixels

    return any(image_pixels(f) > TIFF_MAX_PIXELS for f in files)


def _predict_distributed(a: argparse.Namespace, files, out_dir: Path) -> int:
    """OME-Zarr output, large images, --workers / --scheduler, --resume: slimseg.distributed."""
    from .config import PredictConfig
    from .distributed import plan, predict_jobs
    from .events import print_progress, run
    from .files import file_digest
    from .large import LargeConfig
    from .models import resolve_model
    from .options import values_from_args
    from .segmenter import load_segmenter

    jobs, skipped = plan(files, out_dir, a.out_format, a.overwrite, a.resume)
    if skipped:
        print(f"{len(skipped)} outputs exist already: skipped", file=sys.stderr)
    lcfg = LargeConfig(block=a.block, margin=a.margin)
    seg = load_segmenter(a.model, a.int8_engine)
    cfg = seg.settings(**values_from_args(PredictConfig, a))
    model = a.model if (a.workers or a.scheduler) else seg
    out_dir.mkdir(parents=True, exist_ok=True)
    model_id = file_digest(resolve_model(a.model))  # large images' runs resume where an interrupted one stopped
    try:
        results = run(predict_jobs(model, jobs, cfg, _channels(a), lcfg, a.int8_engine, a.workers, a.scheduler,
                                   model_id=model_id), print_progress)
    except KeyboardInterrupt:
        if any(j.fmt == "zarr" for j in jobs):
            print("the finished blocks of a large image are kept beside its output: the same command goes on "
                  "from them", file=sys.stderr)
        raise
    failed = [r for r in results if r.get("error")]
    if failed:
        print(f"{len(failed)} of {len(results)} images failed (nothing of them was written); run the same command "
              "with --resume to redo them", file=sys.stderr)
        return 1
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .config import PredictConfig
    from .data.folder import load_folder
    from .evaluation import baseline_events, evaluate_events
    from .events import run
    from .files import write_json
    from .metrics import format_table
    from .options import values_from_args
    from .segmenter import load_segmenter

    if a.json and Path(a.json).exists() and not a.overwrite:
        raise InputError(f"{a.json} exists; pass --overwrite or choose another --json file")
    seg = load_segmenter(a.model, a.int8_engine)
    names, images, labels = load_folder(a.data, _channels(a, seg.model_config.channels), seg.model_config.in_channels)
    cfg = seg.settings(**values_from_args(PredictConfig, a))
    rows = {Path(a.model).name: run(evaluate_events(seg, images, labels, cfg, names))}
    if a.baseline:
        rows["otsu+watershed"] = run(baseline_events(images, labels, names))
    print(format_table(rows))
    if a.json:
        write_json(a.json, rows[Path(a.model).name])
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from . import io
    from .evaluation import baseline_events, evaluate_events
    from .events import print_progress
    from .files import check_can_write
    from .metrics import format_table
    from .sample import load_sample
    from .training import to_model_file

    if a.out:
        check_can_write(io.check_writable(a.out, a.overwrite))
    t0 = time.perf_counter()
    names, images, labels = load_sample("train")
    print(f"demo: training a U-Net ({a.optimizer} + {a.loss}) on {len(images)} shipped DSB2018 nuclei images "
          f"for up to {a.minutes:g} minutes", file=sys.stderr)
    with stop_on_signals() as stop:
        try:
            result, _ = _train(images, labels, names, a, stop, validation_metrics=False)
            t_names, t_images, t_labels = load_sample("test")
            rows = {
                "slimseg U-Net": _drain(evaluate_events(result.segmenter(), t_images, t_labels, names=t_names),
                                        stop, result, print_progress),
                "otsu+watershed": _drain(baseline_events(t_images, t_labels, t_names), stop, result),
            }
        except Stopped as stopped:
            return _save_stopped(stopped.result, Path(a.out) if a.out else None, a.overwrite)
        print(f"\nheld-out test images: {len(t_images)} (shipped sample, never trained on)")
        print(format_table(rows))
        gain = rows["slimseg U-Net"]["dice"] - rows["otsu+watershed"]["dice"]
        gain_f1 = rows["slimseg U-Net"]["instance_f1"] - rows["otsu+watershed"]["instance_f1"]
        print(f"\nU-Net vs classical baseline: Dice {gain:+.4f}, instance F1 {gain_f1:+.4f}; "
              f"total time {time.perf_counter() - t0:.0f} s")
        if a.out:
            io.save(to_model_file(result, {"test": rows["slimseg U-Net"]}), a.out, overwrite=a.overwrite)
            print(f"saved {a.out}")
    return EXIT_INTERRUPTED if stop.is_set() else 0


def cmd_models(a: argparse.Namespace) -> int:
    from . import models

    rows = models.describe()
    if not rows:
        print("no built-in models in this version")
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        state = "available" if r["available"] else "not shipped in this version"
        print(f"{r['name']:<{width}}  {state:<27}  {r['description']}")
    if not all(r["available"] for r in rows):
        print(f"\na built-in that is not shipped can be trained with {models.RETRAIN_HINT}", file=sys.stderr)
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from .export import ExportConfig, export_model
    from .export.config import DEFAULT_AUTHOR

    if not a.author and a.format == "bioimageio":
        print(f"slimseg export: note: no --author given; the package names {DEFAULT_AUTHOR!r} as its author",
              file=sys.stderr)
    cfg = ExportConfig(format=a.format, authors=tuple(a.author or (DEFAULT_AUTHOR,)), license=a.license,
                       name=a.name, cite=tuple(tuple(c) for c in a.cite or ()), test_image=a.test_image)
    out = export_model(a.model, a.out, cfg, overwrite=a.overwrite)
    print(f"wrote {out} ({a.format})")
    return 0


def _export_parser(p: argparse.ArgumentParser) -> None:
    from .export import FORMATS, ExportConfig

    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--format", default=ExportConfig.format, choices=FORMATS)
    p.add_argument("--out", required=True, help="file to write (bioimageio: a .zip package)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    g = p.add_argument_group("bioimage.io package")
    g.add_argument("--author", action="append", help="an author's name (repeat for several)")
    g.add_argument("--license", default=ExportConfig.license, help="SPDX licence id of the model (default %(default)s)")
    g.add_argument("--name", help="the model's name in the package")
    g.add_argument("--cite", nargs=2, action="append", metavar=("DOI", "TEXT"),
                   help="a citation to add, e.g. of the training data (repeat for several)")
    g.add_argument("--test-image", help="the real image the test tensors come from (default: a shipped sample image)")
    p.set_defaults(func=cmd_export)


def _train_parser(p: argparse.ArgumentParser) -> None:
    from .config import FINETUNE_EPOCHS, TrainConfig

    p.add_argument("data", help="folder with images/ and labels/ (same file names)")
    p.add_argument("--out", required=True, help="model file to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out (and --checkpoint) if it exists")
    _add_init_option(p)
    _add_train_options(p, {"epochs": None}, {"epochs": f"epochs (default {TrainConfig.epochs}; {FINETUNE_EPOCHS} with --init)"})
    _add_channel_options(p)
    g = p.add_argument_group("checkpoints", "Ctrl-C or SIGTERM saves the best model so far to --out and exits "
                             "with 130; a checkpoint also lets a killed run go on where it was.")
    g.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="write a checkpoint every N epochs (and after the last one), replacing the previous one "
                        "atomically")
    g.add_argument("--checkpoint", metavar="FILE", help="the checkpoint file (default: --out with the suffix .ckpt)")
    g.add_argument("--resume", metavar="CHECKPOINT",
                   help="continue the run CHECKPOINT holds, with the same optimizer state, schedule and random "
                        "streams; give the same DATA and options (only --epochs, --minutes and --patience may "
                        "change; --minutes counts the training time before the checkpoint too)")
    p.set_defaults(func=cmd_train)


def _predict_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("input", help="an image (TIFF, PNG, zarr) or a folder of images")
    p.add_argument("--out", required=True, help="output folder (label files keep the input names)")
    _add_predict_options(p)
    _add_channel_options(p)
    _add_engine_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing label files")
    p.add_argument("--resume", action="store_true", help="skip the outputs that exist (they are written only "
                   "when complete)")
    p.add_argument("--out-format", default="auto", choices=("auto", "tif", "zarr"),
                   help="label TIFF, or a chunked OME-Zarr label store predicted block by block (for images "
                        "larger than memory); auto: zarr for images too large for a TIFF in memory")
    p.add_argument("--block", type=int, default=2048, help="OME-Zarr output: block (chunk) side in pixels")
    p.add_argument("--margin", type=int, default=128, help="OME-Zarr output: context around each block, more "
                   "than an object's diameter")
    p.add_argument("--workers", type=int, default=None, help="predict over a local Dask cluster of N worker "
                   "processes (images, and the blocks of large images)")
    p.add_argument("--scheduler", default=None, help="predict on an existing Dask scheduler (tcp://host:8786), "
                   "e.g. one started with dask-jobqueue on SLURM (docs/data.md)")
    p.set_defaults(func=cmd_predict)


def _evaluate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("data")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.add_argument("--baseline", action="store_true", help="add the Otsu + watershed baseline to the table")
    _add_predict_options(p)
    _add_channel_options(p)
    _add_engine_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace --json if it exists")
    p.set_defaults(func=cmd_evaluate)


def _demo_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="also save the trained model here")
    p.add_argument("--overwrite", action="store_true")
    _add_train_options(p, DEMO_DEFAULTS)
    p.set_defaults(func=cmd_demo)


def _models_parser(p: argparse.ArgumentParser) -> None:
    p.set_defaults(func=cmd_models)


# The commands: name -> (help, "module:function" adding the command's arguments to its parser). The
# function's module is imported only when its command is given, so `slimseg --help` and each command's
# start import no more than that command needs (the study and compress modules pull in torch).
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train a U-Net on DATA/images + DATA/labels", "slimseg.cli:_train_parser"),
    "predict": ("write one instance-label TIFF per input image (a stack per stack)", "slimseg.cli:_predict_parser"),
    "evaluate": ("score a model on DATA/images + DATA/labels", "slimseg.cli:_evaluate_parser"),
    "demo": ("train on the shipped real sample and compare with the classical baseline", "slimseg.cli:_demo_parser"),
    "models": ("list the built-in models (names any command taking a model file accepts)",
               "slimseg.cli:_models_parser"),
    "export": ("write a model as a bioimage.io package, or its network as ONNX or TorchScript",
               "slimseg.cli:_export_parser"),
    "study": ("train every optimizer x loss x seed with one budget; report the winner",
              "slimseg.study.cli:study_parser"),
    "study-report": ("rebuild DIR/report.md of a study (finished or not)", "slimseg.study.cli:study_report_parser"),
    "compress": ("make a smaller/faster model: int8 (ptq, qat), pruning, or both",
                 "slimseg.compress.cli:compress_parser"),
    "benchmark": ("compare models: size, parameters, model-call time, accuracy",
                  "slimseg.compress.cli:benchmark_parser"),
}


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``slimseg`` parser with every command's arguments, or (``commands``) only those commands'
    (the others listed with their help, for ``slimseg --help``)."""
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="slimseg", description="Train, compress, predict and score "
                                     "U-Net segmentation of cells and nuclei.")
    parser.add_argument("--version", action="version", version=f"slimseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, where) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if commands is None or name in commands:
            module, function = where.split(":")
            getattr(importlib.import_module(module), function)(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .host import tune_process

    tune_process()  # before torch's first allocation: an entry point may tune its own process
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[:1]).parse_args(argv)
    try:
        return args.func(args)
    except InputError as err:
        print(f"slimseg {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"slimseg {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

"""``slimseg study`` (run or resume a study) and ``slimseg study-report`` (rebuild its report)."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from pathlib import Path


def add_commands(sub) -> None:
    from ..losses import LOSSES
    from ..optim import OPTIMIZERS
    from .grid import DEFAULT_LOSSES, DEFAULT_OPTIMIZERS

    p = sub.add_parser("study", help="train every optimizer x loss x seed with one budget; report the winner",
                       description="Train every optimizer x loss x seed combination with the same budget and "
                       "data split, score each on held-out images, write DIR/results.csv as runs finish and "
                       "DIR/report.md at the end. Running the same command again resumes a stopped study.")
    p.add_argument("data", help="folder with images/ and labels/ (same file names)")
    p.add_argument("--out", required=True, help="study folder (created; reused only by the same study)")
    p.add_argument("--optimizers", default=DEFAULT_OPTIMIZERS,
                   help=f"comma-separated, from {', '.join(OPTIMIZERS.names())} (default {DEFAULT_OPTIMIZERS})")
    p.add_argument("--losses", default=DEFAULT_LOSSES,
                   help=f"comma-separated terms or '+'-joined hybrids (weights like 0.5*bce+dice) of "
                   f"{', '.join(LOSSES.names())} (default {DEFAULT_LOSSES})")
    p.add_argument("--seeds", type=int, default=3, help="runs per cell, seeds 0..N-1 (default 3)")
    p.add_argument("--minutes-per-run", type=float, default=None, help="wall-clock training budget of every run")
    p.add_argument("--epochs", type=int, default=None,
                   help="epoch budget of every run (with --minutes-per-run: whichever ends first)")
    p.add_argument("--lr", default=None, help="override default learning rates, e.g. sgd=0.1,rmsprop=5e-4")
    p.add_argument("--scoring", default="fixed", choices=["fixed", "tuned"],
                   help="post-processing of the held-out predictions: fixed thresholds (0.5) for every run "
                   "(default), or each run's thresholds tuned by its trainer on the validation images")
    p.add_argument("--retry-failed", action="store_true", help="run failed runs again when resuming")
    p.add_argument("--no-report", action="store_true", help="skip report.md at the end")
    p.add_argument("--no-compress", action="store_true",
                   help="skip the compression table of the winner (made at the end when slimseg.compress works)")
    p.add_argument("--compress-minutes", type=float, default=1.0,
                   help="fine-tuning budget of QAT and pruning for the compression table (default 1)")
    g = p.add_argument_group("data split")
    g.add_argument("--test-fraction", type=float, default=0.2, help="held-out images for scoring (default 0.2)")
    g.add_argument("--val-fraction", type=float, default=0.15, help="of the rest, for best-epoch choice")
    g.add_argument("--split-seed", type=int, default=0, help="seeds both splits, the same for every run")
    g = p.add_argument_group("training (shared by every run)")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--patch-size", type=int, default=256)
    g.add_argument("--patches-per-epoch", type=int, default=256)
    g.add_argument("--schedule", default="cosine", choices=["constant", "cosine", "plateau"])
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--depth", type=int, default=4)
    g.add_argument("--base-width", type=int, default=16)
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    g.add_argument("--bf16", default="auto", choices=["auto", "on", "off"])
    g = p.add_argument_group("where runs go (Dask distributed)")
    g.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per core)")
    g.add_argument("--threads-per-run", type=int, default=None,
                   help="torch threads per run (default: cores / workers locally; cores / task slots per "
                   "worker machine with --scheduler)")
    g.add_argument("--scheduler", default=None, help="address of a running Dask scheduler, e.g. tcp://host:8786")
    g.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to wait for --scheduler")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("study-report", help="rebuild DIR/report.md of a study (finished or not)")
    p.add_argument("out", help="the study folder")
    p.add_argument("--compress", action="store_true", help="(re)make the compression table of the winning model")
    p.add_argument("--compress-minutes", type=float, default=1.0, help="fine-tuning budget of QAT and pruning")
    p.add_argument("--data", default=None, help="the study's data folder, if it moved since the study ran")
    p.set_defaults(func=cmd_study_report)


def cmd_study(a: argparse.Namespace) -> int:
    from ..cli import _progress
    from ..config import ModelConfig
    from ..errors import InputError
    from ..events import run
    from . import dataset
    from .grid import make_config
    from .runner import run_study

    t0 = time.perf_counter()
    if a.workers is not None and a.scheduler:
        raise InputError("--workers starts a local cluster; leave it out with --scheduler")
    if a.workers is not None and a.workers < 1:
        raise InputError(f"--workers must be >= 1, got {a.workers}")
    if a.threads_per_run is not None and a.threads_per_run < 1:
        raise InputError(f"--threads-per-run must be >= 1, got {a.threads_per_run}")
    train = {"batch_size": a.batch_size, "patch_size": a.patch_size, "patches_per_epoch": a.patches_per_epoch,
             "val_fraction": a.val_fraction, "schedule": a.schedule, "weight_decay": a.weight_decay,
             "device": a.device, "bf16": a.bf16}
    config = make_config(a.optimizers, a.losses, a.seeds, a.minutes_per_run, a.epochs, a.lr,
                         ModelConfig.from_depth(a.depth, a.base_width), train, a.test_fraction, a.split_seed,
                         a.scoring)
    data, info = dataset.load(a.data, a.test_fraction, a.split_seed)
    config.data = info
    _exit_on_sigterm()
    command = _command_line(a)
    try:
        session = run(run_study(config, data, a.out, str(Path(a.data).resolve()), a.workers, a.threads_per_run,
                                a.scheduler, a.connect_timeout, a.retry_failed, started=t0, command=command),
                      _progress)
    except RuntimeError as err:  # the cluster went away: finished runs are saved
        print(f"slimseg study: error: {err}", file=sys.stderr)
        return 1
    if session.get("n_runs"):
        print(f"study: {session['n_runs']} runs in {session['wall_s'] / 60:.1f} min; machinery overhead "
              f"{100 * session['overhead']:.1f}% of slot time", file=sys.stderr)
    if a.no_report:
        return 0
    from .compression import compression_section, stored_section, unavailable_reason
    from .report import write_report

    t = time.perf_counter()
    changed = session.get("n_runs", 0) > 0 or stored_section(a.out) is None  # the winner may be new
    if not a.no_compress and changed and unavailable_reason() is None:
        print("study: compressing the winning model for the report", file=sys.stderr)
        try:
            compression_section(a.out, minutes=a.compress_minutes, on_event=_progress)
        except Exception as err:  # noqa: BLE001 - the study's own report must not be lost to it
            print(f"study: the compression table failed ({type(err).__name__}: {err}); the report goes "
                  "without it (retry with slimseg study-report DIR --compress)", file=sys.stderr)
    path = write_report(a.out)
    print(f"report: {path} ({time.perf_counter() - t:.1f} s)")
    return 0


def cmd_study_report(a: argparse.Namespace) -> int:
    from ..cli import _progress
    from .report import write_report

    compression = None
    if a.compress:
        from .compression import compression_section

        compression = compression_section(a.out, a.data, minutes=a.compress_minutes, on_event=_progress)
    print(f"report: {write_report(a.out, compression)}")
    return 0


def _command_line(a: argparse.Namespace) -> str:
    """The command that resumes this study (every result-deciding option spelled out)."""
    opts = ["optimizers", "losses", "seeds", "minutes_per_run", "epochs", "lr", "test_fraction", "val_fraction",
            "split_seed", "batch_size", "patch_size", "patches_per_epoch", "schedule", "weight_decay", "depth",
            "base_width", "device", "bf16", "scoring"]
    parts = ["slimseg", "study", a.data, "--out", a.out]
    for k in opts:
        v = getattr(a, k)
        if v is not None:
            parts += ["--" + k.replace("_", "-"), str(v)]
    return " ".join(shlex.quote(p) for p in parts)


def _exit_on_sigterm() -> None:
    """SIGTERM (kill, a batch system's time limit) stops the study like Ctrl-C: finished runs stay."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        pass

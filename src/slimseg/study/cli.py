"""``slimseg study`` (run or resume a study) and ``slimseg study-report`` (rebuild its report)."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from pathlib import Path

from ..config import TrainConfig
from ..options import cli_fields
from .grid import SHARED_TRAIN_FIELDS

# TrainConfig options of a study (the fields every run shares, patience not offered), with the study's
# own defaults where TrainConfig's do not suit it; the fields each run sets (optimizer, loss, lr, seed,
# budget) have study options of their own instead.
SPLIT_OPTIONS = ("val_fraction",)  # in the "data split" group
TRAIN_OPTIONS = tuple(f.name for f in cli_fields(TrainConfig, SHARED_TRAIN_FIELDS, (*SPLIT_OPTIONS, "patience")))
STUDY_DEFAULTS = {"val_fraction": 0.15}


def study_parser(p: argparse.ArgumentParser) -> None:
    from ..compress.config import CompressConfig
    from ..losses import LOSSES
    from ..optim import OPTIMIZERS
    from ..options import add_model_options, add_options
    from .grid import DEFAULT_LOSSES, DEFAULT_OPTIMIZERS, SCORINGS, StudyConfig

    p.description = ("Train every optimizer x loss x seed combination with the same budget and data split, score "
                     "each on held-out images, write DIR/results.csv as runs finish and DIR/report.md at the end. "
                     "Running the same command again resumes a stopped study.")
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
    p.add_argument("--scoring", default=StudyConfig.scoring, choices=SCORINGS,
                   help="post-processing of the held-out predictions: fixed thresholds (0.5) for every run "
                   "(default), or each run's thresholds tuned by its trainer on the validation images")
    p.add_argument("--retry-failed", action="store_true", help="run failed runs again when resuming")
    p.add_argument("--no-report", action="store_true", help="skip report.md at the end")
    p.add_argument("--no-compress", action="store_true",
                   help="skip the compression table of the winner (made at the end when slimseg.compress works)")
    p.add_argument("--compress-minutes", type=float, default=CompressConfig.minutes,
                   help="fine-tuning budget of QAT and pruning for the compression table (default %(default)g)")
    g = p.add_argument_group("data split")
    g.add_argument("--test-fraction", type=float, default=0.2, help="held-out images for scoring (default 0.2)")
    add_options(g, TrainConfig, only=SPLIT_OPTIONS, defaults=STUDY_DEFAULTS,
                helps={"val_fraction": "of the rest, for best-epoch choice"})
    g.add_argument("--split-seed", type=int, default=0, help="seeds both splits, the same for every run")
    g = p.add_argument_group("training (shared by every run)")
    add_options(g, TrainConfig, only=TRAIN_OPTIONS)
    add_model_options(g)
    g = p.add_argument_group("where runs go (Dask distributed)")
    g.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per core)")
    g.add_argument("--threads-per-run", type=int, default=None,
                   help="torch threads per run (default: cores / workers locally; cores / task slots per "
                   "worker machine with --scheduler)")
    g.add_argument("--scheduler", default=None, help="address of a running Dask scheduler, e.g. tcp://host:8786")
    g.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to wait for --scheduler")
    p.set_defaults(func=cmd_study)


def study_report_parser(p: argparse.ArgumentParser) -> None:
    from ..compress.config import CompressConfig

    p.add_argument("out", help="the study folder")
    p.add_argument("--compress", action="store_true", help="(re)make the compression table of the winning model")
    p.add_argument("--compress-minutes", type=float, default=CompressConfig.minutes,
                   help="fine-tuning budget of QAT and pruning")
    p.add_argument("--data", default=None, help="the study's data folder, if it moved since the study ran")
    p.set_defaults(func=cmd_study_report)


def cmd_study(a: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..events import print_progress, run
    from ..options import model_config_from_args, values_from_args
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
    train = values_from_args(TrainConfig, a, only=(*SPLIT_OPTIONS, *TRAIN_OPTIONS))
    config = make_config(a.optimizers, a.losses, a.seeds, a.minutes_per_run, a.epochs, a.lr,
                         model_config_from_args(a), train, a.test_fraction, a.split_seed, a.scoring)
    data, info = dataset.load(a.data, a.test_fraction, a.split_seed)
    config.data = info
    _exit_on_sigterm()
    command = _command_line(a)
    try:
        session = run(run_study(config, data, a.out, str(Path(a.data).resolve()), a.workers, a.threads_per_run,
                                a.scheduler, a.connect_timeout, a.retry_failed, started=t0, command=command),
                      print_progress)
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
            compression_section(a.out, minutes=a.compress_minutes, on_event=print_progress)
        except Exception as err:  # noqa: BLE001 - the study's own report must not be lost to it
            print(f"study: the compression table failed ({type(err).__name__}: {err}); the report goes "
                  "without it (retry with slimseg study-report DIR --compress)", file=sys.stderr)
    path = write_report(a.out)
    print(f"report: {path} ({time.perf_counter() - t:.1f} s)")
    return 0


def cmd_study_report(a: argparse.Namespace) -> int:
    from ..events import print_progress
    from .report import write_report

    compression = None
    if a.compress:
        from .compression import compression_section

        compression = compression_section(a.out, a.data, minutes=a.compress_minutes, on_event=print_progress)
    print(f"report: {write_report(a.out, compression)}")
    return 0


def _command_line(a: argparse.Namespace) -> str:
    """The command that resumes this study (every result-deciding option spelled out)."""
    from ..options import flag_of

    fields = {f.name: f for f in cli_fields(TrainConfig, (*SPLIT_OPTIONS, *TRAIN_OPTIONS))}
    opts = ["optimizers", "losses", "seeds", "minutes_per_run", "epochs", "lr", "test_fraction", *SPLIT_OPTIONS,
            "split_seed", *TRAIN_OPTIONS, "depth", "base_width", "scoring"]
    parts = ["slimseg", "study", a.data, "--out", a.out]
    for k in opts:
        v = getattr(a, k)
        flag = flag_of(fields[k]) if k in fields else "--" + k.replace("_", "-")
        if isinstance(v, bool):  # a switch: spelled out where it differs from the default
            parts += [flag] if v != fields[k].default else []
        elif v is not None:
            parts += [flag, str(v)]
    return " ".join(shlex.quote(p) for p in parts)


def _exit_on_sigterm() -> None:
    """SIGTERM (kill, a batch system's time limit) stops the study like Ctrl-C: finished runs stay."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        pass

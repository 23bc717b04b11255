"""Benchmark of the study machinery: its overhead, and local workers vs threads.

    python -m slimseg.study.bench DATA --work /tmp/study-bench [--repeats 2]

Runs one small grid with a fixed amount of work per run (an epoch budget, so both layouts do the
same work) under two layouts of this machine's cores, alternating them ``--repeats`` times:

- ``W workers x 1 thread``: one Dask worker process per core, each run on one torch thread;
- ``1 worker x W threads``: one process, one run at a time on all cores.

Prints each session's wall time and overhead (see ``timing.json``), and the ratio of the median
wall times measured in this one invocation.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from ..config import ModelConfig
    from ..events import run
    from . import dataset
    from .grid import make_config
    from .runner import run_study
    from .task import usable_cores

    p = argparse.ArgumentParser(prog="python -m slimseg.study.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("data")
    p.add_argument("--work", required=True, help="scratch folder (replaced)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--optimizers", default="adam,rmsprop")
    p.add_argument("--losses", default="bce,bce+jaccard")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--patches-per-epoch", type=int, default=64)
    p.add_argument("--base-width", type=int, default=16)
    a = p.parse_args(argv)
    cores = usable_cores()
    config = make_config(a.optimizers, a.losses, 1, None, a.epochs, model=ModelConfig.from_depth(4, a.base_width),
                         train={"patches_per_epoch": a.patches_per_epoch, "val_fraction": 0.15})
    data, info = dataset.load(a.data, config.test_fraction, config.split_seed)
    config.data = info
    layouts = {f"{cores} workers x 1 thread": (cores, 1), f"1 worker x {cores} threads": (1, cores)}
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    walls: dict[str, list[float]] = {k: [] for k in layouts}
    print(f"grid: {len(config.runs())} runs, {config.describe_budget()}; {cores} cores", flush=True)
    print(f"{'layout':<24} {'rep':>3} {'wall s':>8} {'sum train s':>12} {'sum score s':>12} {'overhead':>9}")
    for rep in range(a.repeats):
        for name, (workers, threads) in layouts.items():
            out = work / f"{name.replace(' ', '_')}_{rep}"
            t0 = time.perf_counter()
            s = run(run_study(config, data, str(out), a.data, workers, threads, started=t0))
            walls[name].append(s["wall_s"])
            print(f"{name:<24} {rep:>3} {s['wall_s']:>8.1f} {s['train_s']:>12.1f} {s['eval_s']:>12.1f} "
                  f"{100 * s['overhead']:>8.1f}%", flush=True)
    (a_name, a_w), (b_name, b_w) = walls.items()
    ratio = statistics.median(b_w) / statistics.median(a_w)
    print(f"\nmedian wall: {a_name} {statistics.median(a_w):.1f} s, {b_name} {statistics.median(b_w):.1f} s; "
          f"'{b_name}' takes {ratio:.2f}x the time of '{a_name}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())

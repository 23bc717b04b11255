"""Dispatch the study's runs through Dask distributed and record them as they finish.

A local cluster by default (``workers`` processes, one run at a time each, torch threads = cores /
workers), or an existing scheduler (``scheduler="tcp://host:8786"``, e.g. one started by
dask-jobqueue on SLURM; see docs/study.md). Workers only compute; the client alone writes the
results folder, one finished run at a time, so there are no races.

``run_study`` is a generator like every long job in slimseg: it yields events and returns a
summary; stopping it (Ctrl-C, a closed generator) shuts the local cluster down and leaves every
finished run recorded, so running the same study again resumes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Generator, Iterator
from typing import Any

from ..errors import InputError
from ..events import Message, Progress
from .dataset import StudyData
from .grid import RunSpec, StudyConfig
from .results import ResultsStore, signals_held
from .task import probe_epoch, train_and_evaluate, usable_cores


def default_workers() -> int:
    """One worker process per core, each run on one torch thread: faster than one worker with all
    cores (docs/study.md, "Workers")."""
    return max(1, usable_cores())


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None, connect_timeout: float = 5.0
                ) -> Iterator[tuple[Any, int, str]]:
    """A ``distributed.Client`` with its task slots and a description; the local cluster (if any)
    closes on exit. An unreachable ``scheduler`` raises :class:`InputError` after ``connect_timeout``."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("slimseg study needs Dask distributed: pip install 'napari-slimseg[study]'") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout=connect_timeout)
        except (OSError, TimeoutError, ValueError) as err:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler!r} ({err}); check the address "
                             "(tcp://host:8786) and that the scheduler runs, or leave out --scheduler to use a "
                             "local cluster") from None
        try:
            slots = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
            yield client, slots, f"Dask scheduler {scheduler}"
        finally:
            client.close()
        return
    n = workers or default_workers()
    if n < 1:
        raise InputError(f"--workers must be >= 1, got {n}")
    # the workers are the study's own processes: torch's huge pages there (see slimseg.host)
    env = {"THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "1")}
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR, env=env)
    client = Client(cluster)
    try:
        yield client, n, f"local Dask cluster of {n} worker process{'es' if n > 1 else ''}"
    finally:
        client.close()
        cluster.close()


def _same(obj: Any) -> Any:
    return obj


def share(client, data: StudyData):
    """The data as a cluster-held future that survives the loss of workers.

    Not ``client.scatter``: scattered data live only on workers and die with them (a killed worker
    would cancel the whole study). A task that returns the data is kept by the scheduler with
    its input, so Dask recomputes it on another worker when the holders die. Workers fetch it once.
    """
    import uuid

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sending large graph")
        return client.submit(_same, data, pure=False, key=f"slimseg-study-data-{uuid.uuid4().hex[:12]}")


def pending_runs(config: StudyConfig, finished: dict, retry_failed: bool = False) -> list[RunSpec]:
    """Runs without a result (and failed ones, with ``retry_failed``), in the study's order."""
    out = []
    for run in config.runs():
        row = finished.get(run.key)
        if row is None or (retry_failed and row["status"] != "ok"):
            out.append(run)
    return out


def check_budget(config: StudyConfig, probe: dict[str, float]) -> str | None:
    """Refuse a time budget too small for one epoch; return a warning when it will end runs before
    ``config.epochs`` epochs (None otherwise)."""
    if not config.minutes_per_run:
        return None
    budget = config.minutes_per_run * 60
    need = probe["epoch_s"]
    how = (f"~{need:.0f} s estimated: {probe['steps_per_epoch']} steps x {probe['step_s']:.2f} s + "
           f"validation {probe['val_s']:.1f} s")
    if need > budget:
        raise InputError(
            f"a budget of {config.minutes_per_run:g} min per run is too small to finish one epoch ({how}); "
            f"raise --minutes-per-run to at least {need / 60 * 1.2:.2g}, or lower --patches-per-epoch")
    if config.epochs and config.epochs * need > budget:
        return (f"note: at {how} per epoch, the {config.minutes_per_run:g}-minute budget ends runs before "
                f"{config.epochs} epochs")
    return None


def run_study(config: StudyConfig, data: StudyData, out: str, data_path: str = "", workers: int | None = None,
              threads: int | None = None, scheduler: str | None = None, connect_timeout: float = 5.0,
              retry_failed: bool = False, started: float | None = None, command: str = ""
              ) -> Generator[Any, None, dict[str, Any]]:
    """Run every pending run of ``config`` on a Dask cluster, recording each into ``out``.

    Returns the timing of this session (also appended to ``out/timing.json``).
    """
    t0 = started if started is not None else time.perf_counter()
    store = ResultsStore(out)
    finished = store.open(config, data_path, command)
    try:
        todo = pending_runs(config, finished, retry_failed)
        total = len(config.runs())
        done_before = total - len(todo)
        yield Message(f"study: {len(config.optimizers)} optimizers x {len(config.losses)} losses x "
                      f"{len(config.seeds)} seeds = {total} runs, {config.describe_budget()} each; "
                      f"{done_before} finished already, {len(todo)} to run")
        session: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "n_runs": 0}
        if not todo:
            return session
        if threads is None and not scheduler:
            threads = max(1, usable_cores() // (workers or default_workers()))
        session.update(ended="stopped", torch_threads=threads, probe={})
        try:
            with dask_client(workers, scheduler, connect_timeout) as (client, slots, where):
                session.update(where=where, slots=slots)
                if slots == 0:
                    yield Message("the scheduler has no workers yet; waiting for the first one")
                    client.wait_for_workers(1)
                    session["slots"] = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
                yield Message(f"running on a {where}, {threads or 'auto'} torch thread(s) per run")
                session["before_cluster_s"] = time.perf_counter() - t0
                data_f = share(client, data)
                if config.minutes_per_run:
                    probe = client.submit(probe_epoch, config, data_f, threads, pure=False).result()
                    session["probe"] = probe
                    warning = check_budget(config, probe)
                    yield Message(f"one epoch takes ~{probe['epoch_s']:.0f} s here "
                                  f"({probe['steps_per_epoch']} steps x {probe['step_s']:.2f} s + validation)")
                    if warning:
                        yield Message(warning)
                session["setup_s"] = time.perf_counter() - t0 - session["before_cluster_s"]
                yield from _dispatch(client, store, config, todo, data_f, threads, session, done_before, total)
            session["ended"] = "finished"
        finally:  # also when stopped: the runs it finished are in results.csv, their time goes here
            if session["n_runs"]:
                session["wall_s"] = time.perf_counter() - t0
                slot_time = session.get("slots", 0) * session["wall_s"]
                session["overhead"] = 1 - session.get("train_s", 0.0) / slot_time if slot_time else float("nan")
                store.add_timing(session)
        return session
    finally:
        store.close()


def _dispatch(client, store: ResultsStore, config: StudyConfig, todo: list[RunSpec], data_f, threads,
              session: dict[str, Any], done_before: int, total: int) -> Generator[Any, None, None]:
    from distributed import as_completed
    from distributed.client import FutureCancelledError

    futures = {}
    for i, run in enumerate(todo):
        fut = client.submit(train_and_evaluate, run, config, data_f, threads, pure=False,
                            key=f"slimseg-study-{run.run_id}-{time.time_ns()}", priority=len(todo) - i)
        futures[fut] = run
    start = time.perf_counter()
    try:
        for n, fut in enumerate(as_completed(futures), 1):
            run = futures.pop(fut)
            try:
                out = fut.result()
            except FutureCancelledError:
                raise RuntimeError("the Dask cluster cancelled the study's runs (scheduler lost?); finished "
                                   "runs are saved, run the same command again to resume") from None
            except Exception as err:  # noqa: BLE001 - e.g. KilledWorker: the run killed its worker
                out = {"status": "failed", "row": {"error": f"{type(err).__name__}: {err}"[:500]}, "detail": {}}
            fut.release()
            t = time.perf_counter()
            with signals_held():  # a stop while the row is written waits for the session's count of it too
                row = store.record(run, out)
                session["record_s"] = session.get("record_s", 0.0) + time.perf_counter() - t
                session["n_runs"] += 1
                for key, name in (("train_s", "train_s"), ("eval_s", "eval_s"), ("wall_s", "task_s")):
                    if out["row"].get(key) is not None:
                        session[name] = session.get(name, 0.0) + float(out["row"][key])
            eta = (time.perf_counter() - start) / n * (len(todo) - n)
            left = f"{eta / 60:.0f} min" if eta >= 120 else f"{eta:.0f} s"
            yield Progress("study", done_before + n, total,
                           f"[{done_before + n}/{total}] {_line(run, row)}; ~{left} left")
    finally:
        if futures:
            client.cancel(list(futures))


def _line(run: RunSpec, row: dict[str, Any]) -> str:
    head = f"{run.optimizer} + {run.loss}, seed {run.seed}"
    if row["status"] != "ok":
        return f"{head}: FAILED ({row.get('error', '')})"
    return (f"{head}: test Dice {row['test_dice']:.4f}, instance F1 {row['test_instance_f1']:.4f} "
            f"({row['epochs_run']} epochs, {row['steps']} steps, {row['wall_s']:.0f} s)")

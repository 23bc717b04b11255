"""The study folder: ``study.json`` (the configuration), ``results.csv`` (one row per finished run),
``runs/<id>.json`` (curves, per-image scores), ``models/<id>.slimseg`` and ``timing.json``.

Only the client writes here, one run at a time, so workers never race. A run's row is appended with
one ``write`` and ``fsync`` after its other files are in place: the row is the commit mark. A row cut
short by a kill is dropped on the next open and that run is done again. A lock file stops two
studies from writing to one folder at once.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import write_json
from .grid import RunSpec, StudyConfig, differences
from .task import METRICS

RUN_COLUMNS = ("run_id", "optimizer", "loss", "seed", "lr", "status", "error", "epochs_run", "steps",
               "first_epoch_complete", "stop_reason", "best_epoch", "best_val_dice", "train_s", "eval_s",
               "wall_s", "torch_threads", "worker", "finished_at")
COLUMNS = RUN_COLUMNS + tuple(f"test_{m}" for m in METRICS)
# columns that are not numbers
TEXT_COLUMNS = {"run_id", "optimizer", "loss", "status", "error", "stop_reason", "worker", "finished_at",
                "first_epoch_complete"}
STUDY_FILE, RESULTS_FILE, TIMING_FILE, LOCK_FILE = "study.json", "results.csv", "timing.json", ".study.lock"
OUR_NAMES = {STUDY_FILE, RESULTS_FILE, TIMING_FILE, LOCK_FILE, "runs", "models", "report.md", "per_image.csv",
             "heatmap.png", "seeds.png", "curves.png", "compression.md", "compressed"}


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every complete row of a results.csv, numbers as floats (empty cells as NaN). A row cut short by
    a kill (no newline yet, or bytes a crash left unwritten) is skipped, so the run is done again."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")
    if text and not text.endswith("\n"):  # a row cut short by a kill
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is not None and tuple(reader.fieldnames) != COLUMNS:
        raise InputError(f"{path} has other columns than this slimseg writes; move it away or use another --out")
    rows = []
    for r in reader:
        if None in r or None in r.values() or "\0" in "".join(r.values()):  # too many or few cells, NUL bytes
            continue
        try:
            rows.append(_typed(r))
        except ValueError:  # a seed that is not a number: a damaged row
            continue
    return rows


def latest(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The last row of each (optimizer, loss, seed): a retried run replaces its failed row."""
    return {(r["optimizer"], r["loss"], int(r["seed"])): r for r in rows}


def _typed(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k in TEXT_COLUMNS:
            out[k] = v
        else:
            try:
                out[k] = float(v) if v != "" else float("nan")
            except ValueError:
                out[k] = float("nan")
    out["seed"] = int(out["seed"])
    return out


class ResultsStore:
    """A study folder opened for writing (see the module docstring)."""

    def __init__(self, out: str | Path) -> None:
        self.dir = Path(out)
        self._lock_fd: int | None = None

    # -- opening ------------------------------------------------------------------------------------
    def open(self, config: StudyConfig, data_path: str = "", command: str = ""
             ) -> dict[tuple[str, str, int], dict[str, Any]]:
        """Create or reopen the folder for ``config``; return the finished runs (last row per key).

        Refuses a folder that is not a study, or that holds results of another configuration.
        """
        if self.dir.exists() and not self.dir.is_dir():
            raise InputError(f"{self.dir} is a file; --out takes a folder")
        study = self.dir / STUDY_FILE
        if self.dir.is_dir() and not study.exists():
            foreign = sorted(p.name for p in self.dir.iterdir() if p.name not in OUR_NAMES)
            if foreign:
                raise InputError(f"{self.dir} is not empty ({', '.join(foreign[:3])} ...) and holds no slimseg study; "
                                 "choose a new or empty --out folder")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        self._repair_tail()
        rows = read_rows(self.dir / RESULTS_FILE)
        new = {"config": config.to_dict(), "data_path": str(data_path), "command": command}
        if study.exists():
            old = json.loads(study.read_text())
            try:  # through the dataclass: settings added since the folder was made take their defaults
                old_config = StudyConfig.from_dict(old["config"]).to_dict()
            except (KeyError, TypeError):
                old_config = old.get("config", {})
            diff = differences(old_config, new["config"])
            if diff and rows:
                self.close()
                raise InputError(
                    f"{self.dir} holds results of a different study configuration ({'; '.join(diff[:6])}"
                    f"{' ...' if len(diff) > 6 else ''}; stored vs asked); rerun with the same options to "
                    "resume it, or choose another --out folder")
        self._write_json(study, new)
        (self.dir / "runs").mkdir(exist_ok=True)
        (self.dir / "models").mkdir(exist_ok=True)
        return latest(rows)

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no lock
            return
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InputError(f"another slimseg study is writing to {self.dir}; wait for it or choose another --out") from None
        self._lock_fd = fd

    def _repair_tail(self) -> None:
        path = self.dir / RESULTS_FILE
        if not path.exists():
            return
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -- writing --------------------------------------------------------------------------------------
    def record(self, run: RunSpec, out: dict[str, Any]) -> dict[str, Any]:
        """Store one finished (or failed) run: detail JSON and model first, then its results row."""
        with signals_held():
            return self._record(run, out)

    def _record(self, run: RunSpec, out: dict[str, Any]) -> dict[str, Any]:
        if out.get("model") is not None:
            from .. import io as model_io

            model_io.save(out["model"], self.dir / "models" / f"{run.run_id}.slimseg", overwrite=True)
        detail = {"run": {"optimizer": run.optimizer, "loss": run.loss, "seed": run.seed, "lr": run.lr},
                  "status": out["status"], **out.get("detail", {})}
        self._write_json(self.dir / "runs" / f"{run.run_id}.json", detail)
        row = {"run_id": run.run_id, "optimizer": run.optimizer, "loss": run.loss, "seed": run.seed, "lr": run.lr,
               "status": out["status"], "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for k, v in out.get("row", {}).items():
            row[f"test_{k}" if k in METRICS else k] = v
        self._append(row)
        return row

    def _append(self, row: dict[str, Any]) -> None:
        path = self.dir / RESULTS_FILE
        buf = io.StringIO()
        writer = csv.DictWriter(buf, COLUMNS, extrasaction="ignore", lineterminator="\n")
        if not path.exists() or path.stat().st_size == 0:
            writer.writeheader()
        writer.writerow({k: _cell(row.get(k)) for k in COLUMNS})
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, buf.getvalue().encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def add_timing(self, session: dict[str, Any]) -> None:
        path = self.dir / TIMING_FILE
        sessions = json.loads(path.read_text()) if path.exists() else []
        sessions.append(session)
        self._write_json(path, sessions)

    @staticmethod
    def _write_json(path: Path, obj: Any) -> None:
        write_json(path, obj, default=_json_default)

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return v


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"cannot store {type(obj).__name__} as JSON")


def load_study(out: str | Path) -> tuple[StudyConfig, dict[str, Any], list[dict[str, Any]]]:
    """(config, study.json content, latest row per run) of a study folder, for reports."""
    out = Path(out)
    study = out / STUDY_FILE
    if not study.exists():
        raise InputError(f"{out} holds no slimseg study ({STUDY_FILE} missing)")
    meta = json.loads(study.read_text())
    rows = list(latest(read_rows(out / RESULTS_FILE)).values())
    return StudyConfig.from_dict(meta["config"]), meta, rows


def load_detail(out: str | Path, run_id: str) -> dict[str, Any]:
    path = Path(out) / "runs" / f"{run_id}.json"
    return json.loads(path.read_text()) if path.exists() else {}


@contextlib.contextmanager
def signals_held():
    """Hold Ctrl-C and SIGTERM while a run's files and row are written, then deliver them: a stop in
    the middle of writing a zip file would otherwise end in zipfile's own error, not a clean stop.
    Nests: an inner hold delivers to the outer one, which delivers when it ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if caught:
            os.kill(os.getpid(), caught[0])  # now handled as usual (KeyboardInterrupt: the study stops)

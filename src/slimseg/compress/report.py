"""What compression bought: file size, parameters, model-call time and accuracy of models side by side.

:func:`benchmark` times the model call alone on batches of tiles (``model_ms_b{b}``: the part
compression speeds up), every model in one process, interleaving them repeat by repeat so that a
busy machine slows all of them alike, and reports medians. Accuracy comes from the one scorer,
:func:`slimseg.evaluation.score_model` (via ``evaluate_events``), whose *latency* is the end-to-end time per
image. Speed-ups and metric changes are relative to the first model (the float reference).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import io
from ..config import PredictConfig
from ..data.checks import as_image
from ..data.normalize import Normalizer
from ..device import cpu_flags, cpu_summary
from ..errors import InputError
from ..events import Message, Progress, run
from ..model import UNet, count_parameters
from ..segmenter import Segmenter, from_model_file

METRICS = ("dice", "jaccard", "instance_f1")


def machine_info() -> dict[str, Any]:
    """The CPU features int8 speed depends on (VNNI, AMX), threads and library versions."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": model, "logical_cpus": os.cpu_count(), **cpu_summary(),
                            "amx_int8": "amx_int8" in cpu_flags(), "threads": torch.get_num_threads(),
                            "torch": torch.__version__}
    for var in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        if os.environ.get(var):
            info[var] = os.environ[var]
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def _entry(item: Any, index: int, engine: str) -> tuple[str, Segmenter, io.ModelFile | None, Path | None]:
    name = None
    if isinstance(item, tuple) and len(item) == 2:
        name, item = item
    if isinstance(item, (str, Path)):
        from ..models import resolve_model

        path = resolve_model(item)
        mf = io.load(path)
        seg = from_model_file(mf, str(path), engine)
        seg.meta.setdefault("path", str(path))
        return name or path.name, seg, mf, path
    if isinstance(item, Segmenter):
        path = Path(item.meta["path"]) if item.meta.get("path") else None
        return name or (path.name if path else f"{item.kind} #{index}"), item, None, path
    raise InputError(f"benchmark takes model files or Segmenters, got {type(item).__name__}")


def parameter_counts(seg: Segmenter, mf: io.ModelFile | None) -> tuple[int, int]:
    """(parameters, non-zero parameters) of a model."""
    comp = (mf.meta if mf is not None else seg.meta).get("compression") or {}
    if "parameters" in comp:
        n = int(comp["parameters"])
        return n, int(comp.get("nonzero_parameters", n))
    if seg.module is not None:
        n = count_parameters(seg.module)
        nz = sum(int(torch.count_nonzero(p)) for p in seg.module.parameters())
        return n, nz
    n = count_parameters(UNet(seg.model_config))
    return n, n


def tile_batch(images: Sequence[np.ndarray], seg: Segmenter, tile: int, batch: int) -> torch.Tensor:
    """(batch, C, tile, tile) normalised crops of the given images (reflect-padded where smaller)."""
    crops = []
    for i in range(batch):
        img = as_image(images[i % len(images)], seg.model_config.in_channels)
        x = Normalizer.fit(img, seg.norm)(img)
        ph, pw = max(0, tile - x.shape[1]), max(0, tile - x.shape[2])
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="symmetric")
        crops.append(x[:, :tile, :tile])
    return torch.from_numpy(np.ascontiguousarray(np.stack(crops)))


def _time(fn, x: torch.Tensor) -> float:
    """Seconds of one call right after an untimed one: the steady state of tile batch after tile batch.
    Timed after another model instead, a call can pay for memory the other gave back."""
    with torch.inference_mode():
        fn(x)
        t = time.perf_counter()
        fn(x)
        return time.perf_counter() - t


def benchmark_events(models: Sequence[Any], images: Sequence[np.ndarray], labels: Sequence[np.ndarray] | None,
                     names: Sequence[str] | None = None, *, batch_sizes: Sequence[int] = (1, 8), tile: int = 512,
                     repeats: int = 5, warmup: int = 2, predict_cfg: PredictConfig | None = None,
                     engine: str = "auto") -> Generator[Any, None, list[dict[str, Any]]]:
    """The generator behind :func:`benchmark` (yields progress events). ``predict_cfg`` None scores
    each model with its own stored prediction settings (compressed models inherit their source's);
    ``engine`` is the int8 engine of the model files loaded here (``slimseg.kinds.ENGINES``)."""
    if not models:
        raise InputError("give at least one model to benchmark")
    if not images:
        raise InputError("give at least one image to benchmark on")
    if repeats < 1 or warmup < 0 or tile < 32 or any(b < 1 for b in batch_sizes):
        raise InputError("need repeats >= 1, warmup >= 0, tile >= 32 and batch sizes >= 1")
    entries = [_entry(m, i, engine) for i, m in enumerate(models)]
    rows: list[dict[str, Any]] = []
    for name, seg, mf, path in entries:
        params, nonzero = parameter_counts(seg, mf)
        comp = seg.meta.get("compression") or {}
        rows.append({"name": name, "kind": seg.kind, "method": comp.get("method", "-"),
                     "runtime": seg.meta.get("runtime", "float32 eager"),
                     "file_bytes": path.stat().st_size if path and path.is_file() else None,
                     "parameters": params, "nonzero_parameters": nonzero,
                     "threads": torch.get_num_threads(), "tile": tile})
    for b in batch_sizes:
        x = tile_batch(images, entries[0][1], tile, b)
        for name, seg, _, _ in entries:
            yield Message(f"benchmark: warming up {name} at batch {b}")
            with torch.inference_mode():
                for _ in range(warmup):
                    seg.model_fn(x)
        times: list[list[float]] = [[] for _ in entries]
        for r in range(repeats):
            order = [(r + k) % len(entries) for k in range(len(entries))]  # rotate: no fixed position
            for i in order:
                times[i].append(_time(entries[i][1].model_fn, x))
            yield Progress(f"model call b{b}", r + 1, repeats)
        for row, ts in zip(rows, times):
            row[f"model_ms_b{b}"] = 1000 * statistics.median(ts)
            row[f"model_runs_b{b}"] = len(ts)
    if labels is not None:
        from ..evaluation import evaluate_events

        for (name, seg, _, _), row in zip(entries, rows):
            yield Message(f"benchmark: scoring {name} on {len(images)} images")
            t0 = time.perf_counter()
            scores = yield from evaluate_events(seg, images, labels, predict_cfg, names)
            row.update({k: scores[k] for k in METRICS})
            row["eval_seconds"] = time.perf_counter() - t0
    _relative(rows, batch_sizes)
    return rows


def _relative(rows: list[dict[str, Any]], batch_sizes: Sequence[int]) -> None:
    ref = rows[0]
    for row in rows:
        if ref.get("file_bytes") and row.get("file_bytes"):
            row["file_ratio"] = row["file_bytes"] / ref["file_bytes"]
        row["parameter_ratio"] = row["parameters"] / ref["parameters"] if ref["parameters"] else math.nan
        for b in batch_sizes:
            row[f"speedup_b{b}"] = ref[f"model_ms_b{b}"] / row[f"model_ms_b{b}"]
        for k in METRICS:
            if k in row and k in ref:
                row[f"delta_{k}_pp"] = 100 * (row[k] - ref[k])


def benchmark(models: Sequence[Any], images: Sequence[np.ndarray], labels: Sequence[np.ndarray] | None,
              names: Sequence[str] | None = None, on_event=None, **kw: Any) -> list[dict[str, Any]]:
    """Measure ``models`` (model file paths, Segmenters or (name, either) pairs) on ``images``:
    file size, parameters, median model-call time per batch size on ``tile``-square tiles
    (``model_ms_b{b}``: the model call only, ``torch.get_num_threads()`` threads),
    Dice/Jaccard/instance F1 with ``labels`` (None skips them), and each relative to the first
    model. One dict per model."""
    return run(benchmark_events(models, images, labels, names, **kw), on_event)


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def format_table(rows: Sequence[dict[str, Any]], machine: dict[str, Any] | None = None,
                 markdown: bool = False) -> str:
    """A text (or markdown) table of :func:`benchmark` rows, with the machine's int8-relevant flags."""
    bs = sorted({int(k.split("_b")[-1]) for r in rows for k in r if k.startswith("model_ms_b")})
    cols = [("model", lambda r: r["name"]), ("method", lambda r: r["method"]),
            ("size MB", lambda r: _fmt(r["file_bytes"] / 1e6 if r.get("file_bytes") else None, ".3f")),
            ("size x", lambda r: _fmt(r.get("file_ratio"), ".3f")),
            ("params", lambda r: f"{r['parameters']:,}"), ("params x", lambda r: _fmt(r.get("parameter_ratio"), ".3f"))]
    for b in bs:
        cols += [(f"b{b} ms", lambda r, b=b: _fmt(r.get(f"model_ms_b{b}"), ".1f")),
                 (f"b{b} speed-up", lambda r, b=b: _fmt(r.get(f"speedup_b{b}"), ".2f"))]
    if any("dice" in r for r in rows):
        for k, label in (("dice", "Dice"), ("jaccard", "Jaccard"), ("instance_f1", "inst F1")):
            cols += [(label, lambda r, k=k: _fmt(r.get(k), ".4f")),
                     (f"d{label} pp", lambda r, k=k: _fmt(r.get(f"delta_{k}_pp"), "+.2f"))]
    cols.append(("runtime", lambda r: r.get("runtime", "")))
    cells = [[c[0] for c in cols]] + [[str(f(r)) for _, f in cols] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    else:
        widths = [max(len(row[j]) for row in cells) for j in range(len(cols))]
        fmt = lambda row: "  ".join(c.ljust(w) if j in (0, 1, len(cols) - 1) else c.rjust(w)  # noqa: E731
                                    for j, (c, w) in enumerate(zip(row, widths)))
        lines = [fmt(cells[0]), "-" * len(fmt(cells[0]))] + [fmt(row) for row in cells[1:]]
    if machine:
        flags = ", ".join(f"{k}={'yes' if machine.get(k) else 'no'}"
                          for k in ("avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx", "amx_int8"))
        extra = "".join(f", {k}={machine[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in machine)
        lines.append(f"\nCPU: {machine.get('cpu', '?')} ({flags}; torch ISA {machine.get('torch_cpu_capability')}"
                     f"{extra}); {machine.get('threads')} threads; tiles {rows[0].get('tile')}x{rows[0].get('tile')}; "
                     "b1/b8 ms = median time of one model call (interleaved runs), not end to end")
    return "\n".join(lines)

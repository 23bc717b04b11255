"""Prediction of many images, or of one large image, here or over Dask distributed (the study's engine).

Each image's labels are written by the client only, under their final name only when complete (a
temporary name, then a rename), so a rerun with ``resume`` skips exactly the finished outputs and a
worker that dies leaves nothing half-written: Dask reruns its tasks elsewhere. Small images travel as
one task each; a large image (OME-Zarr output) as one task per block (:mod:`slimseg.large`).
"""

from __future__ import annotations

import functools
import json
import secrets
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ChannelConfig, PredictConfig
from .errors import InputError
from .events import Message, Progress, run
from .large import (TIFF_MAX_PIXELS, LargeConfig, TileCache, block_grid, block_schedule, image_pixels, image_settings,
                    open_lazy)

FORMATS = ("auto", "tif", "zarr")


@dataclass(frozen=True)
class Job:
    source: str
    target: str
    fmt: str  # "tif" or "zarr"


def plan(files: list[Path], out_dir: Path, fmt: str = "auto", overwrite: bool = False, resume: bool = False
         ) -> tuple[list[Job], list[Job]]:
    """(to do, already done) for each input: its output name and format; existing outputs are refused
    unless ``overwrite`` (redo them) or ``resume`` (skip them)."""
    from .data.folder import image_stem

    if fmt not in FORMATS:
        raise InputError(f"--out-format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    jobs = []
    for f in files:
        kind = fmt if fmt != "auto" else ("zarr" if image_pixels(f) > TIFF_MAX_PIXELS else "tif")
        jobs.append(Job(str(f), str(out_dir / (image_stem(f) + (".zarr" if kind == "zarr" else ".tif"))), kind))
    done = [j for j in jobs if Path(j.target).exists()]
    if done and not (overwrite or resume):
        raise InputError(f"{len(done)} outputs exist already (e.g. {done[0].target}); pass --resume to skip "
                         "them, --overwrite to redo them, or choose another --out folder")
    if overwrite:
        return jobs, []
    return [j for j in jobs if not Path(j.target).exists()], done


# ---- work done on any process -----------------------------------------------------------------------

# Each worker process loads a model file once for all its tasks: module-level on purpose.
_SEGMENTERS: dict[tuple[str, str], Any] = {}


def _segmenter(model: Any, engine: str = "auto"):
    """A model path loads once per process (each worker keeps its own); a Segmenter passes through."""
    if not isinstance(model, (str, Path)):
        return model
    key = (str(model), engine)
    if key not in _SEGMENTERS:
        from .segmenter import load_segmenter

        _SEGMENTERS[key] = load_segmenter(model, engine)
    return _SEGMENTERS[key]


def _threads(n: int | None) -> None:
    """On a Dask worker (slimseg's own process there): ``n`` torch threads, and glibc's malloc kept from
    unmapping every tile batch's activations as Dask's ``MALLOC_TRIM_THRESHOLD_`` makes it
    (:func:`slimseg.host.tune_malloc`). In this process (no ``n``): nothing changes."""
    if n:
        import torch

        from .host import tune_malloc

        torch.set_num_threads(n)
        tune_malloc()


def predict_tif(model: Any, job: Job, cfg: PredictConfig | None, channels: ChannelConfig | None,
                engine: str = "auto", threads: int | None = None) -> dict[str, Any]:
    """Segment one image (any stack) into one label TIFF, written atomically."""
    from .data.readers import read
    from .files import write_labels_tiff
    from .instances import count_objects

    _threads(threads)
    seg = _segmenter(model, engine)
    job_ = seg.stack_job(read(job.source), cfg, channels, name=job.source)
    labels = run(job_.run()).labels
    write_labels_tiff(job.target, labels, job_.stack.plane_axes)
    return {"source": job.source, "target": job.target, "objects": count_objects(labels)}


@dataclass(frozen=True)
class BlockSource:
    """What a block task needs to read and segment its block wherever it runs."""

    model: Any  # a model path (loaded once per worker) or a Segmenter (in this process)
    image: str
    channels: ChannelConfig | None
    cfg: PredictConfig
    lcfg: LargeConfig
    normalizer: Any
    engine: str = "auto"
    threads: int | None = None
    run: str = ""  # this prediction's token: the blocks of one run share their process's tile cache
    factor: float = 1.0  # the scale every block is predicted at (slimseg.large.estimate_scale)


# A worker process's open large image (one at a time), so its block tasks do not reopen it.
_IMAGES: dict[tuple[str, str], Any] = {}


def _plane(seg, image: str, channels: ChannelConfig | None):
    key = (image, repr(channels))
    if key not in _IMAGES:
        _IMAGES.clear()  # one large image at a time per process
        std = seg.standardize(open_lazy(image), channels, image)
        if std.plane_axes:
            raise InputError(f"{image}: OME-Zarr output takes one 2D plane, got a stack of shape {std.plane_shape}; "
                             "write it as TIFF (--out-format tif) or give one plane")
        _IMAGES[key] = std.data
    return _IMAGES[key]


# A process's tile cache for the large image it is segmenting, by run (one at a time).
_TILES: dict[str, TileCache] = {}


def _tile_cache(src: BlockSource, shape: tuple[int, ...], multiple: int) -> TileCache:
    if src.run not in _TILES:
        _TILES.clear()
        _TILES[src.run] = block_schedule(shape, src.cfg, src.lcfg, multiple)[1]
    return _TILES[src.run]


def block_task(src: BlockSource, index: tuple[int, int]):
    """Segment one block of a large image (on a worker or here)."""
    from .large import region_labels, segment_block

    _threads(src.threads)
    seg = _segmenter(src.model, src.engine)
    data = _plane(seg, src.image, src.channels)
    grid = block_grid(tuple(data.shape[:2]), src.lcfg.block)
    multiple = seg.model_config.size_multiple
    fn = functools.partial(region_labels, seg.model_fn, data, normalizer=src.normalizer, cfg=src.cfg,
                           in_channels=seg.model_config.in_channels, multiple=multiple,
                           cache=_tile_cache(src, data.shape, multiple) if src.factor == 1 else None,
                           factor=src.factor)
    return segment_block(fn, data.shape, grid, index, src.lcfg.margin)


def predict_zarr(model: Any, job: Job, cfg: PredictConfig | None, channels: ChannelConfig | None,
                 lcfg: LargeConfig = LargeConfig(), engine: str = "auto", execute=None, model_ref: Any = None,
                 threads: int | None = None, model_id: str | None = None
                 ) -> Generator[Progress | Message, None, dict[str, Any]]:
    """Segment one 2D image block by block into an OME-Zarr label store; blocks via ``execute``. With
    ``model_id`` (what identifies the model, e.g. its file's SHA-256) the run is resumable: an interrupted
    one leaves its finished blocks beside the target, and the same prediction again goes on from them
    (:func:`slimseg.large.predict_to_store`)."""
    from .large import predict_to_store, serial

    seg = _segmenter(model, engine)
    cfg = cfg or seg.predict_config
    data = _plane(seg, job.source, channels)
    normalizer, factor = yield from image_settings(seg, data, cfg, lcfg)
    multiple = seg.model_config.size_multiple
    src = BlockSource(model_ref if model_ref is not None else seg, job.source, channels, cfg, lcfg, normalizer,
                      engine, threads, secrets.token_hex(8), factor)
    order, cache = block_schedule(data.shape, cfg, lcfg, multiple)
    _TILES[src.run] = cache  # for the blocks segmented in this process (workers make their own)
    key = None if model_id is None else json.dumps(
        [model_id, engine, repr(cfg), repr(lcfg), repr(channels), str(Path(job.source).resolve()),
         list(data.shape), str(data.dtype), repr(normalizer), factor])
    try:
        res = yield from predict_to_store(functools.partial(block_task, src), tuple(data.shape[:2]),
                                          Path(job.target), lcfg, overwrite=True, execute=execute or serial,
                                          name=Path(job.source).name, order=order, resume_key=key)
    finally:
        _TILES.pop(src.run, None)
    return {"source": job.source, "target": job.target, "objects": res.n_objects, "blocks": res.n_blocks}


# ---- many images, here or on a cluster --------------------------------------------------------------

def dask_executor(client) -> Callable[[Callable[..., Any], list[Any]], Iterator[Any]]:
    """Run ``fn`` on every item as Dask tasks; results as they finish (a lost worker's tasks rerun)."""
    def execute(fn: Callable[..., Any], items: list[Any]) -> Iterator[Any]:
        from distributed import as_completed

        stamp = time.time_ns()
        futures = [client.submit(fn, item, pure=False, key=f"slimseg-block-{stamp}-{k}", priority=-k)
                   for k, item in enumerate(items)]
        try:
            for fut in as_completed(futures):
                yield fut.result()
                fut.release()
        finally:
            client.cancel([f for f in futures if not f.done()])
    return execute


def predict_jobs(model: Any, jobs: list[Job], cfg: PredictConfig | None = None, channels: ChannelConfig | None = None,
                 lcfg: LargeConfig = LargeConfig(), engine: str = "auto", workers: int | None = None,
                 scheduler: str | None = None, connect_timeout: float = 5.0, model_id: str | None = None
                 ) -> Generator[Any, None, list[dict[str, Any]]]:
    """Predict every job: in this process when neither ``workers`` nor ``scheduler`` is given, else over
    Dask distributed (``model`` must then be a model file path). Yields progress; returns one summary per
    image (``error`` set where an image failed; the others are written). ``model_id``: large images'
    runs are resumable (:func:`predict_zarr`)."""
    done: list[dict[str, Any]] = []
    if not workers and not scheduler:
        for n, job in enumerate(jobs, 1):
            if job.fmt == "zarr":
                out = yield from predict_zarr(model, job, cfg, channels, lcfg, engine, model_id=model_id)
            else:
                out = predict_tif(model, job, cfg, channels, engine)
            done.append(out)
            yield Progress("images", n, len(jobs), _line(n, len(jobs), out))
        return done
    if not isinstance(model, (str, Path)):
        raise InputError("prediction on a Dask cluster takes the model as a file path (workers load it)")
    from distributed import as_completed

    from .study.runner import dask_client
    from .study.task import usable_cores

    with dask_client(workers, scheduler, connect_timeout) as (client, slots, where):
        threads = max(1, usable_cores() // slots) if not scheduler else None
        yield Message(f"predicting {len(jobs)} image{'s' * (len(jobs) != 1)} on {where}")
        stamp = time.time_ns()
        small = [j for j in jobs if j.fmt != "zarr"]
        futures = {client.submit(predict_tif, str(model), j, cfg, channels, engine, threads, pure=False,
                                 key=f"slimseg-predict-{stamp}-{k}", priority=len(small) - k): j
                   for k, j in enumerate(small)}
        n = 0
        try:
            for job in (j for j in jobs if j.fmt == "zarr"):  # blocks of large images, one image at a time
                try:
                    out = yield from predict_zarr(model, job, cfg, channels, lcfg, engine, dask_executor(client),
                                                  str(model), threads, model_id)
                except Exception as err:  # noqa: BLE001 - e.g. KilledWorker: report, go on with the others
                    out = {"source": job.source, "target": job.target, "error": f"{type(err).__name__}: {err}"}
                n += 1
                done.append(out)
                yield Progress("images", n, len(jobs), _line(n, len(jobs), out))
            for fut in as_completed(list(futures)):
                job = futures.pop(fut)
                try:
                    out = fut.result()
                except Exception as err:  # noqa: BLE001
                    out = {"source": job.source, "target": job.target, "error": f"{type(err).__name__}: {err}"}
                fut.release()
                n += 1
                done.append(out)
                yield Progress("images", n, len(jobs), _line(n, len(jobs), out))
        finally:
            if futures:
                client.cancel(list(futures))
    return done


def _line(n: int, total: int, out: dict[str, Any]) -> str:
    name = Path(out["source"]).name
    if out.get("error"):
        return f"[{n}/{total}] {name}: FAILED ({out['error'][:300]})"
    return f"[{n}/{total}] {name}: {out['objects']} objects -> {out['target']}"


__all__ = ["FORMATS", "Job", "plan", "predict_tif", "predict_zarr", "predict_jobs", "block_task", "BlockSource",
           "dask_executor"]

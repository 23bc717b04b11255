"""Images larger than memory: block-wise prediction from a lazy array into a chunked OME-Zarr label store.

The image is cut into square blocks (the store's chunks). Each block is segmented with a context margin;
its probabilities come from the whole image's own tile plan (the tiles touching the block, read with
them), so they equal whole-image prediction's pixel for pixel, and an object crossing a block border is
the same object on both sides where the margin holds it whole. Only a block's core is written, with
block-local ids. Where a block's labels reach into a neighbour's core (its margin) they are matched
against the neighbour's own labels there, and pairs overlapping with IoU >= ``merge_iou`` are one object. A second pass writes global, consecutive ids. Memory is one
block (plus margin) per block in flight and the margins waiting for a neighbour, never the image.
"""

from __future__ import annotations

import json
import os
import shutil
import secrets
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import NormConfig, PredictConfig
from .data.normalize import Normalizer
from .data.readers import zarr_module
from .errors import InputError
from .events import Message, Progress, run
from .metrics import iou_table

# labels larger than this many pixels go to an OME-Zarr store without being asked (4 GiB of uint32)
TIFF_MAX_PIXELS = 1 << 30
_NORM_WINDOWS = 64  # windows read to fit the percentiles of a large image


@dataclass(frozen=True)
class LargeConfig:
    block: int = 2048  # core side of a block = the label store's chunk side
    margin: int = 128  # context segmented around each block: at least an object's diameter
    merge_iou: float = 0.5  # objects of two blocks overlapping this much on a seam are one object

    def __post_init__(self) -> None:
        if self.block < 64 or self.margin < 0 or self.margin > self.block:
            raise InputError(f"need block >= 64 and 0 <= margin <= block, got {self.block}, {self.margin}")
        if not 0 < self.merge_iou <= 1:
            raise InputError(f"merge_iou must lie in (0, 1], got {self.merge_iou}")


Box = tuple[int, int, int, int]  # y0, y1, x0, x1


def block_grid(shape: tuple[int, int], block: int) -> dict[tuple[int, int], Box]:
    """The cores of the blocks of an (H, W) image by grid index, row-major."""
    H, W = shape
    return {(i, j): (y, min(y + block, H), x, min(x + block, W))
            for i, y in enumerate(range(0, H, block)) for j, x in enumerate(range(0, W, block))}


def _grow(box: Box, m: int, shape: tuple[int, int]) -> Box:
    y0, y1, x0, x1 = box
    return max(0, y0 - m), min(shape[0], y1 + m), max(0, x0 - m), min(shape[1], x1 + m)


def _meet(a: Box, b: Box) -> Box | None:
    y0, y1, x0, x1 = max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3])
    return (y0, y1, x0, x1) if y0 < y1 and x0 < x1 else None


_FORWARD = ((0, 1), (1, -1), (1, 0), (1, 1))  # each pair of neighbouring blocks is matched once


# ---- lazy input ---------------------------------------------------------------------------------------

def open_lazy(path: str | Path):
    """An image as a lazy array with its axes: zarr and OME-Zarr as :func:`~slimseg.data.readers.read`
    opens them, TIFF through tifffile's zarr interface (read by chunks or strips, never whole)."""
    from .data.readers import TIFF_SUFFIXES, ImageData, _known_letters, is_zarr, read

    path = Path(path)
    if is_zarr(path) or path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return read(path)
    import tifffile
    zarr = zarr_module()

    try:
        with tifffile.TiffFile(path) as tif:
            axes = tif.series[0].axes
        store = tifffile.imread(path, aszarr=True, series=0, level=0)
        data = zarr.open(store, mode="r")
    except Exception:  # noqa: BLE001 - a TIFF tifffile cannot read lazily: the reader reads it or says why
        return read(path)
    if not hasattr(data, "shape"):  # a pyramid: level 0 is the full resolution
        data = data["0"]
    return ImageData(data, _known_letters(axes), str(path))


def image_pixels(path: str | Path) -> int:
    """Y * X of a TIFF or zarr image without reading its pixels (0 for other formats, or where that
    cannot be told)."""
    from .data.readers import TIFF_SUFFIXES, is_zarr

    path = Path(path)
    try:
        if is_zarr(path):
            img = open_lazy(path)
            shape, axes = tuple(img.data.shape), img.axes or ""
        elif path.is_file() and path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape, axes = tuple(tif.series[0].shape), tif.series[0].axes
        else:
            return 0
    except Exception:  # noqa: BLE001 - unreadable: the reader says why later
        return 0
    if "Y" in axes and "X" in axes and len(axes) == len(shape):
        return int(shape[axes.index("Y")] * shape[axes.index("X")])
    return int(np.prod(sorted(shape)[-2:])) if len(shape) >= 2 else 0


def fit_normalizer(data: Any, cfg: NormConfig, window: int = 256) -> Normalizer:
    """Percentiles of a large (H, W[, C]) array from a grid of windows, read one at a time. An image that
    the windows can cover side by side is read whole (window by window): the percentiles are then those
    of in-memory prediction."""
    H, W = data.shape[:2]
    n = max(1, int(np.ceil(np.sqrt(_NORM_WINDOWS))))  # per axis; fewer where they would overlap
    if -(-H // window) <= n and -(-W // window) <= n:
        ys, xs = range(0, H, window), range(0, W, window)
    else:
        ys = np.unique(np.linspace(0, max(0, H - window), min(n, -(-H // window))).astype(int))
        xs = np.unique(np.linspace(0, max(0, W - window), min(n, -(-W // window))).astype(int))
    sample = np.concatenate([np.asarray(data[y:y + window, x:x + window]).reshape(-1, *data.shape[2:])
                             for y in ys for x in xs])
    return Normalizer.fit(sample[:, None] if sample.ndim == 1 else sample[:, None, :], cfg)


# ---- one block ----------------------------------------------------------------------------------------

@dataclass
class BlockResult:
    index: tuple[int, int]
    core: np.ndarray  # uint32 block-local ids of the core
    n: int  # largest local id
    reach: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # labels in a neighbour's core


class TileCache:
    """The network's output on tiles of a large image (by origin), kept while one of the next
    ``lookahead`` regions to segment touches them: neighbouring blocks' margins share tiles, which are then
    computed once. ``regions``: the boxes that will be segmented, in order (each given to :meth:`done` when
    it is; a process that does only some of them, a Dask worker, keeps the tiles of the next ones pending)."""

    def __init__(self, regions: Iterable[Box], tile: tuple[int, int], lookahead: int) -> None:
        self.pending, self.tile, self.lookahead = list(regions), tile, lookahead
        self.tiles: dict[tuple[int, int], np.ndarray] = {}

    def get(self, key: tuple[int, int]) -> np.ndarray | None:
        return self.tiles.get(key)

    def put(self, key: tuple[int, int], value: np.ndarray) -> None:
        self.tiles[key] = value

    def done(self, region: Box) -> None:
        """``region`` is segmented: keep only the tiles that one of the next pending regions touches."""
        if region in self.pending:
            self.pending.remove(region)
        th, tw, near = *self.tile, self.pending[:self.lookahead]
        self.tiles = {(y, x): p for (y, x), p in self.tiles.items()
                      if any(y < b[1] and y + th > b[0] and x < b[3] and x + tw > b[2] for b in near)}


# what the tile cache may hold: float32 outputs of the tiles one block row shares with the next
CACHE_BYTES = 256 << 20
# context (pixels at the smaller scale) read around a block's region that is predicted at a smaller scale
RESCALED_CONTEXT = 64


def block_schedule(shape: tuple[int, ...], cfg: PredictConfig, lcfg: LargeConfig, multiple: int | None = None,
                   out_channels: int = 2) -> tuple[list[tuple[int, int]], TileCache]:
    """The order to segment the blocks of an image of ``shape`` in, and the :class:`TileCache` with which
    each tile is computed once: row by row within vertical strips of blocks, as wide as lets the tiles a
    block row shares with the next (two rows of them across the strip) fit in :data:`CACHE_BYTES`, so
    memory does not grow with the image; tiles at the strips' seams are computed twice."""
    from .predict import tile_plan

    shape = tuple(shape[:2])
    plan, grid = tile_plan(*shape, cfg, multiple), block_grid(shape, lcfg.block)
    region = {i: _grow(core, lcfg.margin, shape) for i, core in grid.items()}
    rows, cols = max(i for i, _ in grid) + 1, max(j for _, j in grid) + 1
    most = max(len(p.ys) * len(p.xs) for p in (plan.within(*r) for r in region.values()))
    room = CACHE_BYTES // (out_channels * plan.th * plan.tw * 4)

    def across(j0: int, j1: int) -> int:  # tile columns touching the regions of block columns j0..j1
        return len(plan.within(0, 1, region[(0, j0)][2], region[(0, j1)][3]).xs)

    k = 1
    while k < cols and 2 * across(0, k) + most <= room:
        k += 1
    order = [(i, j) for j0 in range(0, cols, k) for i in range(rows) for j in range(j0, min(j0 + k, cols))]
    return order, TileCache([region[i] for i in order], (plan.th, plan.tw), lookahead=min(k, cols) + 1)


def estimate_scale(model_fn: Callable[..., Any], data: Any, normalizer: Normalizer, cfg: PredictConfig,
                   in_channels: int = 1, multiple: int | None = None, window: int = 1024) -> float:
    """The scale to predict a large (H, W[, C]) image at, as :func:`slimseg.predict.predict` chooses it
    (:func:`~slimseg.scale.rescale_factor`): from ``cfg.diameter``, else from the objects' median diameter
    in up to 2 x 2 windows spread over the image, each predicted at its own scale; 1 where rescaling is off
    or the model's trained size is unknown."""
    from .predict import labels_from_probabilities, predict_probabilities
    from .scale import median_diameter, rescale_factor

    H, W = data.shape[:2]
    if not cfg.rescale or cfg.trained_diameter <= 0:
        return 1.0
    diameter = cfg.diameter
    if diameter <= 0:
        labels = []
        for y in np.unique(np.linspace(0, max(0, H - window), 2).astype(int)):
            for x in np.unique(np.linspace(0, max(0, W - window), 2).astype(int)):
                probs = run(predict_probabilities(model_fn, np.asarray(data[y:y + window, x:x + window]), normalizer,
                                                  cfg, in_channels, multiple=multiple))
                labels.append(labels_from_probabilities(probs, cfg))
        diameter = median_diameter(labels)
    return rescale_factor(diameter, cfg.trained_diameter, (H, W))


def region_labels(model_fn: Callable[..., Any], data: Any, box: Box, normalizer: Normalizer, cfg: PredictConfig,
                  in_channels: int = 1, multiple: int | None = None, cache: TileCache | None = None,
                  factor: float = 1.0) -> np.ndarray:
    """Instance labels of the ``box`` of a large (H, W[, C]) image, from probabilities equal to those of
    whole-image prediction there: the tiles are the whole image's (:func:`~slimseg.predict.tile_plan`)
    that touch the box, read as one window; with ``cache`` (of this image, model and settings) the tiles
    it holds are not computed again. At a ``factor`` below 1 (:func:`estimate_scale`) the box, with
    :data:`RESCALED_CONTEXT` more pixels of context at that scale, is predicted at that scale as
    whole-image prediction predicts a whole image, and the probabilities resized back: close to, not
    equal to, whole-image prediction's near the box's edges."""
    from .data.checks import as_image
    from .predict import labels_from_probabilities, predict_probabilities, rescaled_probabilities, tile_plan

    if factor < 1:
        wy, wy1, wx, wx1 = _grow(box, int(np.ceil(RESCALED_CONTEXT / factor)), data.shape[:2])
        window = as_image(np.asarray(data[wy:wy1, wx:wx1]), in_channels)
        probs = run(rescaled_probabilities(model_fn, window, normalizer, factor, cfg, in_channels, multiple))
        return labels_from_probabilities(probs[:, box[0] - wy:box[1] - wy, box[2] - wx:box[3] - wx], cfg)
    plan = tile_plan(*data.shape[:2], cfg, multiple).within(*box)
    wy, wy1, wx, wx1 = plan.window
    probs = run(predict_probabilities(model_fn, np.asarray(data[wy:wy1, wx:wx1]), normalizer, cfg, in_channels,
                                      plan=plan.local(), cache=cache, origin=(wy, wx)))
    if cache is not None:
        cache.done(box)
    return labels_from_probabilities(probs[:, box[0] - wy:box[1] - wy, box[2] - wx:box[3] - wx], cfg)


def segment_block(labels_fn: Callable[[Box], np.ndarray], shape: tuple[int, ...],
                  grid: dict[tuple[int, int], Box], index: tuple[int, int], margin: int) -> BlockResult:
    """Segment one block with its margin (``labels_fn``: the labels of a box of the image, e.g. a
    :func:`region_labels` partial); keep the core, and the labels reaching into the forward neighbours'
    cores for matching there (only ids that are also in the core)."""
    shape = tuple(shape[:2])
    core = grid[index]
    region = _grow(core, margin, shape)
    labels = labels_fn(region).astype(np.uint32, copy=False)
    cy, cx = core[0] - region[0], core[2] - region[2]
    mine = np.ascontiguousarray(labels[cy:cy + core[1] - core[0], cx:cx + core[3] - core[2]])
    ids, local = np.unique(mine, return_inverse=True)  # consecutive ids 1..n in the core
    keep = ids[ids > 0]
    lut = np.zeros(int(labels.max(initial=0)) + 1, np.uint32)
    lut[keep] = np.arange(1, len(keep) + 1, dtype=np.uint32)
    if ids[0] != 0:
        local = local + 1
    out = BlockResult(index, local.reshape(mine.shape).astype(np.uint32), len(keep))
    for di, dj in _FORWARD:
        other = grid.get((index[0] + di, index[1] + dj))
        box = _meet(region, other) if other else None
        if box is not None:
            sub = labels[box[0] - region[0]:box[1] - region[0], box[2] - region[2]:box[3] - region[2]]
            out.reach[(index[0] + di, index[1] + dj)] = lut[sub]
    return out


def seam_pairs(a_labels: np.ndarray, b_labels: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """(a, b) id pairs of two labellings of one region whose objects overlap with IoU >= min_iou there."""
    a_ids, b_ids, iou = iou_table(a_labels, b_labels)
    rows, cols = np.nonzero((iou >= min_iou) & (iou > 0))
    return [(int(a_ids[i]), int(b_ids[j])) for i, j in zip(rows, cols)]


# ---- the label store ----------------------------------------------------------------------------------

def ome_label_attrs(ndim: int = 2, name: str = "labels", source: str | None = None) -> dict[str, Any]:
    """OME-NGFF 0.4 metadata of a one-level label image (axes y, x; scale 1)."""
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}][-ndim:]
    attrs: dict[str, Any] = {
        "multiscales": [{"version": "0.4", "name": name, "axes": axes,
                         "datasets": [{"path": "0", "coordinateTransformations": [
                             {"type": "scale", "scale": [1.0] * ndim}]}]}],
        "image-label": {"version": "0.4"},
    }
    if source:
        attrs["image-label"]["source"] = {"image": source}
    return attrs


def create_label_store(path: Path, shape: tuple[int, int], chunk: int, name: str = "labels"):
    """An OME-Zarr (NGFF 0.4, zarr format 2) group holding one uint32 array ``0`` chunked by blocks."""
    zarr = zarr_module()

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.attrs.update(ome_label_attrs(2, name))
    arr = group.create_array("0", shape=shape, chunks=(min(chunk, shape[0]), min(chunk, shape[1])),
                             dtype="uint32", fill_value=0,
                             chunk_key_encoding={"name": "v2", "separator": "/"})
    arr.attrs["_ARRAY_DIMENSIONS"] = ["y", "x"]
    return arr


def check_store_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists already; pass --overwrite (overwrite=True) to replace it, or choose "
                         "another output")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file, not a zarr store; remove it or choose another output")


# ---- the whole image ----------------------------------------------------------------------------------

Executor = Callable[[Callable[..., Any], list[Any]], Iterator[Any]]


def serial(fn: Callable[..., Any], items: list[Any]) -> Iterator[Any]:
    """Run ``fn`` on each item here, one after the other (results in order)."""
    return (fn(item) for item in items)


@dataclass
class LargeResult:
    path: Path
    shape: tuple[int, int]
    n_objects: int
    n_blocks: int
    n_merged: int  # seam pairs joined
    blocks_done: int | None = None  # fewer than n_blocks after a stop (the others are 0)

    @property
    def complete(self) -> bool:
        return self.blocks_done is None or self.blocks_done == self.n_blocks


class _RunRecord:
    """What a resumable run has finished, beside its partial store: ``progress.json`` (the run's key and
    each finished block's largest local id, replaced atomically after each block) and each block's
    labels reaching into its neighbours (``reach/I_J.npz``, read without unpickling)."""

    def __init__(self, partial: Path, key: str) -> None:
        self.file, self.reach_dir, self.key = partial / "progress.json", partial / "reach", key

    def load(self) -> dict[tuple[int, int], BlockResult] | None:
        """The blocks finished by an earlier run of the same key (their cores are in the store), or None
        where there is nothing to continue."""
        try:
            state = json.loads(self.file.read_text())
            if state.get("key") != self.key or state.get("phase") != "blocks":
                return None
            done = {}
            for name, n in state["blocks"].items():
                index = tuple(int(v) for v in name.split("_"))
                with np.load(self.reach_dir / f"{name}.npz", allow_pickle=False) as f:
                    reach = {tuple(int(v) for v in k.split("_")): f[k] for k in f.files}
                done[index] = BlockResult(index, np.empty((0, 0), np.uint32), int(n), reach)
            return done
        except (OSError, ValueError, KeyError, TypeError):  # none, or unreadable: start again
            return None

    def update(self, blocks: dict[tuple[int, int], int], phase: str = "blocks",
             res: BlockResult | None = None) -> None:
        from .files import atomic_path, write_json

        if res is not None:
            with atomic_path(self.reach_dir / "{}_{}.npz".format(*res.index)) as tmp:
                np.savez_compressed(tmp, **{f"{i}_{j}": v for (i, j), v in res.reach.items()})
        write_json(self.file, {"key": self.key, "phase": phase,
                               "blocks": {f"{i}_{j}": n for (i, j), n in blocks.items()}})

    def remove(self) -> None:
        self.file.unlink(missing_ok=True)
        shutil.rmtree(self.reach_dir, ignore_errors=True)


def partial_path(out: Path) -> Path:
    """Where a resumable run of ``out`` keeps its unfinished store."""
    return out.with_name(f".{out.name}.partial")


def predict_to_store(block_fn: Callable[[tuple[int, int]], BlockResult], shape: tuple[int, int], out: Path,
                     lcfg: LargeConfig = LargeConfig(), overwrite: bool = False, execute: Executor = serial,
                     name: str = "labels", stop: Callable[[], bool] | None = None,
                     order: list[tuple[int, int]] | None = None, resume_key: str | None = None
                     ) -> Generator[Progress | Message, None, LargeResult]:
    """Predict every block with ``block_fn`` (via ``execute``: here or on a cluster; in ``order``, default
    row-major), write a label store at ``out``: it appears only when complete (written beside it, then
    renamed). Once ``stop()`` is true (checked after each block) the blocks done so far are written, the
    others left 0.

    With ``resume_key`` (what makes the labels: image, model and settings) the run is resumable: the
    unfinished store stays beside ``out`` (:func:`partial_path`) when the run is interrupted or killed, and
    a later run of the same key goes on from the blocks it finished (the labels are those of one run); a
    run of another key starts again."""
    zarr = zarr_module()

    out = Path(out)
    check_store_target(out, overwrite)
    grid = block_grid(shape, lcfg.block)
    if resume_key is None:
        tmp, record = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp"), None
    else:
        tmp = partial_path(out)
        record = _RunRecord(tmp, resume_key)
    before = record.load() if record is not None else None
    keep = False  # on an interruption: keep a resumable run's finished blocks
    try:
        if before is None:
            shutil.rmtree(tmp, ignore_errors=True)
            store = create_label_store(tmp, shape, lcfg.block, name)
            before = {}
        else:
            store = zarr.open_group(str(tmp), mode="r+")["0"]
            yield Message(f"continuing an interrupted run: {len(before)} of {len(grid)} blocks were done")
        n_of: dict[tuple[int, int], int] = {}
        waiting: dict[tuple[tuple[int, int], tuple[int, int]], np.ndarray] = {}
        pairs: list[tuple[tuple[int, int], int, tuple[int, int], int]] = []

        def match(a: tuple[int, int], b: tuple[int, int], reach: np.ndarray) -> None:
            box = _meet(_grow(grid[a], lcfg.margin, shape), grid[b])
            pairs.extend((a, x, b, y) for x, y in seam_pairs(reach, store[box[0]:box[1], box[2]:box[3]],
                                                               lcfg.merge_iou))

        def arrive(res: BlockResult) -> None:  # a block's core is in the store: match it with its neighbours
            n_of[res.index] = res.n
            for b, reach in res.reach.items():
                if b in n_of:
                    match(res.index, b, reach)
                else:
                    waiting[(res.index, b)] = reach
            for a in [a for (a, b) in waiting if b == res.index]:
                match(a, res.index, waiting.pop((a, res.index)))

        for res in before.values():
            arrive(res)
        keep = bool(before)
        todo = [i for i in (order or list(grid)) if i not in before]
        results = execute(block_fn, todo)
        for done, res in enumerate(results, len(before) + 1):
            y0, y1, x0, x1 = grid[res.index]
            store[y0:y1, x0:x1] = res.core
            arrive(res)
            if record is not None:
                record.update(n_of, res=res)
                keep = True
            yield Progress("blocks", done, len(grid), f"block {done} of {len(grid)}")
            if stop is not None and stop() and done < len(grid):
                getattr(results, "close", lambda: None)()  # a cluster's tasks are cancelled
                break
        if record is not None:  # ids are rewritten in place from here: an interrupted relabelling starts again
            record.update(n_of, phase="relabel")
        keep = False
        # global ids: each block's ids after the previous blocks'; seam pairs joined (union-find)
        offsets, total = {}, 0
        for idx in grid:
            offsets[idx] = total
            total += n_of.get(idx, 0)
        parent = np.arange(total + 1, dtype=np.int64)

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = int(parent[i])
            return i

        for a, x, b, y in pairs:
            ra, rb = root(offsets[a] + x), root(offsets[b] + y)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        roots = np.array([root(i) for i in range(total + 1)], np.int64)
        final = np.zeros(total + 1, np.uint32)
        uniq = np.unique(roots[1:])
        final[1:] = (np.searchsorted(uniq, roots[1:]) + 1).astype(np.uint32)
        for k, idx in enumerate(n_of, 1):
            y0, y1, x0, x1 = grid[idx]
            local = store[y0:y1, x0:x1]
            lut = final[offsets[idx]: offsets[idx] + n_of[idx] + 1].copy()
            lut[0] = 0
            store[y0:y1, x0:x1] = lut[local]
            yield Progress("relabel", k, len(n_of))
        if record is not None:
            record.remove()
        zarr.consolidate_metadata(str(tmp), zarr_format=2)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        return LargeResult(out, shape, int(len(uniq)), len(grid), len(pairs), len(n_of))
    finally:
        if tmp.exists() and not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def predict_large(seg, image: Any, out: str | Path, cfg: PredictConfig | None = None, lcfg: LargeConfig = LargeConfig(),
                  channels=None, overwrite: bool = False, execute: Executor = serial, name: str = "image",
                  stop: Callable[[], bool] | None = None) -> Generator[Progress, None, LargeResult]:
    """Predict a 2D image given lazily (a dask or zarr array, an ``ImageData``, a path to a zarr store or
    TIFF) block by block into an OME-Zarr label store at ``out``. A generator of progress events; with
    ``stop``, see :func:`predict_to_store`."""
    if isinstance(image, (str, Path)):
        name, image = str(image), open_lazy(image)
    std = seg.standardize(image, channels, name)
    if std.plane_axes:
        raise InputError(f"{name}: large-image prediction takes one 2D plane, got a stack of shape "
                         f"{std.plane_shape}; give one plane (e.g. a zarr array of it)")
    cfg = cfg or seg.predict_config
    data = std.data
    normalizer, factor = yield from image_settings(seg, data, cfg, lcfg)
    grid = block_grid(tuple(data.shape[:2]), lcfg.block)
    multiple, in_channels = seg.model_config.size_multiple, seg.model_config.in_channels
    order, cache = block_schedule(data.shape, cfg, lcfg, multiple)
    if execute is not serial or factor < 1:  # blocks segmented elsewhere, or each on its own at a smaller scale
        cache = None

    def labels_fn(box: Box) -> np.ndarray:
        return region_labels(seg.model_fn, data, box, normalizer, cfg, in_channels, multiple, cache, factor)

    def block_fn(index: tuple[int, int]) -> BlockResult:
        return segment_block(labels_fn, data.shape, grid, index, lcfg.margin)

    return (yield from predict_to_store(block_fn, tuple(data.shape[:2]), Path(out), lcfg, overwrite, execute,
                                        stop=stop, order=order))


def image_settings(seg, data: Any, cfg: PredictConfig, lcfg: LargeConfig
                   ) -> Generator[Message, None, tuple[Normalizer, float]]:
    """What every block of a large image shares: its intensity percentiles (:func:`fit_normalizer`) and
    the scale it is predicted at (:func:`estimate_scale`; a message says so where that is smaller)."""
    normalizer = fit_normalizer(data, seg.norm, min(256, lcfg.block))
    factor = estimate_scale(seg.model_fn, data, normalizer, cfg, seg.model_config.in_channels,
                            seg.model_config.size_multiple)
    if factor < 1:
        yield Message(f"objects large for the model: every block is predicted at 1/{round(1 / factor)} scale")
    return normalizer, factor


def read_labels(path: str | Path) -> Any:
    """The label array of a store written by :func:`predict_to_store` (lazy)."""
    zarr = zarr_module()

    return zarr.open_group(str(path), mode="r")["0"]


def store_attrs(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / ".zattrs").read_text())


__all__ = ["LargeConfig", "LargeResult", "BlockResult", "TIFF_MAX_PIXELS", "CACHE_BYTES", "RESCALED_CONTEXT",
           "block_grid", "open_lazy", "image_pixels", "fit_normalizer", "TileCache", "block_schedule",
           "estimate_scale", "region_labels", "segment_block", "seam_pairs", "ome_label_attrs", "create_label_store",
           "partial_path", "predict_to_store", "predict_large", "image_settings", "read_labels", "serial"]

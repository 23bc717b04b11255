"""Tiled prediction over any image size with bounded memory, and instance labels from it.

``predict_probabilities`` walks the image in rows of overlapping tiles, blends them with a linear
ramp and keeps only one row of tiles in float32 accumulators: the result is float16 (2 bytes per
pixel and channel), so memory grows with the image only by the output itself.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from .config import NormConfig, PredictConfig
from .data.checks import as_image
from .data.normalize import Normalizer
from .data.tiling import blend_window, plan_tiles, tile_starts
from .events import Progress
from .instances import split_instances
from .scale import median_diameter, rescale_factor, resize

ModelFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Prediction:
    labels: np.ndarray  # uint32 instance labels (H, W)
    probabilities: np.ndarray  # float16 (2, H, W): foreground, centredness


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of an image lie: ``th`` x ``tw`` tiles at rows ``ys`` and columns ``xs``, blended
    over ``overlap`` pixels."""

    th: int
    tw: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    overlap: int

    def within(self, y0: int, y1: int, x0: int, x1: int) -> TilePlan:
        """The tiles touching rows [y0, y1) and columns [x0, x1): every pixel of that box gets these
        tiles, and so the probabilities, that it gets in the whole image."""
        return TilePlan(self.th, self.tw, tuple(y for y in self.ys if y < y1 and y + self.th > y0),
                        tuple(x for x in self.xs if x < x1 and x + self.tw > x0), self.overlap)

    @property
    def window(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the part of the image that the tiles cover."""
        return self.ys[0], self.ys[-1] + self.th, self.xs[0], self.xs[-1] + self.tw

    def local(self) -> TilePlan:
        """The same tiles in the coordinates of :attr:`window`."""
        y0, x0 = self.ys[0], self.xs[0]
        return TilePlan(self.th, self.tw, tuple(y - y0 for y in self.ys), tuple(x - x0 for x in self.xs),
                        self.overlap)


def tile_plan(height: int, width: int, cfg: PredictConfig, multiple: int | None = None) -> TilePlan:
    """The tiles of a ``height`` x ``width`` image. With ``multiple`` (the model's size step) they are
    planned to waste the fewest pixels (:func:`~slimseg.data.tiling.plan_tiles`); without it they are
    ``cfg.tile`` squares as in training."""
    th, tw = min(cfg.tile, height), min(cfg.tile, width)
    ov = min(cfg.overlap, th // 2 - 1, tw // 2 - 1) if min(th, tw) > 2 else 0
    if multiple is None:
        ys, xs = tile_starts(height, th, ov), tile_starts(width, tw, ov)
    else:
        (th, ys), (tw, xs) = plan_tiles(height, th, ov, multiple), plan_tiles(width, tw, ov, multiple)
    return TilePlan(th, tw, tuple(ys), tuple(xs), ov)


class TileStore(Protocol):
    """Where :func:`predict_probabilities` finds and keeps tile outputs, by the tile's origin in the
    whole image (:class:`slimseg.large.TileCache`)."""

    def get(self, key: tuple[int, int]) -> np.ndarray | None: ...

    def put(self, key: tuple[int, int], value: np.ndarray) -> None: ...


def predict_probabilities(model_fn: ModelFn, image: np.ndarray, norm: NormConfig | Normalizer,
                          cfg: PredictConfig = PredictConfig(), in_channels: int = 1,
                          out_channels: int = 2, multiple: int | None = None, plan: TilePlan | None = None,
                          cache: TileStore | None = None, origin: tuple[int, int] = (0, 0)
                          ) -> Generator[Progress, None, np.ndarray]:
    """Yield progress per tile row; return float16 sigmoid probabilities (out_channels, H, W).

    Tiles as :func:`tile_plan` places them (``multiple``: see there), or as ``plan`` says (part of a
    larger image's plan in the coordinates of the window it covers: :meth:`TilePlan.local`). With
    ``cache``, a tile's output is taken from it where it holds one, and kept there otherwise (keys: the
    tile's origin plus ``origin``, the window's place in the whole image)."""
    image = as_image(image, in_channels)
    normalize = norm if isinstance(norm, Normalizer) else Normalizer.fit(image, norm)
    H, W = image.shape[:2]
    plan = plan or tile_plan(H, W, cfg, multiple)
    th, tw, ys, xs = plan.th, plan.tw, plan.ys, plan.xs
    window = blend_window(th, tw, plan.overlap)
    out = np.empty((out_channels, H, W), np.float16)
    acc = np.zeros((out_channels, th, W), np.float32)
    wacc = np.zeros((th, W), np.float32)
    lo = 0
    for row, y in enumerate(ys):
        if y != lo:  # rows [lo, y) get no more tiles: finish them and slide the accumulators down
            shift = y - lo
            _to_half(out[:, lo:y], acc[:, :shift] / wacc[:shift])
            acc[:, : th - shift] = acc[:, shift:]
            acc[:, th - shift:] = 0
            wacc[: th - shift] = wacc[shift:]
            wacc[th - shift:] = 0
            lo = y
        for x, p in _row_outputs(model_fn, image, normalize, y, xs, (th, tw), cfg, cache, origin):
            acc[:, :, x:x + tw] += p * window
            wacc[:, x:x + tw] += window
        yield Progress("predict", row + 1, len(ys))
    _to_half(out[:, lo:lo + th], acc / wacc)
    return out


def _row_outputs(model_fn: ModelFn, image: np.ndarray, normalize: Normalizer, y: int, xs: Sequence[int],
                 tile: tuple[int, int], cfg: PredictConfig, cache: TileStore | None, origin: tuple[int, int]
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """(x, network output) of the tiles of one row at ``y``, in the order of ``xs``: computed in batches
    of ``cfg.batch_size``, except those that ``cache`` holds (the others are put there)."""
    th, tw = tile
    if cache is None:
        for b in range(0, len(xs), cfg.batch_size):
            bx = xs[b: b + cfg.batch_size]
            yield from zip(bx, _infer(model_fn, np.stack([normalize(image[y:y + th, x:x + tw]) for x in bx]), cfg.tta,
                                          cfg.bf16))
        return
    keys = {x: (origin[0] + y, origin[1] + x) for x in xs}
    held = {x: cache.get(keys[x]) for x in xs}
    new = dict(_row_outputs(model_fn, image, normalize, y, [x for x in xs if held[x] is None], tile, cfg, None,
                            origin))
    for x, p in new.items():
        cache.put(keys[x], p)
    for x in xs:
        yield x, held[x] if held[x] is not None else new[x]


def _to_half(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src`` into float16, through torch's vectorised conversion: numpy's takes ~50 ns per
    value that rounds to a subnormal half, as background probabilities do (40 ms of a 520 x 696 image;
    torch: under 1 ms, the same bits)."""
    torch.from_numpy(dst).copy_(torch.from_numpy(src))


def batch_calls(height: int, width: int, cfg: PredictConfig, in_channels: int, multiple: int
                ) -> list[tuple[int, int, int, int]]:
    """The (N, C, H, W) shape of each model call on a ``height`` x ``width`` image, in order (planned
    tiles, padded to ``multiple`` as the model pads them)."""
    plan = tile_plan(height, width, cfg, multiple)
    th, tw = -(-plan.th // multiple) * multiple, -(-plan.tw // multiple) * multiple
    row = [(min(cfg.batch_size, len(plan.xs) - b), in_channels, th, tw) for b in range(0, len(plan.xs), cfg.batch_size)]
    return row * len(plan.ys)


def batch_shapes(height: int, width: int, cfg: PredictConfig, in_channels: int, multiple: int
                 ) -> set[tuple[int, int, int, int]]:
    """The distinct shapes of :func:`batch_calls`: what a compiled model specialises for."""
    return set(batch_calls(height, width, cfg, in_channels, multiple))


def image_probabilities(model_fn: ModelFn, images: Sequence[np.ndarray], norm: NormConfig | Normalizer,
                        cfg: PredictConfig = PredictConfig(), in_channels: int = 1, out_channels: int = 2,
                        stage: str | None = None) -> Generator[Progress, None, list[np.ndarray]]:
    """float32 probabilities of each image (validation, threshold tuning, checks); yields the tile
    rows' progress and, with ``stage``, one ``Progress(stage, ...)`` per image."""
    out = []
    for n, image in enumerate(images):
        probs = yield from predict_probabilities(model_fn, image, norm, cfg, in_channels, out_channels)
        out.append(torch.from_numpy(probs).float().numpy())  # as _to_half: numpy's conversion is slow
        if stage is not None:
            yield Progress(stage, n + 1, len(images))
    return out


_FLIPS = ((), (-1,), (-2,), (-2, -1))


def _infer(model_fn: ModelFn, batch: np.ndarray, tta: bool = False, bf16: bool = False) -> np.ndarray:
    """Sigmoid probabilities of a batch; with ``tta`` the mean over the 4 flips; with ``bf16`` the
    network under bfloat16 autocast (the sigmoid and the sums in float32)."""
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        x = torch.from_numpy(batch)
        if not tta:
            return torch.sigmoid(model_fn(x).float()).numpy()
        total = sum(torch.sigmoid(model_fn(x.flip(d) if d else x).float()).flip(d) if d else
                    torch.sigmoid(model_fn(x).float()) for d in _FLIPS)
        return (total / len(_FLIPS)).numpy()


def centre_peaks(centredness: np.ndarray, h: float) -> np.ndarray:
    """Boolean h-maxima of the centredness map: its regional maxima of dynamic at least ``h``."""
    from skimage.morphology import h_maxima

    return h_maxima(np.asarray(centredness, np.float32), h).astype(bool)


def seed_mask(centredness: np.ndarray, cfg: PredictConfig, peaks: np.ndarray | None = None) -> np.ndarray:
    """The pixels that seed instances: centredness above ``seed_threshold`` and, with ``seed_h``, only
    at its h-maxima (``peaks``: :func:`centre_peaks` computed already)."""
    seeds = centredness > cfg.seed_threshold
    if cfg.seed_h > 0:
        seeds &= centre_peaks(centredness, cfg.seed_h) if peaks is None else peaks
    return seeds


def labels_from_probabilities(probs: np.ndarray, cfg: PredictConfig = PredictConfig(),
                              peaks: np.ndarray | None = None) -> np.ndarray:
    """uint32 instance labels: foreground above ``threshold``, split at the seeds of the centredness map
    (:func:`seed_mask`)."""
    fg = probs[0] > cfg.threshold
    return split_instances(fg, seed_mask(probs[1], cfg, peaks), landscape=probs[1], min_size=cfg.min_size)


def predict(model_fn: ModelFn, image: np.ndarray, norm: NormConfig | Normalizer,
            cfg: PredictConfig = PredictConfig(), in_channels: int = 1, multiple: int | None = None
            ) -> Generator[Progress, None, Prediction]:
    """Tiled probabilities (planned tiles with ``multiple``), then instance labels; a generator like
    every long job. Objects more than twice the size the model was trained on (``cfg.trained_diameter``;
    their size is ``cfg.diameter``, else estimated from these labels) are predicted again at the scale
    :func:`slimseg.scale.rescale_factor` gives, with the same normalisation, and the probabilities resized
    back: the labels are then those of that pass (``cfg.rescale=False`` turns this off)."""
    image = as_image(image, in_channels)
    normalize = norm if isinstance(norm, Normalizer) else Normalizer.fit(image, norm)
    size = image.shape[:2]
    factor = rescale_factor(cfg.diameter, cfg.trained_diameter, size) if cfg.rescale else 1.0
    if factor == 1.0:
        probs = yield from predict_probabilities(model_fn, image, normalize, cfg, in_channels, multiple=multiple)
        yield Progress("instances", 0, 1)
        labels = labels_from_probabilities(probs, cfg)
        if not cfg.rescale or cfg.diameter > 0:
            return Prediction(labels, probs)
        factor = rescale_factor(median_diameter([labels]), cfg.trained_diameter, size)
        if factor == 1.0:
            return Prediction(labels, probs)
    probs = yield from rescaled_probabilities(model_fn, image, normalize, factor, cfg, in_channels, multiple)
    yield Progress("instances", 0, 1, f"objects large for the model: predicted at 1/{round(1 / factor)} scale")
    return Prediction(labels_from_probabilities(probs, cfg), probs)


def rescaled_probabilities(model_fn: ModelFn, image: np.ndarray, normalize: Normalizer, factor: float,
                           cfg: PredictConfig, in_channels: int = 1, multiple: int | None = None
                           ) -> Generator[Progress, None, np.ndarray]:
    """float16 probabilities of ``image`` (:func:`~slimseg.data.checks.as_image`'s layout) predicted at
    ``factor`` of its size and resized back to it."""
    size = image.shape[:2]
    small = resize(image, (max(1, round(size[0] * factor)), max(1, round(size[1] * factor))), channel_last=True)
    probs_small = yield from predict_probabilities(model_fn, small, normalize, cfg, in_channels, multiple=multiple)
    probs = np.empty((probs_small.shape[0], *size), np.float16)
    _to_half(probs, resize(probs_small, size, channel_last=False))
    return probs

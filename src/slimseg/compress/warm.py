"""Warm the compile cache at ``slimseg compress`` time: an int8 PT2E model is compiled for the tile
shapes of the images it was calibrated on, so the first ``slimseg predict`` on such images loads
compiled code from :mod:`slimseg.kinds.compile_cache` instead of compiling."""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from .. import io
from ..events import Message, Progress

MAX_SIZES = 4  # the most frequent image sizes warmed (each new tile shape compiles: seconds)


def warm_events(mf: io.ModelFile, images: Sequence[np.ndarray], engine: str = "auto",
                max_sizes: int = MAX_SIZES) -> Generator[Any, None, int]:
    """Compile ``mf`` (a kind that compiles; others are skipped) for the tile batches of the most
    frequent sizes among ``images``; returns the number of shapes compiled."""
    import torch

    from ..kinds import kind_of
    from ..segmenter import from_model_file

    if not images or not kind_of(mf.kind).engines:  # only kinds with an int8 engine compile
        return 0
    seg = from_model_file(mf, "compressed model", engine)
    if not seg.meta.get("runtime", "").endswith("compile"):
        return 0
    sizes, shapes = _tile_shapes(seg.predict_config, seg.model_config, images, max_sizes)
    yield Message(f"compress: compiling the int8 model for {len(shapes)} tile shapes of the {len(sizes)} most "
                  "frequent image sizes (cached for slimseg predict)")
    with torch.inference_mode():
        for i, shape in enumerate(shapes):
            seg.model_fn(torch.zeros(shape))
            yield Progress("compile", i + 1, len(shapes))
    return len(shapes)


def warm_in_background(mf: io.ModelFile, images: Sequence[np.ndarray], max_sizes: int = MAX_SIZES) -> int:
    """Have a separate process compile an int8 PT2E ``mf`` for the tile shapes of the most frequent sizes
    among ``images`` (:mod:`slimseg.kinds.background`: for napari, which must not compile in its own
    process); returns at once, with the number of shapes asked for (0 for other kinds or no compiler)."""
    from ..kinds import kind_of, pt2e_inductor
    from ..segmenter import predict_config_of

    if "cached" not in kind_of(mf.kind).engines or not images or not pt2e_inductor.have_cpp_compiler():
        return 0
    from ..kinds.background import compiler_for
    from ..kinds.pt2e_runner import cache_key

    _, shapes = _tile_shapes(predict_config_of(mf.meta), mf.model_config, images, max_sizes)
    compiler_for(mf, cache_key(mf)).want(shapes)
    return len(shapes)


def _tile_shapes(cfg: Any, model_config: Any, images: Sequence[np.ndarray], max_sizes: int
                 ) -> tuple[list, list[tuple[int, int, int, int]]]:
    """The ``max_sizes`` most frequent image sizes of ``images`` (with their counts) and the distinct
    tile batch shapes predicting them calls the network with."""
    from ..predict import batch_shapes

    sizes = Counter(tuple(np.shape(img)[:2]) for img in images).most_common(max_sizes)
    m, cin = model_config.size_multiple, model_config.in_channels
    return sizes, sorted(set().union(*(batch_shapes(h, w, cfg, cin, m) for (h, w), _ in sizes)))

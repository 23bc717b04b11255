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
    from ..predict import batch_shapes
    from ..segmenter import from_model_file

    if not images or not kind_of(mf.kind).engines:  # only kinds with an int8 engine compile
        return 0
    seg = from_model_file(mf, "compressed model", engine)
    if not seg.meta.get("runtime", "").endswith("compile"):
        return 0
    cfg, m = seg.predict_config, seg.model_config.size_multiple
    sizes = Counter(tuple(np.shape(img)[:2]) for img in images).most_common(max_sizes)
    shapes = sorted(set().union(*(batch_shapes(h, w, cfg, seg.model_config.in_channels, m) for (h, w), _ in sizes)))
    yield Message(f"compress: compiling the int8 model for {len(shapes)} tile shapes of the {len(sizes)} most "
                  "frequent image sizes (cached for slimseg predict)")
    with torch.inference_mode():
        for i, shape in enumerate(shapes):
            seg.model_fn(torch.zeros(shape))
            yield Progress("compile", i + 1, len(shapes))
    return len(shapes)

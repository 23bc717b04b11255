"""A deterministic stand-in for a trained model: bright pixels are foreground, blurred brightness is
centredness, so whole-image and block-wise prediction can be compared exactly."""

import numpy as np
import torch

from slimseg.config import ModelConfig, NormConfig, PredictConfig
from slimseg.segmenter import Segmenter


def local_model(x: torch.Tensor) -> torch.Tensor:
    fg = (x[:, :1] - 0.5) * 20
    blur = torch.nn.functional.avg_pool2d(x[:, :1], 7, stride=1, padding=3, count_include_pad=False)
    return torch.cat([fg, (blur - 0.8) * 20], 1)


def fake_segmenter(tile: int = 64, overlap: int = 16) -> Segmenter:
    return Segmenter(local_model, ModelConfig(widths=(4, 8)), NormConfig(), "float",
                     predict_config=PredictConfig(tile=tile, overlap=overlap, min_size=4))


def disks_image(size: int = 300, n: int = 120, radius: int = 6, seed: int = 1) -> np.ndarray:
    """uint16 bright disks (touching ones too) on a dark noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = rng.normal(100, 5, (size, size))
    for cy, cx in rng.integers(0, size, (n, 2)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = 1000
    return np.clip(img, 0, 65535).astype(np.uint16)

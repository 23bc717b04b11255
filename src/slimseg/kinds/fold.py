"""Graph-friendly forms of the U-Net: BatchNorm folded into the convs, and a forward without padding.

Quantisation and export work on the folded model (``norm="none"``, every conv with a bias,
:func:`slimseg.model.fold_batchnorm`), which computes the same function as the BatchNorm model in
eval mode. The padding of odd sizes happens outside the exported graph (:func:`padded`), so one
graph serves every multiple of the size step (:func:`dynamic_example`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..model import UNet


class Core(nn.Module):
    """The U-Net's forward for inputs whose height and width are multiples of ``size_multiple``
    (what export traces: no data-dependent padding)."""

    def __init__(self, net: UNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_core(x)


def dynamic_example(cin: int, multiple: int) -> tuple[tuple[torch.Tensor], tuple[dict]]:
    """An example input and the dynamic shapes of an export: any batch, heights and widths that
    are multiples of ``multiple``."""
    from torch.export import Dim

    example = torch.rand(2, cin, 2 * multiple, 2 * multiple)
    dims = {0: Dim("batch", min=1, max=4096), 2: multiple * Dim("h", min=1, max=1 << 16),
            3: multiple * Dim("w", min=1, max=1 << 16)}
    return (example,), (dims,)


def padded(fn: Callable[[torch.Tensor], torch.Tensor], multiple: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap ``fn`` (multiples of ``multiple`` only) to take any size: pad like the U-Net, crop back. ``fn``
    (an int8 kind's kernels) runs with autocast off, so that ``PredictConfig.bf16`` never reaches it."""

    def call(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % multiple, (-w) % multiple
        if ph or pw:
            mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        with torch.autocast("cpu", enabled=False):
            y = fn(x.float().contiguous())
        return y[..., :h, :w] if (ph or pw) else y

    return call

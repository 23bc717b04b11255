"""A 2D U-Net whose per-level widths live in :class:`~slimseg.config.ModelConfig`.

Plain ``nn.Sequential`` blocks of conv -> norm -> ReLU (what PT2E quantisation and Torch-Pruning handle
best), max-pool down, nearest upsample + 1x1 conv up, concatenation skips. Any input height and width:
the forward pass pads to a multiple of ``2**(depth-1)`` and crops back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "group":
        return nn.GroupNorm(min(8, ch), ch) if ch % min(8, ch) == 0 else nn.GroupNorm(1, ch)
    return nn.Identity()


def conv_block(cin: int, cout: int, norm: str) -> nn.Sequential:
    bias = norm == "none"
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=bias), _norm(norm, cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=bias), _norm(norm, cout), nn.ReLU(inplace=True),
    )


class Up(nn.Module):
    """Nearest 2x upsampling, a 1x1 conv to ``cout``, concatenation with the skip, a conv block."""

    def __init__(self, cin: int, cskip: int, cout: int, norm: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(cin, cout, 1)
        self.block = conv_block(cout + cskip, cout, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.reduce(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.block(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        self.encoders = nn.ModuleList()
        cin = config.in_channels
        for cout in w:
            self.encoders.append(conv_block(cin, cout, config.norm))
            cin = cout
        self.decoders = nn.ModuleList()
        for skip_ch, cout in zip(reversed(w[:-1]), config.dec_widths()):
            self.decoders.append(Up(cin, skip_ch, cout, config.norm))
            cin = cout
        self.head = nn.Conv2d(cin, config.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.config.size_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        skips = []
        for i, enc in enumerate(self.encoders):
            if i:
                x = F.max_pool2d(x, 2)
            x = enc(x)
            skips.append(x)
        skips.pop()
        for dec in self.decoders:
            x = dec(x, skips.pop())
        x = self.head(x)
        return x[..., :h, :w] if (ph or pw) else x


def build_model(config: ModelConfig) -> UNet:
    return UNet(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches, max_batches: int = 16) -> None:
    """Re-estimate BatchNorm running statistics from ``batches`` (tensors of images), as a plain
    cumulative average. Short training leaves them stale, and eval-mode predictions collapse."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    was_training = model.training
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i, x in enumerate(batches):
        if i >= max_batches:
            break
        model(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.train(was_training)

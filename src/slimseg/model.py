"""A 2D U-Net whose per-level widths live in :class:`~slimseg.config.ModelConfig`.

Plain ``nn.Sequential`` blocks of conv -> norm -> ReLU (what PT2E quantisation and Torch-Pruning handle
best), max-pool down, 1x1 conv + nearest upsample up, concatenation skips. Any input height and width:
the forward pass pads to a multiple of ``2**(depth-1)`` and crops back.
"""

from __future__ import annotations

import dataclasses

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
    """A 1x1 conv to ``cout``, nearest 2x upsampling, concatenation with the skip, a conv block.

    The 1x1 conv runs before the upsampling: a pointwise conv commutes with nearest upsampling, so
    this is the same function as upsample-then-conv on a quarter of the pixels, and the upsampling
    copies ``cout`` instead of ``cin`` channels."""

    def __init__(self, cin: int, cskip: int, cout: int, norm: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(cin, cout, 1)
        self.block = conv_block(cout + cskip, cout, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.reduce(x), scale_factor=2.0, mode="nearest")
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
        x = self.forward_core(x)
        return x[..., :h, :w] if (ph or pw) else x

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass of inputs whose height and width are multiples of ``config.size_multiple``."""
        skips = []
        for i, enc in enumerate(self.encoders):
            if i:
                x = F.max_pool2d(x, 2)
            x = enc(x)
            skips.append(x)
        skips.pop()
        for dec in self.decoders:
            x = dec(x, skips.pop())
        return self.head(x)


def conv_blocks(model: UNet) -> list[tuple[str, nn.Sequential]]:
    """(name, block) of every conv-norm-ReLU-conv-norm-ReLU block."""
    blocks = [(f"encoders.{i}", b) for i, b in enumerate(model.encoders)]
    return blocks + [(f"decoders.{i}.block", d.block) for i, d in enumerate(model.decoders)]


def can_fold(model: UNet) -> bool:
    return model.config.norm in ("batch", "none")


@torch.no_grad()
def fold_batchnorm(model: UNet) -> UNet:
    """An eval-mode copy with ``norm="none"``: each BatchNorm folded into the conv before it, the same
    function as ``model`` in eval mode with two memory passes less per block (faster inference), and
    the form quantisation and export work on."""
    from .errors import InputError

    norm = model.config.norm
    if norm == "none":
        folded = UNet(model.config)
        folded.load_state_dict(model.state_dict())
        return folded.eval()
    if not can_fold(model):
        raise InputError(f"this model uses {norm} normalisation, which cannot be folded into the convs; "
                         "int8 export needs a model trained with BatchNorm (norm='batch') or none")
    folded = UNet(dataclasses.replace(model.config, norm="none")).eval()
    state = {}
    for name, block in conv_blocks(model):
        for i in (0, 3):
            conv, bn = block[i], block[i + 1]
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            state[f"{name}.{i}.weight"] = conv.weight * scale[:, None, None, None]
            state[f"{name}.{i}.bias"] = bn.bias - bn.running_mean * scale
    for name, value in model.state_dict().items():
        if ".reduce." in name or name.startswith("head."):
            state[name] = value
    folded.load_state_dict(state)
    return folded.to(next(model.parameters()).device)


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

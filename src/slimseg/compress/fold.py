"""Graph-friendly forms of the U-Net: BatchNorm folded into the convs, and a forward without padding.

Quantisation and export work on the folded model (``norm="none"``, every conv with a bias), which
computes the same function as the BatchNorm model in eval mode. The padding of odd sizes happens
outside the exported graph (:func:`padded`), so one graph serves every multiple of the size step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..model import UNet


def conv_blocks(model: UNet) -> list[tuple[str, nn.Sequential]]:
    """(name, block) of every conv-norm-ReLU-conv-norm-ReLU block."""
    blocks = [(f"encoders.{i}", b) for i, b in enumerate(model.encoders)]
    return blocks + [(f"decoders.{i}.block", d.block) for i, d in enumerate(model.decoders)]


@torch.no_grad()
def fold_batchnorm(model: UNet) -> UNet:
    """An eval-mode copy with ``norm="none"``: each BatchNorm folded into the conv before it."""
    norm = model.config.norm
    if norm == "none":
        folded = UNet(model.config)
        folded.load_state_dict(model.state_dict())
        return folded.eval()
    if norm != "batch":
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
    return folded


class Core(nn.Module):
    """The U-Net's forward for inputs whose height and width are multiples of ``size_multiple``.

    One exact rewrite: each decoder's 1x1 ``reduce`` conv runs *before* the nearest 2x upsampling
    (a pointwise conv commutes with nearest upsampling), on a quarter of the pixels, and the
    upsampling then copies ``cout`` instead of ``cin`` channels.
    """

    def __init__(self, net: UNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.net.encoders):
            if i:
                x = F.max_pool2d(x, 2)
            x = enc(x)
            skips.append(x)
        skips.pop()
        for dec in self.net.decoders:
            x = F.interpolate(dec.reduce(x), scale_factor=2.0, mode="nearest")
            x = dec.block(torch.cat([x, skips.pop()], dim=1))
        return self.net.head(x)


def padded(fn: Callable[[torch.Tensor], torch.Tensor], multiple: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap ``fn`` (multiples of ``multiple`` only) to take any size: pad like the U-Net, crop back."""

    def call(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % multiple, (-w) % multiple
        if ph or pw:
            mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        y = fn(x.float().contiguous())
        return y[..., :h, :w] if (ph or pw) else y

    return call

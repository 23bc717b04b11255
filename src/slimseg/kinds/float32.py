"""Kind ``float``: the U-Net's float32 weights, run in eval mode with BatchNorm folded into the convs
(the same function, two memory passes less per block) in channels-last layout (faster on CPUs)."""

from __future__ import annotations

from typing import Any

import torch

from .. import io
from ..errors import ModelFileError
from ..model import UNet, can_fold, fold_batchnorm
from . import Runnable


def unet(mf: io.ModelFile, tensors: dict[str, torch.Tensor] | None = None) -> UNet:
    """The U-Net of ``mf``'s settings holding its weights (or ``tensors``), in eval mode."""
    model = UNet(mf.model_config)
    try:
        model.load_state_dict(mf.state_dict() if tensors is None else tensors)
    except RuntimeError as err:
        raise ModelFileError(f"the weights do not fit the model settings stored beside them: {err}") from None
    return model.eval()


def runnable(model: UNet) -> Runnable:
    """``model`` (put in eval mode) as a fast callable; ``module`` stays the model as given."""
    model = model.eval()
    folded = (fold_batchnorm(model) if can_fold(model) else model).to(memory_format=torch.channels_last)

    def model_fn(x: torch.Tensor) -> torch.Tensor:
        return folded(x.contiguous(memory_format=torch.channels_last))

    return Runnable(model_fn, model)


def load(mf: io.ModelFile, meta: dict[str, Any]) -> Runnable:
    return runnable(unet(mf))

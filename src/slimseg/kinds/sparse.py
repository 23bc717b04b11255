"""Kind ``float-sparse``: a magnitude-pruned U-Net stored as the kept conv weights plus a bit mask
of where they sit (everything else dense), so the file really shrinks. It runs on the dense
kernels as before: sparsity saves disk space, not time."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import io
from ..errors import ModelFileError
from ..model import UNet
from . import KINDS, Runnable, float32, stored_layout

KIND = "float-sparse"


def to_sparse_file(model: UNet, norm, meta: dict, masks: dict[str, torch.Tensor]) -> io.ModelFile:
    """Masked weights as kept values + packed bit mask; everything else dense."""
    tensors, shapes = {}, {}
    for name, value in model.state_dict().items():
        arr = value.detach().cpu().contiguous().numpy()
        if name in masks:
            keep = masks[name].numpy().reshape(-1)
            tensors[name + ".values"] = arr.reshape(-1)[keep]
            tensors[name + ".mask"] = np.packbits(keep)
            shapes[name] = list(arr.shape)
        else:
            tensors[name] = arr
    meta = dict(meta)
    meta["sparse"] = {"format": KINDS[KIND].version, "weights": shapes}
    return io.ModelFile(model.config, norm, tensors, KIND, meta)


def dense_tensors(mf: io.ModelFile) -> dict[str, np.ndarray]:
    info = stored_layout(mf, KIND)
    out = {k: v for k, v in mf.tensors.items() if not k.endswith((".values", ".mask"))}
    expected, _ = io.float_layout(mf.model_config)
    try:
        for name, shape in info["weights"].items():
            if expected.get(name) != tuple(shape):  # checked before allocating what the file declares
                raise ModelFileError(f"the sparse model file declares {name!r} with shape {shape}, which its "
                                     "model settings do not have; the file is damaged or not slimseg's")
            size = int(np.prod(shape))
            keep = np.unpackbits(mf.tensors[name + ".mask"], count=size).astype(bool)
            dense = np.zeros(size, np.float32)
            dense[keep] = mf.tensors[name + ".values"]
            out[name] = dense.reshape(shape)
    except (KeyError, ValueError) as err:
        raise ModelFileError(f"the sparse model file is damaged ({err}); re-run slimseg compress") from None
    return out


def load(mf: io.ModelFile, meta: dict[str, Any]) -> Runnable:
    model = float32.unet(mf, {k: torch.from_numpy(np.array(v)) for k, v in dense_tensors(mf).items()})
    meta["runtime"] = "float32 eager (dense kernels: sparsity saves disk space, not time)"
    return float32.runnable(model)

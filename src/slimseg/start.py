"""Training that starts from a model: the float model a fine-tuning run begins with, checked.

Float models (including structurally pruned ones, which are float models of smaller widths) can be
trained on; int8 and float-sparse models cannot (their weights are not plain trainable tensors, and
densifying a sparse model would silently lose its sparsity): fine-tune the float model they were
compressed from, then compress again. A fine-tuning run keeps the start's architecture and
normalisation, and by default a smaller learning rate and a shorter budget.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


from . import io
from .config import FINETUNE_EPOCHS, FINETUNE_LR_SCALE
from .errors import InputError

TRAINABLE_KINDS = ("float",)


@dataclass
class StartModel:
    """The model a training run starts from, and what the training record says about it."""

    model_file: io.ModelFile
    source: str  # as the user named it: a path or a built-in name

    def record(self) -> dict[str, Any]:
        training = self.model_file.meta.get("training") or {}
        return {"source": self.source, "kind": self.model_file.kind, "weights_sha256": weights_digest(self.model_file),
                "widths": list(self.model_file.model_config.widths),
                "best_val_dice": training.get("best_val_dice"),
                **({"init": training["init"]} if isinstance(training.get("init"), dict) else {})}


def weights_digest(mf: io.ModelFile) -> str:
    """A short fingerprint of the weights (which exact model a run started from)."""
    return io.tensors_digest(mf)[:16]


def check_trainable(mf: io.ModelFile, source: str) -> None:
    if mf.kind not in TRAINABLE_KINDS:
        raise InputError(f"{source} is a {mf.kind} model, which cannot be trained further (its weights are "
                         "compressed); start from the float model it was compressed from (slimseg train --init "
                         "FLOAT_MODEL), then compress the result again")


def load_start(path_or_name: str | os.PathLike | io.ModelFile, source: str | None = None) -> StartModel:
    """The start of a fine-tuning run: a model file, a built-in name, or model-file content in memory
    (a widget's session model, named ``source``). Raises InputError naming the problem: a missing or
    corrupt file, an unknown name, a kind that cannot be trained."""
    if isinstance(path_or_name, io.ModelFile):
        mf, source = path_or_name, source or "the start model"
    else:
        from .models import resolve_model

        mf = io.load(resolve_model(path_or_name))
        source = source or str(path_or_name)
    check_trainable(mf, source)
    return StartModel(mf, source)


def check_channels(start: StartModel, data_channels: int) -> None:
    """Refuse data whose channel count the start model cannot take (grey models take equal-channel RGB)."""
    want = start.model_file.model_config.in_channels
    if data_channels != want and not (want == 1 and data_channels == 3):
        raise InputError(f"{start.source} takes {want}-channel images but the training images have "
                         f"{data_channels} channels; fine-tune a model trained on such images, choose "
                         "matching channels (--channels), or train a new model without --init")


def describe(start: StartModel) -> str:
    cfg = start.model_file.model_config
    return f"starting from {start.source} ({start.model_file.kind}, widths {list(cfg.widths)})"


__all__ = ["StartModel", "load_start", "check_trainable", "check_channels", "FINETUNE_LR_SCALE",
           "FINETUNE_EPOCHS", "weights_digest"]

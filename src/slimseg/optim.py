"""Optimizers by name, with per-optimizer default learning rates, and LR schedules as pure functions."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from .errors import InputError
from .registry import Registry


@dataclass(frozen=True)
class OptimizerSpec:
    factory: Callable[..., torch.optim.Optimizer]
    default_lr: float


OPTIMIZERS: Registry[OptimizerSpec] = Registry("optimizer")

_SPECS = {
    "sgd": OptimizerSpec(lambda p, lr, wd: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd), 0.05),
    "adam": OptimizerSpec(lambda p, lr, wd: torch.optim.Adam(p, lr=lr, weight_decay=wd), 2e-3),
    "adamw": OptimizerSpec(lambda p, lr, wd: torch.optim.AdamW(p, lr=lr, weight_decay=wd or 1e-2), 2e-3),
    "rmsprop": OptimizerSpec(lambda p, lr, wd: torch.optim.RMSprop(p, lr=lr, alpha=0.99, weight_decay=wd), 1e-3),
    "adagrad": OptimizerSpec(lambda p, lr, wd: torch.optim.Adagrad(p, lr=lr, weight_decay=wd), 2e-2),
    "nadam": OptimizerSpec(lambda p, lr, wd: torch.optim.NAdam(p, lr=lr, weight_decay=wd), 2e-3),
    "radam": OptimizerSpec(lambda p, lr, wd: torch.optim.RAdam(p, lr=lr, weight_decay=wd), 2e-3),
    "adamax": OptimizerSpec(lambda p, lr, wd: torch.optim.Adamax(p, lr=lr, weight_decay=wd), 4e-3),
}
for _name, _spec in _SPECS.items():
    OPTIMIZERS.register(_name)(_spec)


def make_optimizer(name: str, params: Iterable, lr: float | None = None, weight_decay: float = 0.0):
    """The named optimizer; ``lr=None`` takes that optimizer's default."""
    spec = OPTIMIZERS[name]
    return spec.factory(params, lr if lr is not None else spec.default_lr, weight_decay)


def default_lr(name: str) -> float:
    return OPTIMIZERS[name].default_lr


def lr_factor(schedule: str, progress: float, warmup: float = 0.03) -> float:
    """The LR multiplier at ``progress`` in [0, 1] of the run (plateau is handled by the trainer).

    A short linear warm-up, then constant or cosine decay to 1% of the base rate.
    """
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, 0.01)
    if schedule in ("constant", "plateau"):
        return 1.0
    if schedule == "cosine":
        t = (progress - warmup) / (1 - warmup)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))
    raise InputError(f"unknown schedule {schedule!r}; choose one of: constant, cosine, plateau")


class Plateau:
    """Halve the LR when the validation score has not improved for ``patience`` epochs."""

    def __init__(self, patience: int = 3, factor: float = 0.5, min_factor: float = 1e-3) -> None:
        self.patience, self.factor, self.min_factor = patience, factor, min_factor
        self.best = -math.inf
        self.bad = 0
        self.scale = 1.0

    def update(self, score: float) -> float:
        if score > self.best + 1e-4:
            self.best, self.bad = score, 0
        else:
            self.bad += 1
            if self.bad > self.patience:
                self.scale = max(self.scale * self.factor, self.min_factor)
                self.bad = 0
        return self.scale

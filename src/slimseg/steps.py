"""The one loop of optimisation steps: :class:`slimseg.training.Trainer` runs it epoch by epoch,
compression fine-tuning (QAT, pruning recovery) once under its step and time budget."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data.patches import PatchSampler
from .errors import InputError
from .events import Progress, StepEnd


class WeightAverage:
    """An exponential moving average of a model's parameters (buffers are copied), in a copy of the
    model: ``decay`` per step, warmed up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates so
    the first steps' random weights fade fast. Short runs end with a high learning rate's noise in the
    weights; their average validates steadier and predicts better."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        import copy

        self.model, self.decay, self.updates = copy.deepcopy(model), decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1 - d)
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)


@dataclass
class StepLoop:
    """Steps on batches of sampled patches, each yielding a :class:`~slimseg.events.StepEnd`.

    Before each step the optimiser's learning rates are set to their initial values times
    ``lr_factor(progress)``, where progress is the larger of ``step / total_steps`` and the fraction
    of ``budget_s`` spent since the loop was made; the loop stops after the step that reaches either.
    Inputs go to ``device`` (channels-last if asked), the forward pass runs under bf16 autocast if
    asked and the loss in float32. With a ``teacher`` (eval mode) the loss is the mean of the task
    loss and the binary cross-entropy to the teacher's probabilities (distillation). ``after_step``
    runs after each optimiser step. A NaN or infinite loss raises :class:`~slimseg.errors.InputError`.
    """

    model: nn.Module  # in training mode
    sampler: PatchSampler
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    batch_size: int
    lr_factor: Callable[[float], float]
    total_steps: float = math.inf
    budget_s: float = math.inf
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    bf16: bool = False
    channels_last: bool = False
    teacher: nn.Module | None = None
    after_step: Callable[[], None] | None = None
    stage: str = "training"  # names the loop in its error message and progress events
    progress_events: bool = False  # also yield Progress(stage, step, total_steps or 0) after each step

    def __post_init__(self) -> None:
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.step = 0
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def finished(self) -> bool:
        """True once the total steps are done or the time budget is spent."""
        return self.step >= self.total_steps or self.elapsed() >= self.budget_s

    def run(self, steps: float = math.inf, epoch: int = 1) -> Generator[Any, None, list[float]]:
        """Up to ``steps`` more steps (fewer once :meth:`finished`); return their losses."""
        losses: list[float] = []
        while len(losses) < steps:
            progress = max(self.step / self.total_steps, self.elapsed() / self.budget_s)
            scale = self.lr_factor(progress)
            for g, lr0 in zip(self.optimizer.param_groups, self.base_lrs):
                g["lr"] = lr0 * scale
            loss = self._step()
            if not math.isfinite(loss):
                raise InputError(f"{self.stage}: the loss became NaN or infinite; lower the learning rate (--lr)")
            losses.append(loss)
            self.step += 1
            yield StepEnd(self.step, epoch, loss, self.optimizer.param_groups[0]["lr"])
            if self.progress_events:
                total = int(self.total_steps) if math.isfinite(self.total_steps) else 0
                yield Progress(self.stage, self.step, total,
                               f"step {self.step}, loss {loss:.4f}" if self.step % 10 == 0 else "")
            if self.finished():
                break
        return losses

    def _step(self) -> float:
        x, y = self.sampler.batch(self.batch_size)
        x = torch.from_numpy(x).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(y).to(self.device, torch.float32) / 255.0
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(x)
            if self.teacher is not None:
                with torch.no_grad():
                    soft = torch.sigmoid(self.teacher(x).float())
        loss = self.loss_fn(logits.float(), y)
        if self.teacher is not None:
            loss = 0.5 * loss + 0.5 * F.binary_cross_entropy_with_logits(logits.float(), soft)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.after_step is not None:
            self.after_step()
        return float(loss.detach())

"""Short fine-tuning (pruning recovery and QAT) under a wall-clock and step budget, on the trainer's
step loop (:class:`slimseg.steps.StepLoop`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..data.patches import PatchSampler
from ..events import Message
from ..losses import parse_loss
from ..optim import default_lr, lr_factor, make_optimizer
from ..steps import StepLoop


@dataclass
class FinetuneSettings:
    minutes: float
    max_steps: int | None = None
    optimizer: str = "rmsprop"
    loss: str = "bce+jaccard"
    lr: float | None = None  # None: ``lr_scale`` x the optimizer's default
    lr_scale: float = 0.3
    batch_size: int = 8
    bf16: bool = False
    channels_last: bool = False

    def base_lr(self) -> float:
        return self.lr if self.lr is not None else self.lr_scale * default_lr(self.optimizer)


def finetune(model: nn.Module, sampler: PatchSampler, settings: FinetuneSettings, stage: str = "fine-tune",
             after_step: Callable[[], None] | None = None, teacher: nn.Module | None = None,
             ) -> Generator[Any, None, dict[str, Any]]:
    """Train ``model`` (already in training mode) on sampled patches with a cosine-decayed LR.

    ``after_step`` runs after each optimiser step (unstructured pruning re-applies its masks there).
    With a ``teacher`` (the float model, eval mode) the loss is the mean of the task loss and the
    binary cross-entropy to the teacher's probabilities (distillation): a pruned network that lost
    its foreground pathway gets a dense signal to rebuild it from, not only the sparse labels.
    Returns a record: steps, seconds, the mean loss of the first and last tenth of the steps."""
    budget = settings.minutes * 60 if settings.minutes > 0 else math.inf
    max_steps = settings.max_steps if settings.max_steps else None
    if budget == math.inf and max_steps is None:
        return {"steps": 0, "seconds": 0.0}
    loss_fn = parse_loss(settings.loss)
    params = [p for p in model.parameters() if p.requires_grad]
    lr0 = settings.base_lr()
    opt = make_optimizer(settings.optimizer, params, lr0)
    yield Message(f"{stage}: up to {settings.minutes:g} min" + (f" / {max_steps} steps" if max_steps else "")
                  + f", {settings.optimizer} lr {lr0:.1e}, {loss_fn}" + (", bf16 autocast" if settings.bf16 else ""))
    loop = StepLoop(model, sampler, loss_fn, opt, settings.batch_size, lambda p: lr_factor("cosine", p),
                    total_steps=max_steps or math.inf, budget_s=budget, bf16=settings.bf16,
                    channels_last=settings.channels_last, teacher=teacher, after_step=after_step, stage=stage,
                    progress_events=True)
    losses = yield from loop.run()
    step = loop.step
    seconds = loop.elapsed()
    tenth = max(1, len(losses) // 10)
    record = {"steps": step, "seconds": round(seconds, 1),
              "loss_first": float(sum(losses[:tenth]) / tenth) if losses else float("nan"),
              "loss_last": float(sum(losses[-tenth:]) / tenth) if losses else float("nan")}
    yield Message(f"{stage}: {step} steps in {seconds:.0f} s, loss {record['loss_first']:.4f} -> "
                  f"{record['loss_last']:.4f}")
    return record

"""A short fine-tuning loop (pruning recovery and QAT) under a wall-clock and step budget."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.patches import PatchSampler
from ..errors import InputError
from ..events import Message, Progress, StepEnd
from ..losses import parse_loss
from ..optim import default_lr, lr_factor, make_optimizer


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
    fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
    yield Message(f"{stage}: up to {settings.minutes:g} min" + (f" / {max_steps} steps" if max_steps else "")
                  + f", {settings.optimizer} lr {lr0:.1e}, {loss_fn}" + (", bf16 autocast" if settings.bf16 else ""))
    start = time.perf_counter()
    losses: list[float] = []
    step = 0
    while True:
        elapsed = time.perf_counter() - start
        progress = max(elapsed / budget, step / max_steps if max_steps else 0.0)
        if progress >= 1.0:
            break
        lr = lr0 * lr_factor("cosine", progress)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = sampler.batch(settings.batch_size)
        x = torch.from_numpy(x).contiguous(memory_format=fmt)
        y = torch.from_numpy(y).float() / 255.0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.bf16):
            logits = model(x)
            if teacher is not None:
                with torch.no_grad():
                    soft = torch.sigmoid(teacher(x).float())
        loss = loss_fn(logits.float(), y)
        if teacher is not None:
            loss = 0.5 * loss + 0.5 * F.binary_cross_entropy_with_logits(logits.float(), soft)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise InputError(f"{stage}: the loss became NaN or infinite; lower the learning rate")
        losses.append(value)
        step += 1
        yield StepEnd(step, 1, value, lr)
        yield Progress(stage, step, max_steps or 0, f"step {step}, loss {value:.4f}" if step % 10 == 0 else "")
    seconds = time.perf_counter() - start
    tenth = max(1, len(losses) // 10)
    record = {"steps": step, "seconds": round(seconds, 1),
              "loss_first": float(sum(losses[:tenth]) / tenth) if losses else float("nan"),
              "loss_last": float(sum(losses[-tenth:]) / tenth) if losses else float("nan")}
    yield Message(f"{stage}: {step} steps in {seconds:.0f} s, loss {record['loss_first']:.4f} -> "
                  f"{record['loss_last']:.4f}")
    return record

"""Segmentation losses on logits, and weighted hybrids written as strings (``"0.5*bce+dice"``).

Each term maps ``(logits, target)`` of shape (N, C, H, W) to a scalar. The region losses (dice,
jaccard, tversky) are computed per channel over the whole batch ("batch" aggregation, which is
defined even for empty patches) and averaged over channels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import InputError
from .registry import Registry

EPS = 1e-6
LOSSES: Registry = Registry("loss")


def _sums(logits: torch.Tensor, target: torch.Tensor):
    p = torch.sigmoid(logits.float())
    t = target.float()
    dims = (0, 2, 3)
    tp = (p * t).sum(dims)
    return tp, (p * (1 - t)).sum(dims), ((1 - p) * t).sum(dims)


@LOSSES.register("bce")
def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


@LOSSES.register("dice")
def dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    tp, fp, fn = _sums(logits, target)
    return (1 - (2 * tp + EPS) / (2 * tp + fp + fn + EPS)).mean()


@LOSSES.register("jaccard")
def jaccard(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft IoU loss: 1 - |P∩T| / |P∪T| with probabilities P."""
    tp, fp, fn = _sums(logits, target)
    return (1 - (tp + EPS) / (tp + fp + fn + EPS)).mean()


@LOSSES.register("tversky")
def tversky(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.3, beta: float = 0.7) -> torch.Tensor:
    """1 - TP / (TP + alpha FP + beta FN); beta > alpha favours recall."""
    tp, fp, fn = _sums(logits, target)
    return (1 - (tp + EPS) / (tp + alpha * fp + beta * fn + EPS)).mean()


@LOSSES.register("focal")
def focal(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): -alpha_t (1 - p_t)^gamma log p_t, mean over pixels."""
    x, t = logits.float(), target.float()
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p = torch.sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return (alpha_t * (1 - p_t) ** gamma * ce).mean()


_TERM = re.compile(r"^\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?([a-z_]+)\s*$")


@dataclass(frozen=True)
class HybridLoss:
    """A weighted sum of registered loss terms."""

    terms: tuple[tuple[float, str], ...]

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * LOSSES[name](logits, target) for w, name in self.terms)

    def __str__(self) -> str:
        return "+".join(name if w == 1 else f"{w:g}*{name}" for w, name in self.terms)


def parse_loss(spec: str) -> HybridLoss:
    """Parse ``"bce+jaccard"``, ``"0.5*bce+dice"``, ``"focal + 2*dice"`` into a :class:`HybridLoss`."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"empty loss; write e.g. 'bce+jaccard'; terms: {', '.join(LOSSES.names())}")
    terms = []
    for part in spec.lower().split("+"):
        m = _TERM.match(part)
        if not m:
            raise InputError(
                f"cannot read loss term {part.strip()!r} in {spec!r}; write terms like 'bce' or "
                f"'0.5*dice' joined by '+'; terms: {', '.join(LOSSES.names())}"
            )
        weight = float(m.group(1)) if m.group(1) else 1.0
        LOSSES[m.group(2)]  # raises the error listing valid names
        if weight <= 0:
            raise InputError(f"loss weights must be > 0, got {weight} in {spec!r}")
        terms.append((weight, m.group(2)))
    return HybridLoss(tuple(terms))


import math

import numpy as np
import pytest
import torch

from slimseg.errors import InputError
from slimseg.losses import LOSSES, bce, dice, focal, jaccard, parse_loss, tversky


def _logit(p):
    return torch.logit(torch.tensor(p, dtype=torch.float64))


# one channel, probabilities p = [0.8, 0.6, 0.1, 0.3], target t = [1, 1, 0, 0]
P = [0.8, 0.6, 0.1, 0.3]
T = [1.0, 1.0, 0.0, 0.0]
X = _logit(P).reshape(1, 1, 2, 2)
Y = torch.tensor(T, dtype=torch.float64).reshape(1, 1, 2, 2)
TP, FP, FN = 0.8 + 0.6, 0.1 + 0.3, 0.2 + 0.4


def test_bce_hand_computed():
    want = -(math.log(0.8) + math.log(0.6) + math.log(0.9) + math.log(0.7)) / 4
    assert bce(X, Y).item() == pytest.approx(want, rel=1e-5)


def test_dice_and_jaccard_hand_computed():
    assert dice(X, Y).item() == pytest.approx(1 - 2 * TP / (2 * TP + FP + FN), abs=1e-5)
    assert jaccard(X, Y).item() == pytest.approx(1 - TP / (TP + FP + FN), abs=1e-5)


def test_tversky_hand_computed_and_dice_special_case():
    assert tversky(X, Y).item() == pytest.approx(1 - TP / (TP + 0.3 * FP + 0.7 * FN), abs=1e-5)
    assert tversky(X, Y, alpha=0.5, beta=0.5).item() == pytest.approx(dice(X, Y).item(), abs=1e-6)


def test_focal_hand_computed():
    terms = []
    for p, t in zip(P, T):
        pt = p if t else 1 - p
        at = 0.25 if t else 0.75
        terms.append(-at * (1 - pt) ** 2 * math.log(pt))
    assert focal(X, Y).item() == pytest.approx(np.mean(terms), rel=1e-5)


def test_perfect_prediction_gives_near_zero_region_losses():
    x = torch.where(Y > 0, 20.0, -20.0)
    for name in ("dice", "jaccard", "tversky"):
        assert LOSSES[name](x, Y).item() < 1e-6


def test_hybrid_is_weighted_sum():
    loss = parse_loss("0.5*bce + dice")
    assert loss(X, Y).item() == pytest.approx(0.5 * bce(X, Y).item() + dice(X, Y).item(), rel=1e-6)
    assert str(parse_loss("bce+jaccard")) == "bce+jaccard"
    assert parse_loss("2*focal+dice").terms == ((2.0, "focal"), (1.0, "dice"))


def test_hybrid_gradient_flows():
    x = X.clone().requires_grad_(True)
    parse_loss("bce+jaccard")(x, Y).backward()
    assert x.grad is not None and torch.all(torch.isfinite(x.grad)) and x.grad.abs().sum() > 0


@pytest.mark.parametrize("spec", ["", "bce+", "crossentropy", "bce*2", "-1*dice", "0*dice"])
def test_bad_loss_specs_are_refused_with_the_valid_names(spec):
    with pytest.raises(InputError) as err:
        parse_loss(spec)
    assert "bce" in str(err.value) or "weights" in str(err.value)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(InputError, match="jaccard"):
        parse_loss("bce+iou")

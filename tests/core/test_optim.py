import pytest
import torch

from slimseg.errors import InputError
from slimseg.optim import OPTIMIZERS, Plateau, default_lr, lr_factor, make_optimizer


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam"])
def test_required_optimizers_exist_and_take_a_step(name):
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = make_optimizer(name, [w], lr=0.1)
    (w ** 2).sum().backward()
    opt.step()
    assert (w.detach().abs() < torch.tensor([1.0, 2.0])).all()
    assert opt.param_groups[0]["lr"] == 0.1


def test_default_lr_and_weight_decay():
    w = torch.nn.Parameter(torch.ones(2))
    opt = make_optimizer("rmsprop", [w], weight_decay=1e-4)
    assert opt.param_groups[0]["lr"] == default_lr("rmsprop")
    assert opt.param_groups[0]["weight_decay"] == 1e-4
    assert isinstance(make_optimizer("SGD", [w]), torch.optim.SGD)
    assert make_optimizer("sgd", [w]).param_groups[0]["momentum"] == 0.9


def test_unknown_optimizer_lists_names():
    with pytest.raises(InputError, match="rmsprop"):
        make_optimizer("lbfgs2", [torch.nn.Parameter(torch.ones(1))])
    assert "adam" in OPTIMIZERS


def test_schedules():
    assert lr_factor("constant", 0.5) == 1.0
    assert lr_factor("cosine", 1.0) == pytest.approx(0.01)
    assert lr_factor("cosine", 0.5 * (1 - 0.03) + 0.03) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor("cosine", 0.0) == pytest.approx(0.01)  # warm-up starts low
    assert lr_factor("cosine", 0.2) > lr_factor("cosine", 0.8)
    with pytest.raises(InputError):
        lr_factor("step", 0.5)


def test_plateau_halves_after_patience():
    p = Plateau(patience=1)
    assert p.update(0.5) == 1.0
    assert p.update(0.5) == 1.0  # first stale epoch
    assert p.update(0.4) == 0.5  # second: beyond patience
    assert p.update(0.9) == 0.5  # improvement keeps the scale

"""The one step loop: budgets, LR schedule, events, distillation hook, NaN guard."""

import math

import numpy as np
import pytest
import torch

from slimseg.config import ModelConfig
from slimseg.data.patches import PatchSampler, targets_from_labels
from slimseg.errors import InputError
from slimseg.events import Progress, StepEnd, run
from slimseg.losses import parse_loss
from slimseg.model import UNet
from slimseg.steps import StepLoop, WeightAverage


def make_loop(disks, **kw):
    images, labels = disks
    torch.manual_seed(0)
    model = UNet(ModelConfig(widths=(4, 8))).train()
    sampler = PatchSampler([im[None].astype(np.float32) / 255 for im in images],
                           [targets_from_labels(lab) for lab in labels], 32, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    args = dict(loss_fn=parse_loss("bce+dice"), lr_factor=lambda p: 1 - p)
    args.update(kw)
    return StepLoop(model, sampler, optimizer=opt, batch_size=2, **args)


def test_runs_epochs_until_the_total_steps_with_the_lr_schedule(disks):
    loop = make_loop(disks, total_steps=5)
    events = []
    first = run(loop.run(3, epoch=1), events.append)
    second = run(loop.run(3, epoch=2), events.append)  # only 2 steps left of the total
    assert len(first) == 3 and len(second) == 2 and loop.step == 5 and loop.finished()
    assert [(e.step, e.epoch) for e in events] == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)]
    assert [e.lr for e in events] == pytest.approx([0.1 * (1 - k / 5) for k in range(5)])
    assert [e.loss for e in events] == first + second and all(math.isfinite(v) for v in first)


def test_time_budget_progress_events_and_after_step(disks):
    calls = []
    loop = make_loop(disks, budget_s=1e-9, after_step=lambda: calls.append(1), stage="fine-tune",
                     progress_events=True)
    events = []
    losses = run(loop.run(), events.append)  # no step limit: the spent budget stops it after one step
    assert len(losses) == 1 and calls == [1]
    assert isinstance(events[0], StepEnd) and events[1] == Progress("fine-tune", 1, 0, "")


def test_teacher_adds_distillation_and_bf16_channels_last_run(disks):
    plain = make_loop(disks, total_steps=1)
    taught = make_loop(disks, total_steps=1, teacher=UNet(ModelConfig(widths=(4, 8))).eval())
    assert run(plain.run()) != run(taught.run())  # same batch and weights, another loss
    fast = make_loop(disks, total_steps=2, bf16=True, channels_last=True)
    assert len(run(fast.run())) == 2


def test_distillation_is_the_mean_of_the_task_and_teacher_losses(disks):
    teacher = UNet(ModelConfig(widths=(4, 8))).eval()
    loop = make_loop(disks, total_steps=1, teacher=teacher)
    x, y = PatchSampler(loop.sampler.images, loop.sampler.targets, 32, seed=0).batch(2)  # the loop's batch
    x, y = torch.from_numpy(x), torch.from_numpy(y).float() / 255.0
    with torch.no_grad():
        logits, soft = loop.model(x), torch.sigmoid(teacher(x))
        task = parse_loss("bce+dice")(logits, y)
        distil = torch.nn.functional.binary_cross_entropy_with_logits(logits, soft)
    assert run(loop.run()) == pytest.approx([float(0.5 * task + 0.5 * distil)], rel=1e-5)


def test_nan_loss_stops_with_a_clear_error(disks):
    loop = make_loop(disks, loss_fn=lambda logits, y: logits.sum() * float("nan"), stage="QAT")
    with pytest.raises(InputError, match="QAT: the loss became NaN"):
        run(loop.run(3))


def test_the_weight_average_warms_up_then_decays():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average.update(model)  # decay min(0.9, 2/11): mostly the new weights
    assert average.model.weight.item() == pytest.approx(1 - 2 / 11)
    for _ in range(200):
        average.update(model)
    assert average.model.weight.item() == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():
        model.weight.fill_(2.0)
    average.update(model)  # warmed up: the decay itself
    assert average.model.weight.item() == pytest.approx(0.9 * 1.0 + 0.1 * 2.0, abs=1e-5)
    assert model.weight.item() == 2.0  # the model itself is left alone

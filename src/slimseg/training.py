"""Training: ``Trainer.fit()`` is a generator of events that returns a :class:`TrainResult`.

The trainer keeps the best model (by validation Dice) as it goes, so a run stopped from outside
(the widget's Stop, a closed generator) still has :meth:`Trainer.result`. Between epochs it can write
a :mod:`~slimseg.checkpoint` that :meth:`Trainer.restore` continues from, as if never stopped.
A run that ends without learning (best validation Dice below ``FAILED_DICE`` although the validation
labels hold objects) raises :class:`~slimseg.errors.TrainingFailedError` instead of returning a result.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ckpt_file
from . import io
from .config import ModelConfig, NormConfig, PredictConfig, TrainConfig, to_dict
from .data.axes import count_channels
from .data.checks import check_pairs
from .data.normalize import Normalizer
from .data.patches import PatchSampler, split_indices, split_regions, targets_from_labels
from .device import resolve_device, use_bf16
from .errors import InputError, TrainingFailedError
from .events import EpochEnd, Message, run
from .losses import parse_loss
from .metrics import pooled_dice
from .model import UNet, count_parameters, recalibrate_batchnorm
from .optim import Plateau, default_lr, lr_factor, make_optimizer
from .predict import image_probabilities
from .scale import median_diameter
from .segmenter import Segmenter, predict_config_of
from .start import FINETUNE_LR_SCALE, StartModel, check_channels
from .start import describe as describe_start
from .steps import StepLoop, WeightAverage
from .tune import beats_start, instance_f1, tune_thresholds

BN_BATCHES_EPOCH = 4
BN_BATCHES_FINAL = 16
VAL_PREDICT = PredictConfig(tile=512, overlap=32, batch_size=4)  # how validation images are predicted
# A best validation Dice below this means the model finds (almost) none of the objects: a failed run, not a model.
FAILED_DICE = 0.05


@dataclass
class TrainResult:
    model: UNet  # best weights, eval mode, on the CPU
    model_config: ModelConfig
    norm: NormConfig
    train_config: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_dice: float = float("nan")
    best_epoch: int = 0
    stop_reason: str = ""
    split: dict[str, list[str]] = field(default_factory=dict)
    predict_config: PredictConfig = field(default_factory=PredictConfig)  # thresholds tuned on validation
    tuned_instance_f1: float = float("nan")
    init: dict[str, Any] | None = None  # the model training started from (StartModel.record), if any

    def segmenter(self) -> Segmenter:
        """The trained model, ready to predict with its tuned thresholds."""
        return Segmenter.from_module(self.model, self.norm, {"predict": to_dict(self.predict_config)})

    def save(self, path: str | Path, overwrite: bool = False, metrics: dict[str, Any] | None = None) -> Path:
        """Write the model file (atomically; an existing file only with ``overwrite``)."""
        return io.save(to_model_file(self, metrics), path, overwrite=overwrite)

    def record(self) -> dict[str, Any]:
        """The training record stored in the model file."""
        return {
            "train_config": to_dict(self.train_config),
            "history": self.history,
            "best_val_dice": self.best_val_dice,
            "best_epoch": self.best_epoch,
            "stop_reason": self.stop_reason,
            "split": self.split,
            "parameters": count_parameters(self.model),
            "tuned_instance_f1": self.tuned_instance_f1,
            **({"init": self.init} if self.init is not None else {}),
        }


class Trainer:
    """Train a U-Net on paired images and instance labels (numpy arrays, any sizes). With ``init`` (a
    :class:`~slimseg.start.StartModel`), fine-tune that model: its architecture and normalisation
    replace ``model_config`` and ``norm``, and ``lr=None`` means a fraction of the optimizer's own."""

    def __init__(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                 config: TrainConfig = TrainConfig(), model_config: ModelConfig | None = None,
                 norm: NormConfig = NormConfig(), names: Sequence[str] | None = None,
                 init: StartModel | None = None) -> None:
        self.config = config
        if init is not None:
            check_channels(init, count_channels(images, names))
            model_config, norm = init.model_file.model_config, init.model_file.norm
        self.init = init
        self.norm = norm
        in_ch = model_config.in_channels if model_config else count_channels(images, names)
        self.model_config = model_config or ModelConfig(in_channels=in_ch)
        self.loss_fn = parse_loss(config.loss)
        make_optimizer(config.optimizer, [torch.zeros(1, requires_grad=True)])  # validate the name now
        images, labels = check_pairs(images, labels, self.model_config.in_channels, names)
        names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
        split_seed = config.seed if config.split_seed is None else config.split_seed
        regions = split_regions(images[0], labels[0], config.val_fraction, names[0]) if len(images) == 1 else None
        if regions is not None:  # one annotated image: validate on a region of it, train on the rest
            names, images, labels = regions
            tr, va = [0], [1]
        else:
            tr, va = split_indices(len(images), config.val_fraction, split_seed)
        self.split = {"train": [names[i] for i in tr], "val": [names[i] for i in va]}
        if not any(labels[i].any() for i in tr):
            raise InputError("the training split holds no objects; annotate more images or lower val_fraction")
        self.sampler = PatchSampler([Normalizer.fit(images[i], norm)(images[i]) for i in tr],
                                    [targets_from_labels(labels[i]) for i in tr],
                                    config.patch_size, config.seed, config.augment, config.zoom)
        self.val = [(images[i], labels[i]) for i in va]
        self.device = resolve_device(config.device)
        self.bf16 = use_bf16(config.bf16, self.device)
        torch.manual_seed(config.seed)
        self.model = UNet(self.model_config)
        if init is not None:
            self.model.load_state_dict(init.model_file.state_dict())
        self.model = self.model.to(self.device)
        self.lr = config.lr if config.lr is not None or init is None else default_lr(config.optimizer) * FINETUNE_LR_SCALE
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # the weights validated, kept as the best and returned: the model's own or their moving average
        self.average = WeightAverage(self.model, config.ema) if config.ema > 0 else None
        self._eval_model = self.average.model if self.average is not None else self.model
        self._best_state: dict[str, torch.Tensor] | None = None
        self._result = TrainResult(self.model, self.model_config, norm, config, split=self.split,
                                   init=init.record() if init is not None else None,
                                   predict_config=PredictConfig(trained_diameter=round(median_diameter(
                                       labels[i] for i in tr), 2)))
        self.data_fingerprint = ckpt_file.fingerprint(names, images, labels)
        self._resume: ckpt_file.Checkpoint | None = None
        self._stale, self._best_score = 0, -math.inf  # epochs without a better score, and the best score

    @property
    def epochs_done(self) -> int:
        """Epochs trained and validated so far (in this run and the checkpoint it continues)."""
        return len(self._result.history)

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self, checkpoint: str | Path | None = None, checkpoint_every: int = 1
            ) -> Generator[Any, None, TrainResult]:
        """Train epoch by epoch, yielding events; return :meth:`result`. With ``checkpoint``, write a
        checkpoint there (atomically) after every ``checkpoint_every``-th epoch and after the last."""
        cfg = self.config
        if checkpoint_every < 1:
            raise InputError(f"checkpoint_every must be >= 1 epoch, got {checkpoint_every}")
        steps_per_epoch = cfg.steps_per_epoch()
        opt = make_optimizer(cfg.optimizer, self.model.parameters(), self.lr, cfg.weight_decay)
        plateau = Plateau() if cfg.schedule == "plateau" else None
        yield Message(
            f"training on {self.device.type}{' with bf16 autocast' if self.bf16 else ''}: "
            f"{len(self.split['train'])} train / {len(self.split['val'])} validation images, "
            f"{count_parameters(self.model):,} parameters, {cfg.optimizer} + {self.loss_fn}")
        if self.init is not None and self._resume is None:
            start_dice = self._validate(BN_BATCHES_EPOCH) if self.val else float("nan")
            self._result.init = {**(self._result.init or {}), "val_dice_before": start_dice}
            yield Message(f"{describe_start(self.init)}, learning rate {opt.param_groups[0]['lr']:.2g}"
                          + (f"; validation Dice before fine-tuning {start_dice:.4f}" if self.val else ""))
        loop = StepLoop(self.model, self.sampler, self.loss_fn, opt, cfg.batch_size,
                        lambda p: lr_factor(cfg.schedule, p) * (plateau.scale if plateau else 1.0),
                        total_steps=steps_per_epoch * cfg.epochs,
                        budget_s=cfg.minutes * 60 if cfg.minutes else math.inf,
                        device=self.device, bf16=self.bf16, channels_last=cfg.channels_last,
                        after_step=(lambda: self.average.update(self.model)) if self.average is not None else None)
        self._opt, self._plateau, self._loop = opt, plateau, loop
        if self._resume is not None:
            self._continue(self._resume)
            yield Message(f"resuming after epoch {self.epochs_done} (step {loop.step}, "
                          f"{loop.elapsed():.0f} s of training so far)")
        self._result.stop_reason = "epochs"
        reason = self._stop_reason(loop.elapsed()) if self.epochs_done else None
        for epoch in range(self.epochs_done + 1, cfg.epochs + 1) if reason is None else ():
            self.model.train()
            losses = yield from loop.run(steps_per_epoch, epoch)
            val = self._validate(BN_BATCHES_EPOCH)
            score = val if self.val else -float(np.mean(losses))
            is_best = score > self._best_score
            if is_best:
                self._best_score, self._stale = score, 0
                self._best_state = copy.deepcopy(self._eval_model.state_dict())
                self._result.best_val_dice, self._result.best_epoch = val, epoch
            else:
                self._stale += 1
            if plateau:
                plateau.update(score)
            elapsed = loop.elapsed()
            row = {"epoch": epoch, "step": loop.step, "train_loss": float(np.mean(losses)), "val_dice": val,
                   "lr": opt.param_groups[0]["lr"], "elapsed_s": elapsed}
            self._result.history.append(row)
            reason = self._stop_reason(elapsed)
            if checkpoint is not None and (epoch % checkpoint_every == 0 or reason or epoch == cfg.epochs):
                ckpt_file.save(self.checkpoint(), checkpoint)
            yield EpochEnd(epoch, loop.step, row["train_loss"], val, self._result.best_val_dice, is_best,
                           elapsed, row["lr"])
            if reason:
                break
        if reason:
            self._result.stop_reason = reason
            if reason == "early stopping":
                yield Message(f"early stopping: no better validation Dice for {cfg.patience} epochs")
        self._check_learned()
        return self.result()

    def _check_learned(self) -> None:
        """Raise :class:`TrainingFailedError` when the best validation Dice is below ``FAILED_DICE`` and the
        validation labels hold objects. Without such labels the Dice cannot tell (a diverged loss is
        caught by the step loop)."""
        best = self._result.best_val_dice
        if any(lab.any() for _, lab in self.val) and not best >= FAILED_DICE:  # also NaN
            lr = self.lr if self.lr is not None else default_lr(self.config.optimizer)
            raise TrainingFailedError(
                f"training failed: the best validation Dice is {best:.4f} after {len(self._result.history)} "
                f"epoch(s) (below {FAILED_DICE}), so the model finds almost none of the objects; lower the "
                f"learning rate (it was {lr:g}), check that the labels match the images, or train for more epochs")

    def _stop_reason(self, elapsed: float) -> str | None:
        """Why training ends after the epoch just done (besides the epoch count), or None."""
        if elapsed >= self._loop.budget_s:
            return "time budget"
        if self.config.patience is not None and self._stale >= self.config.patience:
            return "early stopping"
        return None

    def best_state(self) -> dict[str, torch.Tensor] | None:
        """A copy of the best weights so far (None before the first epoch): what a stop now would keep."""
        return None if self._best_state is None else copy.deepcopy(self._best_state)

    def load_best(self, state: dict[str, torch.Tensor]) -> None:
        """Make ``state`` (from :meth:`best_state`) the best weights, for :meth:`result` to return."""
        self._best_state = state

    # -- checkpoints ------------------------------------------------------------------------------
    def checkpoint(self) -> ckpt_file.Checkpoint:
        """The run as it stands after its last epoch (call between epochs: :meth:`fit` does)."""
        def arrays(state: dict[str, torch.Tensor], prefix: str) -> dict[str, np.ndarray]:
            return {f"{prefix}/{k}": v.detach().cpu().contiguous().numpy() for k, v in state.items()}

        opt_meta, opt_tensors = ckpt_file.optimizer_state(self._opt)
        rng_meta, rng_tensors = ckpt_file.rng_state(self.sampler.rng, self.device)
        p = self._plateau
        state = {"epoch": self.epochs_done, "step": self._loop.step, "elapsed_s": self._loop.elapsed(),
                 "stale": self._stale, "best_score": self._best_score, "best_val_dice": self._result.best_val_dice,
                 "best_epoch": self._result.best_epoch, "history": self._result.history,
                 "plateau": None if p is None else {"best": p.best, "bad": p.bad, "scale": p.scale}}
        tensors = {**arrays(self.model.state_dict(), "model"), **opt_tensors, **rng_tensors}
        if self.average is not None:
            tensors.update(arrays(self.average.model.state_dict(), "ema"))
            state["ema_updates"] = self.average.updates
        if self._best_state is not None:
            tensors.update(arrays(self._best_state, "best"))
        return ckpt_file.Checkpoint(self.model_config, self.norm, self.config, self.data_fingerprint,
                                    {"state": state, "optimizer": opt_meta, "rng": rng_meta}, tensors)

    def restore(self, checkpoint: ckpt_file.Checkpoint) -> None:
        """Continue from ``checkpoint`` when :meth:`fit` runs: the same weights, optimizer state, schedule
        position, counters and random streams. Refuses (naming what differs) a checkpoint of other
        images or settings; only the budget (:data:`slimseg.checkpoint.BUDGET_FIELDS`) may change, and
        a time budget counts the training time before the checkpoint too."""
        diff = ckpt_file.differences(checkpoint, self.model_config, self.norm, self.config, self.data_fingerprint)
        if diff:
            raise InputError("the checkpoint holds another run, so it cannot be continued with these images "
                             f"and settings: {'; '.join(diff[:6])}{' ...' if len(diff) > 6 else ''}; give the "
                             "same data and options as that run (only epochs, minutes and patience may change)")
        state = checkpoint.meta["state"]
        try:
            history = [dict(row) for row in state["history"]]
            best = float(state["best_val_dice"]), int(state["best_epoch"])
            self.model.load_state_dict(_state_of(checkpoint, "model"))
            if self.average is not None:  # a checkpoint from before weight averaging starts it from its weights
                averaged = _state_of(checkpoint, "ema")
                self.average.model.load_state_dict(averaged or self.model.state_dict())
                self.average.updates = int(state["ema_updates"]) if averaged else 0
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise InputError(f"the checkpoint's training state is damaged ({type(err).__name__}: {err})") from None
        self._result.history = history
        self._result.best_val_dice, self._result.best_epoch = best
        self._best_state = _state_of(checkpoint, "best") or None
        self._resume = checkpoint

    def _continue(self, checkpoint: ckpt_file.Checkpoint) -> None:
        """Put the optimizer, loop and random streams of ``checkpoint`` in place (in :meth:`fit`)."""
        state = checkpoint.meta["state"]
        try:
            ckpt_file.load_optimizer_state(self._opt, checkpoint.meta["optimizer"], checkpoint.tensors)
            ckpt_file.set_rng_state(self.sampler.rng, self.device, checkpoint.meta["rng"], checkpoint.tensors)
            self._loop.step = int(state["step"])
            self._loop.start -= float(state["elapsed_s"])
            self._stale, self._best_score = int(state["stale"]), float(state["best_score"])
            if self._plateau is not None and state["plateau"] is not None:
                self._plateau.best, self._plateau.bad, self._plateau.scale = (
                    state["plateau"]["best"], state["plateau"]["bad"], state["plateau"]["scale"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise InputError(f"the checkpoint's training state is damaged ({type(err).__name__}: {err})") from None
        self._resume = None

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x

    def _bn_batches(self):
        while True:
            yield self._to_device(torch.from_numpy(self.sampler.batch(self.config.batch_size)[0]))

    def _validate(self, bn_batches: int) -> float:
        """Pooled pixel Dice of the foreground on the validation images (eval mode, fresh BN stats)."""
        recalibrate_batchnorm(self._eval_model, self._bn_batches(), bn_batches)
        self._eval_model.eval()
        if not self.val:
            return float("nan")
        return pooled_dice([p[0] > 0.5 for p in self._val_probabilities()], [lab for _, lab in self.val])

    def _val_probabilities(self) -> list[np.ndarray]:
        return run(image_probabilities(self._infer, [img for img, _ in self.val], self.norm, VAL_PREDICT,
                                       self.model_config.in_channels, self.model_config.out_channels))

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self._eval_model(self._to_device(x)).float().cpu()

    def result(self, recalibrate: bool = True, tune: bool = True) -> TrainResult:
        """The best model so far (usable after a stop), BatchNorm re-estimated, on the CPU, eval mode,
        with the post-processing thresholds tuned for instance F1 on the validation images.
        ``recalibrate=False`` keeps the BatchNorm statistics the best epoch was validated with, and
        ``tune=False`` leaves the tuning to a later :meth:`tune` (a quicker result, for a stop that
        must not wait)."""
        net = self._eval_model
        if self._best_state is not None:
            net.load_state_dict(self._best_state)
        if recalibrate or self._best_state is None:
            recalibrate_batchnorm(net, self._bn_batches(), BN_BATCHES_FINAL)
        net.eval()
        if tune:
            self.tune()
        model = UNet(self.model_config)
        model.load_state_dict({k: v.detach().cpu() for k, v in net.state_dict().items()})
        self._result.model = model.eval()
        return self._result

    def tune(self) -> TrainResult:
        """Tune the post-processing thresholds of the model :meth:`result` gave for instance F1 on the
        validation images (no-op without them); return that result, updated."""
        if self.val:
            probs, labels = self._val_probabilities(), [lab for _, lab in self.val]
            base = self._result.predict_config  # the objects' size in the training images
            cfg, f1 = tune_thresholds(probs, labels, base)
            if self.init is not None:  # fine-tuning: a few validation images do not outvote the start's tuning
                start = dataclasses.replace(predict_config_of(self.init.model_file.meta),
                                            trained_diameter=base.trained_diameter)
                start_f1 = instance_f1(probs, labels, start)
                if not beats_start(f1, start_f1, sum(len(np.unique(lab[lab > 0])) for lab in labels)):
                    cfg, f1 = start, start_f1
            self._result.predict_config, self._result.tuned_instance_f1 = cfg, f1
        return self._result


def _state_of(checkpoint: ckpt_file.Checkpoint, prefix: str) -> dict[str, torch.Tensor]:
    """The state dict stored under ``prefix/`` (``model`` or ``best``) in a checkpoint."""
    cut = len(prefix) + 1
    return {k[cut:]: torch.from_numpy(np.array(v)) for k, v in checkpoint.tensors.items() if k.startswith(prefix + "/")}


def to_model_file(result: TrainResult, metrics: dict[str, Any] | None = None) -> io.ModelFile:
    """The model file content of a training result (weights, configs, record, metrics)."""
    meta: dict[str, Any] = {"training": result.record(), "predict": to_dict(result.predict_config)}
    if metrics:
        meta["metrics"] = metrics
    return io.from_module(result.model, result.model_config, result.norm, "float", **meta)

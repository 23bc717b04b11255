"""The Train widget: image + labels layers -> a U-Net, trained in a worker with a live plot; Stop keeps the best
(in the session, and in a file when autosave is ticked)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)

from ..config import FINETUNE_EPOCHS
from ..errors import InputError
from ..events import EpochEnd, Message, StepEnd
from ..data.axes import count_channels
from ._layers import CHANNEL_AXES, channels_of, edited, is_empty, layer_choices, predicted_labels, training_pairs
from ._models import BUILTIN, FILTER, FROM_FILE, builtin_choices, is_builtin, load_builtin, load_file, save_model
from ._session import session_models
from ._style import MAX_WIDTH
from ._worker import Job, JobHost, notify_error, on_close, until_stopped

if TYPE_CHECKING:
    import napari

LOSS_PRESETS = ("bce+jaccard", "bce+dice", "0.5*bce+dice", "focal+dice", "bce+tversky")
NEW_MODEL = "new U-Net"


def _warm_up() -> None:
    """Do in the GUI thread, while the widget opens, the imports a training run would otherwise do in
    its worker: an import holds the GIL for long stretches (torch.optim's first optimizer imports
    torch._dynamo), which would freeze napari's event loop at the start of training."""
    import torch

    from .. import training  # noqa: F401
    from ..optim import make_optimizer

    make_optimizer("sgd", [torch.zeros(1, requires_grad=True)])


@dataclass
class _Run:
    """What a training job hands back: the trainer, its result (None: stopped before a first epoch), and
    whether the thresholds are tuned yet."""

    trainer: Any
    result: Any
    tuned: bool


def parse_lr(text: str) -> float | None:
    """'' -> None (the optimizer's default); '1e-4' or '0.0001' -> 1e-4."""
    text = text.strip()
    if not text:
        return None
    try:
        lr = float(text)
    except ValueError:
        raise InputError(f"learning rate {text!r} is not a number; write e.g. 0.001 or 1e-3") from None
    if not 0 < lr < 10:
        raise InputError(f"learning rate {lr:g} is out of range; use a value like 1e-3 (0 < lr < 10)")
    return lr


class TrainWidget(JobHost, Container):
    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from ..config import ModelConfig, TrainConfig
        from ..losses import LOSSES
        from ..optim import OPTIMIZERS, default_lr

        _warm_up()
        cfg, model_cfg = TrainConfig(), ModelConfig()  # the form starts from their defaults

        self.viewer = viewer
        self._default_lr = default_lr
        self.image_layers = Select(label="images", choices=layer_choices(viewer, "Image"),
                             tooltip="one or more Image layers (a layer may hold a stack of 2D images)")
        self.label_layers = Select(label="labels", choices=layer_choices(viewer, "Labels"),
                             tooltip="the matching Labels layers (ground truth), paired in layer-list order")
        self.pairs = Label(value="")
        self.store = session_models(viewer)
        self.start_from = ComboBox(label="start from",
                                   choices=lambda _w: [NEW_MODEL, *self.store.names(), *builtin_choices(), FROM_FILE],
                                   tooltip="train a new U-Net, or fine-tune a float model (of this session, "
                                           "built in, or from a file): its architecture is kept, and an "
                                           "untouched learning rate becomes a tenth of the optimizer's own")
        self.start_file = FileEdit(label="start model file", mode="r", filter=FILTER, visible=False)
        self.start_from.changed.connect(lambda v: setattr(self.start_file, "visible", v == FROM_FILE))
        self.store.changed.connect(self._models_changed)
        self.as_channels = CheckBox(text="the image layers are channels of one image", value=False,
                                    tooltip="e.g. nuclei + membrane layers of one image, with one Labels layer")
        self.channel_axis = ComboBox(label="channel axis", choices=CHANNEL_AXES, value=None,
                                     tooltip="where a layer holds its channels (default: the axis its labels lack)")
        self.optimizer = ComboBox(label="optimizer", choices=OPTIMIZERS.names(), value=cfg.optimizer)
        self.lr = LineEdit(label="learning rate", value=f"{default_lr(cfg.optimizer):g}",
                           tooltip="e.g. 0.001 or 1e-3; empty = the optimizer's default")
        self.loss_preset = ComboBox(label="loss preset", choices=[*LOSSES.names(), *LOSS_PRESETS], value=cfg.loss)
        self.loss = LineEdit(label="loss", value=cfg.loss,
                             tooltip=f"a term or weighted sum, e.g. 0.5*bce+dice; terms: {', '.join(LOSSES.names())}")
        self.epochs = SpinBox(label="epochs", value=cfg.epochs, min=1, max=100000)
        self.minutes = FloatSpinBox(label="max minutes", value=cfg.minutes or 0.0, min=0.0, max=10080.0, step=0.5,
                                    tooltip="wall-clock budget; 0 = no limit (whichever of epochs/minutes ends first)")
        self.batch = SpinBox(label="batch size", value=cfg.batch_size, min=1, max=1024)
        self.patch = SpinBox(label="patch size", value=cfg.patch_size, min=16, max=4096, step=16)
        self.patches_per_epoch = SpinBox(label="patches/epoch", value=cfg.patches_per_epoch, min=1, max=1_000_000)
        self.val_fraction = FloatSpinBox(label="validation fraction", value=cfg.val_fraction, min=0.0, max=0.9,
                                         step=0.05)
        self.seed = SpinBox(label="seed", value=cfg.seed, min=0, max=2**31 - 1)
        self.depth = SpinBox(label="model depth", value=model_cfg.depth, min=2, max=7, tooltip="U-Net levels")
        self.base_width = SpinBox(label="base width", value=model_cfg.widths[0], min=1, max=512,
                             tooltip="channels of the first level; each level doubles them")
        self.start_button = PushButton(text="Start training")
        self.retrain_button = PushButton(text="Retrain on corrected labels",
                                         tooltip="fine-tune the model that made a Predict labels layer on that "
                                                 "layer as you corrected it (paint, erase, fill), with its image")
        self.stop_button = PushButton(text="Stop", enabled=False,
                                      tooltip="stop at the next step and keep the best model so far")
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.progress.native.setFormat("step %v of %m")
        self.status = Label(value="")
        self.save_path = FileEdit(label="save to", mode="w", filter=FILTER)
        self.overwrite = CheckBox(text="overwrite an existing file", value=False)
        self.autosave = CheckBox(text="autosave when training ends or is stopped", value=False,
                                 tooltip="write the best model to 'save to' at the end of every run")
        self.save_button = PushButton(text="Save model", enabled=False)
        buttons = Container(widgets=[self.start_button, self.stop_button], layout="horizontal", labels=False)
        buttons.margins = (0, 0, 0, 0)
        super().__init__(widgets=[
            self.image_layers, self.label_layers, self.pairs, self.as_channels, self.channel_axis, self.start_from,
            self.start_file, self.optimizer,
            self.lr, self.loss_preset, self.loss,
            self.epochs, self.minutes, self.batch, self.patch, self.patches_per_epoch, self.val_fraction,
            self.seed, self.depth, self.base_width, buttons, self.retrain_button, self.progress, self.status])
        from ._plot import make_plot

        self.plot = make_plot()
        self.extend([self.save_path, self.overwrite, self.autosave, self.save_button])
        self.native.layout().insertWidget(self.index(self.status) + 1, self.plot.native)
        self.max_width = MAX_WIDTH
        self.status.native.setWordWrap(True)
        self.last_model: str | None = None  # name of this widget's latest model in the session store
        self.image_layers.native.setMaximumHeight(80)
        self.label_layers.native.setMaximumHeight(80)
        self.image_layers.changed.connect(self._show_pairs)
        self.label_layers.changed.connect(self._show_pairs)
        self.as_channels.changed.connect(self._show_pairs)
        self.optimizer.changed.connect(self._optimizer_changed)
        self.loss_preset.changed.connect(lambda v: setattr(self.loss, "value", v))
        self.start_button.changed.connect(self.start)
        self.retrain_button.changed.connect(self.retrain)
        self.stop_button.changed.connect(self.stop)
        self.save_button.changed.connect(self.save)
        on_close(self.native, self._on_close)
        self._lr_default_text = self.lr.value
        self._epochs_default = cfg.epochs
        self._preselect_pair()

    def _models_changed(self) -> None:
        if not self.closed:
            try:
                self.start_from.reset_choices()
            except RuntimeError:  # the panel's Qt widgets are gone
                pass

    def _preselect_pair(self) -> None:
        """Select the one Image and the one Labels layer when the viewer holds exactly those, of one shape."""
        images, labels = self.image_layers.choices, self.label_layers.choices
        if len(images) == 1 and len(labels) == 1 and images[0].data.shape[-2:] == labels[0].data.shape[-2:]:
            self.image_layers.value, self.label_layers.value = [images[0]], [labels[0]]

    # -- form ---------------------------------------------------------------------------------------
    def _show_pairs(self, *_: Any) -> None:
        if self.as_channels.value:
            channels = " + ".join(i.name for i in self.image_layers.value)
            labels = ", ".join(lb.name for lb in self.label_layers.value)
            self.pairs.value = f"one image of channels {channels or '(none)'} with {labels or 'no labels'}"
            return
        pairs = [f"{i.name} + {lb.name}" for i, lb in zip(self.image_layers.value, self.label_layers.value)]
        self.pairs.value = "pairs: " + ("; ".join(pairs) if pairs else "none selected")

    def _optimizer_changed(self, name: str) -> None:
        if self.lr.value.strip() in ("", self._lr_default_text):  # the user has not typed their own rate
            self._lr_default_text = f"{self._default_lr(name):g}"
            self.lr.value = self._lr_default_text

    def configs(self):
        """(TrainConfig, ModelConfig) from the form; InputError names a bad field."""
        from ..config import ModelConfig, TrainConfig
        from ..losses import parse_loss

        parse_loss(self.loss.value)
        cfg = TrainConfig(
            optimizer=self.optimizer.value, loss=self.loss.value.strip(), lr=parse_lr(self.lr.value),
            epochs=self.epochs.value, minutes=self.minutes.value or None, batch_size=self.batch.value,
            patch_size=self.patch.value, patches_per_epoch=self.patches_per_epoch.value,
            val_fraction=self.val_fraction.value, seed=self.seed.value)
        in_ch = channels_of(self.image_layers.value)
        return cfg, ModelConfig.from_depth(self.depth.value, self.base_width.value, in_channels=in_ch)

    def start_model(self):
        """The :class:`~slimseg.start.StartModel` chosen under 'start from', or None for a new U-Net."""
        from ..start import load_start

        choice = self.start_from.value
        if choice in (None, NEW_MODEL):
            return None
        if choice == FROM_FILE:
            return load_start(load_file(self.start_file.value), Path(str(self.start_file.value)).name)
        if is_builtin(choice):
            return load_start(load_builtin(choice), choice[len(BUILTIN):])
        return load_start(self.store.get(choice), choice)

    # -- running ------------------------------------------------------------------------------------
    def start(self, *_: Any) -> Job | None:
        """Check the form and start training; every problem becomes a notification."""
        try:
            if self.running:
                raise InputError("training is already running; press Stop first (the best model is kept)")
            cfg, model_cfg = self.configs()
            start = self.start_model()
            if start is not None and self.lr.value.strip() == self._lr_default_text:
                cfg = dataclasses.replace(cfg, lr=None)  # untouched: the fine-tuning default
            if start is not None and self.epochs.value == self._epochs_default:
                cfg = dataclasses.replace(cfg, epochs=FINETUNE_EPOCHS)  # untouched: a fine-tuning run is short
            names, images, labels = training_pairs(self.image_layers.value, self.label_layers.value,
                                                   self.channel_axis.value, self.as_channels.value)
            model_cfg = dataclasses.replace(model_cfg, in_channels=count_channels(images, names))
            self._autosave_to = self._check_autosave() if self.autosave.value else None
        except InputError as err:
            notify_error(err, "Train")
            return None
        self.plot.clear()
        self._t0, self._total_steps = time.perf_counter(), cfg.epochs * cfg.steps_per_epoch()
        self._steps_per_epoch, self._last_status = cfg.steps_per_epoch(), 0.0
        self.progress.max, self.progress.value = self._total_steps, 0
        self._budget_s = cfg.minutes * 60 if cfg.minutes else None

        def body(stop):
            from ..training import Trainer

            yield Message(f"preparing {len(images)} image(s) ...")
            trainer = Trainer(images, labels, cfg, None if start else model_cfg, names=names, init=start)

            def stopped():
                if not trainer.epochs_done:
                    return _Run(trainer, None, tuned=True)
                # Stop: the best model at once, its thresholds tuned after (a closed panel waits for nobody)
                quick = not self.closed
                result = trainer.result(recalibrate=False, tune=not quick)
                result.stop_reason = "stopped by user"
                return _Run(trainer, result, tuned=not quick)

            out = yield from until_stopped(trainer.fit(), stop, stopped)
            return out if isinstance(out, _Run) else _Run(trainer, out, tuned=True)

        self.job = Job(body, "Train", on_event=self._on_event, on_done=self._on_done, on_finished=self._on_finished)
        if start is not None:  # Predict refuses this model until the run ends
            on = ", ".join(repr(lb.name) for lb in self.label_layers.value)
            self.store.retraining = (self.start_ref(), f"on {on}")
        self._set_running(True)
        return self.job

    def start_ref(self) -> str:
        """The start model as the model lists name it (a file: its path)."""
        return str(self.start_file.value) if self.start_from.value == FROM_FILE else self.start_from.value

    def retrain(self, *_: Any) -> Job | None:
        """Fine-tune the model behind a corrected Predict layer on that layer and its image: the layer
        selected in napari's layer list, or the one corrected layer."""
        try:
            if self.running:
                raise InputError("training is already running; press Stop first (the best model is kept)")
            layer = self.corrected_layer()
            if is_empty(layer):
                raise InputError(f"{layer.name!r} holds no labels (all erased); paint the objects you want the "
                                 "model to find, then Retrain")
            image = self.viewer.layers[layer.metadata["slimseg_image"]] if (
                layer.metadata["slimseg_image"] in self.viewer.layers) else None
            if image is None:
                raise InputError(f"the image {layer.metadata['slimseg_image']!r} that {layer.name!r} was "
                                 "predicted from is no longer in the viewer; open it again, or choose the layers "
                                 "above and press Start training")
            self._choose_start(layer.metadata.get("slimseg_start"), layer.name)
        except InputError as err:
            notify_error(err, "Retrain")
            return None
        self.as_channels.value = False
        self.image_layers.value, self.label_layers.value = [image], [layer]
        return self.start()

    def corrected_layer(self) -> Any:
        """The Predict labels layer to retrain on; InputError says what to do when there is none."""
        predicted = predicted_labels(self.viewer)
        corrected = [lay for lay in predicted if edited(lay)]
        active = self.viewer.layers.selection.active
        if active in corrected:
            return active
        if len(corrected) == 1:
            return corrected[0]
        if corrected:
            raise InputError(f"{len(corrected)} corrected layers ({', '.join(repr(c.name) for c in corrected)}); "
                             "select the one to retrain on in napari's layer list")
        if predicted:
            raise InputError(f"{predicted[-1].name!r} has not been corrected since Predict made it; fix its labels "
                             "with napari's label tools (paint, erase, fill, new label), then Retrain")
        raise InputError("no predicted labels to retrain on: Segment an image in the Predict widget, correct the "
                         "Labels layer it makes, then press Retrain")

    def _choose_start(self, ref: str | None, layer_name: str) -> None:
        """Set 'start from' to the model a Predict layer was made with."""
        self.start_from.reset_choices()
        if ref is not None and ref in self.start_from.choices:
            self.start_from.value = ref
        elif ref is not None and Path(ref).is_file():
            self.start_from.value, self.start_file.value = FROM_FILE, ref
        else:
            raise InputError(f"the model that made {layer_name!r} ({ref}) is no longer available; choose one "
                             "under 'start from' and press Start training")

    def stop(self, *_: Any) -> None:
        if self.running:
            super().stop()
            if not self.closed:
                self.status.value = "stopping at the next step ..."
                self.stop_button.enabled = False

    def _set_running(self, running: bool) -> None:
        self.start_button.enabled = not running
        self.stop_button.enabled = running

    def _on_event(self, event: Any) -> None:
        if self.closed:
            return
        if isinstance(event, StepEnd):
            self.plot.add_step(event.step, event.loss)
            self.progress.value = min(event.step, self._total_steps)
            now = time.perf_counter()
            if now - self._last_status > 0.25:  # a readable rate, however fast the steps
                self._last_status = now
                self.status.value = self._step_status(event, now - self._t0)
        elif isinstance(event, EpochEnd):
            self.plot.add_epoch(event.epoch, event.step, event.train_loss, event.val_dice)
            self.status.value = (f"epoch {event.epoch}: loss {event.train_loss:.4f}, val Dice {event.val_dice:.4f}"
                                 f" (best {event.best_val_dice:.4f}), {event.elapsed_s:.0f} s")
        elif isinstance(event, Message):
            self.status.value = event.text

    def _step_status(self, event: StepEnd, elapsed: float) -> str:
        left = ""
        if not self.plot.epochs:  # before the first validation: say when it comes
            left = f"; validation after step {self._steps_per_epoch}"
        budget = f" of {self._budget_s:.0f}" if self._budget_s else ""
        return f"epoch {event.epoch}, step {event.step}: loss {event.loss:.4f}, {elapsed:.0f}{budget} s{left}"

    def _on_done(self, run: _Run) -> None:
        from napari.utils.notifications import show_info

        from ..training import to_model_file

        if run.result is None:
            msg = ("Training stopped before its first epoch ended, so no model was kept (nothing was validated "
                   "yet); let it run past the first validation (the status line says at which step)")
            show_info(msg)
            if not self.closed:
                self.status.value = msg
            return
        result = run.result
        dice = f"val Dice {result.best_val_dice:.3f}" if result.best_epoch else "not validated"
        cfg = result.model_config
        self.last_model = self.store.add(f"U-Net d{cfg.depth}w{cfg.widths[0]}, {dice}", to_model_file(result))
        why = "its panel was closed" if self.closed else result.stop_reason
        ended = f"Training ended ({why}): best {dice} at epoch {result.best_epoch}"
        show_info(f"{ended}; the model is kept in this session as {self.last_model!r} (Predict, Compare, "
                  f"Compress){'' if self.closed else '; Save it to keep it'}.")
        if not run.tuned:  # the threshold tuning a Stop skipped, in a worker: napari stays responsive
            name = self.last_model
            if not self.closed:
                self.status.value = f"{ended}; tuning its thresholds on the validation images ..."

            def tune(_stop):
                return run.trainer.tune()
                yield  # a generator, as Job wants

            self.job = Job(tune, "Tuning thresholds", on_event=lambda _e: None,
                           on_done=lambda res: self._wrapped_up(name, to_model_file(res), ended, False),
                           on_finished=self._on_finished)
            return
        self._wrapped_up(None, None, ended, result.stop_reason != "stopped by user")

    def _wrapped_up(self, name: str | None, tuned: Any, ended: str, complete: bool) -> None:
        """The run's model is final: store the tuned version, autosave, and say so."""
        from napari.utils.notifications import show_info

        if name is not None:
            self.store.replace(name, tuned)
        saved = self._autosave() if self._autosave_to is not None else None
        if saved is not None:
            show_info(f"{self.last_model!r} saved to {saved}")
        if not self.closed:
            self.status.value = ended + (f", saved to {saved}" if saved is not None else "")
            if complete:  # ended on its own (epochs, time, early stopping); a Stop keeps the steps done
                self.progress.value = self.progress.max
            self.save_button.enabled = True

    def _on_finished(self) -> None:
        if not self.running:
            self.store.retraining = None
        if not self.closed:
            self._set_running(False)
            self.start_button.enabled = not self.running  # not while a Stop's wrap-up still runs

    # -- saving -------------------------------------------------------------------------------------
    _autosave_to: Path | None = None

    def _check_autosave(self) -> Path:
        """The autosave file, checked before training starts (not after it): named, writable, and new
        unless 'overwrite' is ticked."""
        from .. import io
        from ..files import check_can_write
        from ._models import model_path

        path = model_path(self.save_path.value)
        if path.exists() and not self.overwrite.value:
            raise InputError(f"autosave: {path} exists; tick 'overwrite' or choose another file name")
        check_can_write(io.check_writable(path, overwrite=True))
        return path

    def _autosave(self) -> Path | None:
        """Write the run's model to the autosave file (atomically); a failure is notified, not raised."""
        try:
            return save_model(self.viewer, self.last_model, self._autosave_to, overwrite=True)
        except InputError as err:
            notify_error(err, "Autosave")
            return None

    def save(self, *_: Any) -> Path | None:
        from napari.utils.notifications import show_info

        try:
            saved = save_model(self.viewer, self.last_model, self.save_path.value, self.overwrite.value)
        except InputError as err:
            notify_error(err, "Save model")
            return None
        show_info(f"saved {self.last_model!r} to {saved}")
        self.status.value = f"saved to {saved}"
        return saved

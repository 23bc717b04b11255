"""The Predict widget: model + Image layer -> Labels layer of instances (and optionally the probability map)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, ProgressBar, PushButton, SpinBox

from ..errors import InputError
from ..events import Progress
from ._layers import layer_choices, planes, put_layer, stack
from ._models import ModelPicker
from ._session import runnable
from ._style import MAX_WIDTH
from ._worker import Job, JobHost, notify_error, on_close, until_stopped

if TYPE_CHECKING:
    import napari


def overall_progress(gen, k: int, n: int):
    """Relay a prediction of image ``k`` of ``n`` as overall Progress (0..1000); return its result."""
    frac = 0.0
    while True:
        try:
            event = next(gen)
        except StopIteration as end:
            return end.value
        if isinstance(event, Progress) and event.stage == "predict" and event.total:
            frac = event.done / event.total
        yield Progress("predict", int(1000 * (k + frac) / n), 1000, f"image {k + 1} of {n}" if n > 1 else "")


def predict_planes(mf: Any, name: str, images: list, settings: dict, stop: Any, keep_probabilities: bool):
    """Generator: segment each plane with the model's own prediction settings changed by ``settings``;
    return (labels, foreground probabilities or None), stacked like the input, or None when stopped."""
    import numpy as np

    seg = runnable(mf, name)
    cfg = seg.settings(**settings)
    labels, probs = [], []
    for k, plane in enumerate(images):
        pred = yield from until_stopped(overall_progress(seg.predict_events(plane, cfg), k, len(images)), stop,
                                        lambda: None)
        if pred is None:
            return None
        labels.append(pred.labels)
        if keep_probabilities:
            probs.append(np.asarray(pred.probabilities[0], dtype=np.float32))
    return stack(labels), (stack(probs) if keep_probabilities else None)


class PredictWidget(JobHost, Container):
    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from .. import segmenter  # noqa: F401  (import in the GUI thread, not the worker: see TrainWidget)
        from ..config import PredictConfig

        cfg = PredictConfig()  # the form starts from its defaults

        self.viewer = viewer
        self.model = ModelPicker(viewer)
        self.image = ComboBox(label="image", choices=layer_choices(viewer, "Image"))
        self.tile = SpinBox(label="tile size", value=cfg.tile, min=32, max=8192, step=32,
                            tooltip="large images are predicted tile by tile; smaller tiles use less memory")
        self.overlap = SpinBox(label="tile overlap", value=cfg.overlap, min=0, max=1024, step=8)
        self.tta = CheckBox(text="test-time augmentation (4 flips: smoother, 4x slower)", value=cfg.tta)
        self.own_thresholds = CheckBox(text="my own thresholds (default: the model's tuned ones)", value=False)
        self.threshold = FloatSpinBox(label="foreground threshold", value=cfg.threshold, min=0.01, max=0.99, step=0.05)
        self.seed_threshold = FloatSpinBox(label="seed threshold", value=cfg.seed_threshold, min=0.01, max=0.99,
                                           step=0.05,
                                           tooltip="centredness above which a pixel seeds an object; "
                                                   "lower it if touching nuclei are merged")
        self.min_size = SpinBox(label="min object size", value=cfg.min_size, min=0, max=100000, tooltip="pixels")
        self.probabilities = CheckBox(text="also show the probability map", value=False)
        self.new_layer = CheckBox(text="new layers (keep earlier results)", value=False)
        self.run_button = PushButton(text="Segment")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1000, label="progress")
        self.status = Label(value="")
        buttons = Container(widgets=[self.run_button, self.stop_button], layout="horizontal", labels=False)
        buttons.margins = (0, 0, 0, 0)
        super().__init__(widgets=[self.model, self.image, self.tile, self.overlap, self.tta, self.own_thresholds,
                                  self.threshold, self.seed_threshold, self.min_size, self.probabilities,
                                  self.new_layer,
                                  buttons, self.progress, self.status])
        self.max_width = MAX_WIDTH
        self.status.native.setWordWrap(True)
        self.run_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        self.own_thresholds.changed.connect(self._enable_thresholds)
        self.model.choice.changed.connect(self._show_model_settings)
        self.model.file.changed.connect(self._show_model_settings)
        self._enable_thresholds()
        on_close(self.native, self._on_close)

    def _enable_thresholds(self, *_: Any) -> None:
        for field in (self.threshold, self.seed_threshold, self.min_size):
            field.enabled = self.own_thresholds.value
        self._show_model_settings()

    def _show_model_settings(self, *_: Any) -> None:
        """Unless the user sets their own, show the chosen model's tuned thresholds (greyed out)."""
        from ..segmenter import predict_config_of

        if self.own_thresholds.value:
            return
        try:
            _, mf = self.model.selected()
        except InputError:
            return  # no model chosen yet: Segment will say so
        cfg = predict_config_of(mf.meta)
        self.threshold.value, self.seed_threshold.value = cfg.threshold, cfg.seed_threshold
        self.min_size.value = cfg.min_size

    def settings(self) -> dict[str, Any]:
        """The prediction settings the form changes (checked here, so a bad value is reported at once)."""
        import dataclasses

        from ..config import PredictConfig

        out: dict[str, Any] = {"tile": self.tile.value, "overlap": self.overlap.value, "tta": self.tta.value}
        if self.own_thresholds.value:
            out.update(threshold=self.threshold.value, seed_threshold=self.seed_threshold.value,
                       min_size=self.min_size.value)
        dataclasses.replace(PredictConfig(), **out)  # raises InputError naming a bad value
        return out

    def start(self, *_: Any) -> Job | None:
        from ..data.checks import as_image

        try:
            if self.running:
                raise InputError("a prediction is already running; wait for it or press Stop")
            layer = self.image.value
            images = planes(layer)
            name, mf = self.model.selected()
            as_image(images[0], mf.model_config.in_channels, name=f"layer {layer.name!r}")
            settings = self.settings()
        except InputError as err:
            notify_error(err, "Predict")
            return None
        keep_probs, new = self.probabilities.value, self.new_layer.value

        def body(stop):
            return (yield from predict_planes(mf, name, images, settings, stop, keep_probs))

        def done(result):
            if result is not None and not self.closed:
                self.show_result(layer, name, *result, new=new)

        self.progress.value = 0
        self.status.value = f"segmenting {layer.name!r} with {name!r} ..."
        self.job = Job(body, "Predict", on_event=self._on_event, on_done=done, on_finished=self._on_finished)
        self.run_button.enabled, self.stop_button.enabled = False, True
        return self.job

    def show_result(self, layer: Any, model_name: str, labels: Any, probs: Any, new: bool = False) -> None:
        import numpy as np

        key = f"predict:{layer.name}"
        out = put_layer(self.viewer, labels, "labels", f"{layer.name} segmentation", layer, key, new=new)
        out.metadata["slimseg_model"] = model_name
        if probs is not None:
            put_layer(self.viewer, probs, "image", f"{layer.name} foreground probability", layer, key + ":prob",
                      new=new, colormap="magma", contrast_limits=(0.0, 1.0), blending="additive")
        n = int(len(np.unique(labels)) - 1)
        self.status.value = f"{n} objects in {layer.name!r} -> layer {out.name!r}"

    def _on_event(self, event: Any) -> None:
        if not self.closed and isinstance(event, Progress):
            self.progress.value = event.done
            if event.message:
                self.status.value = event.message

    def _on_finished(self) -> None:
        super()._on_finished()
        if not self.closed:
            self.progress.value = 1000 if self.progress.value else 0


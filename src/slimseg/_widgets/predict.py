"""The Predict widget: model + Image layer (2D or a stack; channels on an axis or in several layers) ->
Labels layer of instances of the same planes (and optionally the probability map). A lazy 2D layer (dask
or zarr backed, or multiscale: its full resolution) is segmented block by block into a zarr label store,
shown as a lazy Labels layer, without reading the image whole."""

from __future__ import annotations

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

from ..errors import InputError
from ..events import Message, Progress
from ._layers import CHANNEL_AXES, edited, is_lazy, layer_choices, layer_image, placed_like, put_layer, tagged
from ._models import ModelPicker
from ._session import runnable, session_models
from ._style import MAX_WIDTH
from ._worker import Job, JobHost, notify_error, on_close, until_stopped

if TYPE_CHECKING:
    import napari


def overall_progress(gen, n: int):
    """Relay a stack prediction of ``n`` planes as overall Progress (0..1000), per tile row and per plane;
    return its result."""
    done, frac = 0, 0.0
    while True:
        try:
            event = next(gen)
        except StopIteration as end:
            return end.value
        if not isinstance(event, Progress):
            continue
        if event.stage == "planes":
            done, frac = event.done, 0.0
        elif event.stage == "predict" and event.total:
            frac = event.done / event.total
        message = f"plane {min(done + 1, n)} of {n}" if n > 1 else ""
        yield Progress("predict", int(1000 * min(done + frac, n) / n), 1000, message)


def block_progress(gen):
    """Relay a block-wise prediction's events as overall Progress (0..1000): per block, then the
    numbering pass (with the core's notes, such as the scale chosen); return its result."""
    note = ""
    while True:
        try:
            event = next(gen)
        except StopIteration as end:
            return end.value
        if isinstance(event, Message):
            note = f" ({event.text})"
        elif isinstance(event, Progress) and event.total:
            if event.stage == "blocks":
                yield Progress("predict", 900 * event.done // event.total, 1000, event.message + note)
            elif event.stage == "relabel":
                yield Progress("predict", 900 + 100 * event.done // event.total, 1000, "numbering the objects")


def predict_blocks(mf: Any, name: str, image: Any, target: Any, settings: dict, channels: Any, block: int,
                   stop: Any):
    """Generator: segment a lazy 2D image block by block into the label store ``target``; return the
    :class:`~slimseg.large.LargeResult` (after Stop: the blocks done so far are in the store)."""
    from ..large import LargeConfig, predict_large

    seg = runnable(mf, name)
    gen = predict_large(seg, image, target, cfg=seg.settings(**settings), lcfg=LargeConfig(block=block),
                        channels=channels, name=name, stop=stop.is_set)
    return (yield from block_progress(gen))


def predict_stack(mf: Any, name: str, stack: Any, settings: dict, stop: Any, keep_probabilities: bool):
    """Generator: segment every plane of ``stack`` (the core's layout) with the model's own prediction
    settings changed by ``settings``; return the :class:`~slimseg.stacks.StackResult`, which after Stop
    holds the planes done so far."""
    seg = runnable(mf, name)
    job = seg.stack_job(stack, seg.settings(**settings), keep_probabilities=keep_probabilities)
    return (yield from until_stopped(overall_progress(job.run(), job.n_planes), stop, job.result))


class PredictWidget(JobHost, Container):
    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from .. import segmenter  # noqa: F401  (import in the GUI thread, not the worker: see TrainWidget)
        from ..config import PredictConfig
        from ..large import LargeConfig

        cfg = PredictConfig()  # the form starts from its defaults

        self.viewer = viewer
        self.model = ModelPicker(viewer)
        self.image = ComboBox(label="image", choices=layer_choices(viewer, "Image"),
                              tooltip="a 2D image or a stack (Z, T): every plane is segmented")
        self.more_channels = Select(label="more channels", choices=layer_choices(viewer, "Image"),
                                    tooltip="for a model of several channels: further single-channel layers of "
                                            "the image's shape, in order after it")
        self.more_channels.native.setMaximumHeight(60)
        self.channel_axis = ComboBox(label="channel axis", choices=CHANNEL_AXES, value=None,
                                     tooltip="where a layer holds its channels (default: from the shapes)")
        self.channels = LineEdit(label="channels", value="",
                                 tooltip="which channels of that axis, e.g. 0,2 (default: those the model was "
                                         "trained on, or all)")
        self.stitch = FloatSpinBox(label="link planes (IoU)", value=cfg.stitch_threshold, min=0.0, max=1.0,
                                   step=0.05, tooltip="stacks: join objects of neighbouring z planes that overlap "
                                                      "at least this much into 3D objects (0 = off)")
        self.tile = SpinBox(label="tile size", value=cfg.tile, min=32, max=8192, step=32,
                            tooltip="large images are predicted tile by tile; smaller tiles use less memory")
        self.overlap = SpinBox(label="tile overlap", value=cfg.overlap, min=0, max=1024, step=8)
        self.tta = CheckBox(text="test-time augmentation (4 flips: smoother, 4x slower)", value=cfg.tta)
        self.bf16 = CheckBox(text="bfloat16 network (faster on CPUs with AMX; float models)", value=cfg.bf16,
                             tooltip="labels nearly, not exactly, the same as float32; int8 models ignore it")
        self.rescale = CheckBox(text="objects much larger than the model's: predict again smaller", value=cfg.rescale,
                                tooltip="objects more than twice the size of those the model was trained on are "
                                        "predicted again at 1/2, 1/4, ... scale, where they fit")
        self.diameter = FloatSpinBox(label="object diameter", value=cfg.diameter, min=0.0, max=10000.0, step=1.0,
                                     tooltip="the objects' diameter in pixels, when known (0: estimated)")
        self.own_thresholds = CheckBox(text="my own thresholds (default: the model's tuned ones)", value=False)
        self.threshold = FloatSpinBox(label="foreground threshold", value=cfg.threshold, min=0.01, max=0.99, step=0.05)
        self.seed_threshold = FloatSpinBox(label="seed threshold", value=cfg.seed_threshold, min=0.01, max=0.99,
                                           step=0.05,
                                           tooltip="centredness above which a pixel seeds an object; "
                                                   "lower it if touching nuclei are merged")
        self.seed_h = FloatSpinBox(label="seed height", value=cfg.seed_h, min=0.0, max=0.95, step=0.05,
                                   tooltip="0: every core above the seed threshold seeds one object; above 0: "
                                           "only centredness peaks rising this much above their saddle do "
                                           "(splits touching nuclei whose cores blur together)")
        self.min_size = SpinBox(label="min object size", value=cfg.min_size, min=0, max=100000, tooltip="pixels")
        self.probabilities = CheckBox(text="also show the probability map", value=False)
        self.block = SpinBox(label="block size", value=LargeConfig().block, min=64, max=16384, step=64,
                             tooltip="lazy (dask, zarr, multiscale) images are segmented in blocks of this side, "
                                     "read one at a time")
        self.store = FileEdit(label="label store", mode="w", filter="zarr (*.zarr)",
                              tooltip="where the labels of a lazy image are written (a new .zarr folder; "
                                      "default: a temporary folder)")
        self.new_layer = CheckBox(text="new layers (keep earlier results)", value=False)
        self.run_button = PushButton(text="Segment")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1000, label="progress")
        self.status = Label(value="")
        buttons = Container(widgets=[self.run_button, self.stop_button], layout="horizontal", labels=False)
        buttons.margins = (0, 0, 0, 0)
        super().__init__(widgets=[self.model, self.image, self.more_channels, self.channel_axis, self.channels,
                                  self.tile, self.overlap, self.tta, self.bf16, self.rescale, self.diameter, self.stitch,
                                  self.own_thresholds,
                                  self.threshold, self.seed_threshold, self.seed_h, self.min_size,
                                  self.probabilities,
                                  self.block, self.store, self.new_layer,
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
        for field in (self.threshold, self.seed_threshold, self.seed_h, self.min_size):
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
        self.seed_h.value, self.min_size.value = cfg.seed_h, cfg.min_size

    def settings(self) -> dict[str, Any]:
        """The prediction settings the form changes (checked here, so a bad value is reported at once)."""
        import dataclasses

        from ..config import PredictConfig

        out: dict[str, Any] = {"tile": self.tile.value, "overlap": self.overlap.value, "tta": self.tta.value,
                               "bf16": self.bf16.value, "rescale": self.rescale.value, "diameter": self.diameter.value,
                               "stitch_threshold": self.stitch.value}
        if self.own_thresholds.value:
            out.update(threshold=self.threshold.value, seed_threshold=self.seed_threshold.value,
                       seed_h=self.seed_h.value, min_size=self.min_size.value)
        dataclasses.replace(PredictConfig(), **out)  # raises InputError naming a bad value
        return out

    def channel_config(self, n_layers: int):
        """The ChannelConfig of the form: several layers are all their channels, in order."""
        from ..config import ChannelConfig

        text = self.channels.value.strip()
        chosen = text or (tuple(range(n_layers)) if n_layers > 1 else None)
        return ChannelConfig(channels=chosen, channel_axis=self.channel_axis.value)

    def start(self, *_: Any) -> Job | None:
        import numpy as np

        from ..data.axes import standardize
        from ..data.checks import as_image

        try:
            if self.running:
                raise InputError("a prediction is already running; wait for it or press Stop")
            layer = self.image.value
            extra = [lay for lay in self.more_channels.value if lay is not layer]
            lazy = layer is not None and is_lazy(layer) and not extra
            image = layer_image(layer, extra, copy=not lazy)  # a lazy stack is read plane by plane
            name, mf = self.model.selected()
            ref = self.model.reference()
            retraining = session_models(self.viewer).retraining
            if retraining is not None and retraining[0] == ref:
                raise InputError(f"{name!r} is being retrained in the Train widget ({retraining[1]}); wait "
                                 "until it ends (or press Stop there), then Segment with the new model it adds "
                                 "(it is chosen here then)")
            chan = self.channel_config(1 + len(extra))
            stack = standardize(image, in_channels=mf.model_config.in_channels,
                                channels=chan.channels or mf.model_config.channels,
                                channel_axis=chan.channel_axis, name=f"layer {layer.name!r}")
            blockwise = self._blockwise(stack, lazy)
            first = stack.data[:64, :64] if blockwise else next(stack.planes())[1]
            as_image(first, mf.model_config.in_channels, name=f"layer {layer.name!r}")
            settings = self.settings()
            target = self.store_target() if blockwise else None
        except InputError as err:
            notify_error(err, "Predict")
            return None
        keep_probs, new = self.probabilities.value, self.new_layer.value
        source_axis = stack.channel_axis if not extra else None
        block = self.block.value

        def body(stop):
            if blockwise:
                return (yield from predict_blocks(mf, name, image, target, settings, chan, block, stop))
            return (yield from predict_stack(mf, name, stack, settings, stop, keep_probs))

        def done(result):
            if result is None or self.closed:
                return
            if blockwise:
                self.show_blocks(layer, name, result, new=new, channel_axis=source_axis)
            else:
                self.show_result(layer, name, result, new=new, channel_axis=source_axis, start=ref)

        self.progress.value = 0
        planes = f" ({int(np.prod(stack.plane_shape))} planes)" if stack.plane_axes else ""
        blocks = f" block by block into {str(target)!r}" if blockwise else ""
        self.status.value = f"segmenting {layer.name!r}{planes} with {name!r}{blocks} ..."
        self.job = Job(body, "Predict", on_event=self._on_event, on_done=done, on_finished=self._on_finished)
        self.run_button.enabled, self.stop_button.enabled = False, True
        return self.job

    @staticmethod
    def _blockwise(stack: Any, lazy: bool) -> bool:
        """A 2D image goes block by block when it is lazy, or too large to hold its labels in memory."""
        from ..large import TIFF_MAX_PIXELS

        if stack.plane_axes:
            return False
        return lazy or int(stack.data.shape[0]) * int(stack.data.shape[1]) > TIFF_MAX_PIXELS

    def store_target(self) -> Any:
        """The label store to write: the one chosen (which must not exist), else a new temporary folder's."""
        import tempfile
        from pathlib import Path

        chosen = str(self.store.value)
        if chosen in ("", "."):
            return Path(tempfile.mkdtemp(prefix="slimseg-labels-")) / "labels.zarr"
        target = Path(chosen)
        if target.exists():
            raise InputError(f"label store {target} exists already; choose a new name, or delete it first")
        return target

    def show_blocks(self, layer: Any, model_name: str, result: Any, new: bool = False,
                    channel_axis: int | None = None) -> None:
        """Show a :class:`~slimseg.large.LargeResult` as a Labels layer read lazily from its store."""
        import dask.array as da

        from ..large import read_labels

        key = f"predict:{layer.name}"
        labels, drop = placed_like(da.from_zarr(read_labels(result.path)), layer, channel_axis)
        out = put_layer(self.viewer, labels, "labels", f"{layer.name} segmentation", layer, key, new=new,
                        drop_axis=drop)
        out.metadata["slimseg_model"] = model_name
        out.metadata["slimseg_store"] = str(result.path)
        done = "" if result.complete else f" (stopped: {result.blocks_done} of {result.n_blocks} blocks done)"
        self.status.value = (f"{result.n_objects} objects in {layer.name!r} -> layer {out.name!r}, labels in "
                             f"{str(result.path)!r}{done}")

    def show_result(self, layer: Any, model_name: str, result: Any, new: bool = False,
                    channel_axis: int | None = None, start: str | None = None) -> None:
        """Show a :class:`~slimseg.stacks.StackResult` (complete, or the planes done before Stop). The
        labels layer records its image and model (``start``: the model list's entry), for Retrain."""
        import numpy as np

        key = f"predict:{layer.name}"
        corrected = [lay.name for lay in tagged(self.viewer, key, "labels") if edited(lay)]
        labels, drop = placed_like(result.labels, layer, channel_axis)
        out = put_layer(self.viewer, labels, "labels", f"{layer.name} segmentation", layer, key, new=new,
                        drop_axis=drop)
        out.metadata.update(slimseg_model=model_name, slimseg_image=layer.name, slimseg_start=start)
        if result.probabilities is not None:
            probs, _ = placed_like(result.probabilities.astype(np.float32), layer, channel_axis)
            put_layer(self.viewer, probs, "image", f"{layer.name} foreground probability", layer, key + ":prob",
                      new=new, drop_axis=drop, colormap="magma", contrast_limits=(0.0, 1.0), blending="additive")
        n = int(len(np.unique(result.labels)) - 1)
        done = "" if result.complete else f" (stopped: {result.planes_done} of {result.planes} planes done)"
        kept = f"; your corrections in {', '.join(map(repr, corrected))} are kept" if corrected else ""
        self.status.value = f"{n} objects in {layer.name!r} -> layer {out.name!r}{done}{kept}"

    def _on_event(self, event: Any) -> None:
        if not self.closed and isinstance(event, Progress):
            self.progress.value = event.done
            if event.message:
                self.status.value = event.message

    def _on_finished(self) -> None:
        super()._on_finished()
        if not self.closed:
            self.progress.value = 1000 if self.progress.value else 0


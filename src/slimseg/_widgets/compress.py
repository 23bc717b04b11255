"""The Compress widget: a float model + calibration layers -> an int8 and/or pruned model, in a worker,
with the size and speed it bought (measured by ``slimseg.compress.report``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
    Table,
)

from ..errors import InputError
from ..events import Message, Progress, StepEnd
from ._layers import layer_choices, planes, training_pairs
from ._models import FILTER, ModelPicker, save_model
from ._session import runnable, session_models
from ._style import MAX_WIDTH, plain_cells, wrap_name
from ._worker import Job, JobHost, notify_error, on_close, until_stopped

if TYPE_CHECKING:
    import napari

RESULT_COLUMNS = ("size (MB)", "size x", "parameters", "model call (ms)", "speed-up")
FORMATS = {"size (MB)": "{:.3f}", "size x": "{:.2f}", "parameters": "{:,}", "model call (ms)": "{:.1f}",
           "speed-up": "{:.2f}"}


def compress_and_measure(mf: Any, name: str, images: list, labels: list | None, cfg: Any, tile: int = 256):
    """Generator: compress, then time the source and the result on the same ``tile``-square crops of the
    images (median of 5 interleaved runs); return (compressed model file, [(name, row), (name, row)])."""
    from ..compress import compress
    from ..compress.report import benchmark_events
    from ..compress.warm import warm_in_background
    from ._scores import model_size_mb

    out = yield from compress(mf, images, labels, cfg)
    yield Message("measuring size and speed ...")
    models = [(name, runnable(mf, name)), (f"{cfg.method}", runnable(out, cfg.method))]
    rows = yield from benchmark_events(models, images, None, batch_sizes=(1,), tile=tile,
                                       repeats=5, warmup=2)
    warm_in_background(out, images)  # after timing it: the compiler would take CPU from the measurement
    sizes = [model_size_mb(mf), model_size_mb(out)]
    table = [(row["name"], {"size (MB)": size, "size x": size / sizes[0], "parameters": row["nonzero_parameters"],
                            "model call (ms)": row["model_ms_b1"], "speed-up": row["speedup_b1"]})
             for row, size in zip(rows, sizes)]
    return out, table


class CompressWidget(JobHost, Container):
    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        # loads neither torchao, torch.compile nor ONNX Runtime
        from ..compress import COMPRESS_METHODS, CompressConfig
        from ..compress.config import BACKENDS, DEFAULT_RATIO

        cfg = CompressConfig()  # the form starts from its defaults

        self.viewer = viewer
        self.last_model: str | None = None
        self.model = ModelPicker(viewer, label="float model")
        self.method = ComboBox(label="method", choices=COMPRESS_METHODS.names(), value=cfg.method,
                               tooltip="ptq: int8 after training; qat: int8-aware fine-tuning; prune-*: remove "
                                       "weights (unstructured) or channels (structured); prune-ptq: both")
        self.backend = ComboBox(label="int8 backend", choices=BACKENDS, value=cfg.backend,
                                tooltip="pt2e: PyTorch oneDNN kernels; onnx: ONNX Runtime; auto: pt2e on CPUs "
                                        "with VNNI/AMX int8 instructions, onnx on others")
        self.ratio = FloatSpinBox(label="pruning ratio", value=DEFAULT_RATIO, min=0.05, max=0.95, step=0.05,
                                  tooltip="fraction of weights (unstructured) or channels (structured) removed")
        self.minutes = FloatSpinBox(label="fine-tune minutes", value=cfg.minutes, min=0.0, max=600.0, step=0.5,
                                    tooltip="fine-tuning budget for QAT and pruning (0: no fine-tuning)")
        self.calibration_patches = SpinBox(label="calibration patches", value=cfg.calibration_patches, min=1,
                                           max=100000)
        self.patch = SpinBox(label="patch size", value=cfg.patch_size, min=16, max=4096, step=16)
        self.batch = SpinBox(label="batch size", value=cfg.batch_size, min=1, max=1024)
        self.seed = SpinBox(label="seed", value=cfg.seed, min=0, max=2**31 - 1)
        self.image_layers = Select(label="calibration images", choices=layer_choices(viewer, "Image"),
                                   tooltip="images like those the model will segment")
        self.label_layers = Select(label="labels (fine-tuning)", choices=layer_choices(viewer, "Labels"),
                                   tooltip="ground truth for the fine-tuning methods (qat, prune-*)")
        self.run_button = PushButton(text="Compress")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1000, label="progress")
        self.status = Label(value="")
        self.table = Table(value={"data": [], "index": list(RESULT_COLUMNS)})
        self.table.read_only = True
        plain_cells(self.table)
        self.save_path = FileEdit(label="save to", mode="w", filter=FILTER)
        self.overwrite = CheckBox(text="overwrite an existing file", value=False)
        self.save_button = PushButton(text="Save compressed model", enabled=False)
        buttons = Container(widgets=[self.run_button, self.stop_button], layout="horizontal", labels=False)
        buttons.margins = (0, 0, 0, 0)
        super().__init__(widgets=[
            self.model, self.method, self.backend, self.ratio, self.minutes, self.calibration_patches, self.patch,
            self.batch, self.seed, self.image_layers, self.label_layers, buttons, self.progress, self.status,
            self.table, self.save_path, self.overwrite, self.save_button])
        self.image_layers.native.setMaximumHeight(70)
        self.label_layers.native.setMaximumHeight(70)
        self.table.native.setMinimumHeight(200)
        self.max_width = MAX_WIDTH
        self.status.native.setWordWrap(True)
        self.method.changed.connect(self._enable_fields)
        self.run_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        self.save_button.changed.connect(self.save)
        self._enable_fields()
        on_close(self.native, self._on_close)

    def _enable_fields(self, *_: Any) -> None:
        from ..compress.config import FINE_TUNING, PRUNING, QUANTIZING

        method = self.method.value
        self.ratio.enabled = method in PRUNING
        self.backend.enabled = method in QUANTIZING
        self.minutes.enabled = self.label_layers.enabled = method in FINE_TUNING

    def config(self):
        from ..compress import CompressConfig
        from ..compress.config import FINE_TUNING, PRUNING, QUANTIZING

        method = self.method.value
        return CompressConfig(
            method=method, ratio=self.ratio.value if method in PRUNING else None,
            minutes=self.minutes.value if method in FINE_TUNING else 0.0,
            calibration_patches=self.calibration_patches.value, seed=self.seed.value,
            backend=self.backend.value if method in QUANTIZING else "pt2e", patch_size=self.patch.value,
            batch_size=self.batch.value)

    def data(self, fine_tunes: bool) -> tuple[list, list | None]:
        """Calibration images (and labels when the method fine-tunes) from the chosen layers."""
        images_layers = list(self.image_layers.value)
        if not images_layers:
            raise InputError("choose at least one calibration Image layer (images like those the model will segment)")
        if fine_tunes:
            if not self.label_layers.value:
                raise InputError(f"{self.method.value} fine-tunes the model: choose the Labels layers matching the "
                                 "calibration images, or set fine-tune minutes to 0")
            _, images, labels = training_pairs(images_layers, self.label_layers.value)
            return images, labels
        return [plane for layer in images_layers for plane in planes(layer)], None

    def start(self, *_: Any) -> Job | None:
        try:
            if self.running:
                raise InputError("a compression is already running; wait for it or press Stop")
            name, mf = self.model.selected()
            if mf.kind != "float":
                raise InputError(f"{name!r} is already compressed (kind {mf.kind!r}); choose the float model it "
                                 "came from")
            cfg = self.config()
            images, labels = self.data(cfg.fine_tunes)
        except InputError as err:
            notify_error(err, "Compress")
            return None

        def body(stop):
            return (yield from until_stopped(compress_and_measure(mf, name, images, labels, cfg), stop, lambda: None))

        def done(result):
            if result is None:
                if not self.closed:
                    self.status.value = "stopped; no model was made"
                return
            self.show_result(name, cfg.method, *result)

        self._stage, self._stage_start, self._minutes = "", time.perf_counter(), cfg.minutes
        self.progress.value = 0
        self.status.value = f"compressing {name!r} ({cfg.method}) ..."
        self.job = Job(body, "Compress", on_event=self._on_event, on_done=done, on_finished=self._on_finished)
        self.run_button.enabled, self.stop_button.enabled = False, True
        return self.job

    def show_result(self, source: str, method: str, out: Any, table: list) -> None:
        from napari.utils.notifications import show_info

        self.last_model = session_models(self.viewer).add(f"{source} > {method}", out)
        (_, src), (_, new) = table
        show_info(f"Compressed {source!r} with {method}: {new['size (MB)']:.3f} MB ({new['size x']:.2f}x the size), "
                  f"{new['speed-up']:.2f}x the speed on this machine; kept in this session as {self.last_model!r}")
        if self.closed:
            return
        self.table.value = {"data": [[FORMATS[c].format(r[c]) for _, r in table] for c in RESULT_COLUMNS],
                            "index": list(RESULT_COLUMNS),
                            "columns": [wrap_name(n) for n in (source, self.last_model)]}
        self.table.native.resizeColumnsToContents()
        self.table.native.resizeRowsToContents()
        self.status.value = f"done: {self.last_model!r} ({out.kind})"
        self.save_button.enabled = True

    def _on_event(self, event: Any) -> None:
        if self.closed:
            return
        if isinstance(event, Progress):
            if event.stage != self._stage:
                self._stage, self._stage_start = event.stage, time.perf_counter()
            if event.total:
                frac = event.done / event.total
            else:  # fine-tuning is bounded by minutes
                frac = (time.perf_counter() - self._stage_start) / max(60 * self._minutes, 1e-9)
            self.progress.value = int(1000 * min(frac, 1.0))
            if event.message:
                self.status.value = f"{event.stage}: {event.message}"
        elif isinstance(event, Message):
            self.status.value = event.text
        elif isinstance(event, StepEnd) and event.step % 10 == 0:
            self.status.value = f"fine-tune step {event.step}, loss {event.loss:.4f}"

    def save(self, *_: Any) -> Path | None:
        try:
            saved = save_model(self.viewer, self.last_model, self.save_path.value, self.overwrite.value)
        except InputError as err:
            notify_error(err, "Save model")
            return None
        self.status.value = f"saved to {saved}"
        return saved

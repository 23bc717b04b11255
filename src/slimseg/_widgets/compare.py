"""The Compare widget: several models (float and compressed) scored on one image + ground truth, in one
table (exportable as CSV), with an optional false-positive / false-negative layer for a chosen model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, Table

from ..errors import InputError
from ..events import Progress
from ._layers import layer_choices, put_layer, stack, training_pairs
from ._models import ModelsPicker
from ._scores import COLUMNS, FALSE_NEGATIVE, FALSE_POSITIVE, cell, error_map, score_models, write_csv
from ._style import MAX_WIDTH, plain_cells, wrap_name
from ._worker import Job, JobHost, notify_error, on_close, until_stopped

if TYPE_CHECKING:
    import napari

ERROR_COLORS = {None: "transparent", 0: "transparent", FALSE_POSITIVE: "magenta", FALSE_NEGATIVE: "cyan"}


class CompareWidget(JobHost, Container):
    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from .. import metrics, segmenter  # noqa: F401  (import in the GUI thread, not the worker: see TrainWidget)

        self.viewer = viewer
        self.rows: dict[str, dict[str, float]] = {}
        self.predictions: dict[str, list] = {}
        self._scored: tuple[Any, Any] | None = None  # (image layer, truth stack) of the last run
        self.models = ModelsPicker(viewer)
        self.image = ComboBox(label="image", choices=layer_choices(viewer, "Image"))
        self.truth = ComboBox(label="ground truth", choices=layer_choices(viewer, "Labels"))
        self.run_button = PushButton(text="Compare")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1000, label="progress")
        self.status = Label(value="")
        self.table = Table(value={"data": [], "index": [title for _, title in COLUMNS]})
        self.table.read_only = True
        plain_cells(self.table)
        self.error_model = ComboBox(label="errors of", choices=lambda _w: list(self.rows),
                                    tooltip="magenta: false positive pixels, cyan: false negative pixels")
        self.error_button = PushButton(text="Show error layer", enabled=False)
        self.csv_path = FileEdit(label="CSV file", mode="w", filter="CSV (*.csv)")
        self.overwrite = CheckBox(text="overwrite an existing file", value=False)
        self.csv_button = PushButton(text="Export table as CSV", enabled=False)
        buttons = Container(widgets=[self.run_button, self.stop_button], layout="horizontal", labels=False)
        buttons.margins = (0, 0, 0, 0)
        super().__init__(widgets=[self.models, self.image, self.truth, buttons, self.progress, self.status,
                                  self.table, self.error_model, self.error_button, self.csv_path,
                                  self.overwrite, self.csv_button])
        self.table.native.setMinimumHeight(300)
        self.status.native.setWordWrap(True)
        self.max_width = MAX_WIDTH
        self.run_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        self.error_button.changed.connect(self.show_errors)
        self.csv_button.changed.connect(self.export_csv)
        on_close(self.native, self._on_close)

    def start(self, *_: Any) -> Job | None:
        try:
            if self.running:
                raise InputError("a comparison is already running; wait for it or press Stop")
            image_layer, truth_layer = self.image.value, self.truth.value
            if image_layer is None or truth_layer is None:
                raise InputError("choose an Image layer and its ground-truth Labels layer")
            _, images, truths = training_pairs([image_layer], [truth_layer])
            models = self.models.selected()
            from ..data.checks import as_image

            for name, mf in models:
                as_image(images[0], mf.model_config.in_channels, name=f"layer {image_layer.name!r} for {name!r}")
        except InputError as err:
            notify_error(err, "Compare")
            return None
        def body(stop):
            return (yield from until_stopped(score_models(models, images, truths), stop, lambda: None))

        def done(result):
            if result is not None and not self.closed:
                self.show_table(*result)
                self._scored = (image_layer, stack(truths))

        self.status.value = f"scoring {len(models)} model(s) on {image_layer.name!r} ..."
        self.progress.value = 0
        self.job = Job(body, "Compare", on_event=self._on_event, on_done=done, on_finished=self._on_finished)
        self.run_button.enabled, self.stop_button.enabled = False, True
        return self.job

    def show_table(self, rows: dict, predictions: dict) -> None:
        self.rows, self.predictions = rows, predictions
        # one column per model (names wrapped onto lines), one row per measure: fits a docked panel
        self.table.value = {
            "data": [[cell(key, row[key]) for row in rows.values()] for key, _ in COLUMNS],
            "index": [title for _, title in COLUMNS],
            "columns": [wrap_name(name) for name in rows]}
        self.table.native.resizeColumnsToContents()
        self.table.native.resizeRowsToContents()
        self.error_model.reset_choices()
        self.error_button.enabled = self.csv_button.enabled = bool(rows)
        best = max(rows, key=lambda n: rows[n]["dice"])
        self.status.value = f"best Dice: {best!r} ({rows[best]['dice']:.4f})"

    def show_errors(self, *_: Any) -> Any:
        try:
            name = self.error_model.value
            if self._scored is None or name not in self.predictions:
                raise InputError("run Compare first, then choose a model to show its errors")
            image_layer, truth = self._scored
            errors = error_map(stack(self.predictions[name]), truth)
        except InputError as err:
            notify_error(err, "Compare")
            return None
        from napari.utils.colormaps import DirectLabelColormap

        layer = put_layer(self.viewer, errors, "labels", f"{image_layer.name} errors", image_layer,
                          f"compare-errors:{image_layer.name}", colormap=DirectLabelColormap(color_dict=ERROR_COLORS))
        layer.metadata["slimseg_model"] = name
        fp, fn = int((errors == FALSE_POSITIVE).sum()), int((errors == FALSE_NEGATIVE).sum())
        self.status.value = f"{name}: {fp} false positive (magenta), {fn} false negative (cyan) pixels"
        return layer

    def export_csv(self, *_: Any) -> Path | None:
        try:
            if not self.rows:
                raise InputError("nothing to export yet; run Compare first")
            if str(self.csv_path.value) in ("", "."):
                raise InputError("choose a CSV file name first")
            path = write_csv(self.rows, self.csv_path.value, self.overwrite.value)
        except (InputError, OSError) as err:
            notify_error(err if isinstance(err, InputError) else InputError(f"cannot write the file: {err}"),
                         "Export CSV")
            return None
        self.status.value = f"table saved to {path}"
        return path

    def _on_event(self, event: Any) -> None:
        if not self.closed and isinstance(event, Progress) and event.stage == "compare":
            self.progress.value = int(1000 * event.done / max(event.total, 1))
            self.status.value = event.message


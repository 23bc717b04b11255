"""Regenerate the README screenshots: each slimseg widget docked in a real napari window, on real data.

Runs the whole workflow on the shipped DSB2018 nuclei sample: train a small U-Net (Train), quantise it
to int8 (Compress), segment the sample image (Predict), and score float vs int8 against the ground
truth (Compare). Needs a display; on a headless machine:

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py

Writes docs/images/{train,compress,predict,compare}.png (takes a few minutes on a laptop CPU), then
the correct-and-retrain loop: docs/images/{retrain,retrain_compare}.png (``--only loop`` for just those).
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wait(widget, seconds: float = 900) -> None:
    from qtpy.QtTest import QTest

    for _ in range(int(seconds * 10)):
        if widget.job is not None and not widget.job.running:
            QTest.qWait(300)  # let the result reach the widget and napari draw it
            return
        QTest.qWait(100)
    raise TimeoutError(f"{type(widget).__name__} did not finish in {seconds} s")


def shot(viewer, widget, name: str, out: Path) -> None:
    from qtpy.QtTest import QTest

    viewer.reset_view()
    QTest.qWait(500)
    path = out / f"{name}.png"
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"wrote {path}")
    viewer.window.remove_dock_widget(widget.native)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--only", choices=["loop"], help="only the correct-and-retrain screenshots")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.only == "loop":
        loop_shots(a.out, a.epochs)
        return

    import napari
    import numpy as np
    from qtpy.QtTest import QTest

    from slimseg._widgets.compare import CompareWidget
    from slimseg._widgets.compress import CompressWidget
    from slimseg._widgets.predict import PredictWidget
    from slimseg._widgets.train import TrainWidget
    from slimseg.sample import load_sample

    viewer = napari.Viewer(title="napari-slimseg")
    viewer.window.resize(1500, 980)
    # training data: the shipped 256 x 256 training images as one stack layer, with their labels
    _, images, labels = load_sample("train")
    keep = [i for i, im in enumerate(images) if im.shape == (256, 256)]
    train_img = viewer.add_image(np.stack([images[i] for i in keep]), name="train images")
    train_lab = viewer.add_labels(np.stack([labels[i] for i in keep]), name="train labels")

    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train, name="slimseg: Train")
    train.image_layers.value, train.label_layers.value = [train_img], [train_lab]
    train.depth.value, train.base_width.value = 4, 8
    train.patch.value, train.batch.value, train.patches_per_epoch.value = 128, 8, 64
    train.epochs.value = a.epochs
    busiest = int(np.argmax([len(np.unique(labels[i])) for i in keep]))
    viewer.dims.set_current_step(0, busiest)  # show the training image with the most nuclei
    train.start_button.native.click()
    wait(train)
    shot(viewer, train, "train", a.out)

    # the real nuclei sample from File > Open Sample (a held-out test image with its ground truth)
    viewer.layers.clear()
    image, truth = _open_sample(viewer)
    float_name = train.last_model

    compress = CompressWidget(viewer)
    viewer.window.add_dock_widget(compress, name="slimseg: Compress")
    compress.model.choice.value = float_name
    compress.method.value = "ptq"
    compress.image_layers.value = [image]
    compress.calibration_patches.value, compress.patch.value = 32, 128
    compress.run_button.native.click()
    wait(compress)
    shot(viewer, compress, "compress", a.out)

    predict = PredictWidget(viewer)
    viewer.window.add_dock_widget(predict, name="slimseg: Predict")
    predict.model.choice.value = float_name
    predict.image.value = image
    predict.probabilities.value = True
    predict.run_button.native.click()
    wait(predict)
    viewer.layers[f"{image.name} foreground probability"].visible = False
    viewer.layers[f"{image.name} segmentation"].contour = 0
    shot(viewer, predict, "predict", a.out)

    compare = CompareWidget(viewer)
    viewer.window.add_dock_widget(compare, name="slimseg: Compare")
    compare.models.session.value = [float_name, compress.last_model]
    compare.image.value, compare.truth.value = image, truth
    compare.run_button.native.click()
    wait(compare)
    compare.error_model.value = compress.last_model
    compare.error_button.native.click()
    viewer.layers[f"{image.name} segmentation"].visible = False
    QTest.qWait(300)
    shot(viewer, compare, "compare", a.out)
    viewer.close()
    loop_shots(a.out, a.epochs)


def loop_shots(out: Path, epochs: int) -> None:
    """Predict -> correct (brush strokes from the ground truth, as a user paints) -> Retrain -> Compare."""
    import napari
    import numpy as np

    from slimseg._widgets.compare import CompareWidget
    from slimseg._widgets.predict import PredictWidget
    from slimseg._widgets.train import TrainWidget

    viewer = napari.Viewer(title="napari-slimseg")
    viewer.window.resize(1500, 980)
    image, truth = _open_sample(viewer)
    train = TrainWidget(viewer)  # a quick first model stands in for a pretrained one
    viewer.window.add_dock_widget(train, name="slimseg: Train")
    train.image_layers.value, train.label_layers.value = [image], [truth]
    train.depth.value, train.base_width.value = 4, 8
    train.patch.value, train.batch.value, train.patches_per_epoch.value = 128, 8, 64
    train.epochs.value = max(2, epochs // 2)
    train.start_button.native.click()
    wait(train)
    predict = PredictWidget(viewer)
    viewer.window.add_dock_widget(predict, name="slimseg: Predict")
    predict_model = train.last_model
    predict.model.choice.value, predict.image.value = predict_model, image
    predict.run_button.native.click()
    wait(predict)
    seg = viewer.layers[f"{image.name} segmentation"]
    seg.brush_size = 14
    found = set(np.unique(truth.data[seg.data > 0]))
    missed = [t for t in np.unique(truth.data) if t and t not in found][:15]
    for k, t in enumerate(missed):  # paint the nuclei the model missed
        ys, xs = np.nonzero(truth.data == t)
        seg.paint((int(ys.mean()), int(xs.mean())), int(seg.data.max()) + 1 + k)
    viewer.layers.selection.active = seg
    train.epochs.value = 2
    train.retrain_button.native.click()
    wait(train)
    shot(viewer, train, "retrain", out)
    compare = CompareWidget(viewer)
    viewer.window.add_dock_widget(compare, name="slimseg: Compare")
    compare.models.session.value = [predict_model, train.last_model]  # before and after
    compare.image.value, compare.truth.value = image, truth
    compare.run_button.native.click()
    wait(compare)
    shot(viewer, compare, "retrain_compare", out)
    viewer.close()


def _has_plugin() -> bool:
    from npe2 import PluginManager

    return "napari-slimseg" in PluginManager.instance()


def _open_sample(viewer):
    """The sample's (image, ground truth) layers, as File > Open Sample gives them; the truth hidden."""
    if _has_plugin():
        viewer.open_sample("napari-slimseg", "dsb2018_nuclei")
    else:
        _add_sample(viewer)
    image, truth = viewer.layers[0], viewer.layers[1]
    truth.visible = False
    return image, truth


def _add_sample(viewer) -> None:
    """The sample contribution's layers, when the package is not pip-installed (run from the source tree)."""
    from slimseg._widgets.sample import nuclei_sample

    for data, meta, kind in nuclei_sample():
        getattr(viewer, f"add_{kind}")(data, **meta)


if __name__ == "__main__":
    main()

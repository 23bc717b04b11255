"""Fixtures for the napari widget tests (pytest-xvfb provides the X display; napari's
``make_napari_viewer`` and pytest-qt's ``qtbot`` come from their pytest plugins)."""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """napari's ``make_napari_viewer`` teardown reads ``item.rep_call`` (its own conftest sets it)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(autouse=True)
def collect_widgets_on_the_gui_thread():
    """After each test (and napari's viewer teardown), collect its garbage here, on the GUI thread.

    Closing a viewer un-parents the docked widgets, so Python owns them again. napari's teardown runs
    only a generation-1 collection; whatever is left would be freed by a later automatic collection in
    whichever thread allocates then, which may be a later test's worker thread. Qt objects must not be
    deleted there: the full suite segfaulted in a ``destroyed`` callback that way."""
    yield
    import gc

    gc.collect()


@pytest.fixture
def built(monkeypatch):
    """Every model file a runnable model is built from (``slimseg.segmenter.from_model_file``), in order."""
    import slimseg.segmenter

    files: list = []
    build = slimseg.segmenter.from_model_file
    monkeypatch.setattr(slimseg.segmenter, "from_model_file",
                        lambda mf, *args, **kw: (files.append(mf), build(mf, *args, **kw))[1])
    return files


@pytest.fixture
def notes():
    """Notifications napari shows during the test, as (severity, message) pairs."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def record(note):
        seen.append((str(note.severity), str(note.message)))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture
def sample():
    """The plugin's sample (a real DSB2018 nuclei image, 512 x 640, and its labels)."""
    from slimseg._widgets.sample import nuclei_sample

    (image, _, _), (labels, _, _) = nuclei_sample()
    return image, labels


@pytest.fixture
def viewer(make_napari_viewer, sample):
    """A viewer holding the sample as a 4-image stack ("img") and its labels ("lab")."""
    from gui_helpers import quadrants

    v = make_napari_viewer()
    image, labels = sample
    v.add_image(quadrants(image), name="img")
    v.add_labels(quadrants(labels), name="lab")
    return v


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    """A tiny float model trained (one epoch) on two shipped training images."""
    from slimseg import io
    from slimseg.config import ModelConfig, TrainConfig
    from slimseg.events import run
    from slimseg.sample import load_sample
    from slimseg.training import Trainer, to_model_file

    _, images, labels = load_sample("train")
    cfg = TrainConfig(epochs=2, batch_size=4, patch_size=32, patches_per_epoch=16, val_fraction=0.0,
                      device="cpu", bf16="off")
    result = run(Trainer(images[:2], labels[:2], cfg, ModelConfig(widths=(4, 8))).fit())
    return io.save(to_model_file(result), tmp_path_factory.mktemp("models") / "tiny.slimseg")

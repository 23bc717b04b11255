"""The npe2 manifest: it validates, every python_name imports, and napari docks the widgets through it."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

MANIFEST = Path(__file__).parents[2] / "src" / "slimseg" / "napari.yaml"


def manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_file(MANIFEST)


def test_manifest_validates():
    npe2 = Path(sys.executable).with_name("npe2")
    cmd = [str(npe2)] if npe2.exists() else [sys.executable, "-m", "npe2"]
    out = subprocess.run([*cmd, "validate", str(MANIFEST)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout


@pytest.mark.parametrize("command", manifest().contributions.commands, ids=lambda c: c.id)
def test_every_python_name_imports(command):
    module, _, attr = command.python_name.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_widgets_and_sample_are_contributed():
    m = manifest()
    commands = {c.id: c.python_name for c in m.contributions.commands}
    assert {w.display_name for w in m.contributions.widgets} == {"Train", "Compress", "Predict", "Compare"}
    assert all(w.command in commands for w in m.contributions.widgets)
    assert [s.key for s in m.contributions.sample_data] == ["dsb2018_nuclei"]


def test_widget_modules_do_not_import_torch_compile_machinery():
    """A peer plugin segfaults when triton (torch._dynamo) loads after napari's GL context: opening our
    widgets must not import it."""
    code = ("import sys, slimseg._widgets.train, slimseg._widgets.predict, slimseg._widgets.compare, "
            "slimseg._widgets.compress, slimseg._widgets.sample; "
            "print(sorted(m for m in ('torch._dynamo', 'triton', 'torch._inductor') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.gui
def test_sample_and_widgets_open_through_napari(make_napari_viewer, npe2pm):
    """Through napari's plugin machinery (a clean npe2 plugin manager holding this manifest), as a user
    who pip-installed the plugin would: File > Open Sample, Plugins > slimseg > each widget."""
    viewer = make_napari_viewer()
    npe2pm.register(manifest())
    viewer.open_sample("napari-slimseg", "dsb2018_nuclei")
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Labels"]
    assert "DSB2018" in viewer.layers[0].metadata["source"] and viewer.layers[1].data.max() > 10
    widgets = {name: viewer.window.add_plugin_dock_widget("napari-slimseg", name)[1]
               for name in ("Train", "Predict", "Compare", "Compress")}
    # napari hands each plugin widget a proxy of the viewer: layers are found through it, and the
    # widgets share one model store
    assert [layer.name for layer in widgets["Train"].image_layers.choices] == ["nuclei"]
    assert [layer.name for layer in widgets["Predict"].image.choices] == ["nuclei"]
    assert [layer.name for layer in widgets["Compare"].truth.choices] == ["nuclei labels (ground truth)"]
    from slimseg._widgets._session import session_models

    assert session_models(widgets["Train"].viewer) is session_models(widgets["Predict"].viewer)
    assert session_models(widgets["Predict"].viewer) is session_models(viewer)

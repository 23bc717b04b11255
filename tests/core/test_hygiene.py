"""The core never imports napari, Qt or magicgui; ``import slimseg`` imports neither torch nor Qt."""

import subprocess
import sys

CORE = ["slimseg.cli", "slimseg.train", "slimseg.predict", "slimseg.evaluate", "slimseg.segmenter",
        "slimseg.io", "slimseg.metrics", "slimseg.losses", "slimseg.optim", "slimseg.data", "slimseg.export.bioimageio"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_slimseg_is_light():
    mods = _modules_after("import slimseg")
    assert "torch" not in mods and not any(m.startswith(("napari", "PyQt", "qtpy")) for m in mods)


def test_core_never_imports_gui_or_compile_stack():
    mods = _modules_after("\n".join(f"import {m}" for m in CORE))
    bad = sorted(m for m in mods if m.split(".")[0] in {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2",
                                                       "PySide6", "magicgui", "superqt", "triton"})
    assert not bad, bad
    assert "torch._dynamo" not in mods

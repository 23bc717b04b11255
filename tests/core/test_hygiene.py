"""Import hygiene: the core never imports napari, Qt, magicgui or the compile stack; ``import slimseg`` imports
neither torch nor Qt; the import graph has no circle and no import from a lower layer to a higher one."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "slimseg"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(_module_name(p) for p in SRC.rglob("*.py"))
CORE = [m for m in MODULES if not m.startswith("slimseg._widgets")]  # every core package and module


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


# -- the import graph -----------------------------------------------------------------------------
# Layers, lowest first: a module imports only from its own layer or lower ones (lazy imports inside
# functions count too), and no import circle exists at all.
LAYERS = [
    ["slimseg._version", "slimseg.errors", "slimseg.registry", "slimseg.events", "slimseg.host", "slimseg.files",
     "slimseg.config"],
    ["slimseg.metrics", "slimseg.instances", "slimseg.scale", "slimseg.model", "slimseg.losses", "slimseg.optim", "slimseg.device",
     "slimseg.options", "slimseg.data", "slimseg.baseline", "slimseg.io", "slimseg.safe_npy", "slimseg.steps", "slimseg.sample",
     "slimseg.models"],
    ["slimseg.predict", "slimseg.stacks", "slimseg.tune", "slimseg.kinds", "slimseg.checkpoint", "slimseg.start"],
    ["slimseg.segmenter"],
    ["slimseg.training", "slimseg.evaluation"],
    ["slimseg.compress", "slimseg.study", "slimseg.export", "slimseg.large", "slimseg.distributed"],
    ["slimseg.cli", "slimseg.compress.cli", "slimseg.study.cli", "slimseg.api", "slimseg"],  # "slimseg": the facade
    ["slimseg._widgets"],
]
def import_graph() -> dict[str, set[str]]:
    """slimseg module -> the slimseg modules it imports anywhere in its source."""
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                for a in node.names:
                    targets.add(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def _layer(module: str) -> int:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != "slimseg" and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), rank)
    assert best is not None, f"{module} has no layer in LAYERS: add it"
    return best[1]


def test_no_import_goes_up_a_layer():
    graph = import_graph()
    upward = sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts if _layer(t) > _layer(m))
    assert not upward, upward


def test_no_import_circle():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_graph_sees_lazy_imports():
    graph = import_graph()
    assert "slimseg.io" in graph["slimseg.cli"]  # imported inside a function only

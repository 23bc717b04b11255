"""The table of model kinds: each kind listed once, loaders imported only when needed, one layout
check, clear errors for unknown kinds and engines, and the int8 engine as an argument."""

import ast
import dataclasses
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slimseg import io, kinds
from slimseg.config import ModelConfig, NormConfig
from slimseg.errors import InputError, ModelFileError
from slimseg.events import run
from slimseg.kinds import ENGINES, KINDS, onnx_int8, pt2e_storage, sparse
from slimseg.model import UNet, fold_batchnorm
from slimseg.segmenter import from_model_file, load_segmenter

KINDS_DIR = Path(kinds.__file__).parent
SRC = KINDS_DIR.parent


def float_file() -> io.ModelFile:
    torch.manual_seed(0)
    model = UNet(ModelConfig(widths=(4, 8))).eval()
    return io.from_module(model, model.config, NormConfig())


@pytest.fixture(scope="module")
def int8_file() -> io.ModelFile:
    """A tiny int8-pt2e file, calibrated on random batches (made without slimseg.compress)."""
    from slimseg.kinds import pt2e_graph

    folded = fold_batchnorm(UNet(ModelConfig(widths=(4, 8))).eval())
    prepared = run(pt2e_graph.calibrate(folded, [torch.rand(2, 1, 16, 16) for _ in range(2)]))
    return pt2e_storage.to_model_file(folded, prepared, NormConfig(), {})


def test_every_kind_is_listed_once_and_its_module_exists():
    table = ast.parse((KINDS_DIR / "__init__.py").read_text())
    listed = [call.args[0].value for call in ast.walk(table)
              if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Kind"]
    assert sorted(listed) == sorted(set(listed)) == sorted(KINDS)
    assert set(KINDS) == {"float", "float-sparse", "int8-pt2e", "int8-onnx"}
    assert all(kind.name == name for name, kind in KINDS.items())
    assert all((KINDS_DIR / f"{kind.module}.py").is_file() for kind in KINDS.values())
    assert {m.KIND for m in (sparse, pt2e_storage, onnx_int8)} <= set(KINDS)  # the writers' kinds are listed
    assert [name for name, kind in KINDS.items() if kind.engines] == ["int8-pt2e"]
    assert KINDS["int8-pt2e"].engines == ENGINES


def test_an_unknown_kind_is_a_clear_model_file_error():
    mf = dataclasses.replace(float_file(), kind="int4-magic")
    with pytest.raises(ModelFileError, match=r"x\.slimseg: unknown model kind 'int4-magic' \(this slimseg reads "
                       r"float, float-sparse, int8-pt2e, int8-onnx\); upgrade"):
        from_model_file(mf, "x.slimseg")


def test_loaders_are_imported_by_the_table_only_when_a_file_of_their_kind_loads():
    code = ("import sys\nfrom slimseg import io\nfrom slimseg.model import UNet\nfrom slimseg.config import "
            "ModelConfig, NormConfig\nfrom slimseg.segmenter import from_model_file\n"
            "m = UNet(ModelConfig(widths=(4, 8)))\n"
            "from_model_file(io.from_module(m, m.config, NormConfig()))\n"
            "print(' '.join(sorted(n for n in sys.modules if n.startswith(('slimseg.kinds', 'slimseg.compress', "
            "'torchao', 'onnxruntime', 'torch._dynamo', 'torch._inductor')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["slimseg.kinds", "slimseg.kinds.float32"]


def imported_modules(path: Path) -> set[str]:
    """The absolute names of everything a module of slimseg.kinds imports, lazily or not."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), "slimseg.kinds")
            names |= {base} | {f"{base}.{a.name}" for a in node.names}
    return names


def test_kinds_import_neither_the_makers_nor_the_segmenter():
    forbidden = ("slimseg.compress", "slimseg.segmenter", "slimseg._widgets")
    for path in KINDS_DIR.glob("*.py"):
        assert not [n for n in imported_modules(path) if n.startswith(forbidden)], path
    assert "slimseg.model" in imported_modules(KINDS_DIR / "float32.py")  # the scan sees relative imports


def test_no_caller_outside_the_table_compares_compressed_kind_names():
    pattern = re.compile(r"kind\s*[!=]=\s*['\"](int8|float-sparse)")
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if KINDS_DIR not in p.parents and pattern.search(p.read_text())]
    assert offenders == []


@pytest.mark.parametrize("name", [n for n, k in KINDS.items() if k.layout])
def test_one_layout_check_refuses_newer_or_missing_layouts(name):
    kind = KINDS[name]
    base = float_file()
    for layout in ({"format": kind.version + 1}, {}):
        mf = io.ModelFile(base.model_config, base.norm, {}, name, {kind.layout: layout})
        with pytest.raises(ModelFileError, match=f"this {name} model has layout version .*newer.*upgrade"):
            from_model_file(mf, engine="reference")


def test_a_kind_without_its_optional_dependency_says_what_to_install(monkeypatch):
    monkeypatch.setitem(KINDS, "int8-onnx", dataclasses.replace(KINDS["int8-onnx"], module="not_installed"))
    mf = dataclasses.replace(float_file(), kind="int8-onnx")
    with pytest.raises(ModelFileError, match=r"m\.slimseg: model kind 'int8-onnx' needs an optional dependency "
                       r".*pip install 'napari-slimseg\[compress\]'"):
        from_model_file(mf, "m.slimseg")


def test_the_engine_is_an_argument_that_no_environment_variable_overrides(int8_file, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMSEG_INT8_ENGINE", "compile")  # the removed override: must change nothing
    seg = from_model_file(int8_file, engine="reference")
    assert seg.meta["runtime"] == "int8 PT2E, reference" and seg.kind == "int8-pt2e"
    path = io.save(int8_file, tmp_path / "q.slimseg")
    seg = load_segmenter(path, engine="lowered")
    assert seg.meta["runtime"] == "int8 PT2E, lowered"
    with torch.inference_mode():
        assert seg.model_fn(torch.rand(1, 1, 15, 22)).shape == (1, 2, 15, 22)
    assert "runtime" not in int8_file.meta  # the runtime notes go to the Segmenter, not the file


@pytest.mark.parametrize("engine", ["tensorrt", "", None])
def test_an_unknown_engine_is_refused_whatever_the_kind(int8_file, engine):
    for mf in (float_file(), int8_file):
        with pytest.raises(InputError, match="unknown int8 engine .*choose one of auto, compile, lowered, reference"):
            from_model_file(mf, engine=engine)


def test_kinds_without_an_engine_choice_ignore_it():
    for engine in ENGINES:
        seg = from_model_file(float_file(), engine=engine)
        assert seg.kind == "float" and seg.module is not None and "runtime" not in seg.meta


def test_the_cli_offers_the_engines_of_the_table():
    from slimseg.cli import build_parser

    parser = build_parser()
    for command in (["predict", "m", "i", "--out", "o"], ["evaluate", "m", "d"], ["benchmark", "m", "--data", "d"]):
        assert parser.parse_args(command).int8_engine == "auto"
        for engine in ENGINES:
            assert parser.parse_args([*command, "--int8-engine", engine]).int8_engine == engine
        with pytest.raises(SystemExit):
            parser.parse_args([*command, "--int8-engine", "tensorrt"])

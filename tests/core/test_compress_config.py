"""CompressConfig validation, the method registry, and import hygiene of slimseg.compress."""

import subprocess
import sys

import pytest

from slimseg.compress import COMPRESS_METHODS, CompressConfig
from slimseg.errors import InputError


def test_the_registry_holds_the_documented_methods():
    assert COMPRESS_METHODS.names() == ["ptq", "qat", "prune-unstructured", "prune-structured", "prune-ptq"]


def test_an_unknown_method_is_refused_with_the_valid_names():
    with pytest.raises(InputError, match="prune-structured"):
        CompressConfig(method="distill")


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5])
def test_a_ratio_outside_the_open_unit_interval_is_refused(ratio):
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        CompressConfig(method="prune-unstructured", ratio=ratio)


def test_a_ratio_for_a_method_that_does_not_prune_is_refused():
    with pytest.raises(InputError, match="pruning methods"):
        CompressConfig(method="ptq", ratio=0.5)


@pytest.mark.parametrize("kw, match", [
    ({"minutes": -1}, "minutes"),
    ({"method": "qat", "minutes": 0}, "qat needs"),
    ({"calibration_patches": 0}, "calibration_patches"),
    ({"backend": "tensorrt"}, "backend"),
    ({"patch_size": 40}, "multiple of 16"),
    ({"batch_size": 0}, "batch_size"),
    ({"lr": 0}, "lr"),
])
def test_bad_settings_are_refused_by_name(kw, match):
    with pytest.raises(InputError, match=match):
        CompressConfig(**kw)


def test_defaults_and_normalised_names():
    cfg = CompressConfig(method=" Prune-Structured ")
    assert cfg.method == "prune-structured" and cfg.pruning_ratio == 0.5 and cfg.fine_tunes
    assert not CompressConfig(method="prune-structured", minutes=0).fine_tunes
    assert not CompressConfig(method="ptq").fine_tunes


def test_importing_compress_loads_no_compile_stack_or_optional_backends():
    code = ("import sys, slimseg.compress, slimseg.compress.cli, slimseg.compress.report\n"
            "print('\\n'.join(sys.modules))")
    mods = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    heavy = {"torchao", "torch._dynamo", "torch._inductor", "onnxruntime", "onnx", "torch_pruning", "triton"}
    assert not sorted(m for m in mods if m in heavy or m.split(".")[0] in heavy - {"torch._dynamo", "torch._inductor"})


def test_auto_backend_follows_the_cpus_int8_instructions(monkeypatch):
    import importlib.util

    from slimseg.compress import methods

    assert methods.int8_backend("onnx") == ("onnx", "asked for")
    monkeypatch.setattr(methods, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_vnni"}))
    assert methods.int8_backend("auto")[0] == "pt2e"
    monkeypatch.setattr(methods, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert methods.int8_backend("auto")[0] == "onnx"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    backend, why = methods.int8_backend("auto")
    assert backend == "pt2e" and "not installed" in why

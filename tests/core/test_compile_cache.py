import hashlib
import os
import warnings

import pytest
import torch

from slimseg.kinds import compile_cache


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    monkeypatch.setattr(compile_cache, "_state", {})
    return tmp_path


def test_the_cache_is_slimsegs_own_folder(fresh, monkeypatch):
    monkeypatch.setenv("SLIMSEG_CACHE_DIR", str(fresh / "c"))
    path = compile_cache.inductor_dir()
    assert path.startswith(str(fresh / "c")) and os.path.isdir(path)
    import torch._inductor.runtime.cache_dir_utils as cdu

    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with compile_cache.compiling():
        assert cdu.cache_dir() == path  # Inductor reads and writes there while compiling
    assert os.environ.get("TORCHINDUCTOR_CACHE_DIR") == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_cache_warns_once_and_caches_nothing_posix(fresh, monkeypatch):
    ro = fresh / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    monkeypatch.setenv("SLIMSEG_CACHE_DIR", str(ro / "c"))
    _check_no_cache()


def test_an_unwritable_cache_warns_once_and_caches_nothing(fresh, monkeypatch):
    blocker = fresh / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SLIMSEG_CACHE_DIR", str(blocker / "c"))  # a folder under a file cannot be made
    _check_no_cache()


def _check_no_cache():
    import torch._inductor.config as inductor_config
    import torch._inductor.runtime.cache_dir_utils as cdu

    with pytest.warns(RuntimeWarning, match="not writable") as record:
        assert compile_cache.inductor_dir() is None
        assert compile_cache.inductor_dir() is None
    assert len([w for w in record if "not writable" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with compile_cache.compiling():
            assert not inductor_config.fx_graph_cache
            scratch = cdu.cache_dir()
            assert os.path.basename(scratch).startswith("slimseg-compile-")
    assert not os.path.exists(scratch)  # nothing kept


def test_a_cache_entry_that_does_not_verify_or_load_is_removed_never_trusted(fresh, monkeypatch):
    monkeypatch.setenv("SLIMSEG_CACHE_DIR", str(fresh / "c"))
    packages = os.path.join(compile_cache.inductor_dir(), "packages")
    os.makedirs(packages)
    tampered, junk = (os.path.join(packages, n) for n in ("tampered.pt2", "junk.pt2"))
    for path, digest in ((tampered, "0" * 64), (junk, None)):
        with open(path, "wb") as f:
            f.write(b"not an AOTInductor package")
        with open(path[:-4] + ".sha256", "w") as f:  # junk: its true digest, so only loading can fail
            f.write(digest or hashlib.sha256(b"not an AOTInductor package").hexdigest())
    from pathlib import Path

    assert compile_cache.load_package(Path(tampered)) is None
    assert compile_cache.load_package(Path(junk)) is None
    assert os.listdir(packages) == []
    assert compile_cache.load_package(Path(packages) / "missing.pt2") is None


class Affine(torch.nn.Module):
    def forward(self, x):
        return x * 2 + 1


@pytest.mark.slow
def test_a_compiled_package_is_stored_once_and_reused_by_the_next_process(fresh, monkeypatch):
    monkeypatch.setenv("SLIMSEG_CACHE_DIR", str(fresh / "c"))
    built = []

    def graph():
        built.append(1)
        return torch.fx.symbolic_trace(Affine())

    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    fn = compile_cache.compiled("affine-1x1x2x3", graph, torch.zeros(1, 1, 2, 3))
    torch.testing.assert_close(fn(x), x * 2 + 1)
    packages = os.path.join(compile_cache.inductor_dir(), "packages")
    assert sorted(os.listdir(packages)) == ["affine-1x1x2x3.pt2", "affine-1x1x2x3.sha256"]
    again = compile_cache.compiled("affine-1x1x2x3", graph, torch.zeros(1, 1, 2, 3))  # as a new process would
    torch.testing.assert_close(again(x), x * 2 + 1)
    assert built == [1]  # the graph was built (and compiled) once
    scratch = compile_cache.compiled(None, graph, torch.zeros(1, 1, 2, 3))  # no key: nothing stored
    torch.testing.assert_close(scratch(x), x * 2 + 1)
    assert len(os.listdir(packages)) == 2


def test_only_a_package_of_one_library_and_its_sources_is_run_through_the_c_interface(tmp_path):
    import zipfile

    model = "p/data/aotinductor/model/"
    for extra in (["p/data/constants/weights.bin"], [model + "second.wrapper.so"]):
        path = tmp_path / "package.pt2"
        with zipfile.ZipFile(path, "w") as z:
            for name in [model + "a.wrapper.so", model + "a.wrapper.cpp", "p/archive_format", *extra]:
                z.writestr(name, b"not loaded")
        assert compile_cache._run_library(str(path)) is None  # left to torch's loader, nothing extracted


class Matmuls(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(1024, 1024) / 32, requires_grad=False)

    def forward(self, x):
        for _ in range(6):
            x = torch.tanh(x @ self.w)
        return x


@pytest.mark.slow
def test_a_compiled_model_lets_other_python_threads_run_while_it_runs(fresh, monkeypatch):
    """napari's event loop is one of those threads: torch's C++ loader held the GIL for each whole tile."""
    import threading
    import time

    monkeypatch.setenv("SLIMSEG_CACHE_DIR", str(fresh / "c"))
    torch.manual_seed(0)
    module, x = Matmuls().eval(), torch.rand(1, 1, 1024, 1024)
    compile_cache.compiled("matmuls", lambda: torch.fx.symbolic_trace(module), x)
    fn = compile_cache.cached("matmuls")  # as a later process loads it
    with torch.inference_mode():
        torch.testing.assert_close(fn(x), module(x), rtol=1e-4, atol=1e-5)
        ticks, spans, done = [], [], threading.Event()

        def tick():
            while not done.is_set():
                ticks.append(time.perf_counter())
                time.sleep(0.001)

        ticker = threading.Thread(target=tick)
        ticker.start()
        for _ in range(5):
            start = time.perf_counter()
            fn(x)
            spans.append((start, time.perf_counter()))
        done.set()
        ticker.join()
    start, end = max(spans, key=lambda s: s[1] - s[0])
    quarter = (end - start) / 4
    assert end - start > 0.02, "the model ran too fast to tell"
    assert any(start + quarter < t < end - quarter for t in ticks)  # the ticker ran during the call

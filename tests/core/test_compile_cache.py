import os
import warnings

import pytest

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


def test_set_aside_empties_the_cache(fresh, monkeypatch):
    monkeypatch.setenv("SLIMSEG_CACHE_DIR", str(fresh / "c"))
    path = compile_cache.inductor_dir()
    (fresh / "c").joinpath(os.path.basename(path), "entry").write_bytes(b"junk")
    compile_cache.set_aside()
    assert os.listdir(path) == []

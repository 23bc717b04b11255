import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True, scope="session")
def _private_compile_cache(tmp_path_factory):
    """torch.compile's cache (slimseg.kinds.compile_cache) in a folder of the test session, not the user's."""
    old = os.environ.get("SLIMSEG_CACHE_DIR")
    os.environ["SLIMSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("slimseg-cache"))
    yield
    if old is None:
        del os.environ["SLIMSEG_CACHE_DIR"]
    else:
        os.environ["SLIMSEG_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def background_compiles(request, monkeypatch):
    """The tile shapes int8 models asked a background process to compile (``slimseg.kinds.background``),
    recorded instead of compiled: a child process compiling for a minute would outlive the test and
    take the CPU from the next ones. A test marked ``compiles_in_background`` runs the real thing."""
    asked: list = []
    if request.node.get_closest_marker("compiles_in_background") is None:
        from slimseg.kinds.background import BackgroundCompiler

        monkeypatch.setattr(BackgroundCompiler, "_compile", lambda self, shapes: asked.extend(shapes))
    return asked

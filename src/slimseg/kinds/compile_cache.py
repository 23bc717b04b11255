"""slimseg's own on-disk cache of what ``torch.compile`` generates (Inductor's FX graph cache), so a
model and tile shape compile once per machine, not once per process.

The cache lives under the user cache dir (``SLIMSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/slimseg``,
else ``~/.cache/slimseg``) and holds only what Inductor generated on this machine; nothing in it
comes from a model file. A directory that is not writable means no cache (one warning); an entry
that fails to load is set aside and compiled again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

_state: dict[str, str | None] = {}


def cache_root() -> Path:
    if os.environ.get("SLIMSEG_CACHE_DIR"):
        return Path(os.environ["SLIMSEG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "slimseg"


def inductor_dir() -> str | None:
    """The compile cache folder for this torch version, or None (with one warning) where it cannot be written."""
    import torch

    root = cache_root()
    key = str(root)
    if key not in _state:
        path = root / f"inductor-{torch.__version__.replace('+', '-')}"
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path):
                pass
            _state[key] = str(path)
        except OSError as err:
            warnings.warn(f"slimseg's compile cache {path} is not writable ({err.strerror or err}): int8 models "
                          "compile again in every process; set SLIMSEG_CACHE_DIR to a writable folder",
                          RuntimeWarning, stacklevel=2)
            _state[key] = None
    return _state[key]


@contextlib.contextmanager
def compiling() -> Iterator[None]:
    """Run the first call of a ``torch.compile``'d function (which compiles) with slimseg's cache:
    Inductor reads and writes there; without a usable cache it compiles in a private temporary folder
    and caches nothing."""
    import torch._inductor.config as inductor_config
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    path = inductor_dir()
    if path is not None:
        with temporary_cache_dir(path):
            yield
        return
    scratch = tempfile.mkdtemp(prefix="slimseg-compile-")
    try:
        with temporary_cache_dir(scratch), inductor_config.patch(fx_graph_cache=False, autotune_local_cache=False):
            yield
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def set_aside() -> None:
    """Move the cache aside (after a compile through it failed): the next compile rebuilds it from nothing."""
    path = inductor_dir()
    if path is not None and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, exist_ok=True)

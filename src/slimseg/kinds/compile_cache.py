"""slimseg's own on-disk cache of compiled int8 models: one AOTInductor package per model and tile
shape, compiled ahead of time once per machine (at ``slimseg compress`` time, or by the first run that
meets the shape) and loaded in milliseconds by every later process, with no tracing or compiling.

The cache lives under the user cache dir (``SLIMSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/slimseg``,
else ``~/.cache/slimseg``) and holds only what Inductor generated on this machine from slimseg's own
graphs; nothing in it comes from a model file, and a model file never carries code. Each package sits
beside its SHA-256: an entry whose bytes do not match, or that fails to load, is removed and compiled
again, never trusted. A directory that is not writable means no cache (one warning): packages are then
compiled in a private temporary folder, loaded and deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# what Inductor is asked for: constants folded into the generated code (the int8 weights are fixed)
INDUCTOR_CONFIGS = {"freezing": True}

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
    """Compile with slimseg's cache as Inductor's own cache and working folder; without a usable cache
    Inductor works in a private temporary folder and caches nothing."""
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


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _remove(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()


def load_package(path: Path) -> Callable[..., Any] | None:
    """The compiled model in the package at ``path``, or None where there is none that can be trusted:
    missing, bytes that do not match its SHA-256, or a package that fails to load (those are removed)."""
    digest = path.with_suffix(".sha256")
    if not (path.is_file() and digest.is_file()):
        return None
    try:
        if digest.read_text().strip() == _sha256(path):
            return _open_package(str(path))
    except Exception:  # noqa: BLE001 - a damaged or foreign entry: rebuilt, never trusted
        pass
    _remove(path, digest)
    return None


def _open_package(path: str) -> Callable[..., Any]:
    """The one-tensor-in, one-tensor-out model of an AOTInductor package. Its compiled library is run
    through AOTInductor's C interface where the package holds nothing else (:func:`_run_library`), else
    through torch's C++ loader, which holds Python's GIL while the model runs: every other Python thread
    (napari's event loop among them) waits out each tile. Either way not through
    ``torch._inductor.aoti_load_package``, which first imports torch._dynamo and torch.export (1.7 s) and
    compiles and runs probe programs to check the CPU's vector instructions (1.4 s), only to log a
    mismatch; the cache key already names this CPU's instruction set (``pt2e_runner.cache_key``)."""
    fn = _run_library(path)
    if fn is not None:
        return fn
    import torch

    loader = torch._C._aoti.AOTIModelPackageLoader(path, "model", False, 1, -1)

    def run(x: Any) -> Any:
        return loader.boxed_run([x])[0]

    return run


# what an AOTInductor package for the CPU holds besides its compiled library when the constants are
# compiled into it: sources, build metadata and the archive's bookkeeping, none needed to run it
_BESIDES_LIBRARY = (".wrapper.cpp", ".kernel.cpp", "_metadata.json", "/archive_format", "/archive_version",
                    "/.data/version", "/byteorder", "/.data/serialization_id")


def _run_library(path: str) -> Callable[..., Any] | None:
    """The package's compiled library called through AOTInductor's C interface with ctypes, which lets
    go of the GIL for the call; None where the package holds anything else it may need (weights files,
    a second library, custom-op specs) or the library does not load as one model of one input and one
    output."""
    import ctypes
    import weakref
    import zipfile

    import torch

    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        libraries = [n for n in names if n.endswith(".wrapper.so")]
        if len(libraries) != 1 or not all(n in libraries or n.endswith(_BESIDES_LIBRARY) for n in names):
            return None
        scratch = tempfile.mkdtemp(prefix="slimseg-aoti-")
        try:
            lib = ctypes.CDLL(z.extract(libraries[0], scratch))
        finally:  # the loaded library stays mapped
            shutil.rmtree(scratch, ignore_errors=True)
    ptr, size = ctypes.c_void_p, ctypes.c_size_t
    ptr_out, size_out = ctypes.POINTER(ptr), ctypes.POINTER(size)
    for fn_name, args in (("CreateWithDevice", [ptr_out, size, ctypes.c_char_p, ctypes.c_char_p]), ("Delete", [ptr]),
                       ("GetNumInputs", [ptr, size_out]), ("GetNumOutputs", [ptr, size_out]),
                       ("Run", [ptr, ptr_out, size, ptr_out, size, ptr, ptr])):  # as aoti_runtime/interface.h
        fn = getattr(lib, f"AOTInductorModelContainer{fn_name}")
        fn.argtypes, fn.restype = args, ctypes.c_int32  # AOTIRuntimeError; 0 is success
    handle, count = ctypes.c_void_p(), ctypes.c_size_t()
    if lib.AOTInductorModelContainerCreateWithDevice(ctypes.byref(handle), 1, b"cpu", None) != 0:
        return None
    counts = []
    for query in (lib.AOTInductorModelContainerGetNumInputs, lib.AOTInductorModelContainerGetNumOutputs):
        counts.append(count.value if query(handle, ctypes.byref(count)) == 0 else -1)
    if counts != [1, 1]:
        lib.AOTInductorModelContainerDelete(handle)
        return None
    # private prototypes: ctypes.pythonapi's own functions are shared with every other user of ctypes
    api, obj, name = ctypes.pythonapi, ctypes.py_object, ctypes.c_char_p
    capsule_pointer = ctypes.PYFUNCTYPE(ptr, obj, name)(("PyCapsule_GetPointer", api))
    new_capsule = ctypes.PYFUNCTYPE(obj, ptr, name, ptr)(("PyCapsule_New", api))
    aoti = torch._C._aoti

    def run(x: Any) -> Any:
        (capsule,) = aoti.unsafe_alloc_void_ptrs_from_tensors([x.contiguous()])  # a new handle, which Run frees
        inputs, outputs = (ctypes.c_void_p * 1)(capsule_pointer(capsule, None)), (ctypes.c_void_p * 1)()
        if lib.AOTInductorModelContainerRun(handle, inputs, 1, outputs, 1, None, None) != 0:
            raise RuntimeError(f"the compiled model {os.path.basename(path)} failed (its message is on stderr)")
        return aoti.alloc_tensors_by_stealing_from_void_ptrs([new_capsule(outputs[0], None, None)])[0]

    weakref.finalize(run, lib.AOTInductorModelContainerDelete, handle)
    return run


def package_path(key: str | None) -> Path | None:
    """Where the package of cache entry ``key`` lives, or None (no key, or no usable cache)."""
    folder = inductor_dir()
    return Path(folder) / "packages" / f"{key}.pt2" if folder is not None and key else None


def cached(key: str | None) -> Callable[..., Any] | None:
    """The compiled model of cache entry ``key`` when it is there and sound, else None; never compiles."""
    path = package_path(key)
    return load_package(path) if path is not None else None


def compiled(key: str | None, graph: Callable[[], Any], example: Any) -> Callable[..., Any]:
    """The AOTInductor-compiled ``graph()`` (a GraphModule, built only when it must be compiled) for
    inputs shaped like ``example``: loaded from the cache entry ``key`` when it is there and sound,
    else compiled (and stored there when ``key`` is given and the cache is writable)."""
    path = package_path(key)
    if path is not None and (fn := load_package(path)) is not None:
        return fn
    import torch
    import torch._inductor

    with torch.inference_mode(False), torch.no_grad():
        program = torch.export.export(graph(), (example,))
    with compiling():
        if path is None:
            scratch = tempfile.mkdtemp(prefix="slimseg-package-")
            try:
                out = torch._inductor.aoti_compile_and_package(program, package_path=os.path.join(scratch, "m.pt2"),
                                                               inductor_configs=INDUCTOR_CONFIGS)
                return _open_package(out)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        from ..files import atomic_path, write_text

        with atomic_path(path) as tmp:  # the package first, then its digest: a half-written entry never verifies
            torch._inductor.aoti_compile_and_package(program, package_path=str(tmp), inductor_configs=INDUCTOR_CONFIGS)
        write_text(path.with_suffix(".sha256"), _sha256(path))
    return _open_package(str(path))

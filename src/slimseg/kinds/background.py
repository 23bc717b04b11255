"""Compiling an int8 PT2E model in another process, for programs that must not compile in their own.

napari is one: compiling loads Inductor's code generation (and triton where it is installed) after
napari's OpenGL context is up, which crashed a peer plugin under Mesa. There the model runs on the
``cached`` engine (:mod:`.pt2e_runner`): the packages already in :mod:`.compile_cache`, and for a tile
shape that is not there yet, the lowered kernels while a :class:`BackgroundCompiler` compiles it into
the cache in a separate, low-priority ``python -m slimseg.kinds.background`` process. The next call
of that shape loads the package. The child reads the model from a slimseg model file written into the
cache for it (weights and settings, never code) and removes nothing but what it was given.

Run as a module: ``python -m slimseg.kinds.background MODEL_FILE SHAPE...`` (shapes as ``NxCxHxW``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from .. import io

GATHER_S = 1.0  # shapes asked for within this long go to one process (each pays ~5 s to start and rebuild)
_COMPILERS: dict[str, BackgroundCompiler] = {}  # one per cache key: a model is never compiled twice at once
_COMPILERS_LOCK = threading.Lock()


def compiler_for(mf: io.ModelFile, key: str) -> BackgroundCompiler:
    """The background compiler of the int8 PT2E model ``mf`` (cache key ``key``), shared by every
    runner of that model in this process."""
    with _COMPILERS_LOCK:
        compiler = _COMPILERS.get(key)
        if compiler is None:
            compiler = _COMPILERS[key] = BackgroundCompiler(mf, key)
        return compiler


class BackgroundCompiler:
    """Compiles the tile shapes it is asked for into the compile cache, one child process at a time;
    each shape is asked for once. ``failures`` keeps the end of a failed child's output."""

    def __init__(self, mf: io.ModelFile, key: str) -> None:
        self.mf, self.key = mf, key
        self.failures: list[str] = []
        self._asked: set[tuple[int, ...]] = set()
        self._queue: list[tuple[int, ...]] = []
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def want(self, shapes: Iterable[tuple[int, ...]]) -> None:
        """Compile ``shapes`` (tuples N, C, H, W) in the background unless already asked for."""
        with self._lock:
            new = [tuple(s) for s in shapes if tuple(s) not in self._asked]
            if not new:
                return
            self._asked.update(new)
            self._queue.extend(new)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="slimseg-compile", daemon=True)
                self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or compiling; False if ``timeout`` (seconds) passed first."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                thread = self._thread
            if thread is None:
                return True
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
            if thread.is_alive():
                return False

    def _work(self) -> None:
        while True:
            time.sleep(GATHER_S)
            with self._lock:
                shapes, self._queue = self._queue, []
                if not shapes:
                    self._thread = None
                    return
            try:
                self._compile(shapes)
            except Exception as err:  # noqa: BLE001 - the model keeps running lowered; say why in failures
                self.failures.append(f"{type(err).__name__}: {err}")

    def _compile(self, shapes: list[tuple[int, ...]]) -> None:
        from . import compile_cache

        folder = compile_cache.inductor_dir()
        if folder is None:  # no cache: a package compiled elsewhere could not reach this process
            return
        pending = Path(folder) / "pending"
        pending.mkdir(exist_ok=True)
        model = pending / f"{self.key}-{os.getpid()}.slimseg"
        io.save(self.mf, model, overwrite=True)
        try:
            cmd = [sys.executable, "-m", __name__, str(model), *("x".join(map(str, s)) for s in shapes)]
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
                                  start_new_session=True)  # a Ctrl-C of the parent does not cut a compile short
            if proc.returncode != 0:
                self.failures.append((proc.stderr or proc.stdout or f"exit code {proc.returncode}")[-2000:])
        finally:
            with contextlib.suppress(OSError):
                model.unlink()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: python -m slimseg.kinds.background MODEL_FILE NxCxHxW...", file=sys.stderr)
        return 2
    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)  # the program that asked keeps the CPU first
    import torch

    from . import load

    meta: dict = {}
    model_fn = load(io.load(args[0]), meta, engine="compile").model_fn  # through the kinds table, as any caller
    with torch.inference_mode():
        for shape in args[1:]:
            model_fn(torch.zeros(tuple(int(v) for v in shape.split("x"))))
    if not meta.get("runtime", "").endswith("compile"):
        print("; ".join(meta.get("runtime_notes", [])) or f"ran as {meta.get('runtime')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

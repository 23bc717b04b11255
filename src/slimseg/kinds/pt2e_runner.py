"""Kind ``int8-pt2e`` at run time: the converted graph (:mod:`.pt2e_storage`) as a callable on one
of the :data:`~slimseg.kinds.ENGINES`. ``auto`` is ``compile`` (oneDNN int8 kernels fused by Inductor,
compiled ahead of time per tile shape and cached: :mod:`.compile_cache`) where a C++ compiler is
present, otherwise the same kernels without code generation ("lowered"). ``cached`` never compiles in
this process: packages already in the cache, else the lowered kernels while another process compiles
the shape (:mod:`.background`)."""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .. import io
from ..errors import ModelFileError
from . import Runnable, check_engine
from . import pt2e_inductor as inductor
from .fold import padded
from .pt2e_storage import rebuild, stored

GRAPH_VERSION = 1  # bump when for_inductor's rewrites change what a cached package computes


class Int8Runner:
    """The int8 model as a callable on (N, C, H, W) batches whose sizes are multiples of the size step.

    ``converted`` is the converted graph, or a function that builds it (seconds) when first needed: a
    compiled model whose shapes are all in the cache never builds it. ``compile``: one AOTInductor
    package per input shape, from the cache entry ``key``-shape when there is one (``key`` None: not
    cached); on any compile failure it falls back to ``lowered`` and says so. ``cached``: the package
    from the cache where there is one, else the lowered kernels, and ``background`` (a
    :class:`~.background.BackgroundCompiler`) is asked to compile the shape. ``meta["runtime"]`` (and
    ``meta["runtime_notes"]``) always name the engine in use.
    """

    def __init__(self, converted: torch.fx.GraphModule | Callable[[], torch.fx.GraphModule], cin: int,
                 multiple: int, engine: str = "auto", meta: dict[str, Any] | None = None,
                 key: str | None = None, background: Any = None) -> None:
        engine = check_engine(engine)
        self._converted, self.cin, self.multiple, self.key = converted, cin, multiple, key
        self.background = background if engine == "cached" else None
        self.meta = meta if meta is not None else {}
        self.notes: list[str] = []
        if engine == "auto":
            engine = "compile" if inductor.have_cpp_compiler() else "lowered"
            if engine == "lowered":
                self._note("no C++ compiler found: int8 runs on oneDNN kernels without compilation "
                           "(slower than compiled; install g++ or clang for the fastest int8)")
        elif engine == "cached" and not inductor.have_cpp_compiler():
            self.background = None  # nothing can compile the missing shapes; packages already cached still run
        self.engine = engine
        self._fn: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._compiled: dict[tuple[int, ...], Callable[..., Any]] = {}
        self._lock = threading.Lock()  # one compile at a time (the widgets call from worker threads)
        self._build()

    @property
    def converted(self) -> torch.fx.GraphModule:
        if not isinstance(self._converted, torch.fx.GraphModule):
            self._converted = self._converted()
        return self._converted

    def _note(self, text: str) -> None:
        self.notes.append(text)
        self.meta["runtime_notes"] = list(self.notes)
        warnings.warn(text, RuntimeWarning, stacklevel=3)

    def _build(self) -> None:
        self.meta["runtime"] = f"int8 PT2E, {self.engine}"
        if self.engine == "lowered":
            self._fn = self._lowered()
        elif self.engine == "reference":
            self._fn = self.converted

    def _lowered(self) -> Callable[[torch.Tensor], torch.Tensor]:
        with self._lock:
            if self._fn is None:
                self._fn = inductor.lower_without_compiler(self.converted, self.cin, self.multiple)
            return self._fn

    def _shape_key(self, shape: tuple[int, ...]) -> str | None:
        return self.key and f"{self.key}-{'x'.join(map(str, shape))}"

    def _from_cache(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        fn = self._compiled.get(shape)
        if fn is None:
            from . import compile_cache

            fn = compile_cache.cached(self._shape_key(shape))
            if fn is None:
                if self.background is not None:
                    self.background.want([shape])
                return self._lowered()(x)
            self._compiled[shape] = fn
        return fn(x)

    def _for_inductor(self) -> torch.fx.GraphModule:
        with warnings.catch_warnings():  # copying the graph's tree specs trips a deprecation note of torch's
            warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
            converted = copy.deepcopy(self.converted)
        return inductor.for_inductor(converted)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.engine == "cached":
            return self._from_cache(x)
        if self.engine != "compile":
            return self._fn(x)
        shape = tuple(x.shape)
        fn = self._compiled.get(shape)
        if fn is None:
            from . import compile_cache

            key = self._shape_key(shape)
            try:
                with self._lock:
                    fn = self._compiled.get(shape) or compile_cache.compiled(key, self._for_inductor,
                                                                             torch.zeros(shape))
            except ModelFileError:  # the file itself (a graph this torch builds differently): no fallback
                raise
            except Exception as err:  # noqa: BLE001 - a compiler or Inductor failure: fall back, say so
                self._note(f"compiling the int8 model failed ({type(err).__name__}: "
                           f"{str(err).splitlines()[0][:200] if str(err) else ''}); int8 falls back to oneDNN "
                           "kernels without compilation")
                self.engine = "lowered"
                self._build()
                return self._fn(x)
            self._compiled[shape] = fn
        return fn(x)


def cache_key(mf: io.ModelFile) -> str:
    """What a compiled package of ``mf`` depends on: its int8 tensors and model settings, the graph
    rewrites, torch and the CPU's instruction set."""
    salt = f"{GRAPH_VERSION} {torch.__version__} {torch.backends.cpu.get_cpu_capability()} {mf.model_config!r}"
    return io.tensors_digest(mf, salt)[:24]


def load(mf: io.ModelFile, meta: dict[str, Any], engine: str = "auto") -> Runnable:
    """An ``int8-pt2e`` file run on ``engine``; ``meta["runtime"]`` names the engine in use."""
    cfg = mf.model_config
    stored(mf)  # a damaged file is refused now; the graph itself is built only if something must compile
    key = cache_key(mf)
    background = None
    if engine == "cached":
        from .background import compiler_for

        background = compiler_for(mf, key)
    runner = Int8Runner(lambda: rebuild(mf), cfg.in_channels, cfg.size_multiple, engine, meta, key, background)
    return Runnable(padded(runner, cfg.size_multiple))

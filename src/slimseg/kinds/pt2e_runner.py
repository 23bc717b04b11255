"""Kind ``int8-pt2e`` at run time: the converted graph (:mod:`.pt2e_storage`) as a callable on one
of the :data:`~slimseg.kinds.ENGINES`. ``auto`` is ``torch.compile`` (oneDNN int8 kernels fused by
Inductor) where a C++ compiler is present, otherwise the same kernels without code generation
("lowered")."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .. import io
from . import Runnable, check_engine
from . import pt2e_inductor as inductor
from .fold import padded
from .pt2e_storage import rebuild

_MAX_SHAPES = 64  # distinct input shapes one compiled model may specialise for


class Int8Runner:
    """The int8 model as a callable on (N, C, H, W) batches whose sizes are multiples of the size step.

    ``compile``: ``torch.compile`` with freezing, one specialisation per input shape (the first call
    of a shape compiles: seconds); on any compile failure it falls back to ``lowered`` and says so.
    ``meta["runtime"]`` (and ``meta["runtime_notes"]``) always name the engine in use.
    """

    def __init__(self, converted: torch.fx.GraphModule, cin: int, multiple: int, engine: str = "auto",
                 meta: dict[str, Any] | None = None) -> None:
        engine = check_engine(engine)
        self.converted, self.cin, self.multiple = converted, cin, multiple
        self.meta = meta if meta is not None else {}
        self.notes: list[str] = []
        if engine == "auto":
            engine = "compile" if inductor.have_cpp_compiler() else "lowered"
            if engine == "lowered":
                self._note("no C++ compiler found: int8 runs on oneDNN kernels without torch.compile "
                           "(slower than compiled; install g++ or clang for the fastest int8)")
        self.engine = engine
        self._fn: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._shapes: set[tuple[int, ...]] = set()  # compiled so far
        self._build()

    def _note(self, text: str) -> None:
        self.notes.append(text)
        self.meta["runtime_notes"] = list(self.notes)
        warnings.warn(text, RuntimeWarning, stacklevel=3)

    def _build(self) -> None:
        self.meta["runtime"] = f"int8 PT2E, {self.engine}"
        if self.engine == "compile":
            self._shapes = set()
            self._fn = torch.compile(inductor.for_inductor(copy.deepcopy(self.converted)), dynamic=False)
        elif self.engine == "lowered":
            self._fn = inductor.lower_without_compiler(self.converted, self.cin, self.multiple)
        else:
            self._fn = self.converted

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.engine != "compile":
            return self._fn(x)
        import torch._dynamo
        import torch._inductor.config

        from . import compile_cache

        shape = tuple(x.shape)
        try:
            with torch._dynamo.config.patch(recompile_limit=_MAX_SHAPES), torch._inductor.config.patch(freezing=True):
                if shape in self._shapes:
                    return self._fn(x)
                try:  # a new shape compiles, through slimseg's cache
                    with compile_cache.compiling():
                        y = self._fn(x)
                except Exception:  # noqa: BLE001 - perhaps a bad cache entry: never trust it, rebuild once
                    compile_cache.set_aside()
                    self._build()
                    with compile_cache.compiling():
                        y = self._fn(x)
                self._shapes.add(shape)
                return y
        except Exception as err:  # noqa: BLE001 - a compiler or Inductor failure: fall back, say so
            self._note(f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                       "int8 falls back to oneDNN kernels without compilation")
            self.engine = "lowered"
            self._build()
            return self._fn(x)


def load(mf: io.ModelFile, meta: dict[str, Any], engine: str = "auto") -> Runnable:
    """An ``int8-pt2e`` file run on ``engine``; ``meta["runtime"]`` names the engine in use."""
    cfg = mf.model_config
    runner = Int8Runner(rebuild(mf), cfg.in_channels, cfg.size_multiple, engine, meta)
    return Runnable(padded(runner, cfg.size_multiple))

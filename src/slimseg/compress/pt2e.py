"""int8 with PyTorch 2 Export (PT2E) quantisation from torchao, for x86 CPUs.

Per-channel symmetric int8 weights, per-tensor affine uint8 activations (torchao's
``X86InductorQuantizer``), static ranges calibrated on patches of the user's images.

Storage (kind ``int8-pt2e``): the BatchNorm-folded U-Net's conv weights as int8 with one float32
scale per output channel, float32 biases, and each activation observer's (scale, zero point). Loading
rebuilds the graph the same way (export -> ``prepare_pt2e``), gives every observer its stored
parameters and runs ``convert_pt2e``; nothing is unpickled. The runnable form is then
``torch.compile`` (oneDNN int8 kernels fused by Inductor) where a C++ compiler is present, otherwise
the same oneDNN kernels wired in by Inductor's pattern passes without code generation ("lowered").
"""

from __future__ import annotations

import copy
import functools
import os
import threading
import warnings
from collections.abc import Callable, Generator, Iterable
from typing import Any

import numpy as np
import torch

from .. import io
from ..errors import InputError, ModelFileError
from ..events import Progress
from ..model import UNet
from ..segmenter import Segmenter, predict_config_of
from .fold import Core, padded

KIND = "int8-pt2e"
FORMAT = 1
ENGINES = ("auto", "compile", "lowered", "reference")
ENGINE_ENV = "SLIMSEG_INT8_ENGINE"
_MAX_SHAPES = 64  # distinct input shapes one compiled model may specialise for
_REGISTER_LOCK = threading.Lock()


# -- graph building ---------------------------------------------------------------------------------
def import_torchao() -> None:
    """Import torchao once with its start-up warnings (optional CUDA kernels it cannot load on a
    CPU-only torch) silenced: they are not the user's concern."""
    import logging
    import sys

    if "torchao" in sys.modules:
        return
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao.quantization.pt2e  # noqa: F401
    except ImportError as err:
        raise InputError(f"int8 quantisation needs torchao ({err}); pip install 'napari-slimseg[compress]'") from None
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def quantizer(is_qat: bool = False):
    """torchao's x86 quantizer, taught one more int8-in/int8-out op: the decoder's nearest
    upsampling. Then the concatenation after it runs on uint8 too instead of float32 (about 10%
    faster at batch 8 here). Where torchao's internals differ, the stock quantizer is used."""
    import_torchao()
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xq

    config = xq.get_default_x86_inductor_quantization_config(is_qat=is_qat)
    needed = ("_is_any_annotated", "_is_quantized_op_pt2e", "QUANT_ANNOTATION_KEY",
              "_X86InductorQuantizationAnnotation", "get_input_act_qspec")
    if not all(hasattr(xq, name) for name in needed):
        return xq.X86InductorQuantizer().set_global(config)

    class UNetQuantizer(xq.X86InductorQuantizer):
        def _annotate_propagation_quantizable_pattern(self, node, quantization_config, filter_fn):
            if node.target is torch.ops.aten.upsample_nearest2d.vec and quantization_config is not None:
                source = node.all_input_nodes[0]
                if not xq._is_any_annotated([node]) and xq._is_quantized_op_pt2e(source):
                    node.meta[xq.QUANT_ANNOTATION_KEY] = xq._X86InductorQuantizationAnnotation(
                        input_qspec_map={source: xq.get_input_act_qspec(quantization_config)},
                        _annotated=True, _is_output_of_quantized_pattern=True)
                return None
            return super()._annotate_propagation_quantizable_pattern(node, quantization_config, filter_fn)

    return UNetQuantizer().set_global(config)


def _dynamic(cin: int, multiple: int):
    from torch.export import Dim

    example = torch.rand(2, cin, 2 * multiple, 2 * multiple)
    dims = {0: Dim("batch", min=1, max=4096), 2: multiple * Dim("h", min=1, max=1 << 16),
            3: multiple * Dim("w", min=1, max=1 << 16)}
    return (example,), (dims,)


def export_core(net: UNet, train: bool = False) -> torch.fx.GraphModule:
    """The padding-free U-Net exported with a dynamic batch, height and width."""
    args, dynamic = _dynamic(net.config.in_channels, net.config.size_multiple)
    core = Core(net).train(train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(core, args, dynamic_shapes=dynamic).module()


def prepare(net: UNet) -> torch.fx.GraphModule:
    """Export the folded ``net`` and insert PTQ observers."""
    import_torchao()
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    if net.config.norm != "none":
        raise InputError("fold BatchNorm into the convs before quantising (slimseg.compress.fold)")
    return prepare_pt2e(export_core(net.eval()), quantizer())


def _is_observer(mod: torch.nn.Module) -> bool:
    from torchao.quantization.pt2e import FakeQuantizeBase, ObserverBase

    return isinstance(mod, (ObserverBase, FakeQuantizeBase))


def observer_roles(prepared: torch.fx.GraphModule) -> dict[str, str]:
    """Observer name -> what it observes: ``weight:<conv weight name>`` or ``activation``."""
    roles: dict[str, str] = {}
    for node in prepared.graph.nodes:
        if node.op != "call_module" or not _is_observer(prepared.get_submodule(node.target)):
            continue
        src = node.args[0]
        if getattr(src, "op", None) == "get_attr":
            roles[node.target] = "weight:" + str(src.target).removeprefix("net.")
        else:
            roles.setdefault(node.target, "activation")
    return roles


def read_qparams(prepared: torch.fx.GraphModule) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each observer's calibrated (scale, zero point)."""
    out = {}
    for name in observer_roles(prepared):
        scale, zp = prepared.get_submodule(name).calculate_qparams()
        out[name] = (scale.detach().float().numpy().reshape(-1), zp.detach().numpy().astype(np.int64).reshape(-1))
    return out


def calibrate(net: UNet, batches: Iterable[torch.Tensor], total: int = 0
              ) -> Generator[Progress, None, torch.fx.GraphModule]:
    """Export the folded ``net``, insert observers and run the calibration batches through it."""
    prepared = prepare(net)
    with torch.no_grad():
        for i, x in enumerate(batches):
            prepared(x)
            yield Progress("calibrate", i + 1, total)
    return prepared


# -- storage ----------------------------------------------------------------------------------------
def to_model_file(net: UNet, prepared: torch.fx.GraphModule, norm, meta: dict[str, Any],
                  qparams: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> io.ModelFile:
    """The int8 model file of a calibrated (or QAT-trained) folded ``net``.

    Packed: all int8 weights in one array (per-channel scales in another, biases in a third), their
    names and shapes in ``meta["int8"]``, so a small model is not dominated by per-tensor overhead."""
    roles = observer_roles(prepared)
    qparams = qparams or read_qparams(prepared)
    state = {k: v.detach().float() for k, v in net.state_dict().items()}
    weights, scales, layout = [], [], []
    act_scale, act_zp = [], []
    for name, role in roles.items():
        scale, zp = qparams[name]
        if role == "activation":
            act_scale.append(float(scale[0]))
            act_zp.append(int(zp[0]))
            continue
        wname = role.removeprefix("weight:")
        if np.any(zp != 0):
            raise RuntimeError(f"expected symmetric weight quantisation for {wname}")
        w = state.pop(wname)
        s = torch.from_numpy(scale.astype(np.float32))
        q = torch.clamp(torch.round(w * (1.0 / s.view(-1, *([1] * (w.dim() - 1))))), -128, 127)
        weights.append(q.to(torch.int8).numpy().reshape(-1))
        scales.append(scale.astype(np.float32))
        layout.append([wname, list(w.shape)])
    if any(not k.endswith(".bias") for k in state):
        raise RuntimeError(f"unquantised tensors left: {sorted(k for k in state if not k.endswith('.bias'))}")
    tensors = {
        "weights_int8": np.concatenate(weights),
        "weight_scales": np.concatenate(scales),
        "biases": np.concatenate([v.numpy().reshape(-1) for v in state.values()]).astype(np.float32),
        "activation_scale": np.asarray(act_scale, np.float32),
        "activation_zero_point": np.asarray(act_zp, np.int32),
    }
    meta = dict(meta)
    meta["int8"] = {
        "format": FORMAT, "target": "x86 oneDNN via torchao PT2E (X86InductorQuantizer)",
        "weights": "int8, symmetric, per output channel", "activations": "uint8, affine, per tensor",
        "observers": [[name, role] for name, role in roles.items()],
        "weight_layout": layout, "bias_layout": [[k, int(v.numel())] for k, v in state.items()],
    }
    return io.ModelFile(net.config, norm, tensors, KIND, meta)


def _stored(mf: io.ModelFile) -> tuple[UNet, dict[str, str], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    info = mf.meta.get("int8") or {}
    if not isinstance(info.get("format"), int) or info["format"] > FORMAT:
        raise ModelFileError(f"this int8 model has layout version {info.get('format')}, newer than this "
                             f"slimseg reads ({FORMAT}); upgrade napari-slimseg")
    if mf.model_config.norm != "none":
        raise ModelFileError("an int8 model file must hold a BatchNorm-folded U-Net (norm 'none')")
    t = mf.tensors
    qparams: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    state: dict[str, torch.Tensor] = {}
    try:
        roles = {str(n): str(r) for n, r in info["observers"]}
        if t["weights_int8"].dtype != np.int8:
            raise ModelFileError(f"the weights are {t['weights_int8'].dtype}, expected int8")
        acts = [n for n, r in roles.items() if r == "activation"]
        for i, name in enumerate(acts):
            qparams[name] = (torch.tensor([float(t["activation_scale"][i])]),
                             torch.tensor([int(t["activation_zero_point"][i])]))
        observer_of = {r.removeprefix("weight:"): n for n, r in roles.items() if r != "activation"}
        w_at = s_at = 0
        for wname, shape in info["weight_layout"]:
            size, cout = int(np.prod(shape)), int(shape[0])
            q = t["weights_int8"][w_at:w_at + size].reshape(shape)
            s = torch.from_numpy(np.array(t["weight_scales"][s_at:s_at + cout], np.float32))
            if q.size != size or len(s) != cout:
                raise IndexError(wname)
            w_at, s_at = w_at + size, s_at + cout
            state[wname] = torch.from_numpy(q.astype(np.float32)) * s.view(-1, *([1] * (len(shape) - 1)))
            qparams[observer_of[wname]] = (s, torch.zeros(cout, dtype=torch.int64))
        b_at = 0
        for bname, size in info["bias_layout"]:
            state[bname] = torch.from_numpy(np.array(t["biases"][b_at:b_at + size], np.float32))
            if len(state[bname]) != size:
                raise IndexError(bname)
            b_at += size
        if w_at != t["weights_int8"].size or b_at != t["biases"].size or len(qparams) != len(roles):
            raise IndexError("tensor sizes do not match the stored layout")
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise ModelFileError(f"the int8 model file is incomplete or damaged ({err}); re-run slimseg compress") from None
    net = UNet(mf.model_config)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ModelFileError(f"the int8 weights do not fit the stored model settings: {err}") from None
    return net.eval(), roles, qparams


def rebuild(mf: io.ModelFile) -> torch.fx.GraphModule:
    """The converted (reference int8) graph of an ``int8-pt2e`` model file."""
    import_torchao()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    net, roles, qparams = _stored(mf)
    prepared = prepare(net)
    now = observer_roles(prepared)
    if now != roles:
        raise ModelFileError(
            "this torch/torchao version builds a different int8 graph than the one that wrote the file "
            f"({len(now)} observers vs {len(roles)} stored); re-run slimseg compress on the float model")
    for name in roles:
        scale, zp = qparams[name]
        prepared.get_submodule(name).calculate_qparams = (lambda s=scale, z=zp: (s, z))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_pt2e(prepared)


# -- running ------------------------------------------------------------------------------------------
def have_cpp_compiler() -> bool:
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return bool(get_cpp_compiler())
    except Exception:  # noqa: BLE001 - any failure means Inductor cannot compile here
        return False


def lower_without_compiler(converted: torch.fx.GraphModule, cin: int, multiple: int) -> torch.fx.GraphModule:
    """Replace dequantize -> conv -> quantize patterns by oneDNN int8 convolutions (Inductor's
    freezing passes, as torchao's ``lower_pt2e_quantized_to_x86`` does) but keep the graph dynamic
    in batch and size. Needs no C++ compiler: the ops are ATen's own."""
    from torch._export.utils import _is_cia_op
    from torch._inductor.constant_folding import constant_fold
    from torch._inductor.fx_passes.freezing_patterns import freezing_passes

    table = torch.export.default_decompositions()
    for op in list(table):
        if not _is_cia_op(op):
            del table[op]
    args, dynamic = _dynamic(cin, multiple)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = torch.export.export(converted, args, dynamic_shapes=dynamic, strict=True)
        lowered = lowered.run_decompositions(table).module()
        freezing_passes(lowered, args)
    constant_fold(lowered)
    _fuse_uint8_quantization(lowered)
    return lowered


def _quantize_u8(x, scale, zero_point, quant_min, quant_max, dtype):
    """What ``quantized_decomposed.quantize_per_tensor`` computes for uint8, in one vectorised pass."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensor types are deprecated, but still the fast path
        return torch.quantize_per_tensor(x, scale, zero_point, torch.quint8).int_repr()


def _dequantize_u8(x, scale, zero_point, quant_min, quant_max, dtype, out_dtype=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch._make_per_tensor_quantized_tensor(x, scale, zero_point).dequantize()


def _fuse_uint8_quantization(gm: torch.fx.GraphModule) -> None:
    """Uncompiled, the decomposed per-tensor (de)quantise ops run as 5 separate passes each (most of
    the time of the graph); swap in ATen's fused kernels where this torch still has them."""
    try:
        probe = torch.rand(2, 3)
        torch.testing.assert_close(
            _dequantize_u8(_quantize_u8(probe, 0.01, 3, 0, 255, torch.uint8), 0.01, 3, 0, 255, torch.uint8),
            probe, atol=0.006, rtol=0)
    except Exception:  # noqa: BLE001 - a torch without quantized tensors: keep the decomposed ops
        return
    qd = torch.ops.quantized_decomposed
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.args and node.args[-1] == torch.uint8 and not node.kwargs:
            if node.target is qd.quantize_per_tensor.default:
                node.target = _quantize_u8
            elif node.target is qd.dequantize_per_tensor.default:
                node.target = _dequantize_u8
    gm.recompile()


def _uint8_cat_op() -> Any:
    """``slimseg::uint8_cat``: ``torch.cat`` under a name of our own, with an Inductor lowering to
    Inductor's ``ConcatKernel``. Inductor lowers every int8/uint8 ``aten.cat`` on CPU to a call of
    ATen's cat instead (a TODO in its lowering from before it vectorised uint8 code): its inputs
    are first written out whole, then copied. ``ConcatKernel`` writes each input straight into its
    slice of the output, the decoder's upsampling included, and lets Inductor reuse buffers: the
    int8 U-Net ran 3-5% faster here, with the same output bits. None where this torch lacks the
    internals it uses (then the stock lowering stays)."""
    with _REGISTER_LOCK:  # two threads compiling at once must not register twice
        return _register_uint8_cat()


@functools.cache
def _register_uint8_cat() -> Any:
    try:
        from torch._inductor import ir
        from torch._inductor.lowering import TensorBox, register_lowering

        @torch.library.custom_op("slimseg::uint8_cat", mutates_args=())
        def uint8_cat(tensors: list[torch.Tensor], dim: int) -> torch.Tensor:
            return torch.cat(tensors, dim)

        @uint8_cat.register_fake
        def _(tensors, dim):
            return torch.cat(tensors, dim)

        op = torch.ops.slimseg.uint8_cat.default
        register_lowering(op, type_promotion_kind=None)(
            lambda tensors, dim: TensorBox(ir.ConcatKernel.create(tensors, dim % len(tensors[0].get_size()))))
        return op
    except Exception:  # noqa: BLE001 - another torch version: keep Inductor's own lowering
        return None


def for_inductor(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Exact rewrites of a converted graph before ``torch.compile`` (in place; returns ``gm``).

    - dequantize -> max-pool -> quantize with one scale and zero point (the quantizer shares them)
      becomes max-pooling of the uint8 values, exact since quantisation is monotonic. Inductor
      compiles it into one vectorised loop instead of calling ``quantized::max_pool2d``: 2.0 vs 25 ms
      at batch 8 on 16x512x512 here.
    - dequantize -> concatenate -> quantize with shared parameters becomes a concatenation of the
      uint8 values (as Inductor's own pattern pass does), by :func:`_uint8_cat_op` where it exists.
    - The output stays in the channels-last layout the last int8 conv writes, instead of being copied
      to the default layout (3% of the batch-8 run time here); callers see the same values.
    """
    for op in (torch.ops.aten.max_pool2d.default, torch.ops.aten.cat.default):
        for node in list(gm.graph.nodes):
            if node.target is op:
                _on_uint8(gm, node)
    output = next(n for n in gm.graph.nodes if n.op == "output")
    for result in output.all_input_nodes:
        with gm.graph.inserting_before(output):
            kept = gm.graph.call_function(torch.ops.aten.clone.default, (result,),
                                          {"memory_format": torch.channels_last})
        output.replace_input_with(result, kept)
    gm.recompile()
    return gm


def _on_uint8(gm: torch.fx.GraphModule, node: torch.fx.Node) -> None:
    """Run ``node`` (max-pool or concatenation) on the uint8 values where it sits between dequantize
    and quantize nodes that all share one scale and zero point."""
    qd = torch.ops.quantized_decomposed
    is_cat = node.target is torch.ops.aten.cat.default
    inputs = list(node.args[0]) if is_cat else [node.args[0]]
    users = list(node.users)
    if not (len(users) == 1 and users[0].target is qd.quantize_per_tensor.default and all(
            isinstance(dq, torch.fx.Node) and dq.target is qd.dequantize_per_tensor.default and not dq.kwargs
            and dq.args[1:] == users[0].args[1:] for dq in inputs)):
        return
    uint8 = [dq.args[0] for dq in inputs]
    if is_cat:
        target = _uint8_cat_op()
        if target is None:
            return
        args = (uint8, node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0))
    else:
        target, args = node.target, (uint8[0], *node.args[1:])
    with gm.graph.inserting_before(node):
        on_uint8 = gm.graph.call_function(target, args, {} if is_cat else dict(node.kwargs))
    users[0].replace_all_uses_with(on_uint8)
    for dead in dict.fromkeys((users[0], node, *inputs)):
        if not dead.users:
            gm.graph.erase_node(dead)


class Int8Runner:
    """The int8 model as a callable on (N, C, H, W) batches whose sizes are multiples of the size step.

    ``compile``: ``torch.compile`` with freezing, one specialisation per input shape (the first call
    of a shape compiles: seconds); on any compile failure it falls back to ``lowered`` and says so.
    """

    def __init__(self, converted: torch.fx.GraphModule, cin: int, multiple: int, engine: str = "auto",
                 meta: dict[str, Any] | None = None) -> None:
        engine = os.environ.get(ENGINE_ENV) or engine or "auto"
        if engine not in ENGINES:
            raise InputError(f"unknown int8 engine {engine!r} (from {ENGINE_ENV}?); choose one of {', '.join(ENGINES)}")
        self.converted, self.cin, self.multiple = converted, cin, multiple
        self.meta = meta if meta is not None else {}
        self.notes: list[str] = []
        if engine == "auto":
            engine = "compile" if have_cpp_compiler() else "lowered"
            if engine == "lowered":
                self._note("no C++ compiler found: int8 runs on oneDNN kernels without torch.compile "
                           "(slower than compiled; install g++ or clang for the fastest int8)")
        self.engine = engine
        self._fn: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._build()

    def _note(self, text: str) -> None:
        self.notes.append(text)
        self.meta["runtime_notes"] = list(self.notes)
        warnings.warn(text, RuntimeWarning, stacklevel=3)

    def _build(self) -> None:
        self.meta["runtime"] = f"int8 PT2E, {self.engine}"
        if self.engine == "compile":
            self._fn = torch.compile(for_inductor(copy.deepcopy(self.converted)), dynamic=False)
        elif self.engine == "lowered":
            self._fn = lower_without_compiler(self.converted, self.cin, self.multiple)
        else:
            self._fn = self.converted

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.engine != "compile":
            return self._fn(x)
        import torch._dynamo
        import torch._inductor.config

        try:
            with torch._dynamo.config.patch(recompile_limit=_MAX_SHAPES), torch._inductor.config.patch(freezing=True):
                return self._fn(x)
        except Exception as err:  # noqa: BLE001 - a compiler or Inductor failure: fall back, say so
            self._note(f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                       "int8 falls back to oneDNN kernels without compilation")
            self.engine = "lowered"
            self._build()
            return self._fn(x)


def load(mf: io.ModelFile, engine: str = "auto") -> Segmenter:
    """A :class:`Segmenter` of an ``int8-pt2e`` file; ``meta["runtime"]`` names the engine in use."""
    converted = rebuild(mf)
    cfg = mf.model_config
    meta = dict(mf.meta)
    runner = Int8Runner(converted, cfg.in_channels, cfg.size_multiple, engine, meta)
    return Segmenter(padded(runner, cfg.size_multiple), cfg, mf.norm, KIND, meta,
                     predict_config=predict_config_of(meta))

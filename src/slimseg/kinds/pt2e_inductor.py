"""Inductor rewrites of a converted int8 PT2E graph (these use Inductor's private APIs; each falls
back to the stock path where this torch lacks what it needs).

- :func:`for_inductor`: exact rewrites before ``torch.compile`` (uint8 max-pooling and
  concatenation, output kept channels-last).
- :func:`lower_without_compiler`: the same oneDNN int8 kernels wired in by Inductor's pattern passes,
  without code generation, for machines without a C++ compiler.
"""

from __future__ import annotations

import functools
import threading
import warnings
from typing import Any

import torch

from .fold import dynamic_example

_REGISTER_LOCK = threading.Lock()  # process-wide, as the op registry it guards


def have_cpp_compiler() -> bool:
    """Whether a C++ compiler Inductor can use is on the PATH: ``$CXX`` or g++ / c++ / clang++ (cl on
    Windows). Found by name, without importing Inductor's builder (1.5 s: it imports torch._dynamo),
    since a model whose packages are all cached never compiles; a compile that fails anyway falls back
    with a note."""
    import os
    import shutil

    names = [os.environ.get("CXX"), "cl"] if os.name == "nt" else [os.environ.get("CXX"), "g++", "c++", "clang++"]
    return any(n and shutil.which(n) for n in names)


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
    args, dynamic = dynamic_example(cin, multiple)
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
    slice of the output, the decoder's upsampling included, and lets Inductor reuse buffers (same
    output bits, faster: benchmarks/compress.md). None where this torch lacks the internals it uses
    (then the stock lowering stays)."""
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
      compiles it into one vectorised loop instead of calling ``quantized::max_pool2d``.
    - dequantize -> concatenate -> quantize with shared parameters becomes a concatenation of the
      uint8 values (as Inductor's own pattern pass does), by :func:`_uint8_cat_op` where it exists.
    - The output stays in the channels-last layout the last int8 conv writes, instead of being copied
      to the default layout; callers see the same values.
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


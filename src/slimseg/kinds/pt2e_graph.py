"""int8 PT2E graph building: the folded U-Net exported, with torchao's x86 quantizer's observers.

Per-channel symmetric int8 weights, per-tensor affine uint8 activations (torchao's
``X86InductorQuantizer``), static ranges calibrated on patches of the user's images. Compression
builds this graph to calibrate it; loading an ``int8-pt2e`` file builds it again to convert it.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator, Iterable

import numpy as np
import torch

from ..errors import InputError
from ..events import Progress
from ..model import UNet
from .fold import Core, dynamic_example


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
    upsampling, so the concatenation after it runs on uint8 too instead of float32 (benchmarks/compress.md).
    Where torchao's internals differ, the stock quantizer is used."""
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


def export_core(net: UNet, train: bool = False) -> torch.fx.GraphModule:
    """The padding-free U-Net exported with a dynamic batch, height and width."""
    args, dynamic = dynamic_example(net.config.in_channels, net.config.size_multiple)
    core = Core(net).train(train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(core, args, dynamic_shapes=dynamic).module()


def prepare(net: UNet) -> torch.fx.GraphModule:
    """Export the folded ``net`` and insert PTQ observers."""
    import_torchao()
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    if net.config.norm != "none":
        raise InputError("fold BatchNorm into the convs before quantising (slimseg.model.fold_batchnorm)")
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

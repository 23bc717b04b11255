"""Kind ``int8-pt2e`` on disk: the BatchNorm-folded U-Net's conv weights as int8 with one float32
scale per output channel, float32 biases, and each activation observer's (scale, zero point).

Packed: all int8 weights in one array (per-channel scales in another, biases in a third), their
names and shapes in ``meta["int8"]``, so a small model is not dominated by per-tensor overhead.
Loading rebuilds the graph the same way (export -> ``prepare_pt2e``), gives every observer its
stored parameters and runs ``convert_pt2e``; nothing is unpickled.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from .. import io
from ..errors import ModelFileError
from ..model import UNet
from . import KINDS, stored_layout
from .pt2e_graph import import_torchao, observer_roles, prepare, read_qparams

KIND = "int8-pt2e"


def to_model_file(net: UNet, prepared: torch.fx.GraphModule, norm, meta: dict[str, Any],
                  qparams: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> io.ModelFile:
    """The int8 model file of a calibrated (or QAT-trained) folded ``net``; ``qparams`` (learned
    during QAT) replace the observers' own."""
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
        "format": KINDS[KIND].version, "target": "x86 oneDNN via torchao PT2E (X86InductorQuantizer)",
        "weights": "int8, symmetric, per output channel", "activations": "uint8, affine, per tensor",
        "observers": [[name, role] for name, role in roles.items()],
        "weight_layout": layout, "bias_layout": [[k, int(v.numel())] for k, v in state.items()],
    }
    return io.ModelFile(net.config, norm, tensors, KIND, meta)


def stored(mf: io.ModelFile) -> tuple[UNet, dict[str, str], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The folded float U-Net of the dequantised weights, the observers' roles and their parameters."""
    info = stored_layout(mf, KIND)
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
        if len(acts) != t["activation_scale"].size or len(acts) != t["activation_zero_point"].size:
            raise IndexError("the activation parameters do not match the stored observers")
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

    net, roles, qparams = stored(mf)
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


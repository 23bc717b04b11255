"""Pruning: global magnitude (unstructured, stored sparse) and structured channel pruning (Torch-Pruning).

Unstructured pruning zeroes the smallest conv weights over the whole network. The file stores only
the kept values and a bit mask (kind ``float-sparse``), so it really shrinks; the dense kernels then
run as before, so it gives **no speed-up**. Structured pruning removes whole channels from every
conv (Torch-Pruning follows the skip connections); the result is a plain float U-Net whose narrower
widths are written into its ``ModelConfig``, so it loads like any float model and runs faster.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from ..errors import InputError
from ..model import UNet


# -- unstructured -----------------------------------------------------------------------------------
def conv_weight_names(model: nn.Module) -> list[str]:
    return [f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def magnitude_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Boolean keep-masks: the ``sparsity`` fraction of all conv weights with the smallest magnitude
    (one threshold over the whole network) is dropped."""
    if not 0 < sparsity < 1:
        raise InputError(f"sparsity must lie strictly between 0 and 1, got {sparsity}")
    params = dict(model.named_parameters())
    names = conv_weight_names(model)
    flat = torch.cat([params[n].detach().abs().reshape(-1) for n in names])
    n_drop = int(round(sparsity * flat.numel()))
    keep_flat = torch.ones(flat.numel(), dtype=torch.bool)
    if n_drop:
        keep_flat[torch.argsort(flat, stable=True)[:n_drop]] = False
    masks, start = {}, 0
    for n in names:
        size = params[n].numel()
        masks[n] = keep_flat[start:start + size].reshape(params[n].shape)
        start += size
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].dtype))


# -- structured -------------------------------------------------------------------------------------
def prune_channels(model: UNet, ratio: float) -> UNet:
    """A new U-Net with ``ratio`` of the channels of every conv removed (smallest L2 filter norm per
    group of coupled channels; the output head keeps its channels). Widths go into its config."""
    try:
        import torch_pruning as tp
    except ImportError as err:
        raise InputError(f"structured pruning needs Torch-Pruning ({err}); pip install torch-pruning") from None
    if not 0 < ratio < 1:
        raise InputError(f"the fraction of channels to remove must lie strictly between 0 and 1, got {ratio}")
    if model.config.norm == "group":
        raise InputError("structured pruning supports BatchNorm or no normalisation, not GroupNorm")
    work = copy.deepcopy(model).eval()
    m = model.config.size_multiple
    example = torch.rand(1, model.config.in_channels, 2 * m, 2 * m)
    pruner = tp.pruner.MetaPruner(work, example, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=[work.head], global_pruning=False)
    pruner.step()
    widths, dec = [], []
    for i, enc in enumerate(work.encoders):
        if enc[0].out_channels != enc[3].out_channels:
            raise RuntimeError(f"encoder {i}: the two convs were pruned to different widths")
        widths.append(enc[3].out_channels)
    for i, d in enumerate(work.decoders):
        if not d.reduce.out_channels == d.block[0].out_channels == d.block[3].out_channels:
            raise RuntimeError(f"decoder {i}: its convs were pruned to different widths")
        dec.append(d.block[3].out_channels)
    config = dataclasses.replace(model.config, widths=tuple(widths), decoder_widths=tuple(dec))
    pruned = UNet(config)
    pruned.load_state_dict(work.state_dict())  # strict: the widths in the config are exactly the pruned ones
    return pruned.train(model.training)


@torch.no_grad()
def refit_head(pruned: UNet, teacher: nn.Module, batches, pixels_per_batch: int = 50_000, seed: int = 0) -> float:
    """Least-squares refit of the 1x1 output head so the pruned network's logits match the
    teacher's on ``batches`` (He et al. 2017 reconstruct pruned layers this way).

    Needed because magnitude pruning is blind to the sign of the head's weights: at 50% it can keep
    only features that vote *against* foreground, and the network then cannot predict any.
    Returns the RMS logit error."""
    feats: list[torch.Tensor] = []
    hook = pruned.head.register_forward_hook(lambda m, inp, out: feats.append(inp[0]))
    gen = torch.Generator().manual_seed(seed)
    xs, ts = [], []
    was_training = pruned.training
    pruned.eval()
    try:
        for x in batches:
            feats.clear()
            pruned(x)
            f = feats[0].float().permute(0, 2, 3, 1).reshape(-1, feats[0].shape[1])
            t = teacher(x).float().permute(0, 2, 3, 1).reshape(-1, pruned.head.out_channels)
            pick = torch.randperm(len(f), generator=gen)[:pixels_per_batch]
            xs.append(f[pick])
            ts.append(t[pick])
    finally:
        hook.remove()
        pruned.train(was_training)
    a = torch.cat([torch.cat(xs), torch.ones(sum(len(x) for x in xs), 1)], 1)
    t = torch.cat(ts)
    sol = torch.linalg.lstsq(a, t).solution
    pruned.head.weight.copy_(sol[:-1].T.reshape(pruned.head.weight.shape))
    pruned.head.bias.copy_(sol[-1])
    return float(torch.sqrt(torch.mean((a @ sol - t) ** 2)))

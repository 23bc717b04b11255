"""The compression methods, and :func:`compress`, the one entry point (a generator of events)."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import torch

from .. import io
from .._version import __version__
from ..config import to_dict
from ..device import cpu_flags, use_bf16
from ..errors import InputError
from ..events import Message
from ..metrics import pooled_dice
from ..model import (
    UNet,
    can_fold,
    count_parameters,
    fold_batchnorm,
    recalibrate_batchnorm,
)
from ..segmenter import predict_config_of
from .config import COMPRESS_METHODS, PRUNING, QUANTIZING, CompressConfig
from .data import CompressData, calibration_batches, prepare_data
from .finetune import FinetuneSettings, finetune

BN_BATCHES = 16


INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # CPU flags of the int8 dot-product instructions


def int8_backend(requested: str) -> tuple[str, str]:
    """The int8 backend for ``requested`` (``auto``, ``pt2e`` or ``onnx``) on this CPU, and why.

    ``auto``: PT2E where the CPU has VNNI or AMX (oneDNN's int8 kernels are the faster ones there),
    ONNX Runtime elsewhere (faster than PT2E on AVX2-only CPUs; ``benchmarks/compress.md``)."""
    if requested != "auto":
        return requested, "asked for"
    flags = cpu_flags()
    if any(f in flags for f in INT8_FLAGS):
        return "pt2e", "auto: this CPU has VNNI/AMX int8 instructions"
    if all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")):
        return "onnx", "auto: this CPU lacks VNNI/AMX, where ONNX Runtime's int8 kernels are faster"
    return "pt2e", "auto: this CPU lacks VNNI/AMX, but ONNX Runtime is not installed"


def compress(model: io.ModelFile, images: Sequence[np.ndarray], labels: Sequence[np.ndarray] | None,
             cfg: CompressConfig, names: Sequence[str] | None = None) -> Generator[Any, None, io.ModelFile]:
    """Compress a float model file; yield progress events, return the new model file (not saved).

    ``images`` calibrate the int8 ranges and, with ``labels``, fine-tune (QAT and pruning need labels).
    With ``names``, images of the model's validation split (its training record) are left out. The
    input ``model`` is not changed. Closing the generator stops the run (nothing is returned then).
    """
    if not isinstance(cfg, CompressConfig):
        raise InputError(f"cfg must be a CompressConfig, got {type(cfg).__name__}")
    check_source(model, cfg)
    exclude = (model.meta.get("training") or {}).get("split", {}).get("val", []) if names is not None else ()
    data = prepare_data(images, labels, model.norm, model.model_config.in_channels, names, exclude,
                        needs_labels=cfg.fine_tunes)
    if cfg.patch_size % model.model_config.size_multiple:
        raise InputError(f"patch_size {cfg.patch_size} must be a multiple of {model.model_config.size_multiple} "
                         "for this model's depth")
    backend, why = int8_backend(cfg.backend)
    cfg = dataclasses.replace(cfg, backend=backend)
    yield Message(f"compress: {cfg.method} on {len(data.images)} images"
                  + (f", int8 backend {backend} ({why})" if cfg.method in QUANTIZING else "")
                  + (f", ratio {cfg.pruning_ratio:g}" if cfg.method in PRUNING else ""))
    for note in data.notes:
        yield Message(note)
    src = float_module(model)
    record: dict[str, Any] = {}
    out = yield from COMPRESS_METHODS[cfg.method](src, model, data, cfg, record)
    if cfg.method != "ptq" and data.labels is not None:
        yield from _retune_thresholds(out, data, cfg, record)
    out.meta["compression"] = {
        "method": cfg.method, "config": to_dict(cfg), "slimseg_version": __version__,
        "source": {"kind": model.kind, "parameters": count_parameters(src),
                   "widths": list(model.model_config.widths),
                   "metrics": copy.deepcopy(model.meta.get("metrics"))},
        **record,
    }
    return out


TUNE_IMAGES = 12
TUNE_MARGIN = 0.01  # instance F1 the re-tuned thresholds must gain to replace the inherited ones


def _retune_thresholds(mf: io.ModelFile, data: CompressData, cfg: CompressConfig, record: dict
                       ) -> Generator[Any, None, None]:
    """Re-choose the foreground and seed thresholds for the changed model, on up to ``TUNE_IMAGES``
    of the fine-tuning images (never the validation split): pruning and QAT change how sharp the
    centredness map is, and the float model's seed threshold can then merge or miss nuclei. The
    inherited thresholds stay unless the new ones gain ``TUNE_MARGIN`` instance F1 there (a few
    images are a noisy judge)."""
    from ..tune import instance_f1, tune_thresholds

    rng = np.random.default_rng(cfg.seed)
    pick = sorted(rng.choice(len(data.images), size=min(TUNE_IMAGES, len(data.images)), replace=False))
    base = predict_config_of(mf.meta)
    probs = yield from _probabilities(mf, data, pick, "tune thresholds")
    labels = [data.labels[i] for i in pick]
    tuned, f1 = tune_thresholds(probs, labels, base)
    base_f1 = instance_f1(probs, labels, base)
    changed = f1 > base_f1 + TUNE_MARGIN
    if changed:
        mf.meta["predict"] = to_dict(tuned)
    else:
        tuned, f1 = base, base_f1
    record["thresholds"] = {"threshold": tuned.threshold, "seed_threshold": tuned.seed_threshold,
                            "seed_h": tuned.seed_h, "changed": changed, "tuned_on_images": len(pick), "instance_f1": f1,
                            "inherited": {"threshold": base.threshold, "seed_threshold": base.seed_threshold,
                                          "seed_h": base.seed_h,
                                          "instance_f1": base_f1}}
    if changed:
        yield Message(f"thresholds re-tuned on {len(pick)} fine-tuning images: foreground {base.threshold:g} -> "
                      f"{tuned.threshold:g}, seed {base.seed_threshold:g} -> {tuned.seed_threshold:g} "
                      f"(instance F1 there {base_f1:.3f} -> {f1:.3f})")
    else:
        yield Message(f"thresholds kept (foreground {base.threshold:g}, seed {base.seed_threshold:g}): re-tuning on "
                      f"{len(pick)} fine-tuning images gained less than {TUNE_MARGIN} instance F1")


def _probabilities(mf: io.ModelFile, data: CompressData, pick: Sequence[int], stage: str
                   ) -> Generator[Any, None, list[np.ndarray]]:
    """The model's probabilities on the (normalised) images ``pick`` of ``data``."""
    from ..data.normalize import Normalizer
    from ..predict import image_probabilities
    from ..segmenter import from_model_file

    seg = from_model_file(mf, engine="lowered")  # int8: the compiled kernels' numbers, not compiled per size
    images = [img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1) for img in (data.images[i] for i in pick)]
    return (yield from image_probabilities(seg.model_fn, images, Normalizer(0.0, 1.0), predict_config_of(mf.meta),
                                           mf.model_config.in_channels, mf.model_config.out_channels, stage))


def check_source(model: io.ModelFile, cfg: CompressConfig) -> None:
    if not isinstance(model, io.ModelFile):
        raise InputError(f"model must be a slimseg ModelFile (slimseg.io.load), got {type(model).__name__}")
    if model.kind != "float":
        made = (model.meta.get("compression") or {}).get("method", "compression")
        raise InputError(f"this model is already compressed (kind {model.kind!r}, made by {made}); "
                         "compress the float model it came from instead")
    if model.model_config.norm == "group" and cfg.method != "prune-unstructured":
        raise InputError(f"{cfg.method} needs a U-Net with BatchNorm or no normalisation; this one uses "
                         "GroupNorm (only prune-unstructured supports it)")


def float_module(mf: io.ModelFile) -> UNet:
    from ..kinds.float32 import unet

    return unet(mf)


_NOT_INHERITED = ("metrics", "compression", "int8", "sparse", "path", "format_version", "slimseg_version")


def _teacher(net: UNet) -> UNet:
    """The float model as a fine-tune's teacher, in the form inference runs it: BatchNorm folded (where
    it can be) and channels-last. The same function as ``net`` in eval mode; under bf16 its forward
    pass takes about half the time of ``net``'s default layout, and it is a large share of each
    distilled step (a pruned student's forward and backward cost less than it)."""
    teacher = fold_batchnorm(net) if can_fold(net) else copy.deepcopy(net).eval()
    return teacher.to(memory_format=torch.channels_last)


def _base_meta(mf: io.ModelFile, slim: bool = False) -> dict[str, Any]:
    """The source's metadata that still holds for the compressed model (training record, tuned
    prediction thresholds); its metrics move to ``compression.source.metrics``. ``slim`` (the int8
    kinds, which cannot be trained or compressed further) keeps only the training settings and
    score, not the per-epoch history and image lists, which would outweigh a small int8 model."""
    meta = {k: copy.deepcopy(v) for k, v in mf.meta.items() if k not in _NOT_INHERITED}
    if slim and isinstance(meta.get("training"), dict):
        meta["training"] = {k: v for k, v in meta["training"].items()
                            if k in ("train_config", "best_val_dice", "best_epoch", "stop_reason")}
    return meta


def _settings(mf: io.ModelFile, cfg: CompressConfig, lr_scale: float, fast: bool) -> FinetuneSettings:
    tc = (mf.meta.get("training") or {}).get("train_config") or {}
    return FinetuneSettings(minutes=cfg.minutes, max_steps=cfg.max_steps, optimizer=tc.get("optimizer", "rmsprop"),
                            loss=tc.get("loss", "bce+jaccard"), lr=cfg.lr, lr_scale=lr_scale,
                            batch_size=cfg.batch_size, bf16=fast and use_bf16("auto", torch.device("cpu")),
                            channels_last=fast)


def _recalibrate_bn(net: UNet, data: CompressData, cfg: CompressConfig) -> None:
    sampler = data.sampler(cfg.patch_size, cfg.seed + 1, augment=True)  # as the trainer does
    batches = (torch.from_numpy(sampler.batch(cfg.batch_size)[0]) for _ in range(BN_BATCHES))
    recalibrate_batchnorm(net, batches, BN_BATCHES)


def _quantize(net: UNet, mf: io.ModelFile, data: CompressData, cfg: CompressConfig, record: dict,
              qparams=None) -> Generator[Any, None, io.ModelFile]:
    """int8 model file of ``net`` (BatchNorm re-estimated, then folded), on the configured backend."""
    if net.config.norm == "batch" and cfg.recalibrate_bn:
        _recalibrate_bn(net, data, cfg)
    folded = fold_batchnorm(net.eval())
    record["backend"] = cfg.backend
    record["parameters"] = count_parameters(folded)
    record["calibration_patches"] = cfg.calibration_patches
    n_batches = math.ceil(cfg.calibration_patches / cfg.batch_size)
    batches = calibration_batches(data, cfg.calibration_patches, cfg.patch_size, cfg.batch_size, cfg.seed)
    if cfg.backend == "onnx":
        from . import onnx_int8

        yield Message(f"ONNX export and static int8 quantisation ({cfg.calibration_patches} calibration patches)")
        return onnx_int8.quantize(folded, batches, mf.norm, _base_meta(mf, slim=True))
    from ..kinds import pt2e_graph, pt2e_storage

    if qparams is None:
        prepared = yield from pt2e_graph.calibrate(folded, batches, n_batches)
    else:
        prepared = pt2e_graph.prepare(folded)
        yield Message("int8 ranges: those learned during QAT")
    return pt2e_storage.to_model_file(folded, prepared, mf.norm, _base_meta(mf, slim=True), qparams)


@COMPRESS_METHODS.register("ptq")
def ptq(net: UNet, mf: io.ModelFile, data: CompressData, cfg: CompressConfig, record: dict):
    """Post-training static int8: calibrate activation ranges on patches of the user's images."""
    return (yield from _quantize(net, mf, data, cfg, record))


QAT_CHECK_IMAGES = 16  # fine-tuning images held out to check QAT against its calibrated start


@COMPRESS_METHODS.register("qat")
def qat(net: UNet, mf: io.ModelFile, data: CompressData, cfg: CompressConfig, record: dict):
    """Fine-tune under int8 fake quantisation (BatchNorm folded first), then convert like PTQ.

    A few of the fine-tuning images (up to ``QAT_CHECK_IMAGES``, a quarter at most) are held out of
    the fine-tuning; on them the QAT result is compared with its starting point, the calibrated
    int8 model, and the better one (pixel Dice) is kept: a short fine-tune can add noise instead of
    accuracy, and then the user gets the start back, with a message saying so."""
    from .qat import qat_finetune

    if net.config.norm == "batch" and cfg.recalibrate_bn:
        _recalibrate_bn(net, data, cfg)
    folded = fold_batchnorm(net)
    order = np.random.default_rng(cfg.seed).permutation(len(data.images))
    n_check = min(QAT_CHECK_IMAGES, len(data.images) // 4)
    check, train = sorted(order[:n_check]), order[n_check:]
    start = (yield from _quantize(folded, mf, data, cfg, record)) if n_check else None
    sampler = data.subset(train).sampler(cfg.patch_size, cfg.seed, augment=True)
    trained, qparams, record["fine_tune"] = yield from qat_finetune(folded, sampler, _settings(mf, cfg, 0.1, False),
                                                                    teacher=_teacher(net))
    if cfg.backend == "onnx":
        qparams = None
    end = yield from _quantize(trained, mf, data, cfg, record, qparams)
    if start is None:
        yield Message("QAT: fewer than 4 fine-tuning images, so none is held out to check the result")
        return end
    labels = [data.labels[i] for i in check]
    threshold = predict_config_of(mf.meta).threshold
    dice = {}
    for name, candidate in (("calibrated start", start), ("after QAT", end)):
        probs = yield from _probabilities(candidate, data, check, f"check {name}")
        dice[name] = pooled_dice([p[0] > threshold for p in probs], labels)
    keep_start = dice["calibrated start"] > dice["after QAT"]
    record["check"] = {"images": n_check, "dice_calibrated_start": dice["calibrated start"],
                       "dice_after_qat": dice["after QAT"], "kept": "calibrated start" if keep_start else "after QAT"}
    yield Message(f"QAT check on {n_check} held-out fine-tuning images: Dice {dice['after QAT']:.4f} after QAT, "
                  f"{dice['calibrated start']:.4f} at the calibrated start: "
                  + ("keeping the start (the fine-tune did not help)" if keep_start else "keeping the QAT result"))
    return start if keep_start else end


@COMPRESS_METHODS.register("prune-unstructured")
def prune_unstructured(net: UNet, mf: io.ModelFile, data: CompressData, cfg: CompressConfig, record: dict):
    """Global magnitude pruning of conv weights, a masked fine-tune, a sparse file (no speed-up)."""
    from ..kinds.sparse import to_sparse_file
    from .prune import apply_masks, magnitude_masks

    masks = magnitude_masks(net, cfg.pruning_ratio)
    apply_masks(net, masks)
    kept = int(sum(int(m.sum()) for m in masks.values()))
    total = int(sum(m.numel() for m in masks.values()))
    yield Message(f"unstructured pruning: kept {kept:,} of {total:,} conv weights ({1 - kept / total:.1%} sparse); "
                  "this shrinks the file, not the run time")
    if cfg.fine_tunes:
        net = net.to(memory_format=torch.channels_last).train()
        record["fine_tune"] = yield from finetune(net, data.sampler(cfg.patch_size, cfg.seed, True),
                                                  _settings(mf, cfg, 0.3, True), "fine-tune",
                                                  after_step=lambda: apply_masks(net, masks),
                                                  teacher=_teacher(float_module(mf)))
    _recalibrate_bn(net, data, cfg)
    net.eval()
    record["parameters"] = count_parameters(net)
    record["nonzero_parameters"] = record["parameters"] - (total - kept)
    record["sparsity"] = 1 - kept / total
    return to_sparse_file(net, mf.norm, _base_meta(mf), masks)


def _prune_structured(net: UNet, mf: io.ModelFile, data: CompressData, cfg: CompressConfig, record: dict
                      ) -> Generator[Any, None, UNet]:
    """Prune channels, re-estimate BatchNorm, refit the output head to the float model's logits,
    fine-tune with the float model as teacher, re-estimate BatchNorm again."""
    from .prune import prune_channels, refit_head

    before = count_parameters(net)
    pruned = prune_channels(net, cfg.pruning_ratio)
    after = count_parameters(pruned)
    yield Message(f"structured pruning: widths {list(net.config.widths)} -> {list(pruned.config.widths)}, "
                  f"parameters {before:,} -> {after:,} ({after / before:.3f}x)")
    _recalibrate_bn(pruned, data, cfg)
    sampler = data.sampler(cfg.patch_size, cfg.seed + 2, augment=True)
    batches = [torch.from_numpy(sampler.batch(cfg.batch_size)[0]) for _ in range(4)]
    record["head_refit_rms"] = refit_head(pruned, net.eval(), batches)
    yield Message(f"output head refitted to the float model's logits (RMS error {record['head_refit_rms']:.3f})")
    if cfg.fine_tunes:
        pruned = pruned.to(memory_format=torch.channels_last).train()
        record["fine_tune"] = yield from finetune(pruned, data.sampler(cfg.patch_size, cfg.seed, True),
                                                  _settings(mf, cfg, 0.3, True), "fine-tune", teacher=_teacher(net))
        record["fine_tune"]["distillation"] = "0.5 task loss + 0.5 BCE to the float model's probabilities"
    pruned = pruned.to(memory_format=torch.contiguous_format)
    _recalibrate_bn(pruned, data, cfg)
    record["widths"] = list(pruned.config.widths)
    record["decoder_widths"] = list(pruned.config.dec_widths())
    return pruned.eval()


@COMPRESS_METHODS.register("prune-structured")
def prune_structured(net: UNet, mf: io.ModelFile, data: CompressData, cfg: CompressConfig, record: dict):
    """Remove channels (Torch-Pruning), fine-tune, re-estimate BatchNorm: a smaller float U-Net."""
    pruned = yield from _prune_structured(net, mf, data, cfg, record)
    record["parameters"] = count_parameters(pruned)
    return io.from_module(pruned, pruned.config, mf.norm, "float", **_base_meta(mf))


@COMPRESS_METHODS.register("prune-ptq")
def prune_ptq(net: UNet, mf: io.ModelFile, data: CompressData, cfg: CompressConfig, record: dict):
    """Structured pruning with fine-tuning, then post-training int8."""
    pruned = yield from _prune_structured(net, mf, data, cfg, record)
    return (yield from _quantize(pruned, mf, data, cfg, record))

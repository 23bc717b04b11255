"""What a bioimage.io package says about its model: the README, the cover, the training data's citation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.normalize import Normalizer
from .config import ExportConfig
from .networks import Source

DSB2018 = {
    "text": "Caicedo J.C. et al. Nucleus segmentation across imaging experiments: the 2018 Data Science Bowl. "
            "Nature Methods 16, 1247-1253 (2019). Training data: image set BBBC038v1 (CC0) of the Broad "
            "Bioimage Benchmark Collection, as shipped with napari-slimseg.",
    "doi": "10.1038/s41592-019-0612-7",
}


def trained_on_sample(meta: dict[str, Any]) -> bool:
    """Whether the training record names only images of the shipped DSB2018 sample."""
    from ..sample import sample_dir

    split = (meta.get("training") or {}).get("split") or {}
    names = set(split.get("train", [])) | set(split.get("val", []))
    shipped = {p.stem for s in ("train", "test") for p in (sample_dir(s) / "images").glob("*.tif")}
    return bool(names) and names <= shipped


def cover_image(image: np.ndarray, probs: np.ndarray, path: Path) -> None:
    """A 2:1 PNG: the normalised test image beside its probabilities (red foreground, green centredness)."""
    from matplotlib.image import imsave

    grey = image if image.ndim == 2 else image.mean(axis=-1)
    g = np.clip(Normalizer.fit(grey, _cover_norm())(grey)[0], 0, 1)
    rgb = image.ndim == 3 and image.shape[-1] == 3
    left = np.clip(Normalizer.fit(image, _cover_norm())(image), 0, 1) if rgb else np.repeat(g[None], 3, axis=0)
    right = np.stack([probs[0], probs[1], 0.5 * g])
    both = np.concatenate([np.moveaxis(left, 0, -1), np.moveaxis(right, 0, -1)], axis=1)
    imsave(str(path), (np.clip(both, 0, 1) * 255).astype(np.uint8))


def _cover_norm():
    from ..config import NormConfig

    return NormConfig(pmin=1, pmax=99.8)


def readme(source: Source, cfg: ExportConfig, model_path: Path, on_sample: bool) -> str:
    """The package's documentation (markdown)."""
    seg = source.segmenter
    mc, norm, pc = seg.model_config, seg.norm, seg.predict_config
    training = seg.meta.get("training") or {}
    tc = training.get("train_config") or {}
    kind = {"float": "float32 weights",
            "float-sparse": "float32 weights, pruned to zeros (stored dense here: the spec has no sparse format)",
            "int8-onnx": "int8 (ONNX QDQ: per-channel int8 weights, uint8 activations); ONNX weights only"}[source.kind]
    lines = [
        f"# {cfg.name or 'slimseg nucleus U-Net'}",
        "",
        f"A 2D U-Net for nucleus instance segmentation, trained and exported with napari-slimseg "
        f"(`{model_path.name}`, model kind `{source.kind}`: {kind}).",
        "",
        "## Input",
        "",
        f"`raw`: one {({1: 'grey', 3: 'RGB'}).get(mc.in_channels, f'{mc.in_channels}-channel')} image (batch, channel, y, x), float32, any "
        f"intensity range. Height and width must be multiples of {mc.size_multiple}: pad up to the next "
        "multiple (slimseg pads by reflection) and crop the outputs back.",
        "",
        "Preprocessing (`scale_range`, per image, all channels jointly): percentile "
        f"{norm.pmin:g} maps to 0 and percentile {norm.pmax:g} to 1, without clipping: slimseg's own "
        "normalisation.",
        "",
        "## Outputs",
        "",
        "`probabilities`: two maps, the sigmoid of the network's two logit channels (the `sigmoid` "
        "postprocessing):",
        "",
        "- `foreground`: the probability that a pixel belongs to a nucleus;",
        "- `centredness`: high at a nucleus' centre, falling to 0 at its rim; its cores seed the split of "
        "touching nuclei.",
        "",
        "## From probabilities to instances",
        "",
        "slimseg (`slimseg.instances.split_instances`) labels instances so:",
        "",
        f"1. foreground = `foreground > {pc.threshold:g}`; its connected components are candidate objects;",
        (f"2. seeds = `centredness > {pc.seed_threshold:g}` inside the foreground, labelled as connected "
         "components;" if not pc.seed_h else
         f"2. seeds = the h-maxima of the centredness with h = {pc.seed_h:g} (regional maxima rising at least "
         f"that much above the saddle to any higher neighbour) where `centredness > {pc.seed_threshold:g}`, "
         "inside the foreground, labelled as connected components;"),
        "3. a component holding one seed or none is one object; a component holding several seeds is split "
        "among them by a seeded watershed on the negated centredness map, inside that component;",
        f"4. objects smaller than {pc.min_size} pixels are removed.",
        "",
        "The thresholds are the model's own (tuned on its validation images where training did so). Large "
        f"images: slimseg predicts in tiles of {pc.tile} pixels overlapping by {pc.overlap}, blended with a "
        "linear ramp, and normalises with the whole image's percentiles.",
        "",
        "## Training",
        "",
    ]
    if training:
        lines += [
            f"- loss `{tc.get('loss', '?')}`, optimizer `{tc.get('optimizer', '?')}`, up to "
            f"{tc.get('epochs', '?')} epochs of {tc.get('patches_per_epoch', '?')} patches of "
            f"{tc.get('patch_size', '?')} pixels; stopped by {training.get('stop_reason', '?')} "
            f"(best validation Dice {_num(training.get('best_val_dice'))} at epoch {training.get('best_epoch', '?')});",
            f"- {len((training.get('split') or {}).get('train', []))} training and "
            f"{len((training.get('split') or {}).get('val', []))} validation images.",
        ]
    else:
        lines.append("- no training record in the model file.")
    lines += [
        "",
        "Training data: " + (f"the DSB2018 nuclei sample shipped with napari-slimseg (BBBC038v1, CC0). "
                             f"Please cite: {DSB2018['text'].split(' Training data')[0]} "
                             f"doi:{DSB2018['doi']}." if on_sample else
                             "not recorded in the model file" + (" (see the citations)." if cfg.cite else ".")),
        "",
        "## Validation",
        "",
        "Score the model on labelled images it never saw: instance precision, recall and F1 match objects "
        "one-to-one at IoU >= 0.5; Dice and Jaccard are pixel scores. With napari-slimseg: "
        "`slimseg evaluate MODEL DATA` (DATA/images and DATA/labels).",
        "",
    ]
    metrics = seg.meta.get("metrics") or {}
    for split, values in metrics.items():
        if isinstance(values, dict):
            shown = ", ".join(f"{k} {_num(values[k])}" for k in ("dice", "jaccard", "instance_f1", "dsb_score")
                              if k in values)
            if shown:
                lines.append(f"- stored {split} scores: {shown}")
    lines += ["", "The test tensors are slimseg's own prediction of a crop of a real image.", ""]
    return "\n".join(lines)


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "?"

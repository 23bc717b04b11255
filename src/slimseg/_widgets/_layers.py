"""napari layers -> numpy arrays for the core, and result arrays -> output layers.

Input arrays are copied, so a worker thread never reads a layer the user is painting on and nothing
here can modify a user's layer. Output layers carry a tag in their metadata: a second run updates the
layer it made before (keeping the input layer's scale and translate) instead of piling up duplicates,
and a layer without our tag is never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError

TAG = "slimseg_output"  # metadata key of the layers the widgets made


def _is(layer: Any, kind: str) -> bool:
    """``layer`` is a napari ``kind`` ("Image", "Labels") layer; also true through napari's plugin proxy,
    whose ``type()`` is the proxy's."""
    import napari.layers

    return isinstance(layer, getattr(napari.layers, kind))


def layer_choices(viewer: Any, kind: str):
    """A magicgui ``choices`` callable: the viewer's layers of one type ("Image", "Labels")."""
    return lambda _widget: [(layer.name, layer) for layer in viewer.layers if _is(layer, kind)]


def _base_data(layer: Any) -> Any:
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]  # the full-resolution level
    return data


def planes(layer: Any) -> list[np.ndarray]:
    """The 2D images of an Image or Labels layer: one for a 2D layer, N for an (N, H, W) stack.

    RGB(A) layers give (H, W, C) planes; the model decides whether it takes them.
    """
    if layer is None:
        raise InputError("no layer chosen; pick one in the widget's drop-down (open an image first)")
    data = _base_data(layer)
    spatial = data.ndim - (1 if getattr(layer, "rgb", False) else 0)
    if spatial == 2:
        return [np.array(data)]
    if spatial == 3:
        return [np.array(data[i]) for i in range(data.shape[0])]
    raise InputError(
        f"layer {layer.name!r} has shape {tuple(data.shape)}: slimseg works on 2D images or a stack of 2D "
        "images (N, H, W); pick one plane first (e.g. Layers > Split stack, or layer.data[0])")


def training_pairs(image_layers: Sequence[Any], label_layers: Sequence[Any]
                   ) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """(names, images, labels) from image layers paired in order with label layers (stacks give one pair
    per plane). Shapes are checked here so the message can name the layers."""
    image_layers, label_layers = list(image_layers), list(label_layers)
    if not image_layers or not label_layers:
        raise InputError("choose an Image layer and its Labels layer (ground truth) first")
    if len(image_layers) != len(label_layers):
        raise InputError(
            f"{len(image_layers)} image layers but {len(label_layers)} labels layers are selected; select one "
            "Labels layer per Image layer (they pair in layer-list order)")
    names, images, labels = [], [], []
    for img_layer, lab_layer in zip(image_layers, label_layers):
        imgs, labs = planes(img_layer), planes(lab_layer)
        img_shape = imgs[0].shape[:2]
        if len(imgs) != len(labs) or img_shape != labs[0].shape[:2]:
            raise InputError(
                f"image layer {img_layer.name!r} has shape {tuple(_base_data(img_layer).shape)} but labels layer "
                f"{lab_layer.name!r} has {tuple(_base_data(lab_layer).shape)}; pair each image with labels "
                "of the same size")
        for i, (im, lb) in enumerate(zip(imgs, labs)):
            names.append(img_layer.name if len(imgs) == 1 else f"{img_layer.name}[{i}]")
            images.append(im)
            labels.append(lb)
    return names, images, labels


def channels_of(image_layers: Sequence[Any]) -> int:
    """1 for grey layers, 3 when every layer is RGB(A); a mix is refused."""
    rgb = {bool(getattr(layer, "rgb", False)) for layer in image_layers}
    if len(rgb) > 1:
        raise InputError("the chosen image layers mix RGB and grey images; train on one kind at a time")
    return 3 if rgb == {True} else 1


def stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """One array for a layer: the single 2D result, or a stack of the per-plane results."""
    return arrays[0] if len(arrays) == 1 else np.stack(arrays)


def put_layer(viewer: Any, data: np.ndarray, layer_type: str, name: str, like: Any, key: str,
              new: bool = False, **kwargs: Any) -> Any:
    """Update the layer tagged ``key`` or add one (``layer_type`` "labels" or "image"), placed like the
    layer ``like`` (same scale and translate). ``new=True`` always adds a layer."""
    place = {"scale": tuple(like.scale)[-data.ndim:], "translate": tuple(like.translate)[-data.ndim:]}
    if not new:
        for layer in viewer.layers:
            if layer.metadata.get(TAG) == key and _is(layer, layer_type.capitalize()):
                layer.data = data
                layer.scale, layer.translate = place["scale"], place["translate"]
                for attr, value in kwargs.items():
                    setattr(layer, attr, value)
                return layer
    add = {"labels": viewer.add_labels, "image": viewer.add_image}[layer_type]
    return add(data, name=name, metadata={TAG: key}, **place, **kwargs)

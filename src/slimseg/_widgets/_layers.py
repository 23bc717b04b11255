"""napari layers -> numpy arrays for the core, and result arrays -> output layers.

Input arrays are copied, so a worker thread never reads a layer the user is painting on and nothing
here can modify a user's layer. Output layers carry a tag in their metadata: a second run updates the
layer it made before (keeping the input layer's scale and translate) instead of piling up duplicates,
and a layer without our tag is never touched. Nor is one the user edited since (a corrected
prediction): its data no longer matches the digest stored with it, so a new layer is added instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hashlib

import numpy as np

from ..data.axes import training_planes
from ..data.readers import ImageData
from ..errors import InputError

TAG = "slimseg_output"  # metadata key of the layers the widgets made
DIGEST = "slimseg_digest"  # metadata key: the digest of the data a widget last wrote into its layer


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


def is_lazy(layer: Any) -> bool:
    """The layer's pixels are not all in memory: multiscale, or backed by a dask or zarr array."""
    return bool(getattr(layer, "multiscale", False)) or not isinstance(_base_data(layer), np.ndarray)


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


# The channel-axis drop-down of the Train and Predict widgets: (label, axis) pairs.
CHANNEL_AXES = [("from the shapes", None), *((f"axis {i}", i) for i in range(4)), ("last axis", -1)]


def _axes(layer: Any, ndim: int) -> str | None:
    """The layer's axes as letters where its axis labels say (z, t, c, y, x), RGB samples last; else None."""
    labels = [str(a).upper() for a in getattr(layer, "axis_labels", ())]
    rgb = bool(getattr(layer, "rgb", False))
    if len(labels) == ndim - rgb and all(a in ("T", "Z", "C", "Y", "X") for a in labels):
        return "".join(labels) + ("S" if rgb else "")
    return ("Q" * (ndim - 3) + "YXS") if rgb else None


def layer_image(layer: Any, channel_layers: Sequence[Any] = (), copy: bool = True) -> ImageData:
    """A copy of an Image layer's data with its axes (``copy=False``: the layer's own array, lazy where
    it is: the full resolution of a multiscale layer); with ``channel_layers``, those layers' data are
    further channels (a new last axis, in order), each of the layer's shape."""
    if layer is None:
        raise InputError("no layer chosen; pick one in the widget's drop-down (open an image first)")
    data = np.array(_base_data(layer)) if copy or channel_layers else _base_data(layer)
    axes = _axes(layer, data.ndim)
    others = [other for other in channel_layers if other is not layer]
    if not others:
        return ImageData(data, axes, layer.name)
    if any(getattr(lay, "rgb", False) for lay in (layer, *others)):
        raise InputError("RGB layers cannot be combined as channels; choose single-channel (grey) layers")
    for other in others:
        if tuple(_base_data(other).shape) != data.shape:
            raise InputError(f"channel layer {other.name!r} has shape {tuple(_base_data(other).shape)} but "
                             f"{layer.name!r} has {data.shape}; channels must have the same shape")
    stacked = np.stack([data, *(np.array(_base_data(other)) for other in others)], axis=-1)
    return ImageData(stacked, (axes or "Q" * data.ndim) + "C", layer.name)


def placed_like(labels: np.ndarray, layer: Any, channel_axis: int | None) -> tuple[np.ndarray, int | None]:
    """(labels, the layer axis to leave out of its scale): a channel axis inside the layer is dropped
    where it comes first, else kept with length 1, so napari lines the labels up with the layer."""
    dims = len(layer.scale)
    if channel_axis is None or channel_axis >= dims or getattr(layer, "rgb", False):
        return labels, None
    if 0 < channel_axis < dims - 2:
        return np.expand_dims(labels, channel_axis), None
    return labels, channel_axis


def training_pairs(image_layers: Sequence[Any], label_layers: Sequence[Any], channel_axis: int | None = None,
                   as_channels: bool = False) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """(names, images, labels) from image layers paired in order with label layers (stacks give one pair
    per plane); a layer whose extra axis the labels lack has channels there (or on ``channel_axis``);
    ``as_channels``: the image layers are the channels of one image. Shapes are checked here so the
    message can name the layers."""
    image_layers, label_layers = list(image_layers), list(label_layers)
    if not image_layers or not label_layers:
        raise InputError("choose an Image layer and its Labels layer (ground truth) first")
    if as_channels:
        if len(label_layers) != 1:
            raise InputError(f"the {len(image_layers)} image layers are channels of one image: select one Labels "
                             f"layer for it, not {len(label_layers)}")
        image = layer_image(image_layers[0], image_layers[1:])
        return training_planes(image, np.array(_base_data(label_layers[0])), name=image_layers[0].name)
    if len(image_layers) != len(label_layers):
        raise InputError(
            f"{len(image_layers)} image layers but {len(label_layers)} labels layers are selected; select one "
            "Labels layer per Image layer (they pair in layer-list order)")
    names, images, labels = [], [], []
    for img_layer, lab_layer in zip(image_layers, label_layers):
        if channel_axis is not None or _has_channel_axis(img_layer, lab_layer):
            for part, got in zip((names, images, labels), training_planes(
                    layer_image(img_layer), np.array(_base_data(lab_layer)), channel_axis=channel_axis,
                    name=img_layer.name)):
                part.extend(got)
            continue
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


def _has_channel_axis(image_layer: Any, labels_layer: Any) -> bool:
    """The image layer has one axis more than its labels, which leaving it out gives (its channels)."""
    if getattr(image_layer, "rgb", False):
        return False
    shape, target = tuple(_base_data(image_layer).shape), tuple(_base_data(labels_layer).shape)
    return len(shape) == len(target) + 1 and any(shape[:i] + shape[i + 1:] == target for i in range(len(shape)))


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
              new: bool = False, drop_axis: int | None = None, **kwargs: Any) -> Any:
    """Update the layer tagged ``key`` or add one (``layer_type`` "labels" or "image"), placed like the
    layer ``like`` (same scale and translate, without its axis ``drop_axis``: a channel axis).
    ``new=True`` always adds a layer, as does a tagged layer the user has :func:`edited`."""
    scale, translate = list(like.scale), list(like.translate)
    if drop_axis is not None:
        del scale[drop_axis], translate[drop_axis]
    place = {"scale": tuple(scale)[-data.ndim:], "translate": tuple(translate)[-data.ndim:]}
    if not new:
        for layer in tagged(viewer, key, layer_type):
            if edited(layer):
                continue  # the user's now: never overwritten
            layer.data = data
            layer.scale, layer.translate = place["scale"], place["translate"]
            for attr, value in kwargs.items():
                setattr(layer, attr, value)
            layer.metadata[DIGEST] = data_digest(layer.data)
            return layer
    add = {"labels": viewer.add_labels, "image": viewer.add_image}[layer_type]
    layer = add(data, name=name, metadata={TAG: key}, **place, **kwargs)
    layer.metadata[DIGEST] = data_digest(layer.data)
    return layer


def data_digest(data: Any) -> str:
    """A fingerprint of an array's values, shape and type (to tell whether a layer was edited)."""
    a = np.ascontiguousarray(np.asarray(data))
    return f"{a.dtype}{a.shape}:" + hashlib.blake2b(memoryview(a).cast("B"), digest_size=16).hexdigest()


def edited(layer: Any) -> bool:
    """A layer a widget wrote, changed since by the user (painted, erased, filled, replaced)."""
    return DIGEST in layer.metadata and layer.metadata[DIGEST] != data_digest(_base_data(layer))


def predicted_labels(viewer: Any) -> list[Any]:
    """The Labels layers the Predict widget made (they name their image and model in their metadata)."""
    return [layer for layer in viewer.layers if _is(layer, "Labels") and "slimseg_image" in layer.metadata]


def is_empty(layer: Any) -> bool:
    return not np.any(_base_data(layer))


def tagged(viewer: Any, key: str, layer_type: str) -> list[Any]:
    """The layers a widget made under ``key``."""
    return [layer for layer in viewer.layers if layer.metadata.get(TAG) == key and _is(layer, layer_type.capitalize())]

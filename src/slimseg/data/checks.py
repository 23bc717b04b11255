"""Turn user arrays into the shapes the model takes, or say clearly why not."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError


def as_image(image, in_channels: int = 1, name: str = "image") -> np.ndarray:
    """A 2D grey image as (H, W), or an image of ``in_channels`` channels as (H, W, C) (RGB: C = 3);
    finite values only.

    RGBA drops alpha; an RGB image whose channels are equal is accepted by a grey model. Stacks and
    other layouts go through :func:`slimseg.data.axes.standardize` first.
    """
    arr = np.asarray(image)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"{name}: pixel type {arr.dtype} is not a number type; give an integer or float image")
    if arr.ndim == 3 and arr.shape[-1] == 4 and in_channels in (1, 3):
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[-1] == 3 and in_channels == 1:
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            arr = arr[..., 0]
        else:
            raise InputError(
                f"{name}: an RGB image of shape {arr.shape}, but this model takes grey (H, W) images; "
                "convert it to grey or train a model with in_channels=3 (slimseg train counts the channels "
                "of its images; --in-channels sets them)"
            )
    expected = "(H, W)" if in_channels == 1 else f"(H, W, {in_channels})"
    if (in_channels == 1 and arr.ndim != 2) or (in_channels > 1 and (arr.ndim != 3 or arr.shape[-1] != in_channels)):
        if arr.ndim == 3 and in_channels == 1:
            hint = " (a stack of 2D images? split it into planes, or use model.predict, which takes stacks)"
        elif arr.ndim == 2:
            hint = f" (this is a grey image; the model takes {in_channels} channels)"
        elif arr.ndim == 3 and in_channels > 1 and arr.shape[0] == in_channels:
            hint = " (channels first? move them last, or use model.predict, which finds the channel axis)"
        else:
            hint = ""
        raise InputError(f"{name}: shape {arr.shape}, but this model takes {expected} images{hint}")
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise InputError(f"{name}: shape {arr.shape} is too small to segment")
    if np.issubdtype(arr.dtype, np.floating):
        bad = np.count_nonzero(~np.isfinite(arr))
        if bad:
            raise InputError(f"{name}: {bad} pixels are NaN or infinite; replace them (e.g. np.nan_to_num)")
    return arr


def as_labels(labels, shape: tuple[int, int] | None = None, name: str = "labels") -> np.ndarray:
    """Instance labels as a 2D integer array (a boolean mask is split into connected components)."""
    arr = np.asarray(labels)
    if arr.dtype == bool:
        arr, _ = ndi.label(arr)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(
            f"{name}: pixel type {arr.dtype} is not an integer type; labels must be integer object ids "
            "(0 = background), e.g. labels.astype(np.uint16)"
        )
    if arr.ndim != 2:
        raise InputError(f"{name}: shape {arr.shape}, but labels must be 2D (H, W)")
    if arr.min(initial=0) < 0:
        raise InputError(f"{name}: negative ids found; labels must be 0 (background) or positive ids")
    if shape is not None and arr.shape != tuple(shape):
        raise InputError(f"{name}: shape {arr.shape} differs from its image's {tuple(shape)}; they must match")
    return arr


def check_pairs(images, labels, in_channels: int = 1, names=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Check paired training images and labels; at least one label image must hold an object."""
    images, labels = list(images), list(labels)
    if not images:
        raise InputError("no training images were given")
    if len(images) != len(labels):
        raise InputError(f"{len(images)} images but {len(labels)} label images; give one label image per image")
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    out_i, out_l = [], []
    for img, lab, nm in zip(images, labels, names):
        img = as_image(img, in_channels, name=nm)
        out_i.append(img)
        out_l.append(as_labels(lab, img.shape[:2], name=f"labels of {nm}"))
    if not any(np.any(lab) for lab in out_l):
        raise InputError("the labels hold no objects (all pixels are 0); annotate some objects first")
    return out_i, out_l

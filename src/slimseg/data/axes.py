"""Which axes of an image are its planes (Z, T), its channels, and its Y and X (see docs/data.md).

The core takes one layout: ``(planes..., Y, X)`` for one channel and ``(planes..., Y, X, C)`` for several,
channel-last as RGB images already are. :func:`standardize` brings an image there from any layout: from
the axes a reader found in the file's metadata where it has some, else from the shapes (the model's
channel count when predicting, the labels' shape when training); where they cannot tell, it says so.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

# Axis letters (OME's, plus tifffile's S for the samples of an RGB pixel); Q is an axis of unknown meaning.
AXIS_NAMES = {"T": "time", "Z": "z", "C": "channel", "S": "RGB", "Y": "y", "X": "x", "Q": "unknown"}
MIN_SIDE = 5  # an axis shorter than this is not taken for Y or X when guessing (RGBA has 4 samples)
CHANNEL_HINT = "name it with --channel-axis N (channel_axis=N in Python)"


@dataclass(frozen=True)
class Standard:
    """An image in the core's layout: ``data`` is ``(planes..., Y, X)`` or ``(planes..., Y, X, C)``."""

    data: Any  # a numpy array, or the reader's lazy array-like where nothing had to be moved
    plane_axes: str  # one letter per leading axis: T, Z or Q (unknown)
    channel_axis: int | None = None  # where the channels were in the source (None: a grey image)
    rgb: bool = False  # the channels are the samples of RGB(A) pixels

    @property
    def plane_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[: len(self.plane_axes)])

    @property
    def n_channels(self) -> int:
        return 1 if self.data.ndim == len(self.plane_axes) + 2 else int(self.data.shape[-1])

    def planes(self) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        """(index, 2D image) for every plane, in C order (one plane, index (), for a 2D image)."""
        for index in np.ndindex(*self.plane_shape):
            yield index, np.asarray(self.data[index])


def clean_axes(axes: str | None, ndim: int) -> str | None:
    """Upper-case axis letters, those slimseg does not know as Q; None when they do not fit ``ndim``."""
    if not axes or len(axes) != ndim:
        return None
    out = "".join(a if a in AXIS_NAMES else "Q" for a in axes.upper())
    return out if "Y" in out and "X" in out or "Q" in out else None


def describe(shape: Sequence[int], axes: str | None) -> str:
    """``shape (10, 2, 64, 64) (axes ZCYX)`` or ``shape (3, 64, 64) (no axes metadata)``."""
    known = axes and set(axes) != {"Q"} and not set(axes) <= {"Q", "Y", "X"}
    return f"shape {tuple(shape)}" + (f" (axes {axes})" if known else " (no axes metadata)")


def standardize(image: Any, axes: str | None = None, *, in_channels: int | None = None,
                channels: Sequence[int] | None = None, channel_axis: int | None = None,
                labels_shape: Sequence[int] | None = None, name: str = "image") -> Standard:
    """``image`` (an array, or a reader's ``ImageData`` with its axes) in the core's layout.

    ``in_channels``: what the model takes (None when training: counted from the image); ``channels``:
    indices along the channel axis to keep; ``channel_axis``: the user's word on where the channels are
    (else the metadata's, else the shapes'); ``labels_shape``: when training, the labels show which axis
    is not theirs. A grey model keeps the 3 samples of an RGB image, which :func:`as_image` turns to grey
    where they are equal (or refuses).
    """
    if hasattr(image, "axes") and hasattr(image, "data"):
        axes, image = axes or image.axes, image.data
    if not hasattr(image, "shape") or not hasattr(image, "ndim"):
        image = np.asarray(image)
    shape = tuple(int(n) for n in image.shape)
    if len(shape) < 2:
        raise InputError(f"{name}: {describe(shape, None)} has {len(shape)} axes; an image needs at least 2 (Y, X)")
    axes = clean_axes(axes, len(shape))
    sel = None if channels is None else tuple(int(c) for c in channels)
    ca, rgb = find_channel_axis(shape, axes, channel_axis, in_channels, sel, labels_shape, name)
    data = image
    if ca is None:
        if sel is not None and sel != (0,):
            raise InputError(f"{name}: channels {list(sel)} were chosen, but {describe(shape, axes)} has no channel "
                             f"axis; {CHANNEL_HINT}, or give an image with channels")
        if in_channels not in (None, 1):
            raise InputError(f"{name}: this model takes {in_channels} channels, but {describe(shape, axes)} has "
                             f"no channel axis of that length; give an image with {in_channels} channels, choose "
                             f"{in_channels} of its channels with --channels (channels= in Python), or {CHANNEL_HINT}")
        rest = list(range(len(shape)))
    else:
        n = shape[ca]
        if sel is None:
            if rgb and n == 4 and in_channels in (None, 1, 3):
                sel = (0, 1, 2)  # RGBA: alpha is no image data
            elif not (rgb and in_channels == 1):  # a grey model checks RGB samples plane by plane (as_image)
                sel = tuple(range(n))
        if sel is not None:
            out = [c for c in sel if c >= n]
            if out:
                raise InputError(f"{name}: channel {out[0]} is out of range: axis {ca} of {describe(shape, axes)} "
                                 f"holds {n} channel{'s' if n != 1 else ''} (indices 0..{n - 1}); choose from "
                                 "those with --channels (channels= in Python)")
            grey_rgb = rgb and in_channels == 1 and channels is None  # RGBA to a grey model: as_image decides
            if in_channels is not None and len(sel) != in_channels and not grey_rgb:
                raise InputError(_count_message(name, shape, axes, ca, n, sel, in_channels))
            if sel != tuple(range(n)):
                data = np.take(np.asarray(data), sel, axis=ca)
        rest = [i for i in range(len(shape)) if i != ca]
    order = _yx_last(rest, axes)
    if ca is not None:
        order = order + [ca]
    if order != list(range(len(shape))):
        data = np.transpose(np.asarray(data), order)
    if ca is not None and data.shape[-1] == 1:
        data = data[..., 0]
    plane_axes = "".join(axes[i] for i in order[: len(rest) - 2]) if axes else "Q" * (len(rest) - 2)
    if min(data.shape[len(plane_axes): len(plane_axes) + 2]) < 2:
        raise InputError(f"{name}: {describe(shape, axes)} is too small to segment (Y and X need 2 pixels or more)")
    return Standard(data, plane_axes, ca, rgb)


def find_channel_axis(shape: tuple[int, ...], axes: str | None, channel_axis: int | None,
                      in_channels: int | None, sel: tuple[int, ...] | None,
                      labels_shape: Sequence[int] | None, name: str) -> tuple[int | None, bool]:
    """(the channel axis or None, whether it holds RGB samples): the user's, the metadata's, or the
    shapes' (refused where several axes could be it)."""
    nd = len(shape)
    if channel_axis is not None:
        if not -nd <= channel_axis < nd:
            raise InputError(f"{name}: channel axis {channel_axis} is out of range for {describe(shape, axes)}: "
                             f"it has {nd} axes (0..{nd - 1}, or -1..-{nd} from the end)")
        ca = channel_axis % nd
        if nd < 3 or ca == nd - 2:
            raise InputError(f"{name}: axis {channel_axis} of {describe(shape, axes)} cannot hold the channels: the "
                             "last two axes (or, for channel-last images, the two before the channels) are Y and X")
        return ca, (axes[ca] == "S") if axes else (ca == nd - 1 and shape[ca] in (3, 4))
    allowed = list(range(nd))
    if axes is not None:
        named = [i for i, a in enumerate(axes) if a in "CS"]
        if len(named) > 1:
            named = [i for i in named if shape[i] > 1] or named[:1]
        if len(named) > 1:
            raise InputError(f"{name}: {describe(shape, axes)} names several channel axes "
                             f"({', '.join(map(str, named))}); {CHANNEL_HINT}")
        if named:
            return named[0], axes[named[0]] == "S"
        if "Q" not in axes:
            return None, False  # every axis is known, none holds channels
        allowed = [i for i, a in enumerate(axes) if a == "Q"]
    candidates = [i for i in allowed if _plausible(shape, i)]
    if labels_shape is not None:
        return _from_labels(shape, axes, tuple(labels_shape), candidates, name)
    if sel is None and in_channels in (None, 1):
        rgb = nd - 1 in candidates and shape[-1] in (3, 4)
        return (nd - 1, True) if rgb else (None, False)
    if sel is None and in_channels == 3 and nd - 1 in candidates and shape[-1] == 4:
        return nd - 1, True  # RGBA to an RGB model
    need = in_channels if sel is None else max(sel) + 1
    fits = [i for i in candidates if (shape[i] == need if sel is None else shape[i] >= need)]
    if len(fits) > 1 and sel is not None and in_channels is not None:
        fits = [i for i in fits if shape[i] == in_channels] or fits
    if len(fits) == 1:
        return fits[0], fits[0] == nd - 1 and shape[-1] in (3, 4)
    if not fits:
        if sel is not None and len(candidates) == 1:
            c, n = candidates[0], shape[candidates[0]]
            raise InputError(f"{name}: channel {max(sel)} is out of range: axis {c} of {describe(shape, axes)} holds "
                             f"{n} channel{'s' if n != 1 else ''} (indices 0..{n - 1}); choose from those with "
                             "--channels (channels= in Python)")
        if sel is not None:
            raise InputError(f"{name}: channel {max(sel)} is out of range: no axis of {describe(shape, axes)} holds "
                             f"{need} or more channels; choose from the channels there are, or {CHANNEL_HINT}")
        return None, False  # the caller says the model wants channels the image lacks
    raise InputError(f"{name}: cannot tell which axis holds the channels: axes {_listed(fits)} of "
                     f"{describe(shape, axes)} could each be channels or a stack of planes; {CHANNEL_HINT}")


def _plausible(shape: tuple[int, ...], i: int) -> bool:
    """Axis ``i`` may hold channels: it is not between Y and X, and the Y and X left are not tiny."""
    nd = len(shape)
    if nd < 3 or i == nd - 2:
        return False
    rest = [n for k, n in enumerate(shape) if k != i]
    return min(rest[-2:]) >= MIN_SIDE


def _from_labels(shape, axes, labels_shape, candidates, name) -> tuple[int | None, bool]:
    """The channel axis is the image axis the labels lack (the labels have the image's other axes)."""
    nd = len(shape)
    if len(labels_shape) == nd:
        return None, False
    fits = [i for i in candidates if shape[:i] + shape[i + 1:] == labels_shape]
    if len(fits) == 1:
        return fits[0], fits[0] == nd - 1 and shape[-1] in (3, 4)
    if len(labels_shape) == nd - 1 and len(fits) > 1:
        raise InputError(f"{name}: cannot tell which axis holds the channels: removing axis "
                         f"{_listed(fits, 'or')} of {describe(shape, axes)} leaves the labels' shape {labels_shape}; "
                         f"{CHANNEL_HINT}")
    raise InputError(f"{name}: its labels' shape {labels_shape} differs from the image's ({describe(shape, axes)}): "
                     "labels need the image's shape without its channel axis; give labels of the same size")


def _yx_last(rest: list[int], axes: str | None) -> list[int]:
    """The non-channel axes with Y and X moved last where the metadata places them elsewhere."""
    if not axes or "Y" not in axes or "X" not in axes:
        return rest
    y, x = axes.index("Y"), axes.index("X")
    return [i for i in rest if i not in (y, x)] + [y, x]


def _listed(axes: Sequence[int], word: str = "and") -> str:
    return ", ".join(map(str, axes[:-1])) + f" {word} {axes[-1]}" if len(axes) > 1 else str(axes[0])


def _count_message(name, shape, axes, ca, n, sel, in_channels) -> str:
    where = f"{len(sel)} of the {n} on axis {ca}" if len(sel) != n else f"{n} on axis {ca}"
    head = (f"{name}: this model takes {'grey images (1 channel)' if in_channels == 1 else f'{in_channels} channels'}, "
            f"but {describe(shape, axes)} gives {where}")
    if n >= in_channels:
        pick = ",".join(map(str, range(in_channels)))
        return f"{head}; choose {in_channels} with --channels {pick} (channels=({pick},) in Python)"
    return f"{head}; give an image with {in_channels} channels, or train a model with in_channels={n}"


def channels_of_plane(image: np.ndarray) -> int:
    """The channel count a model trained on this (Y, X[, C]) plane takes: RGB(A) samples that are all
    equal count as grey, alpha is dropped; anything not channel-last counts as 1."""
    if image.ndim != 3 or image.shape[-1] >= min(image.shape[:2]):
        return 1  # not channel-last: as_image says what it is
    n = int(image.shape[-1])
    if n in (3, 4):
        rgb = image[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return 1
        return 3
    return n


def count_channels(images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> int:
    """The one channel count of training planes; a mix (grey and RGB, 2 and 3 channels) is refused."""
    if not len(images):
        return 1
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    counts: dict[int, str] = {}
    for image, nm in zip(images, names):
        counts.setdefault(channels_of_plane(np.asarray(image)), nm)
    if len(counts) > 1:
        seen = ", ".join(f"{n} ({nm})" for n, nm in sorted(counts.items()))
        raise InputError(f"the images have different channel counts: {seen}; train on images with the same "
                         "channels (choose them with --channels, channels= in Python)")
    return next(iter(counts))




def training_planes(image: Any, labels: Any, *, channels: Sequence[int] | None = None,
                    channel_axis: int | None = None, in_channels: int | None = None, name: str = "image"
                    ) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """(names, images, labels) of one image and its labels in the core's layout: a 2D image gives one
    pair, a stack one per plane (named ``name[i]``). The labels show where the channels are."""
    lab = np.asarray(getattr(labels, "data", labels))
    std = standardize(image, in_channels=in_channels, channels=channels, channel_axis=channel_axis,
                      labels_shape=lab.shape, name=name)
    expected = tuple(std.data.shape[: len(std.plane_axes) + 2])
    if lab.shape != expected:
        raise InputError(f"{name}: its labels' shape {lab.shape} differs from the image's {expected} (without "
                         "channels); they must match: give labels of the same size as the image")
    names, images, label_planes = [], [], []
    for index, plane in std.planes():
        names.append(f"{name}[{','.join(map(str, index))}]" if index else name)
        images.append(plane)
        label_planes.append(lab[index])
    return names, images, label_planes


__all__ = ["AXIS_NAMES", "Standard", "clean_axes", "describe", "standardize", "find_channel_axis",
           "channels_of_plane", "count_channels", "training_planes"]

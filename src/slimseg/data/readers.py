"""The one reader layer: TIFF / OME-TIFF, PNG and JPEG, and zarr / OME-Zarr -> an array and its axes.

Every door (command line, Python, folder reading) opens images here, so none of them has format cases of
its own. The axes are letters (T, Z, C, S for RGB samples, Y, X; Q where a file does not say), taken
from the file's metadata where it has some; :func:`slimseg.data.axes.standardize` uses them to tell
planes from channels. Zarr arrays are returned unread (array-likes), so that later code can read them
tile by tile; TIFF and PNG are read whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg")
ZARR_SUFFIXES = (".zarr",)
IMAGE_SUFFIXES = TIFF_SUFFIXES + PLAIN_SUFFIXES + ZARR_SUFFIXES
_ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")
_OME_AXES = {"t": "T", "z": "Z", "c": "C", "y": "Y", "x": "X"}


@dataclass(frozen=True)
class ImageData:
    """An image as read: ``data`` is a numpy array or a lazy array-like (``shape``, ``dtype``, slicing);
    ``axes`` one letter per axis, or None where the format says nothing."""

    data: Any
    axes: str | None = None
    source: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.data.shape)

    def asarray(self) -> np.ndarray:
        return np.asarray(self.data)


def is_zarr(path: str | Path) -> bool:
    """A zarr store on disk: a ``.zarr`` folder, or a folder holding zarr's metadata files."""
    path = Path(path)
    return path.is_dir() and (path.suffix.lower() in ZARR_SUFFIXES or any((path / m).exists() for m in _ZARR_MARKERS))


def is_image_file(path: str | Path) -> bool:
    path = Path(path)
    if path.name.startswith("."):
        return False
    return is_zarr(path) or (path.is_file() and path.suffix.lower() in TIFF_SUFFIXES + PLAIN_SUFFIXES)


def read(path: str | Path) -> ImageData:
    """Open one image (a file, or a zarr store) with its axes; :class:`InputError` says why not."""
    path = Path(path)
    if is_zarr(path):
        return read_zarr(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image (a zarr store holds .zarray, .zgroup or zarr.json)")
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            return read_tiff(path)
        from skimage import io

        data = io.imread(path)
    except InputError:
        raise
    except Exception as err:  # any reader failure is a bad file from the user's point of view
        raise InputError(f"{path}: cannot read it as an image ({err})") from None
    if data.ndim == 3 and data.shape[-1] == 2:  # grey + alpha
        data = data[..., 0]
    axes = {2: "YX", 3: "YXS"}.get(data.ndim) if data.ndim != 3 or data.shape[-1] in (3, 4) else None
    return ImageData(data, axes, str(path))


def read_tiff(path: Path) -> ImageData:
    """The first series of a TIFF, with the axes tifffile finds (OME-XML, ImageJ hyperstack, tifffile's own
    metadata, RGB samples); tifffile's letters for unknown axes (I, Q, ...) become Q, and so do samples
    stored as planes (S before Y and X), which tifffile used to write for any (3, H, W) array."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InputError(f"{path}: the TIFF holds no image")
        series = tif.series[0]
        data = series.asarray()
        axes = series.axes
    if len(axes) != data.ndim:  # a squeezed dimension that the axes still name
        axes = None
    elif "S" in axes[:-1]:  # planar samples: tifffile's old default for any (3 or 4, H, W) data, so unknown
        axes = axes.replace("S", "Q")
    return ImageData(data, _known_letters(axes), str(path))


def read_zarr(path: Path) -> ImageData:
    """A zarr array (axes from ``_ARRAY_DIMENSIONS`` or zarr v3 dimension names where set), or an OME-Zarr
    image group: its highest-resolution level with the multiscales axes."""
    zarr = zarr_module(f"{path}: reading zarr")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:
        raise InputError(f"{path}: cannot open it as zarr ({err})") from None
    if hasattr(node, "shape") and hasattr(node, "dtype"):
        return ImageData(node, _array_axes(node), str(path))
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    if not multiscales:
        arrays = sorted(k for k, _ in node.arrays()) if hasattr(node, "arrays") else []
        hint = f" (it holds the arrays {', '.join(arrays[:5])}: give one, e.g. {path / arrays[0]})" if arrays else ""
        raise InputError(f"{path}: a zarr group without OME-Zarr multiscales metadata{hint}")
    first = multiscales[0]
    try:
        level = first["datasets"][0]["path"]
        array = node[level]
    except (KeyError, IndexError, TypeError) as err:
        raise InputError(f"{path}: its OME-Zarr multiscales metadata names no readable level ({err})") from None
    return ImageData(array, _ome_axes(first.get("axes"), array.ndim), f"{path}/{level}")


def _ome_axes(axes: Any, ndim: int) -> str | None:
    """OME-Zarr axes (0.4+: dicts with a name; 0.3: names) as letters; the 0.1/0.2 default is TCZYX."""
    if axes is None:
        return "TCZYX"[-ndim:] if ndim == 5 else None
    names = [a.get("name", "") if isinstance(a, dict) else str(a) for a in axes]
    if len(names) != ndim:
        return None
    return "".join(_OME_AXES.get(n.lower(), "Q") for n in names)


def _array_axes(array: Any) -> str | None:
    names = getattr(getattr(array, "metadata", None), "dimension_names", None)
    if not names:
        names = dict(array.attrs).get("_ARRAY_DIMENSIONS")
    if not names or len(names) != array.ndim:
        return None
    return "".join(_OME_AXES.get(str(n).lower(), "Q") for n in names)


def _known_letters(axes: str | None) -> str | None:
    from .axes import AXIS_NAMES

    if not axes:
        return None
    return "".join(a if a in AXIS_NAMES else "Q" for a in axes.upper())


__all__ = ["ImageData", "IMAGE_SUFFIXES", "read", "read_tiff", "read_zarr", "is_zarr", "is_image_file"]


def zarr_module(what: str = "zarr input and output"):
    """The zarr package (3 or newer), or an InputError saying how to install it."""
    try:
        import zarr
    except ModuleNotFoundError:
        zarr = None
    if zarr is None or int(zarr.__version__.split(".")[0]) < 3:
        raise InputError(f"{what} needs the optional package zarr (3 or newer, Python 3.11+); install it with "
                         "pip install 'napari-slimseg[zarr]'")
    return zarr

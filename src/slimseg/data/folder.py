"""Read a data folder: ``DATA/images/*`` with ``DATA/labels/*`` of the same names (through :mod:`.readers`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import ChannelConfig
from ..errors import InputError
from .axes import training_planes
from .readers import IMAGE_SUFFIXES, is_image_file, read


def read_image(path: str | Path) -> np.ndarray:
    """One image as a numpy array, as stored (see :func:`slimseg.data.readers.read` for its axes)."""
    return read(path).asarray()


def list_images(path: str | Path) -> list[Path]:
    """One image (a file or a zarr store), or the images of a folder sorted by name."""
    path = Path(path)
    if path.is_file() or is_image_file(path):
        return [path]
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder")
    files = sorted(p for p in path.iterdir() if is_image_file(p))
    if not files:
        raise InputError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def image_stem(path: Path) -> str:
    """The name of an image without its suffix (also .ome.tif, .ome.zarr)."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def load_folder(data: str | Path, channels: ChannelConfig | None = None, in_channels: int | None = None
                ) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """(names, images, labels) of ``DATA/images`` and ``DATA/labels``, paired by file name, in the core's
    layout: channels last, chosen by ``channels``; a stack gives one pair per plane (``name[i]``).
    ``in_channels``: what the model to be scored takes (None when training: as the images have)."""
    data = Path(data)
    channels = channels or ChannelConfig()
    img_dir, lab_dir = data / "images", data / "labels"
    if not img_dir.is_dir() or not lab_dir.is_dir():
        raise InputError(
            f"{data}: expected two sub-folders, images/ and labels/, with label files named like their images"
        )
    imgs = {image_stem(p): p for p in list_images(img_dir)}
    labs = {image_stem(p): p for p in list_images(lab_dir)}
    missing_l, missing_i = sorted(set(imgs) - set(labs)), sorted(set(labs) - set(imgs))
    if missing_l or missing_i:
        parts = []
        if missing_l:
            parts.append(f"images without labels: {', '.join(missing_l[:5])}" + (" ..." if len(missing_l) > 5 else ""))
        if missing_i:
            parts.append(f"labels without images: {', '.join(missing_i[:5])}" + (" ..." if len(missing_i) > 5 else ""))
        raise InputError(f"{data}: names do not match ({'; '.join(parts)}); each image needs a label file of the same name")
    names, images, labels = [], [], []
    for stem in sorted(imgs):
        n, i, lb = training_planes(read(imgs[stem]), read(labs[stem]).asarray(), channels=channels.channels,
                                   channel_axis=channels.channel_axis, in_channels=in_channels, name=stem)
        names += n
        images += i
        labels += lb
    return names, images, labels

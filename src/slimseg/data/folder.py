"""Read a data folder: ``DATA/images/*.tif`` with ``DATA/labels/*.tif`` of the same names."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        from skimage import io

        return io.imread(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except Exception as err:  # any reader failure is a bad file from the user's point of view
        raise InputError(f"{path}: cannot read it as an image ({err})") from None


def list_images(path: str | Path) -> list[Path]:
    """One image file, or the image files of a folder sorted by name."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise InputError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def load_folder(data: str | Path) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """(names, images, labels) of ``DATA/images`` and ``DATA/labels``, paired by file stem."""
    data = Path(data)
    img_dir, lab_dir = data / "images", data / "labels"
    if not img_dir.is_dir() or not lab_dir.is_dir():
        raise InputError(
            f"{data}: expected two sub-folders, images/ and labels/, with label files named like their images"
        )
    imgs = {p.stem: p for p in list_images(img_dir)}
    labs = {p.stem: p for p in list_images(lab_dir)}
    missing_l, missing_i = sorted(set(imgs) - set(labs)), sorted(set(labs) - set(imgs))
    if missing_l or missing_i:
        parts = []
        if missing_l:
            parts.append(f"images without labels: {', '.join(missing_l[:5])}" + (" ..." if len(missing_l) > 5 else ""))
        if missing_i:
            parts.append(f"labels without images: {', '.join(missing_i[:5])}" + (" ..." if len(missing_i) > 5 else ""))
        raise InputError(f"{data}: names do not match ({'; '.join(parts)}); each image needs a label file of the same name")
    names = sorted(imgs)
    return names, [read_image(imgs[n]) for n in names], [read_image(labs[n]) for n in names]

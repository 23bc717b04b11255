"""The real nuclei images shipped inside the package (DSB2018 / BBBC038v1, CC0; see sample_data/README.md)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def sample_dir(split: str = "train") -> Path:
    """The folder ``images/`` + ``labels/`` of the shipped ``train`` or ``test`` sample."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return Path(str(files("slimseg") / "sample_data" / split))


def load_sample(split: str = "train"):
    """(names, images, labels) of the shipped sample."""
    from .data.folder import load_folder

    return load_folder(sample_dir(split))

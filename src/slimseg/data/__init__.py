"""Data: reading and checking images and labels, normalisation, tiling and training patches."""

from .checks import as_image, as_labels, check_pairs
from .folder import load_folder, read_image, list_images
from .normalize import Normalizer
from .patches import PatchSampler, split_indices, targets_from_labels
from .tiling import blend_window, tile_starts

__all__ = [
    "as_image", "as_labels", "check_pairs", "load_folder", "read_image", "list_images", "Normalizer",
    "PatchSampler", "split_indices", "targets_from_labels", "blend_window", "tile_starts",
]

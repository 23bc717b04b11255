"""Data: reading images (one reader layer), telling their axes apart, checking images and labels,
normalisation, tiling and training patches."""

from .axes import Standard, standardize, training_planes
from .checks import as_image, as_labels, check_pairs
from .folder import load_folder, read_image, list_images
from .readers import ImageData, read
from .normalize import Normalizer
from .patches import PatchSampler, split_indices, targets_from_labels
from .tiling import blend_window, tile_starts

__all__ = [
    "ImageData", "read", "Standard", "standardize", "training_planes", "as_image", "as_labels", "check_pairs",
    "load_folder", "read_image", "list_images", "Normalizer", "PatchSampler", "split_indices", "targets_from_labels",
    "blend_window", "tile_starts",
]

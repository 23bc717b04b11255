"""napari-slimseg: small, fast U-Net segmentation of cells and nuclei.

Importing ``slimseg`` imports neither torch nor Qt; the submodules do what they need.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

"""napari-slimseg: small, fast U-Net segmentation of cells and nuclei.

Importing ``slimseg`` imports neither torch nor Qt, and changes nothing in the host process
(:func:`slimseg.host.tune_process` is the opt-in the CLI uses).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

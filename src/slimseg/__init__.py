"""napari-slimseg: small, fast U-Net segmentation of cells and nuclei.

Importing ``slimseg`` imports neither torch nor Qt; the submodules do what they need.
"""

import os

__version__ = "0.1.0"

# torch puts CPU tensors of 2 MB and more in transparent huge pages: 512x fewer page faults each time
# a freed activation's memory comes back fresh from the kernel. Float prediction at batch 8 ran 1.9x
# faster here, in the main thread and in a worker thread (``benchmarks/core.py alloc``). torch reads
# the variable once, at its first CPU allocation, so it only takes effect where slimseg comes first;
# set it to 0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__all__ = ["__version__"]

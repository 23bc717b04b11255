"""napari-slimseg: small, fast U-Net segmentation of cells and nuclei.

The blocking API (see :mod:`slimseg.api`)::

    result = slimseg.train("DATA", minutes=5)   # or train(images, labels, ...)
    result.save("model.slimseg")
    model = slimseg.load("model.slimseg")
    labels = model.predict(image)
    scores = slimseg.evaluate(model, "DATA")

Importing ``slimseg`` imports neither torch nor Qt, and changes nothing in the host process
(:func:`slimseg.host.tune_process` is the opt-in the CLI uses).
"""

from ._version import __version__

__all__ = ["__version__", "evaluate", "load", "train"]


def __getattr__(name: str):
    if name in ("evaluate", "load", "train"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'slimseg' has no attribute {name!r}")

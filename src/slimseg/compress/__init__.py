"""Model compression: int8 quantisation (PTQ, QAT), pruning (unstructured, structured) and both.

``compress(model_file, images, labels, CompressConfig(...))`` is a generator of progress events that
returns the compressed model file; ``slimseg.compress.report.benchmark`` measures what it bought.
How each kind of model file is stored and run lives in :mod:`slimseg.kinds`.
Importing this package loads neither torchao, torch.compile, Torch-Pruning nor ONNX Runtime: each is
imported by the function that needs it.
"""

from . import methods  # noqa: F401  (registers the methods)
from .config import COMPRESS_METHODS, CompressConfig
from .methods import compress

__all__ = ["COMPRESS_METHODS", "CompressConfig", "compress"]

"""The export settings (one source of defaults for the CLI and the Python API)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ..errors import InputError

Format = Literal["bioimageio", "onnx", "torchscript"]
FORMATS: tuple[str, ...] = get_args(Format)
DEFAULT_AUTHOR = "slimseg user"


@dataclass
class ExportConfig:
    """How to export a model.

    ``bioimageio`` writes a bioimage.io model package (zip); ``onnx`` and ``torchscript`` the bare
    network (logits, inputs in whole size steps). ``authors``, ``license``, ``name`` and ``cite``
    ((doi, text) pairs, added to the training data's citation where slimseg knows it) go into the
    package's description; ``test_image`` is the real image its test tensors come from (default: the
    first of the shipped sample's test images).
    """

    format: Format = "bioimageio"
    authors: tuple[str, ...] = (DEFAULT_AUTHOR,)
    license: str = "CC-BY-4.0"
    name: str | None = None
    cite: tuple[tuple[str, str], ...] = ()
    test_image: str | None = None

    def __post_init__(self) -> None:
        self.authors = tuple(str(a).strip() for a in self.authors if str(a).strip())
        self.cite = tuple((str(doi).strip(), str(text).strip()) for doi, text in self.cite)
        if self.format not in FORMATS:
            raise InputError(f"format must be one of {', '.join(FORMATS)}; got {self.format!r}")
        if not self.authors:
            raise InputError("give at least one author name")
        if not self.license.strip():
            raise InputError("give a licence (an SPDX id such as CC-BY-4.0 or MIT)")

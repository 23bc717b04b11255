"""The slimseg model file: one zip holding ``meta.json`` and one ``.npy`` per tensor.

``meta.json`` carries the format version, the model kind (``float`` or a compressed kind), the model
and normalisation configs, the training record and metrics. Tensors are plain numpy arrays read with
``allow_pickle=False``: loading a file never unpickles anything, so a file cannot run code.
"""

from __future__ import annotations

import io as _io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .config import ModelConfig, NormConfig, from_dict, to_dict
from .errors import InputError, ModelFileError
from .files import atomic_path

FORMAT = "slimseg-model"
FORMAT_VERSION = 1
SUFFIX = ".slimseg"


@dataclass
class ModelFile:
    """Everything in a model file. ``tensors`` are numpy arrays keyed by state-dict name."""

    model_config: ModelConfig
    norm: NormConfig
    tensors: dict[str, np.ndarray]
    kind: str = "float"
    meta: dict[str, Any] = field(default_factory=dict)  # training record, metrics, compression info

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.array(v)) for k, v in self.tensors.items()}


def check_writable(path: str | Path, overwrite: bool) -> Path:
    """Refuse to replace an existing file unless ``overwrite`` (call before long work starts)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; choose another name or pass --overwrite (overwrite=True)")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name")
    return path


def save(mf: ModelFile, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``mf`` atomically (a temp file renamed into place); never clobbers without ``overwrite``."""
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "slimseg_version": __version__,
        "kind": mf.kind,
        "model_config": to_dict(mf.model_config),
        "norm": to_dict(mf.norm),
        "tensors": {k: [str(v.dtype), list(v.shape)] for k, v in mf.tensors.items()},
        **mf.meta,
    }
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        zf.writestr("meta.json", json.dumps(meta, indent=1, default=_json_default))
        for name, arr in mf.tensors.items():
            buf = _io.BytesIO()
            np.save(buf, np.asarray(arr), allow_pickle=False)  # keeps 0-d shapes (ascontiguousarray makes them 1-d)
            zf.writestr(f"tensors/{name}.npy", buf.getvalue())
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a model file's metadata")


def load(path: str | Path) -> ModelFile:
    """Read a model file safely; raise :class:`ModelFileError` with the reason for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:1] == b"\x80":
        raise ModelFileError(f"{path} is a Python pickle, not a slimseg model file; pickles can run code, "
                             "so it was not loaded (nothing in it ran)")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not a slimseg model file (corrupt, truncated or another format)")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "meta.json" not in names:
                if any(n.endswith("data.pkl") for n in names):
                    raise ModelFileError(
                        f"{path} is a PyTorch pickle file (torch.save), not a slimseg model file; it was not "
                        "loaded because unpickling can run code (nothing in it ran)")
                raise ModelFileError(f"{path} is a zip file but not a slimseg model file (no meta.json)")
            meta = json.loads(zf.read("meta.json"))
            _check_meta(meta, path)
            tensors = {}
            for name in meta["tensors"]:
                with zf.open(f"tensors/{name}.npy") as fh:
                    tensors[name] = np.load(_io.BytesIO(fh.read()), allow_pickle=False)
    except ModelFileError:
        raise
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise ModelFileError(f"{path} holds a pickled object; it was refused and nothing in it ran") from None
        raise ModelFileError(f"{path} is damaged ({err}); re-save or re-train the model") from None
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{path} is damaged or truncated ({err}); re-save or re-train the model") from None
    info = {k: v for k, v in meta.items()
            if k not in ("format", "model_config", "norm", "tensors", "kind")}
    try:
        model_config = from_dict(ModelConfig, meta["model_config"])
        norm = from_dict(NormConfig, meta["norm"])
    except (TypeError, InputError) as err:
        raise ModelFileError(f"{path}: its model settings are invalid ({err})") from None
    return ModelFile(model_config, norm, tensors, meta.get("kind", "float"), info)


def _check_meta(meta: Any, path: Path) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a slimseg model file (its meta.json names another format)")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model-file format version {version}, newer than this slimseg reads "
            f"({FORMAT_VERSION}); upgrade napari-slimseg (pip install -U napari-slimseg)")
    for key in ("model_config", "norm", "tensors"):
        if key not in meta:
            raise ModelFileError(f"{path}: meta.json lacks {key!r}; the file is damaged")


def from_module(model: torch.nn.Module, model_config: ModelConfig, norm: NormConfig,
                kind: str = "float", **meta: Any) -> ModelFile:
    tensors = {k: v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()}
    return ModelFile(model_config, norm, tensors, kind, meta)

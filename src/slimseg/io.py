"""The slimseg model file: one zip holding ``meta.json`` and one ``.npy`` per tensor.

``meta.json`` carries the format version, the model kind (``float`` or a compressed kind), the model
and normalisation configs, the training record and metrics. Tensors are plain numeric numpy arrays
whose headers are checked before their data is read: loading never unpickles anything (a file cannot
run code) and never allocates more than the model settings and a fixed cap allow.
"""

from __future__ import annotations

import io as _io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._version import __version__
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
    with atomic_path(path) as tmp:
        write_archive(tmp, _meta_of(mf), mf.tensors)
    return path


def tensors_digest(mf: ModelFile, salt: str = "") -> str:
    """SHA-256 (hex) of ``salt`` and the model file's tensors, by name: which exact weights a file holds."""
    import hashlib

    h = hashlib.sha256(salt.encode())
    for name in sorted(mf.tensors):
        h.update(name.encode())
        h.update(np.ascontiguousarray(mf.tensors[name]).tobytes())
    return h.hexdigest()


def file_size(mf: ModelFile) -> int:
    """The bytes ``mf`` takes as a model file (written to memory, not to disk)."""
    buf = _io.BytesIO()
    write_archive(buf, _meta_of(mf), mf.tensors)
    return buf.tell()


def _meta_of(mf: ModelFile) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "slimseg_version": __version__,
        "kind": mf.kind,
        "model_config": to_dict(mf.model_config),
        "norm": to_dict(mf.norm),
        "tensors": {k: [str(v.dtype), list(v.shape)] for k, v in mf.tensors.items()},
        **mf.meta,
    }


def write_archive(target: Any, meta: dict[str, Any], tensors: dict[str, np.ndarray], deflate: bool = True) -> None:
    """``meta.json`` and one ``.npy`` per tensor in a zip (what :func:`read_archive` reads) to ``target``, a
    path or a binary file."""
    compression = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(target, "w", compression=compression, compresslevel=6 if deflate else None) as zf:
        zf.writestr("meta.json", json.dumps(meta, indent=1, default=_json_default))
        for name, arr in tensors.items():
            buf = _io.BytesIO()
            np.save(buf, np.asarray(arr), allow_pickle=False)  # keeps 0-d shapes (ascontiguousarray makes them 1-d)
            zf.writestr(f"tensors/{name}.npy", buf.getvalue())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a model file's metadata")


def load(path: str | Path) -> ModelFile:
    """Read a model file safely; raise :class:`ModelFileError` with the reason for anything else.

    Every tensor's header is checked against ``meta.json`` and the model settings, and the bytes it
    declares against a cap, before its data is read (see :mod:`slimseg.safe_npy`)."""

    def check(declared, model_config, meta, path):
        _check_declared(declared, model_config, meta.get("kind", "float"), path)

    meta, model_config, norm, tensors = read_archive(path, FORMAT, FORMAT_VERSION, MAX_TENSOR_BYTES, check)
    info = {k: v for k, v in meta.items()
            if k not in ("format", "model_config", "norm", "tensors", "kind")}
    return ModelFile(model_config, norm, tensors, meta.get("kind", "float"), info)


# What each slimseg zip format is called in messages (a file of one format offered where another is read).
FORMAT_NOUNS = {FORMAT: "model file", "slimseg-checkpoint": "training checkpoint"}
FORMAT_HINTS = {"slimseg-checkpoint": "continue its training with slimseg train --resume, or use the model "
                                      "file that run saved"}


def read_archive(path: str | Path, fmt: str, version: int, max_tensor_bytes: int,
                 check: Callable[[dict[str, tuple[np.dtype, tuple[int, ...]]], ModelConfig, dict[str, Any], Path], None]
                 ) -> tuple[dict[str, Any], ModelConfig, NormConfig, dict[str, np.ndarray]]:
    """(meta.json, model settings, normalisation, tensors) of a slimseg zip of format ``fmt`` (a model
    file, a training checkpoint), read with the same guards: no pickle, bounded sizes, and ``check``
    run on the declared tensors (name -> dtype, shape) before any tensor data is read."""
    path = Path(path)
    noun = FORMAT_NOUNS.get(fmt, fmt)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such {noun}")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:1] == b"\x80":
        raise ModelFileError(f"{path} is a Python pickle, not a slimseg {noun}; pickles can run code, "
                             "so it was not loaded (nothing in it ran)")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not a slimseg {noun} (corrupt, truncated or another format)")
    if path.stat().st_size > max_tensor_bytes + MAX_META_BYTES + (1 << 20):
        raise ModelFileError(f"{path} is {path.stat().st_size / 2**20:.0f} MiB, more than a slimseg {noun} "
                             f"may hold ({_mib(max_tensor_bytes)} of tensors); it was not read")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "meta.json" not in names:
                if any(n.endswith("data.pkl") for n in names):
                    raise ModelFileError(
                        f"{path} is a PyTorch pickle file (torch.save), not a slimseg {noun}; it was not "
                        "loaded because unpickling can run code (nothing in it ran)")
                raise ModelFileError(f"{path} is a zip file but not a slimseg {noun} (no meta.json)")
            meta = _read_meta(zf, path)
            _check_meta(meta, path, fmt, version)
            model_config, norm = _configs(meta, path)
            declared = _declared_tensors(meta["tensors"], path)
            check(declared, model_config, meta, path)
            tensors = {name: _read_tensor(zf, name, dtype, shape, path)
                       for name, (dtype, shape) in declared.items()}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, ValueError, RecursionError) as err:
        raise ModelFileError(f"{path} is damaged or truncated ({err}); re-save or re-train the model") from None
    return meta, model_config, norm, tensors


# What one file may declare, whatever its model settings say (a real model is far smaller).
MAX_TENSOR_BYTES = 512 * 2**20
MAX_META_BYTES = 8 * 2**20
MAX_DEPTH, MAX_WIDTH = 16, 1 << 16
# Any kind holds at most twice the float32 weights (float64 ones), plus room for a layout (an ONNX graph).
KIND_SLACK_BYTES = 4 * 2**20


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**40 else f"{n / 2**40:.1f} TiB"


def _read_meta(zf: zipfile.ZipFile, path: Path) -> Any:
    if zf.getinfo("meta.json").file_size > MAX_META_BYTES:
        raise ModelFileError(f"{path}: its meta.json is larger than {_mib(MAX_META_BYTES)}; the file is "
                             "damaged or not a slimseg model file")
    with zf.open("meta.json") as fh:
        data = fh.read(MAX_META_BYTES + 1)
    if len(data) > MAX_META_BYTES:
        raise ModelFileError(f"{path}: its meta.json decompresses beyond its declared size; refused")
    return json.loads(data)


def _configs(meta: dict[str, Any], path: Path) -> tuple[ModelConfig, NormConfig]:
    try:
        model_config = from_dict(ModelConfig, meta["model_config"])
        norm = from_dict(NormConfig, meta["norm"])
    except (TypeError, InputError, ValueError, AttributeError) as err:
        raise ModelFileError(f"{path}: its model settings are invalid ({err})") from None
    if model_config.depth > MAX_DEPTH or max(model_config.widths + model_config.dec_widths()) > MAX_WIDTH:
        raise ModelFileError(f"{path}: its model settings are implausible (widths {model_config.widths}); "
                             "the file is damaged or not a slimseg model file")
    return model_config, norm


def _declared_tensors(entries: Any, path: Path) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """meta.json's ``{name: [dtype, shape]}``, checked to be well formed."""
    if not isinstance(entries, dict):
        raise ModelFileError(f"{path}: meta.json's tensor list is malformed; the file is damaged")
    out = {}
    for name, entry in entries.items():
        try:
            dtype_name, shape = entry
            if not isinstance(dtype_name, str) or not all(isinstance(n, int) and n >= 0 for n in shape):
                raise TypeError
            out[name] = (np.dtype(dtype_name), tuple(shape))
        except (TypeError, ValueError):
            raise ModelFileError(f"{path}: meta.json's entry for tensor {name!r} is malformed ({entry!r:.80}); "
                                 "the file is damaged") from None
    return out


def float_layout(model_config: ModelConfig) -> tuple[dict[str, tuple[int, ...]], int]:
    """State-dict name -> shape of the float U-Net these settings describe, and its bytes (built on
    the meta device: no memory)."""
    from .model import UNet

    with torch.device("meta"):
        state = UNet(model_config).state_dict()
    return {k: tuple(v.shape) for k, v in state.items()}, sum(v.numel() * v.element_size() for v in state.values())


def _check_declared(declared: dict[str, tuple[np.dtype, tuple[int, ...]]], model_config: ModelConfig,
                    kind: str, path: Path) -> None:
    """Refuse tensors the model settings cannot explain, and more bytes than they can need."""
    from .safe_npy import declared_bytes

    expected, float_bytes = float_layout(model_config)
    cap = min(MAX_TENSOR_BYTES, 2 * float_bytes + KIND_SLACK_BYTES)
    total = 0
    for name, (dtype, shape) in declared.items():
        total += declared_bytes(shape, dtype)
        if total > cap:
            raise ModelFileError(
                f"{path}: its tensors declare {_mib(total)} or more (up to {name!r}, shape {shape}, {dtype}); "
                f"a {kind} model with these settings holds at most {_mib(cap)}, so it was not read")
    if kind == "float" and set(declared) != set(expected):
        odd = sorted(set(declared) ^ set(expected))
        raise ModelFileError(f"{path}: the weights do not fit the model settings stored beside them "
                             f"(tensors missing or unexpected: {', '.join(odd[:4])})")
    for name, (_, shape) in declared.items():
        if name in expected and shape != expected[name]:
            raise ModelFileError(f"{path}: the weights do not fit the model settings stored beside them: "
                                 f"{name!r} is declared {shape}, the settings give {expected[name]}")


def _read_tensor(zf: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...], path: Path) -> np.ndarray:
    from .safe_npy import MAX_HEADER_BYTES, declared_bytes, read_data, read_header

    member = f"tensors/{name}.npy"
    where = f"{path}: tensor {name!r}"
    info = zf.getinfo(member)
    nbytes = declared_bytes(shape, dtype)
    if not nbytes < info.file_size <= nbytes + MAX_HEADER_BYTES:  # checked again exactly after the header
        raise ModelFileError(f"{where}: meta.json declares {nbytes} bytes of data but the zip entry holds "
                             f"{info.file_size} with its header; the file is damaged or was tampered with")
    with zf.open(info) as fh:
        got_shape, fortran, got_dtype, header_bytes = read_header(fh, where)
        if got_shape != shape or got_dtype != dtype:
            raise ModelFileError(f"{where} is stored as {got_shape} {got_dtype} but meta.json declares "
                                 f"{shape} {dtype}; the file is damaged or was tampered with")
        return read_data(fh, info, shape, fortran, dtype, header_bytes, where)


def _check_meta(meta: Any, path: Path, fmt: str = FORMAT, version_read: int = FORMAT_VERSION) -> None:
    noun = FORMAT_NOUNS.get(fmt, fmt)
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        other = meta.get("format") if isinstance(meta, dict) else None
        if other in FORMAT_NOUNS:
            hint = f"; {FORMAT_HINTS[other]}" if other in FORMAT_HINTS else ""
            raise ModelFileError(f"{path} is a slimseg {FORMAT_NOUNS[other]}, not a {noun}{hint}")
        raise ModelFileError(f"{path} is not a slimseg {noun} (its meta.json names another format)")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > version_read:
        raise ModelFileError(
            f"{path} has {noun.replace(' ', '-')} format version {version}, newer than this slimseg reads "
            f"({version_read}); upgrade napari-slimseg (pip install -U napari-slimseg)")
    for key in ("model_config", "norm", "tensors"):
        if key not in meta:
            raise ModelFileError(f"{path}: meta.json lacks {key!r}; the file is damaged")


def from_module(model: torch.nn.Module, model_config: ModelConfig, norm: NormConfig,
                kind: str = "float", **meta: Any) -> ModelFile:
    tensors = {k: v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()}
    return ModelFile(model_config, norm, tensors, kind, meta)

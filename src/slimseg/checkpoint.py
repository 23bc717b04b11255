"""Training checkpoints: what a run needs to go on as if it had never stopped, in one pickle-free file.

A checkpoint is a zip like a model file (``meta.json`` and one ``.npy`` per tensor, read with the same
guards: :func:`slimseg.io.read_archive`). It holds the current and the best weights, the optimizer's
state (its tensors as arrays, its scalars in JSON), the loop's position (epoch, step, training time,
early-stopping and plateau counters, history), the random streams (the patch sampler's, torch's,
numpy's and Python's) and what the run trains on: its settings, and each image's name and content
hash, so that resuming with other data or settings is refused, saying what differs.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import io
from ._version import __version__
from .config import ModelConfig, NormConfig, TrainConfig, from_dict, to_dict
from .errors import InputError, ModelFileError
from .files import atomic_path

FORMAT = "slimseg-checkpoint"
FORMAT_VERSION = 1
SUFFIX = ".ckpt"
# TrainConfig fields a resumed run may change: its budget and stopping rule. Every other must be the same.
BUDGET_FIELDS = ("epochs", "minutes", "patience")
# Bytes a checkpoint may hold beyond the float weights' own: the best and averaged weights and up to four optimizer
# tensors per parameter (times the weights' bytes), and the random streams.
STATE_COPIES, RNG_BYTES = 7, 1 << 20


@dataclass
class Checkpoint:
    """A training run between two epochs. ``tensors`` are keyed ``model/<name>``, ``best/<name>``,
    ``optimizer/<param index>/<name>`` and ``rng/<stream>``; ``meta`` holds the JSON part: ``state``
    (the loop's position), ``optimizer`` (its scalars) and ``rng``."""

    model_config: ModelConfig
    norm: NormConfig
    train_config: TrainConfig
    data: list[tuple[str, str]]  # (image name, content hash) of every image the run was given, in order
    meta: dict[str, Any]
    tensors: dict[str, np.ndarray]

    @property
    def epoch(self) -> int:
        return int(self.meta["state"]["epoch"])


def fingerprint(names: Sequence[str], images: Sequence[np.ndarray], labels: Sequence[np.ndarray]
                ) -> list[tuple[str, str]]:
    """(name, hash of the image's and its labels' shapes, types and pixels) per image."""
    out = []
    for name, img, lab in zip(names, images, labels):
        h = hashlib.blake2b(digest_size=12)
        for arr in (np.ascontiguousarray(img), np.ascontiguousarray(lab)):
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.data)
        out.append((str(name), h.hexdigest()))
    return out


# -- writing and reading ------------------------------------------------------------------------------
def save(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write ``ckpt`` atomically: a kill at any moment leaves the previous checkpoint whole."""
    path = Path(path)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "slimseg_version": __version__,
        "model_config": to_dict(ckpt.model_config),
        "norm": to_dict(ckpt.norm),
        "train_config": to_dict(ckpt.train_config),
        "data": [list(d) for d in ckpt.data],
        "tensors": {k: [str(v.dtype), list(v.shape)] for k, v in ckpt.tensors.items()},
        **ckpt.meta,
    }
    with atomic_path(path) as tmp:  # stored, not deflated: weights hardly compress, and it is written often
        io.write_archive(tmp, meta, ckpt.tensors, deflate=False)
    _remove_stale_temporaries(path)
    return path


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files of earlier writes of ``path`` killed before their rename (kill -9)."""
    for stale in path.parent.glob(f".{path.stem}.*.tmp{path.suffix}"):
        with contextlib.suppress(OSError):
            stale.unlink()


def load(path: str | Path) -> Checkpoint:
    """Read a checkpoint with the guards of a model file; :class:`ModelFileError` says why not."""
    meta, model_config, norm, tensors = io.read_archive(
        path, FORMAT, FORMAT_VERSION, STATE_COPIES * io.MAX_TENSOR_BYTES, _check_declared)
    try:
        train_config = from_dict(TrainConfig, meta["train_config"])
        data = [(str(name), str(digest)) for name, digest in meta["data"]]
        rest = {k: meta[k] for k in ("state", "optimizer", "rng")}
        int(rest["state"]["epoch"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: the checkpoint's record is incomplete or invalid ({err}); the file is "
                             "damaged") from None
    return Checkpoint(model_config, norm, train_config, data, rest, tensors)


def _param_shapes(model_config: ModelConfig) -> list[tuple[int, ...]]:
    from .model import UNet

    with torch.device("meta"):
        return [tuple(p.shape) for p in UNet(model_config).parameters()]


def _check_declared(declared: dict[str, tuple[np.dtype, tuple[int, ...]]], model_config: ModelConfig,
                    meta: dict[str, Any], path: Path) -> None:
    """Refuse tensors the model settings cannot explain, and more bytes than such a run can hold."""
    from .safe_npy import declared_bytes

    layout, float_bytes = io.float_layout(model_config)
    params = _param_shapes(model_config)
    cap = STATE_COPIES * float_bytes + RNG_BYTES
    total = 0
    for name, (dtype, shape) in declared.items():
        total += declared_bytes(shape, dtype)
        if total > cap:
            raise ModelFileError(f"{path}: its tensors declare more than a checkpoint of these model settings "
                                 f"holds ({cap / 2**20:.1f} MiB, up to {name!r}); it was not read")
        group, _, rest = name.partition("/")
        if group in ("model", "best", "ema"):
            ok = layout.get(rest) == shape
        elif group == "optimizer":
            index, _, _ = rest.partition("/")
            ok = index.isdigit() and int(index) < len(params) and shape in ((), params[int(index)])
        else:
            ok = group == "rng" and len(shape) == 1 and declared_bytes(shape, dtype) <= RNG_BYTES
        if not ok:
            raise ModelFileError(f"{path}: tensor {name!r} ({shape}) does not fit the model settings stored "
                                 "beside it; the file is damaged or was tampered with")
    for group in ("model", "best", "ema"):
        have = {n.partition("/")[2] for n in declared if n.startswith(group + "/")}
        if (have or group == "model") and have != set(layout):
            raise ModelFileError(f"{path}: the checkpoint's {group} weights do not fit the model settings "
                                 "stored beside them (tensors missing)")


# -- what must agree on resume ------------------------------------------------------------------------
def differences(ckpt: Checkpoint, model_config: ModelConfig, norm: NormConfig, train_config: TrainConfig,
                data: list[tuple[str, str]]) -> list[str]:
    """What differs between the run a checkpoint holds and the run asked for (checkpoint's value first);
    the budget (:data:`BUDGET_FIELDS`) may change."""
    out = []
    for what, stored, given in (("model", to_dict(ckpt.model_config), to_dict(model_config)),
                                ("normalisation", to_dict(ckpt.norm), to_dict(norm)),
                                ("training", to_dict(ckpt.train_config), to_dict(train_config))):
        for key in stored:
            if key not in BUDGET_FIELDS or what != "training":
                if stored[key] != given.get(key):
                    out.append(f"{what} setting {key}: {stored[key]!r} in the checkpoint, {given.get(key)!r} now")
    out += _data_differences(ckpt.data, data)
    return out


def _data_differences(stored: list[tuple[str, str]], given: list[tuple[str, str]]) -> list[str]:
    s, g = dict(stored), dict(given)
    out = []
    for what, names in (("images missing now", [n for n in s if n not in g]),
                        ("images not in the checkpoint", [n for n in g if n not in s]),
                        ("images whose pixels or labels changed", [n for n in s if n in g and s[n] != g[n]])):
        if names:
            out.append(f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''} ({len(names)})")
    if not out and [n for n, _ in stored] != [n for n, _ in given]:
        out.append("the images come in another order (the train/validation split depends on it)")
    return out


# -- optimizer and random streams as arrays + JSON -----------------------------------------------------
def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The optimizer's ``state_dict``: scalars and param groups as JSON, tensors as arrays."""
    sd = opt.state_dict()
    tensors, state = {}, {}
    for index, entries in sd["state"].items():
        state[str(index)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{name}"] = value.detach().cpu().contiguous().numpy()
                state[str(index)][name] = {"tensor": True}
            else:
                state[str(index)][name] = {"value": value}
    return {"param_groups": sd["param_groups"], "state": state}, tensors


def load_optimizer_state(opt: torch.optim.Optimizer, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    state = {}
    for index, entries in meta["state"].items():
        state[int(index)] = {
            name: torch.from_numpy(np.array(tensors[f"optimizer/{index}/{name}"])) if entry.get("tensor")
            else entry["value"] for name, entry in entries.items()}
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state(sampler_rng: np.random.Generator, device: torch.device) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The random streams a run draws from: the patch sampler's generator, torch's (and the device's),
    numpy's and Python's global ones."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {"sampler": sampler_rng.bit_generator.state, "python": [version, gauss],
            "numpy": [kind, int(pos), int(has_gauss), float(cached)]}
    tensors = {"rng/torch": torch.get_rng_state().numpy(), "rng/python": np.array(words, np.int64),
               "rng/numpy": np.asarray(keys, np.uint32)}
    if device.type == "cuda":
        tensors["rng/device"] = torch.cuda.get_rng_state(device).numpy()
    elif device.type == "mps":
        tensors["rng/device"] = torch.mps.get_rng_state().numpy()
    return meta, tensors


def set_rng_state(sampler_rng: np.random.Generator, device: torch.device, meta: dict[str, Any],
                  tensors: dict[str, np.ndarray]) -> None:
    sampler_rng.bit_generator.state = meta["sampler"]
    version, gauss = meta["python"]
    random.setstate((version, tuple(int(w) for w in tensors["rng/python"]), gauss))
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.array(tensors["rng/numpy"]), pos, has_gauss, cached))
    torch.set_rng_state(torch.from_numpy(np.array(tensors["rng/torch"])))
    if "rng/device" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(torch.from_numpy(np.array(tensors["rng/device"])), device)
    elif "rng/device" in tensors and device.type == "mps":
        torch.mps.set_rng_state(torch.from_numpy(np.array(tensors["rng/device"])))


def check_target(path: str | Path, resume: str | Path | None, overwrite: bool) -> Path:
    """Refuse, before training, to replace a checkpoint of another run (unless ``overwrite``) or to
    write where no file can be made."""
    from .files import check_can_write

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the checkpoint a file name (e.g. run{SUFFIX})")
    same = resume is not None and path.exists() and Path(resume).exists() and path.samefile(resume)
    if path.exists() and not (same or overwrite):
        raise InputError(f"{path} exists (another run's checkpoint?); pass --resume {path} to continue it, "
                         "--overwrite to replace it, or choose another --checkpoint")
    check_can_write(path)
    return path


__all__ = ["Checkpoint", "FORMAT", "SUFFIX", "BUDGET_FIELDS", "save", "load", "fingerprint", "differences",
           "check_target"]

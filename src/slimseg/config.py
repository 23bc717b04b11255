"""Dataclass configs: everything a run needs, stored as plain JSON in model files."""

from __future__ import annotations

import dataclasses
import operator
import typing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .errors import InputError

C = TypeVar("C")

Norm = Literal["batch", "group", "none"]
Device = Literal["auto", "cpu", "cuda", "mps"]
Schedule = Literal["constant", "cosine", "plateau"]
Bf16 = Literal["auto", "on", "off"]


def option(default: Any, help: str = "", *, cli: bool = True, flag: str | None = None,
           names: str | None = None, choices: str | None = None) -> Any:
    """A dataclass field with what ``slimseg.options`` needs to offer it on the command line.

    ``cli=False`` keeps it off the command line; ``flag`` replaces the ``--field-name`` option; ``names``
    and ``choices`` name a registry (``"module:NAME"``, imported when a parser is built) whose names the
    help lists where it says ``{names}`` (``names``) or the option alone accepts (``choices``).
    """
    meta = {"help": help, "cli": cli, "flag": flag, "names": names, "choices": choices}
    return dataclasses.field(default=default, metadata={k: v for k, v in meta.items() if v is not None})


def literal_choices(cls: type) -> dict[str, tuple[Any, ...]]:
    """Field name -> the values its ``Literal[...]`` annotation allows, for each such field of ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: typing.get_args(hints[f.name]) for f in dataclasses.fields(cls)
            if typing.get_origin(hints[f.name]) is Literal}


def check_choices(cfg: Any) -> None:
    """Refuse a value outside its field's ``Literal[...]`` (the one place those values are written)."""
    for name, allowed in literal_choices(type(cfg)).items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise InputError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


MAX_CHANNELS = 64  # input channels a model may take (a sanity bound: a file claiming more is refused)


def check_channel_indices(channels: Any) -> tuple[int, ...]:
    """``channels`` as a tuple of distinct non-negative ints (a "0,2" string is accepted too)."""
    if isinstance(channels, str):
        channels = [c for c in channels.replace(" ", "").split(",") if c]
    try:
        out = tuple(int(c) for c in channels)
        if any(isinstance(c, float) and c != int(c) for c in channels):
            raise ValueError
    except (TypeError, ValueError):
        raise InputError(f"channels must be channel indices such as 0,2; got {channels!r}") from None
    if not out:
        raise InputError("channels is empty; name at least one channel index, e.g. 0")
    if any(c < 0 for c in out):
        raise InputError(f"channel indices start at 0; got {list(out)}")
    if len(set(out)) != len(out):
        raise InputError(f"channels {list(out)} name a channel twice; give each index once")
    return out


@dataclass
class ModelConfig:
    """A 2D U-Net. ``widths[i]`` is the channel count of encoder level ``i`` (pruning rewrites them).

    The model outputs two logit maps: foreground, and *centredness* (1 at an object's centre, 0 at its
    rim), whose cores seed the split of touching nuclei into instances.
    """

    in_channels: int = 1  # 1 grey, 3 RGB, or any number of channels (nuclei + membrane, ...)
    out_channels: int = 2
    widths: tuple[int, ...] = (16, 32, 64, 128)
    norm: Norm = "batch"
    # Decoder widths (one per upsampling level, deepest first); None means the mirror of ``widths``.
    decoder_widths: tuple[int, ...] | None = None
    # The channels of the source images the model was trained on (indices along their channel axis),
    # so prediction picks the same ones; None: all of them (or a grey image).
    channels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if self.decoder_widths is not None:
            self.decoder_widths = tuple(int(w) for w in self.decoder_widths)
        if len(self.widths) < 2 or any(w < 1 for w in self.widths):
            raise InputError(f"widths must list at least 2 positive channel counts, got {self.widths}")
        try:
            n = -1 if isinstance(self.in_channels, bool) else operator.index(self.in_channels)
        except TypeError:
            n = -1
        if not 1 <= n <= MAX_CHANNELS:
            raise InputError(f"in_channels must be a whole number from 1 (grey) to {MAX_CHANNELS}, "
                             f"got {self.in_channels!r}")
        self.in_channels = n
        if self.channels is not None:
            self.channels = check_channel_indices(self.channels)
            if len(self.channels) != self.in_channels:
                raise InputError(f"channels {list(self.channels)} name {len(self.channels)} channels but "
                                 f"in_channels is {self.in_channels}; give one index per input channel")
        check_choices(self)

    @classmethod
    def from_depth(cls, depth: int = 4, base_width: int = 16, **kw: Any) -> ModelConfig:
        """Widths doubling from ``base_width`` over ``depth`` levels."""
        if depth < 2 or base_width < 1:
            raise InputError(f"depth must be >= 2 and base_width >= 1, got {depth}, {base_width}")
        return cls(widths=tuple(base_width * 2**i for i in range(depth)), **kw)

    @property
    def depth(self) -> int:
        return len(self.widths)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (the model pads internally)."""
        return 2 ** (self.depth - 1)

    def dec_widths(self) -> tuple[int, ...]:
        return self.decoder_widths or tuple(reversed(self.widths[:-1]))


@dataclass
class NormConfig:
    """Per-image percentile normalisation: ``pmin`` -> 0 and ``pmax`` -> 1 (stored with the model).

    ``per_channel``: measure the percentiles of each channel on its own (True) or of all channels
    together (False); None chooses: together for 3 channels (RGB, keeping its colour balance), each on
    its own otherwise (fluorescence channels differ in brightness).
    """

    pmin: float = 1.0
    pmax: float = 99.8
    per_channel: bool | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.pmin < self.pmax <= 100:
            raise InputError(f"need 0 <= pmin < pmax <= 100, got pmin={self.pmin}, pmax={self.pmax}")


FINETUNE_LR_SCALE = 0.1  # the default learning rate of a fine-tuning run (--init): this times the optimizer's own
FINETUNE_EPOCHS = 10  # the default epochs of a fine-tuning run (a fresh one trains TrainConfig.epochs)


@dataclass
class TrainConfig:
    optimizer: str = option("rmsprop", "one of: {names}", names="slimseg.optim:OPTIMIZERS")
    loss: str = option("bce+jaccard", "a term or weighted sum, e.g. bce+jaccard, 0.5*bce+dice; terms: {names}",
                       names="slimseg.losses:LOSSES")
    lr: float | None = option(None, "learning rate (default: the optimizer's own)")
    weight_decay: float = 0.0
    schedule: Schedule = "cosine"
    epochs: int = 50
    minutes: float | None = option(None, "wall-clock budget (whichever ends first)")
    # 128-pixel patches: nuclei are small, and in a CPU budget more (smaller) steps learn faster
    # (docs/accuracy.md); 1024 patches an epoch keep validation a small share of the time
    batch_size: int = 8
    patch_size: int = 128
    patches_per_epoch: int = 1024
    val_fraction: float = 0.2
    seed: int = 0
    split_seed: int | None = option(None, "seeds the train/validation split (default: --seed does)", cli=False)
    patience: int | None = option(None, "early stopping after N epochs without gain")
    device: Device = "auto"
    bf16: Bf16 = "auto"
    channels_last: bool = option(True, cli=False)
    augment: bool = option(True, cli=False)
    zoom: float = option(1.25, "augmentation: zoom patches by a random factor between 1/ZOOM and ZOOM (1 = off)")
    ema: float = option(0.99, "validate and keep an exponential moving average of the weights with this decay "
                             "per step (0 = the weights themselves)")

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.minutes is None or self.minutes > 0, f"minutes must be > 0, got {self.minutes}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.patch_size >= 16, f"patch_size must be >= 16, got {self.patch_size}"),
            (self.patches_per_epoch >= 1, "patches_per_epoch must be >= 1"),
            (0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            (self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.zoom >= 1, f"zoom must be >= 1 (1 = no zoom augmentation), got {self.zoom}"),
            (0 <= self.ema < 1, f"ema must be in [0, 1) (0 = off), got {self.ema}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        check_choices(self)

    def steps_per_epoch(self) -> int:
        """Optimiser steps in one epoch: ``patches_per_epoch`` in batches, the last one counted whole."""
        return max(1, -(-self.patches_per_epoch // self.batch_size))


@dataclass
class PredictConfig:
    # The command line sets tile, overlap, tta and stitch_threshold; the rest stay the model's own (tuned with it).
    # the largest tile side: 768 covers the usual camera frames (512 x 640, 520 x 696) in one tile and
    # 1024^2 / 2048^2 in 2 x 2 / 3 x 3 tiles, <= 16% of pixels computed twice (512: up to 28%); the
    # network's time per pixel hardly depends on the tile size, its memory grows with it (docs/performance.md)
    tile: int = 768
    overlap: int = 64
    batch_size: int = option(2, cli=False)  # tiles per forward pass: memory grows with it, CPU speed hardly does
    threshold: float = option(0.5, cli=False)  # foreground probability
    seed_threshold: float = option(0.5, cli=False)  # centredness above which a pixel seeds an instance
    # > 0: the seeds are the centredness maxima (above seed_threshold) that rise at least this much above
    # the saddle to any higher neighbour (h-maxima), so touching nuclei whose cores blur together still
    # get a seed each; 0: each connected core above seed_threshold is one seed
    seed_h: float = option(0.0, cli=False)
    min_size: int = option(8, cli=False)  # objects smaller than this (pixels) are dropped
    tta: bool = option(False, "average over flips (4x slower, smoother masks)")
    # the network of a float model under bfloat16 autocast: 1.8x faster end to end on a CPU with AMX (Xeon
    # since Sapphire Rapids), labels nearly the same (docs/performance.md); off by default so that results
    # are the same on every machine. int8 models run their own kernels either way.
    bf16: bool = option(False, "run a float model's network in bfloat16 (faster on CPUs with AMX; labels nearly, "
                               "not exactly, the same)")
    stitch_threshold: float = option(0.0, "stacks: link objects of neighbouring planes whose IoU is at least "
                                          "this into one 3D object (0 = off; Cellpose uses 0.25 and up)")
    # objects much larger than those the model was trained on are predicted again at 1/2, 1/4, ... of the
    # image's size, where they fit (a U-Net trained on small patches sees too little of a large nucleus)
    rescale: bool = option(True, "do not predict again at a smaller scale when the objects are more than twice "
                                 "the size of those the model was trained on")
    diameter: float = option(0.0, "the objects' diameter in pixels, when known (0: estimated from a first pass)")
    # median diameter (pixels) of the objects the model was trained on; 0: unknown, never rescaled
    trained_diameter: float = option(0.0, cli=False)

    def __post_init__(self) -> None:
        if self.tile < 32 or not 0 <= self.overlap < self.tile // 2:
            raise InputError(f"need tile >= 32 and 0 <= overlap < tile/2, got {self.tile}, {self.overlap}")
        if not 0 < self.threshold < 1 or not 0 < self.seed_threshold < 1:
            raise InputError("thresholds must lie strictly between 0 and 1")
        if not 0 <= self.seed_h < 1:
            raise InputError(f"seed_h must lie in [0, 1) (0 = connected cores as seeds), got {self.seed_h}")
        if not 0 <= self.stitch_threshold <= 1:
            raise InputError(f"stitch_threshold must lie in [0, 1] (0 = no stitching), got {self.stitch_threshold}")
        for name, value, zero in (("diameter", self.diameter, "estimate it"),
                                  ("trained_diameter", self.trained_diameter, "unknown")):
            if not value >= 0:  # also NaN
                raise InputError(f"{name} is the objects' diameter in pixels, >= 0 (0 = {zero}); got {value}")


@dataclass
class ChannelConfig:
    """Which axis of an image holds its channels, and which of them a model takes (docs/data.md)."""

    channels: tuple[int, ...] | None = option(None, "channel indices to use, e.g. 0,2 (default: those the "
                                                    "model was trained on, or all)")
    channel_axis: int | None = option(None, "the images' channel axis, e.g. 0 or -1 (default: from the file's "
                                            "axes metadata, else from the shapes)")

    def __post_init__(self) -> None:
        if self.channels is not None:
            self.channels = check_channel_indices(self.channels)
        if self.channel_axis is not None:
            try:
                if isinstance(self.channel_axis, bool):
                    raise TypeError
                self.channel_axis = operator.index(self.channel_axis)
            except TypeError:
                raise InputError(f"channel_axis must be an axis index such as 0 or -1, got {self.channel_axis!r}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build ``cls`` from a dict, ignoring unknown keys (files from newer minor versions)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


__all__ = ["ModelConfig", "NormConfig", "TrainConfig", "PredictConfig", "ChannelConfig", "to_dict", "from_dict",
           "option", "literal_choices", "check_choices", "check_channel_indices", "MAX_CHANNELS",
           "FINETUNE_EPOCHS", "FINETUNE_LR_SCALE"]

"""The study's configuration: the optimizer x loss x seed grid and the one protocol every run shares.

Every name is checked before any run starts, and all bad names are reported at once with the valid
choices. Learning rates are each optimizer's default from ``slimseg.optim`` (the documented policy),
unless the user overrides one with ``--lr name=value``; no per-cell tuning, so no cell gets more
search effort than another.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from ..config import ModelConfig, TrainConfig
from ..errors import InputError

FORMAT_VERSION = 1
# TrainConfig fields set per run (optimizer, loss, lr and seed vary over the grid; the study sets the
# split seed and the budget); every other field is shared by every run.
PER_RUN_FIELDS = ("optimizer", "loss", "lr", "seed", "split_seed", "epochs", "minutes")
SHARED_TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in PER_RUN_FIELDS)
EPOCHS_UNTIL_TIME = 100_000  # the epoch cap of a time-only budget: the minutes end every run first
DEFAULT_OPTIMIZERS = "adam,adamw,sgd,rmsprop,adagrad"
DEFAULT_LOSSES = "bce,dice,jaccard,bce+jaccard,bce+dice,focal+dice"
SCORINGS = ("fixed", "tuned")


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid with one seed."""

    optimizer: str
    loss: str  # canonical spelling (``str(parse_loss(...))``)
    seed: int
    lr: float

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.optimizer, self.loss, self.seed)

    @property
    def run_id(self) -> str:
        """A file-name-safe id: ``rmsprop__bce+jaccard__s0`` (``*`` of weighted terms becomes ``x``)."""
        loss = re.sub(r"[^a-z0-9.+_-]", "_", self.loss.replace("*", "x"))
        return f"{self.optimizer}__{loss}__s{self.seed}"


@dataclass
class StudyConfig:
    """Everything that decides a study's results; two studies may share a results folder only when
    these are equal (where the data live and how many workers run do not count)."""

    optimizers: tuple[str, ...]
    losses: tuple[str, ...]
    seeds: tuple[int, ...]
    minutes_per_run: float | None
    epochs: int | None
    lrs: dict[str, float]
    lr_policy: str
    model: dict[str, Any]
    train: dict[str, Any]
    test_fraction: float
    split_seed: int
    data: dict[str, Any] = field(default_factory=dict)  # fingerprint, image counts (set by dataset)
    # post-processing of the held-out predictions: "fixed" (PredictConfig defaults for every run) or
    # "tuned" (each run's thresholds, tuned by its trainer on the validation images)
    scoring: str = "fixed"

    def runs(self) -> list[RunSpec]:
        """Seed-major order, so a partial study already covers every cell once."""
        return [RunSpec(o, lo, s, self.lrs[o]) for s in self.seeds for lo in self.losses for o in self.optimizers]

    def model_config(self) -> ModelConfig:
        from ..config import from_dict

        return from_dict(ModelConfig, self.model)

    def train_config(self, run: RunSpec) -> TrainConfig:
        return TrainConfig(optimizer=run.optimizer, loss=run.loss, lr=run.lr, seed=run.seed,
                           split_seed=self.split_seed, minutes=self.minutes_per_run,
                           epochs=self.epochs or EPOCHS_UNTIL_TIME, **self.train)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["format_version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudyConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("optimizers", "losses", "seeds"):
            kw[k] = tuple(kw[k])
        return cls(**kw)

    def describe_budget(self) -> str:
        parts = []
        if self.minutes_per_run:
            parts.append(f"{self.minutes_per_run:g} min")
        if self.epochs:
            parts.append(f"{self.epochs} epochs of {self.train['patches_per_epoch']} patches")
        return " or ".join(parts) + (" (whichever ends first)" if len(parts) == 2 else "")


def split_names(text: str | list[str] | tuple[str, ...], what: str) -> list[str]:
    """``"adam, sgd"`` -> ``["adam", "sgd"]`` (lower case, order kept, duplicates dropped)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in (str(i).strip().lower() for i in items):
        if item and item not in out:
            out.append(item)
    if not out:
        raise InputError(f"no {what} given; list at least one, comma-separated")
    return out


def check_names(optimizers: list[str], losses: list[str]) -> tuple[list[str], list[str]]:
    """Validate every optimizer and loss name; one error lists all bad ones and the valid choices.
    Losses come back in canonical spelling (``"BCE + Jaccard"`` -> ``"bce+jaccard"``)."""
    from ..losses import LOSSES, parse_loss
    from ..optim import OPTIMIZERS

    problems = []
    bad_opt = [o for o in optimizers if o not in OPTIMIZERS]
    if bad_opt:
        problems.append(f"unknown optimizer(s) {', '.join(bad_opt)}; valid optimizers: {', '.join(OPTIMIZERS.names())}")
    canonical, bad_loss = [], []
    for spec in losses:
        try:
            c = str(parse_loss(spec))
        except InputError:
            bad_loss.append(spec)
            continue
        if c not in canonical:
            canonical.append(c)
    if bad_loss:
        problems.append(f"unknown loss(es) {', '.join(bad_loss)}; valid loss terms: {', '.join(LOSSES.names())} "
                        "(join terms with '+', weight them like 0.5*bce+dice)")
    if problems:
        raise InputError("; ".join(problems))
    return optimizers, canonical


def parse_lr_overrides(text: str | None, optimizers: list[str]) -> dict[str, float]:
    """``"sgd=0.1,rmsprop=5e-4"`` -> ``{"sgd": 0.1, "rmsprop": 0.0005}`` for optimizers in the grid."""
    out: dict[str, float] = {}
    if not text:
        return out
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        try:
            lr = float(value)
        except ValueError:
            lr = float("nan")
        if not sep or not lr > 0:
            raise InputError(f"cannot read learning rate {part!r}; write optimizer=value, e.g. sgd=0.1")
        if name not in optimizers:
            raise InputError(f"--lr names {name!r}, which is not in the grid ({', '.join(optimizers)})")
        out[name] = lr
    return out


def make_config(optimizers: str | list[str], losses: str | list[str], seeds: int,
                minutes_per_run: float | None, epochs: int | None = None, lr: str | None = None,
                model: ModelConfig | None = None, train: dict[str, Any] | None = None,
                test_fraction: float = 0.2, split_seed: int = 0, scoring: str = "fixed") -> StudyConfig:
    """Check the user's choices (all names first) and build the study configuration."""
    from ..optim import default_lr

    opts, losses_ = check_names(split_names(optimizers, "optimizers"), split_names(losses, "losses"))
    if seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {seeds}")
    if minutes_per_run is None and epochs is None:
        raise InputError("give each run a budget: --minutes-per-run M and/or --epochs N")
    if minutes_per_run is not None and not minutes_per_run > 0:
        raise InputError(f"--minutes-per-run must be > 0, got {minutes_per_run}")
    if epochs is not None and epochs < 1:
        raise InputError(f"--epochs must be >= 1, got {epochs}")
    if scoring not in SCORINGS:
        raise InputError(f"unknown scoring {scoring!r}; choose one of: {', '.join(SCORINGS)}")
    if not 0 < test_fraction < 1:
        raise InputError(f"--test-fraction must lie in (0, 1), got {test_fraction}")
    overrides = parse_lr_overrides(lr, opts)
    lrs = {o: overrides.get(o, default_lr(o)) for o in opts}
    policy = "per-optimizer defaults from slimseg.optim"
    if overrides:
        policy += "; overridden by the user for " + ", ".join(f"{k}={v:g}" for k, v in overrides.items())
    train = dict(train or {})
    unknown = set(train) - set(SHARED_TRAIN_FIELDS)
    if unknown:
        raise InputError(f"training settings not shared by a study: {', '.join(sorted(unknown))}")
    base = TrainConfig(**train)  # validates the values
    train = {k: getattr(base, k) for k in SHARED_TRAIN_FIELDS}
    model = model or ModelConfig()
    return StudyConfig(tuple(opts), tuple(losses_), tuple(range(seeds)), minutes_per_run, epochs, lrs, policy,
                       dataclasses.asdict(model), train, test_fraction, split_seed, scoring=scoring)


def differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two nested config dicts (``key: a vs b``)."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += differences(va, vb, f"{prefix}{k}.")
        elif _norm(va) != _norm(vb):
            out.append(f"{prefix}{k}: {_norm(va)} vs {_norm(vb)}")
    return out


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v

"""Command-line options come from the config dataclasses: one field, one option, one default."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

import pytest

from slimseg import config as config_module
from slimseg.cli import COMMANDS, DEMO_DEFAULTS, _start, build_parser
from slimseg.compress import CompressConfig
from slimseg.config import (
    ModelConfig,
    PredictConfig,
    TrainConfig,
    check_choices,
    option,
)
from slimseg.errors import InputError
from slimseg.events import EpochEnd, Message, StepEnd, print_progress
from slimseg.options import add_options, cli_fields, config_from_args, flag_of
from slimseg.study.cli import STUDY_DEFAULTS, TRAIN_OPTIONS


@dataclass
class Toy:
    count: int = 3
    rate: float | None = option(None, "a rate")
    mode: Literal["a", "b"] = "a"
    fast: bool = False
    tidy: bool = True
    opt: str = option("adam", "one of: {names}", names="slimseg.optim:OPTIMIZERS")
    hidden: int = option(1, cli=False)

    def __post_init__(self) -> None:
        check_choices(self)


def _parser(cls, **kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toy")
    add_options(p, cls, **kw)
    return p


def test_a_dataclass_becomes_options_and_back():
    p = _parser(Toy)
    assert config_from_args(Toy, p.parse_args([])) == Toy()
    args = p.parse_args(["--count", "5", "--rate", "0.1", "--mode", "b", "--fast", "--no-tidy", "--opt", "sgd"])
    assert config_from_args(Toy, args) == Toy(count=5, rate=0.1, mode="b", fast=True, tidy=False, opt="sgd")
    assert not hasattr(args, "hidden")
    text = p.format_help()
    assert "a rate" in text and "rmsprop" in text and "{a,b}" in text  # help, registry names, Literal choices
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "c"])
    with pytest.raises(SystemExit):
        p.parse_args(["--hidden", "2"])


def test_a_new_field_needs_no_other_change():
    Bigger = dataclasses.make_dataclass("Bigger", [("new_setting", float, option(0.25, "new"))], bases=(Toy,))
    args = _parser(Bigger).parse_args([])
    assert args.new_setting == 0.25
    assert config_from_args(Bigger, _parser(Bigger).parse_args(["--new-setting", "0.5"])).new_setting == 0.5


def test_a_new_training_field_reaches_train_and_demo(monkeypatch):
    Extended = dataclasses.make_dataclass("TrainConfig", [("warmup", float, option(0.03, "warm-up"))],
                                          bases=(TrainConfig,))
    monkeypatch.setattr(config_module, "TrainConfig", Extended)
    parser = build_parser()
    for argv in (["train", "d", "--out", "o"], ["demo"]):
        assert parser.parse_args(argv).warmup == 0.03
    assert parser.parse_args(["train", "d", "--out", "o", "--warmup", "0.1"]).warmup == 0.1


def test_per_command_defaults_help_and_required_fields():
    p = _parser(Toy, defaults={"count": 9}, helps={"count": "how many"}, required=("mode",))
    assert p.parse_args(["--mode", "a"]).count == 9 and "how many" in p.format_help()
    with pytest.raises(SystemExit):
        p.parse_args([])
    with pytest.raises(ValueError, match="hidden"):
        _parser(Toy, defaults={"hidden": 2})  # a field that has no option cannot get a default


def _parsed(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def _offered(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("cli", True)}


def test_train_and_demo_offer_every_training_field_with_its_default():
    train = _parsed("train", "data", "--out", "m.slimseg")
    demo = _parsed("demo")
    assert cli_fields(TrainConfig) and {f.name for f in cli_fields(TrainConfig)} == _offered(TrainConfig)
    assert train.epochs is None  # train's --epochs default depends on --init; _start fills it in
    _start(train)
    for f in cli_fields(TrainConfig):
        assert getattr(train, f.name) == f.default, f.name
        assert getattr(demo, f.name) == DEMO_DEFAULTS.get(f.name, f.default), f.name
    assert config_from_args(TrainConfig, train) == TrainConfig()
    assert ModelConfig.from_depth(train.depth, train.base_width) == ModelConfig()


def test_predict_and_evaluate_offer_every_prediction_field_with_its_default():
    for args in (_parsed("predict", "m", "img", "--out", "o"), _parsed("evaluate", "m", "data")):
        assert config_from_args(PredictConfig, args) == PredictConfig()
        assert all(hasattr(args, name) for name in _offered(PredictConfig))


def test_compress_offers_every_compression_field_with_its_default():
    args = _parsed("compress", "m", "--method", "qat", "--data", "d", "--out", "o")
    assert all(hasattr(args, name) for name in _offered(CompressConfig))
    assert config_from_args(CompressConfig, args) == CompressConfig(method="qat")
    flag = flag_of(next(f for f in dataclasses.fields(CompressConfig) if f.name == "recalibrate_bn"))
    off = _parsed("compress", "m", "--method", "ptq", "--data", "d", "--out", "o", flag)
    assert flag == "--no-bn-recalibration" and not config_from_args(CompressConfig, off).recalibrate_bn
    with pytest.raises(SystemExit):  # the methods registry gives the choices
        _parsed("compress", "m", "--method", "distill", "--data", "d", "--out", "o")


def test_study_offers_the_shared_training_fields_with_its_own_defaults():
    args = _parsed("study", "data", "--out", "s")
    for name in (*TRAIN_OPTIONS, "val_fraction"):
        assert getattr(args, name) == STUDY_DEFAULTS.get(name, getattr(TrainConfig(), name)), name


@pytest.mark.parametrize("cls, field, allowed", [
    (TrainConfig, "schedule", config_module.Schedule),
    (TrainConfig, "device", config_module.Device),
    (TrainConfig, "bf16", config_module.Bf16),
    (ModelConfig, "norm", config_module.Norm),
])
def test_literal_fields_refuse_other_values_and_list_the_valid_ones(cls, field, allowed):
    from typing import get_args

    with pytest.raises(InputError, match=field) as err:
        cls(**{field: "nonsense"})
    assert all(v in str(err.value) for v in get_args(allowed))


def test_print_progress_writes_event_lines_to_stderr(capsys):
    print_progress(Message("hello"))
    print_progress(StepEnd(step=1, epoch=1, loss=0.5, lr=1e-3))  # too small an event to print
    print_progress(EpochEnd(2, 10, 0.25, 0.5, 0.5, True, 1.0, 1e-3))
    out = capsys.readouterr()
    assert out.out == "" and out.err.splitlines()[0] == "hello" and "epoch   2" in out.err


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


def test_the_command_line_builds_only_the_command_given():
    """`slimseg --help` lists every command without importing torch; a command's own parser is complete
    and imports only what it needs (predict: no torch before the model is loaded)."""
    code = ("import sys; from slimseg.cli import COMMANDS, build_parser\n"
            "text = build_parser([]).format_help()\n"
            "missing = [n for n, (h, _) in COMMANDS.items() if n not in text]\n"
            "ns = build_parser(['predict']).parse_args(['predict', 'm', 'x', '--out', 'o', '--tile', '512'])\n"
            "print(missing, 'torch' in sys.modules, ns.tile)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "False", "512"]
    for name in COMMANDS:  # every command's full parser builds and runs its command; a listed one does not
        full, listed = (_subparser(build_parser(given), name) for given in ([name], []))
        assert callable(full.get_default("func")) and listed.get_default("func") is None
    with pytest.raises(SystemExit):  # a stub parser knows no options: only the command given is complete
        build_parser(["train"]).parse_args(["predict", "m", "x", "--out", "o", "--tile", "512"])

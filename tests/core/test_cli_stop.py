"""``slimseg train`` stopped from outside: Ctrl-C and SIGTERM save the best model so far and exit 130;
kill -9 at any moment leaves the last checkpoint loadable, and resuming finishes like an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from slimseg import checkpoint, io
from slimseg.cli import main

SRC = Path(__file__).resolve().parents[2] / "src"
TINY = ["--patch-size", "32", "--patches-per-epoch", "4", "--batch-size", "4", "--depth", "2",
        "--base-width", "4", "--device", "cpu", "--bf16", "off", "--val-fraction", "0.25"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def _tmp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_best_model_so_far_and_exits_130(tmp_path, data_folder, sig):
    out = tmp_path / "m.slimseg"
    # its own session: a background process of a non-interactive shell would ignore SIGINT otherwise
    proc = subprocess.Popen([sys.executable, "-m", "slimseg.cli", "train", str(data_folder), "--out", str(out),
                             "--epochs", "100000", *TINY], env=_env(), start_new_session=True,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if line.startswith("epoch   3"):
                break
        sent = time.perf_counter()
        proc.send_signal(sig)
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 130, err
        assert out.exists() and time.perf_counter() - sent < 10
    finally:
        proc.kill()
    assert "saved the best model so far" in err and "Traceback" not in err
    record = io.load(out).meta["training"]
    dice = [row["val_dice"] for row in record["history"]]
    assert len(dice) >= 3 and record["stop_reason"] == "interrupted"
    assert record["best_epoch"] == 1 + int(np.argmax(dice)) and record["best_val_dice"] == max(dice)
    assert _tmp_files(tmp_path) == []


def _signal_on(monkeypatch, when, times=1, sig=signal.SIGTERM):
    """Send ``sig`` to this process (``times`` times) at the first progress event ``when`` accepts."""
    from slimseg import events

    printed = events.print_progress
    sent = []

    def progress(event):
        printed(event)
        if not sent and when(event):
            sent.append(event)
            for _ in range(times):
                signal.raise_signal(sig)

    monkeypatch.setattr(events, "print_progress", progress)


def test_before_the_first_epoch_nothing_is_saved_and_it_says_so(tmp_path, data_folder, monkeypatch, capsys):
    from slimseg.events import Message

    _signal_on(monkeypatch, lambda e: isinstance(e, Message) and e.text.startswith("training on"))
    previous = signal.getsignal(signal.SIGTERM)
    assert main(["train", str(data_folder), "--out", str(tmp_path / "m.slimseg"), "--epochs", "50", *TINY]) == 130
    assert "no model saved" in capsys.readouterr().err
    assert not (tmp_path / "m.slimseg").exists()
    assert signal.getsignal(signal.SIGTERM) is previous  # the command gave its handlers back


def test_a_second_signal_quits_at_once_without_a_half_written_file(tmp_path, data_folder, monkeypatch, capsys):
    import contextlib

    from slimseg import files
    from slimseg import io as model_io
    from slimseg.events import EpochEnd

    _signal_on(monkeypatch, lambda e: isinstance(e, EpochEnd) and e.epoch == 2)
    atomic_path = files.atomic_path

    @contextlib.contextmanager
    def interrupted(path):  # the second signal comes when the model file is written, before its rename
        with atomic_path(path) as tmp:
            yield tmp
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(model_io, "atomic_path", interrupted)
    assert main(["train", str(data_folder), "--out", str(tmp_path / "m.slimseg"), "--epochs", "50", *TINY]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "data") == []  # neither the file nor a temporary


def test_a_keyboard_interrupt_in_process_saves_too(tmp_path, data_folder, monkeypatch, capsys):
    from slimseg import events
    from slimseg.events import EpochEnd

    printed = events.print_progress

    def progress(event):
        printed(event)
        if isinstance(event, EpochEnd) and event.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(events, "print_progress", progress)
    out = tmp_path / "m.slimseg"
    assert main(["train", str(data_folder), "--out", str(out), "--epochs", "50", *TINY]) == 130
    assert "saved the best model so far" in capsys.readouterr().err
    assert len(io.load(out).meta["training"]["history"]) == 2


def test_demo_out_is_saved_on_a_stop(tmp_path, monkeypatch, capsys):
    from slimseg.events import EpochEnd

    _signal_on(monkeypatch, lambda e: isinstance(e, EpochEnd) and e.epoch == 1, sig=signal.SIGINT)
    out = tmp_path / "demo.slimseg"
    assert main(["demo", "--out", str(out), "--epochs", "50", *TINY]) == 130
    assert "saved the best model so far" in capsys.readouterr().err
    assert io.load(out).meta["training"]["stop_reason"] == "interrupted"


# -- checkpoint options ------------------------------------------------------------------------------
def test_checkpoint_every_and_resume_on_the_command_line(tmp_path, data_folder, capsys):
    out, ckpt = tmp_path / "m.slimseg", tmp_path / "m.ckpt"
    assert main(["train", str(data_folder), "--out", str(out), "--epochs", "3", "--checkpoint-every", "2",
                 *TINY]) == 0
    assert checkpoint.load(ckpt).epoch == 3  # the default name, and a checkpoint after the last epoch
    # another run would replace it: refused before training, naming the way out
    assert main(["train", str(data_folder), "--out", str(tmp_path / "n.slimseg"), "--epochs", "3",
                 "--checkpoint", str(ckpt), *TINY]) == 2
    assert "--resume" in capsys.readouterr().err
    # resume with a longer budget: continues at epoch 4
    assert main(["train", str(data_folder), "--out", str(tmp_path / "n.slimseg"), "--epochs", "5",
                 "--checkpoint", str(ckpt), "--resume", str(ckpt), *TINY]) == 0
    assert "resuming after epoch 3" in capsys.readouterr().err
    assert [r["epoch"] for r in io.load(tmp_path / "n.slimseg").meta["training"]["history"]] == [1, 2, 3, 4, 5]
    assert checkpoint.load(ckpt).epoch == 5


@pytest.mark.parametrize("args, message", [
    (["--resume", "{tmp}/m.slimseg"], "model file, not a training checkpoint"),
    (["--resume", "{tmp}/none.ckpt"], "no such checkpoint"),
    (["--resume", "{tmp}/m.ckpt", "--seed", "3"], "seed: 0 in the checkpoint, 3 now"),
    (["--checkpoint", "{tmp}/afile/x.ckpt"], "is a file, not a folder"),
    (["--checkpoint-every", "0"], ">= 1"),
])
def test_bad_checkpoint_options_exit_2_before_training(tmp_path, data_folder, capsys, args, message):
    assert main(["train", str(data_folder), "--out", str(tmp_path / "m.slimseg"), "--epochs", "1",
                 "--checkpoint-every", "1", *TINY]) == 0
    (tmp_path / "afile").write_text("")
    capsys.readouterr()
    argv = ["train", str(data_folder), "--out", str(tmp_path / "n.slimseg"), "--epochs", "2", *TINY,
            *[a.format(tmp=tmp_path) for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "epoch " not in err


def test_an_unwritable_out_folder_is_refused_before_training(tmp_path, data_folder, capsys):
    (tmp_path / "afile").write_text("")
    assert main(["train", str(data_folder), "--out", str(tmp_path / "afile" / "m.slimseg"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "epoch " not in err


# -- kill -9 at random moments ---------------------------------------------------------------------------
# One process imports slimseg and torch once; each run is a fork of it, killed after the delay it is sent
# (so a run costs no interpreter start). It answers each run with the run's exit code (-9: killed).
FORK_SERVER = r"""
import json, os, signal, sys, time
import torch
torch.set_num_threads(1)
import slimseg.cli, slimseg.checkpoint, slimseg.training, slimseg.evaluation, slimseg.data.folder
slimseg.cli.build_parser()
torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # the first optimizer imports torch._dynamo
for line in sys.stdin:
    argv, delay, log = json.loads(line)
    pid = os.fork()
    if pid == 0:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(fd, 1), os.dup2(fd, 2)
        rc = slimseg.cli.main(argv)
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(rc)
    if delay is not None:
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


def _kill_at_random_moments(tmp_path, data_folder, kills, epochs, seed=0):
    rng = np.random.default_rng(seed)
    server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=_env())

    def train(out, n_epochs, extra=(), delay=None):
        argv = ["train", str(data_folder), "--out", str(out), "--overwrite", "--epochs", str(n_epochs), *TINY, *extra]
        server.stdin.write(json.dumps([argv, delay, str(tmp_path / "log.txt")]) + "\n")
        server.stdin.flush()
        return int(server.stdout.readline())

    def timed(*args):
        t0 = time.perf_counter()
        assert train(*args) == 0
        return time.perf_counter() - t0

    try:
        # the moments to kill at follow this machine's speed: a run's fixed cost, then its epochs
        fixed = min(timed(tmp_path / "warm.slimseg", 1) for _ in range(3))
        per_epoch = max(timed(tmp_path / "reference.slimseg", epochs) - fixed, 0.0) / (epochs - 1)
        ckpt = tmp_path / "run.ckpt"
        run = ["--checkpoint", str(ckpt), "--checkpoint-every", "1"]
        seen, codes, trained_s = 0, [], 0.0
        for _ in range(kills):
            # a quarter of the kills while the run starts, the rest while it trains and writes checkpoints
            # (a fifth of the epochs in all, expected). A shared machine's speed drifts: once the kills have
            # shown how fast the epochs really go, the faster of the two estimates sets the next moments.
            if seen:
                per_epoch = min(per_epoch, trained_s / seen)
            training = rng.uniform(0, 0.5 * epochs / kills) * per_epoch
            delay = fixed * rng.uniform(0, 1) if rng.random() < 0.25 else fixed + training
            trained_s += max(delay - fixed, 0.0)
            resume = ["--resume", str(ckpt)] if ckpt.exists() else []
            codes.append(train(tmp_path / "run.slimseg", epochs, [*run, *resume], float(delay)))
            if ckpt.exists():
                state = checkpoint.load(ckpt)  # whatever the moment of the kill, the last checkpoint loads
                assert state.epoch >= seen and len(state.meta["state"]["history"]) == state.epoch
                seen = state.epoch
        assert codes.count(-9) >= kills - 1 and 0 < seen < epochs, (codes, seen)  # the kills came mid-run
        assert train(tmp_path / "run.slimseg", epochs, [*run, "--resume", str(ckpt)]) == 0
    finally:
        server.stdin.close()
        server.wait(timeout=60)
    reference = io.load(tmp_path / "reference.slimseg").meta["training"]
    resumed = io.load(tmp_path / "run.slimseg").meta["training"]
    assert len(resumed["history"]) == epochs
    assert abs(resumed["best_val_dice"] - reference["best_val_dice"]) <= 0.005
    assert abs(resumed["history"][-1]["val_dice"] - reference["history"][-1]["val_dice"]) <= 0.005
    assert _tmp_files(tmp_path) == []  # the temporaries of killed writes were cleaned up
    return codes


def test_kill_9_at_twenty_random_moments_then_resume(tmp_path, data_folder):
    _kill_at_random_moments(tmp_path, data_folder, kills=20, epochs=80)

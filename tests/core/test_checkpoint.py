"""Training checkpoints: pickle-free round trip, a resume that repeats the uninterrupted run, refusals."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest
import torch

from slimseg import checkpoint, io
from slimseg.config import ModelConfig, TrainConfig
from slimseg.errors import InputError, ModelFileError
from slimseg.events import EpochEnd, Message, run
from slimseg.training import Trainer

MODEL = ModelConfig.from_depth(2, 4)


def _config(**kw):
    base = dict(epochs=6, patch_size=32, patches_per_epoch=8, batch_size=4, device="cpu", bf16="off",
                val_fraction=0.25)
    return TrainConfig(**{**base, **kw})


def _stopped_after(images, labels, epochs, path, cfg=None, **fit):
    """A trainer run for ``epochs`` epochs with checkpoints to ``path``, then closed (a stop)."""
    trainer = Trainer(images, labels, cfg or _config(), MODEL)
    gen = trainer.fit(path, **fit)
    done = 0
    for event in gen:
        done += isinstance(event, EpochEnd)
        if done == epochs:
            break
    gen.close()
    return trainer


def _weights_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("optimizer, schedule, extra", [("rmsprop", "cosine", {"ema": 0.0}), ("adam", "plateau", {}),
                                                       ("sgd", "constant", {"ema": 0.0, "zoom": 1.0}),
                                                       ("rmsprop", "cosine", {"ema": 0.9, "zoom": 1.5})])
def test_resuming_repeats_the_uninterrupted_run(disks, tmp_path, optimizer, schedule, extra):
    images, labels = disks
    cfg = _config(optimizer=optimizer, schedule=schedule, **extra)
    full = run(Trainer(images, labels, cfg, MODEL).fit())
    _stopped_after(images, labels, 3, tmp_path / "run.ckpt", cfg)
    ckpt = checkpoint.load(tmp_path / "run.ckpt")
    assert any(k.startswith("ema/") for k in ckpt.tensors) == (cfg.ema > 0)  # the averaged weights travel too
    assert ckpt.epoch == 3 and len(ckpt.meta["state"]["history"]) == 3
    resumed = Trainer(images, labels, cfg, MODEL)
    resumed.restore(ckpt)
    events = []
    result = run(resumed.fit(), events.append)
    assert "resuming after epoch 3" in events[1].text
    assert [e.epoch for e in events if isinstance(e, EpochEnd)] == [4, 5, 6]
    for a, b in zip(full.history, result.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
        assert a["val_dice"] == pytest.approx(b["val_dice"], abs=0.005)
        assert a["step"] == b["step"] and a["lr"] == pytest.approx(b["lr"])
    assert result.best_epoch == full.best_epoch and result.best_val_dice == pytest.approx(full.best_val_dice, abs=0.005)
    assert _weights_equal(result.model, full.model)


def test_a_checkpoint_is_pickle_free_and_holds_the_optimizer_state(disks, tmp_path):
    images, labels = disks
    trainer = _stopped_after(images, labels, 2, tmp_path / "run.ckpt", checkpoint_every=2)
    with zipfile.ZipFile(tmp_path / "run.ckpt") as zf:
        names = zf.namelist()
        meta = json.loads(zf.read("meta.json"))
    assert all(n == "meta.json" or (n.startswith("tensors/") and n.endswith(".npy")) for n in names)
    assert meta["format"] == checkpoint.FORMAT and meta["state"]["epoch"] == 2
    ckpt = checkpoint.load(tmp_path / "run.ckpt")
    saved = trainer._opt.state_dict()
    for index, entries in saved["state"].items():
        for name, value in entries.items():
            assert np.array_equal(ckpt.tensors[f"optimizer/{index}/{name}"], value.numpy())
    assert {k.split("/")[0] for k in ckpt.tensors} == {"model", "best", "ema", "optimizer", "rng"}
    assert ckpt.data == trainer.data_fingerprint


def test_every_n_epochs_and_after_the_last(disks, tmp_path, monkeypatch):
    images, labels = disks
    path = tmp_path / "run.ckpt"
    epochs_written = []
    save = checkpoint.save

    def spy(ckpt, target):
        epochs_written.append(ckpt.epoch)
        return save(ckpt, target)

    monkeypatch.setattr(checkpoint, "save", spy)
    run(Trainer(images, labels, _config(epochs=5), MODEL).fit(path, checkpoint_every=2))
    assert epochs_written == [2, 4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]  # no temporary files left
    with pytest.raises(InputError, match=">= 1"):
        run(Trainer(images, labels, _config(), MODEL).fit(path, checkpoint_every=0))


def test_the_budget_may_grow_on_resume(disks, tmp_path):
    images, labels = disks
    run(Trainer(images, labels, _config(epochs=3), MODEL).fit(tmp_path / "run.ckpt"))
    longer = Trainer(images, labels, _config(epochs=5, patience=10), MODEL)
    longer.restore(checkpoint.load(tmp_path / "run.ckpt"))
    result = run(longer.fit())
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4, 5] and result.stop_reason == "epochs"
    # a time budget counts the training before the checkpoint: one already spent ends the run at once
    spent = Trainer(images, labels, _config(epochs=5, minutes=1e-6), MODEL)
    spent.restore(checkpoint.load(tmp_path / "run.ckpt"))
    result = run(spent.fit())
    assert len(result.history) == 3 and result.stop_reason == "time budget"


def test_other_data_or_settings_are_refused_saying_what_differs(disks, tmp_path):
    images, labels = disks
    run(Trainer(images, labels, _config(epochs=1), MODEL, names=list("abcd")).fit(tmp_path / "run.ckpt"))
    ckpt = checkpoint.load(tmp_path / "run.ckpt")
    changed = [img.copy() for img in images]
    changed[2][0, 0] += 1
    cases = [
        (dict(images=changed), "pixels or labels changed: c"),
        (dict(names=list("abce")), "missing now: d"),
        (dict(images=images[::-1], labels=labels[::-1], names=list("dcba")), "another order"),
        (dict(cfg=_config(epochs=1, lr=0.5)), "lr: None in the checkpoint, 0.5 now"),
        (dict(model=ModelConfig.from_depth(2, 8)), "model setting widths"),
    ]
    for change, message in cases:
        kw = {"images": images, "labels": labels, "names": list("abcd"), "cfg": _config(epochs=1), "model": MODEL,
              **change}
        trainer = Trainer(kw["images"], kw["labels"], kw["cfg"], kw["model"], names=kw["names"])
        with pytest.raises(InputError, match=message):
            trainer.restore(ckpt)


def test_files_that_are_not_checkpoints_are_refused(disks, tmp_path):
    images, labels = disks
    result = run(Trainer(images, labels, _config(epochs=1), MODEL).fit(tmp_path / "run.ckpt"))
    model = result.save(tmp_path / "m.slimseg")
    with pytest.raises(ModelFileError, match="model file, not a training checkpoint"):
        checkpoint.load(model)
    with pytest.raises(ModelFileError, match="training checkpoint, not a model file.*--resume"):
        io.load(tmp_path / "run.ckpt")
    (tmp_path / "p.ckpt").write_bytes(pickle.dumps({"state": 1}))
    with pytest.raises(ModelFileError, match="pickle"):
        checkpoint.load(tmp_path / "p.ckpt")
    torch.save({"x": 1}, tmp_path / "t.ckpt")
    with pytest.raises(ModelFileError, match="pickle"):
        checkpoint.load(tmp_path / "t.ckpt")
    data = (tmp_path / "run.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        checkpoint.load(tmp_path / "cut.ckpt")


def _rewrite(src, dst, change):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        meta = json.loads(zin.read("meta.json"))
        members = {n: zin.read(n) for n in zin.namelist() if n != "meta.json"}
        change(meta, members)
        zout.writestr("meta.json", json.dumps(meta))
        for n, data in members.items():
            zout.writestr(n, data)
    return dst


def test_tensors_the_settings_cannot_explain_are_refused_before_reading(disks, tmp_path):
    import io as _io

    images, labels = disks
    run(Trainer(images, labels, _config(epochs=1), MODEL).fit(tmp_path / "run.ckpt"))

    def npy(arr):
        buf = _io.BytesIO()
        np.save(buf, arr)
        return buf.getvalue()

    def extra(meta, members):  # a tensor outside the layout
        meta["tensors"]["junk/x"] = ["float32", [4]]
        members["tensors/junk/x.npy"] = npy(np.zeros(4, np.float32))

    def huge(meta, members):  # an optimizer state of another shape than its parameter
        meta["tensors"]["optimizer/0/square_avg"] = ["float32", [1 << 28]]

    def objects(meta, members):  # an object array where a random stream should be
        meta["tensors"]["rng/torch"] = ["object", [1]]
        buf = _io.BytesIO()
        np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
        members["tensors/rng/torch.npy"] = buf.getvalue()

    for change, message in ((extra, "does not fit"), (huge, "does not fit|more than"), (objects, "pickled|numeric")):
        bad = _rewrite(tmp_path / "run.ckpt", tmp_path / f"{change.__name__}.ckpt", change)
        with pytest.raises(ModelFileError, match=message):
            checkpoint.load(bad)


def test_an_interrupted_run_with_a_checkpoint_keeps_the_previous_one_whole(disks, tmp_path, monkeypatch):
    images, labels = disks
    path = tmp_path / "run.ckpt"
    run(Trainer(images, labels, _config(epochs=2), MODEL).fit(path))
    before = path.read_bytes()

    def killed(*a, **kw):  # the write dies half-way
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", killed)
    trainer = Trainer(images, labels, _config(epochs=4), MODEL)
    trainer.restore(checkpoint.load(path))
    with pytest.raises(KeyboardInterrupt):
        run(trainer.fit(path))
    monkeypatch.undo()
    assert path.read_bytes() == before and checkpoint.load(path).epoch == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]


def test_messages_name_the_resume(disks, tmp_path):
    images, labels = disks
    run(Trainer(images, labels, _config(epochs=2), MODEL).fit(tmp_path / "run.ckpt"))
    trainer = Trainer(images, labels, _config(epochs=2), MODEL)
    trainer.restore(checkpoint.load(tmp_path / "run.ckpt"))
    assert trainer.epochs_done == 2
    events = []
    result = run(trainer.fit(), events.append)
    assert isinstance(events[1], Message) and "resuming after epoch 2" in events[1].text
    assert not any(isinstance(e, EpochEnd) for e in events) and result.stop_reason == "epochs"

import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from slimseg import io
from slimseg.config import ModelConfig, NormConfig
from slimseg.errors import InputError, ModelFileError
from slimseg.model import UNet
from slimseg.segmenter import load_segmenter


@pytest.fixture
def model_file(tmp_path):
    cfg = ModelConfig(widths=(4, 8))
    torch.manual_seed(0)
    model = UNet(cfg).eval()
    mf = io.from_module(model, cfg, NormConfig(pmin=2, pmax=98), training={"best_val_dice": 0.5})
    return model, io.save(mf, tmp_path / "m.slimseg")


def test_round_trip_keeps_weights_configs_and_record(model_file):
    model, path = model_file
    mf = io.load(path)
    assert mf.kind == "float" and mf.model_config.widths == (4, 8) and mf.norm.pmin == 2
    assert mf.meta["training"]["best_val_dice"] == 0.5 and mf.meta["format_version"] == io.FORMAT_VERSION
    seg = load_segmenter(path)
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(seg.model_fn(x), model(x))


def test_refuses_to_overwrite(model_file):
    model, path = model_file
    before = path.read_bytes()
    with pytest.raises(InputError, match="exists"):
        io.save(io.load(path), path)
    assert path.read_bytes() == before
    io.save(io.load(path), path, overwrite=True)  # allowed when asked


class Boom:
    def __reduce__(self):
        return (os.system, ("touch BOOM_RAN",))


def test_pickle_payloads_are_refused_and_do_not_run(tmp_path, monkeypatch, model_file):
    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "evil.slimseg"
    raw.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ModelFileError, match="pickle"):
        io.load(raw)
    ts = tmp_path / "evil_torch.pt"
    torch.save({"x": Boom()}, ts)
    with pytest.raises(ModelFileError, match="pickle"):
        io.load(ts)
    # a slimseg zip whose tensor is an object array (a pickle inside .npy)
    _, good = model_file
    sneaky = tmp_path / "sneaky.slimseg"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(sneaky, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith(".npy") and "head.bias" in name:
                import io as _io
                buf = _io.BytesIO()
                np.save(buf, np.array([Boom()], dtype=object), allow_pickle=True)
                data = buf.getvalue()
            dst.writestr(name, data)
    with pytest.raises(ModelFileError, match="pickle"):
        io.load(sneaky)
    assert not (tmp_path / "BOOM_RAN").exists()


def test_truncated_corrupt_and_foreign_files(tmp_path, model_file):
    _, path = model_file
    data = path.read_bytes()
    cut = tmp_path / "cut.slimseg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        io.load(cut)
    junk = tmp_path / "junk.slimseg"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelFileError, match="not a slimseg"):
        io.load(junk)
    with pytest.raises(ModelFileError, match="no such"):
        io.load(tmp_path / "missing.slimseg")


def test_newer_format_version_is_refused(tmp_path, model_file):
    import json
    _, path = model_file
    newer = tmp_path / "newer.slimseg"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(newer, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "meta.json":
                meta = json.loads(data)
                meta["format_version"] = io.FORMAT_VERSION + 1
                data = json.dumps(meta)
            dst.writestr(name, data)
    with pytest.raises(ModelFileError, match="upgrade"):
        io.load(newer)


def test_weights_not_matching_config_are_refused(tmp_path, model_file):
    _, path = model_file
    mf = io.load(path)
    mf.model_config = ModelConfig(widths=(4, 16))
    bad = io.save(mf, tmp_path / "bad.slimseg")
    with pytest.raises(ModelFileError, match="do not fit"):
        load_segmenter(bad)

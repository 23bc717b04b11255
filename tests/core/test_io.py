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


# -- files that declare more than they should --------------------------------------------------------
def _npy_header(shape, dtype="<f4") -> bytes:
    import io as _io
    buf = _io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _rewrite(src_path, dst_path, member, data, meta_entry=None, meta_changes=None):
    """A copy of a model file with one tensor member replaced (and meta.json's entry for it)."""
    import json
    name = member.removeprefix("tensors/").removesuffix(".npy")
    with zipfile.ZipFile(src_path) as src, zipfile.ZipFile(dst_path, "w", zipfile.ZIP_DEFLATED) as dst:
        for n in src.namelist():
            payload = src.read(n)
            if n == "meta.json":
                meta = json.loads(payload)
                if meta_entry is not None:
                    meta["tensors"][name] = meta_entry
                meta.update(meta_changes or {})
                payload = json.dumps(meta)
            elif n == member:
                payload = data
            dst.writestr(n, payload)
    return dst_path


def test_a_header_declaring_terabytes_is_refused_without_allocating(tmp_path, model_file):
    import time
    import tracemalloc
    _, path = model_file
    shape = [1 << 20, 1 << 20, 1]  # 2**40 float32: 4 TiB (3.6 TiB in the report was of this kind)
    bad = _rewrite(path, tmp_path / "huge.slimseg", "tensors/head.bias.npy",
                   _npy_header(shape) + b"\0" * 64, meta_entry=["float32", shape])
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ModelFileError, match="TiB"):
        io.load(bad)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 2 and peak < 32 * 2**20
    # the same header where meta.json still declares the true shape: refused as a mismatch
    lying = _rewrite(path, tmp_path / "lying.slimseg", "tensors/head.bias.npy", _npy_header(shape) + b"\0" * 64)
    with pytest.raises(ModelFileError, match="meta.json declares"):
        io.load(lying)


def test_the_global_cap_holds_whatever_the_settings_say(tmp_path, model_file):
    _, path = model_file
    wide = {"widths": [8192, 16384], "in_channels": 1, "out_channels": 2, "norm": "batch", "decoder_widths": None}
    shape = [1 << 30]  # a compressed kind's blob of 1 GiB: within twice these huge settings' weights
    bad = _rewrite(path, tmp_path / "wide.slimseg", "tensors/head.bias.npy", _npy_header(shape, "|u1"),
                   meta_entry=["uint8", shape], meta_changes={"model_config": wide, "kind": "int8-onnx"})
    with pytest.raises(ModelFileError, match="at most 512.0 MiB"):
        io.load(bad)


def test_zip_bombs_are_refused(tmp_path, model_file):
    _, path = model_file
    # honest headers, but 64 MiB of zeros (compressing to a few hundred KiB) for a model of a few KiB
    shape = [16 << 20]
    bomb = _rewrite(path, tmp_path / "bomb.slimseg", "tensors/head.bias.npy",
                    _npy_header(shape) + bytes(64 << 20), meta_entry=["float32", shape],
                    meta_changes={"kind": "float-sparse"})
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(ModelFileError, match="holds at most"):
        io.load(bomb)
    # an entry whose zip directory declares a smaller size than the data really decompresses to
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("tensors/encoders.0.0.weight.npy")
    data = bytearray(path.read_bytes())
    name = info.filename.encode()
    central = next(i for i in range(len(data)) if data.startswith(b"PK\x01\x02", i)
                   and data[i + 46:i + 46 + len(name)] == name)
    for at in (info.header_offset + 22, central + 24):  # uncompressed size: local header, central directory
        assert int.from_bytes(data[at:at + 4], "little") == info.file_size
        data[at:at + 4] = (info.file_size // 2).to_bytes(4, "little")
    short = tmp_path / "short.slimseg"
    short.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="declares .* bytes of data but the zip entry holds"):
        io.load(short)
    # data beyond what the header declares is refused too (the entry size is honest, the header is not)
    longer = _rewrite(path, tmp_path / "long.slimseg", "tensors/head.bias.npy",
                      _npy_header([2]) + bytes(8 + 4096))
    with pytest.raises(ModelFileError, match="bytes of data but the zip entry holds"):
        io.load(longer)


def test_oversized_meta_json_is_refused(tmp_path, model_file):
    _, path = model_file
    big = tmp_path / "bigmeta.slimseg"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as dst:
        for n in src.namelist():
            payload = src.read(n)
            if n == "meta.json":
                payload = payload[:-1] + b', "pad": "' + b" " * (io.MAX_META_BYTES + 1) + b'"}'
            dst.writestr(n, payload)
    with pytest.raises(ModelFileError, match="meta.json is larger"):
        io.load(big)


@pytest.mark.parametrize("descr, meta_dtype, message", [
    ("<f8", "float32", "meta.json declares"),  # the header's dtype disagrees with meta.json
    ("|O", "object", "pickled"),  # an object array, even where meta.json agrees
    ("<U4", "<U4", "not a plain numeric"),
])
def test_dtypes_are_checked_before_reading(tmp_path, model_file, descr, meta_dtype, message):
    _, path = model_file
    bad = _rewrite(path, tmp_path / "dtype.slimseg", "tensors/head.bias.npy",
                   _npy_header([2], descr) + bytes(16), meta_entry=[meta_dtype, [2]])
    with pytest.raises(ModelFileError, match=message):
        io.load(bad)


def test_float_weights_are_checked_against_the_settings_before_reading(tmp_path, model_file):
    _, path = model_file
    # same bytes, another shape: meta.json and header agree with each other, not with the settings
    bad = _rewrite(path, tmp_path / "shape.slimseg", "tensors/head.bias.npy",
                   _npy_header([1, 2]) + bytes(8), meta_entry=["float32", [1, 2]])
    with pytest.raises(ModelFileError, match="do not fit"):
        io.load(bad)


def test_cli_predict_on_a_hostile_file_exits_2_with_the_reason(tmp_path, model_file, capsys):
    import tifffile
    from slimseg.cli import main
    _, path = model_file
    shape = [1 << 20, 1 << 20, 1]
    bad = _rewrite(path, tmp_path / "huge.slimseg", "tensors/head.bias.npy",
                   _npy_header(shape) + b"\0" * 64, meta_entry=["float32", shape])
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((32, 32), np.uint8))
    assert main(["predict", str(bad), str(tmp_path / "img.tif"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "slimseg predict: error:" in err and "TiB" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_model_file_keeps_zero_dim_tensors(tmp_path):
    model = UNet(ModelConfig(widths=(4, 8)))
    mf = io.from_module(model, model.config, NormConfig())
    loaded = io.load(io.save(mf, tmp_path / "m.slimseg"))
    for name, arr in mf.tensors.items():
        assert loaded.tensors[name].shape == arr.shape, name
        assert np.array_equal(loaded.tensors[name], arr), name


def test_file_size_is_the_size_save_writes(tmp_path):
    model = UNet(ModelConfig(widths=(4, 8)))
    mf = io.from_module(model, model.config, NormConfig(), note="x")
    assert io.file_size(mf) == io.save(mf, tmp_path / "m.slimseg").stat().st_size

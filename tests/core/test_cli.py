import json

import numpy as np
import pytest
import tifffile

from slimseg.cli import main

FAST = ["--epochs", "2", "--patch-size", "32", "--patches-per-epoch", "8", "--batch-size", "4",
        "--depth", "2", "--base-width", "4", "--device", "cpu", "--bf16", "off"]


@pytest.fixture
def trained(tmp_path, data_folder):
    out = tmp_path / "m.slimseg"
    assert main(["train", str(data_folder), "--out", str(out), *FAST]) == 0
    return out


def test_train_predict_evaluate(tmp_path, data_folder, trained, capsys):
    capsys.readouterr()
    out_dir = tmp_path / "pred"
    assert main(["predict", str(trained), str(data_folder / "images"), "--out", str(out_dir)]) == 0
    files = sorted(p.name for p in out_dir.iterdir())
    assert files == ["img0.tif", "img1.tif", "img2.tif", "img3.tif"]
    lab = tifffile.imread(out_dir / "img0.tif")
    assert lab.dtype in (np.uint16, np.uint32) and lab.shape == (48, 48)
    js = tmp_path / "m.json"
    assert main(["evaluate", str(trained), str(data_folder), "--json", str(js), "--baseline"]) == 0
    table = capsys.readouterr().out
    assert "otsu+watershed" in table and "instance_f1" in table
    metrics = json.loads(js.read_text())
    for key in ("n_images", "dice", "jaccard", "precision", "recall", "f1", "instance_precision",
                "instance_recall", "instance_f1", "dsb_score"):
        assert key in metrics
    assert metrics["n_images"] == 4


def test_outputs_are_not_overwritten(tmp_path, data_folder, trained, capsys):
    before = trained.read_bytes()
    assert main(["train", str(data_folder), "--out", str(trained), *FAST]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert trained.read_bytes() == before
    out_dir = tmp_path / "pred"
    assert main(["predict", str(trained), str(data_folder / "images" / "img0.tif"), "--out", str(out_dir)]) == 0
    assert main(["predict", str(trained), str(data_folder / "images" / "img0.tif"), "--out", str(out_dir)]) == 2
    assert main(["predict", str(trained), str(data_folder / "images" / "img0.tif"), "--out", str(out_dir),
                 "--overwrite"]) == 0


@pytest.mark.parametrize("args, message", [
    (["train", "{data}", "--out", "{tmp}/x.slimseg", "--optimizer", "adamz"], "rmsprop"),
    (["train", "{data}", "--out", "{tmp}/x.slimseg", "--loss", "bce+iou"], "jaccard"),
    (["train", "{tmp}/nowhere", "--out", "{tmp}/x.slimseg"], "images/ and labels/"),
    (["evaluate", "{tmp}/missing.slimseg", "{data}"], "no such model file"),
    (["predict", "{tmp}/junk.slimseg", "{data}/images", "--out", "{tmp}/p"], "not a slimseg"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, data_folder, capsys, args, message):
    (tmp_path / "junk.slimseg").write_bytes(b"junk")
    argv = [a.format(data=data_folder, tmp=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_labels_in_folder(tmp_path, data_folder, capsys):
    tifffile.imwrite(data_folder / "labels" / "img0.tif", np.zeros((48, 50), np.uint16))
    assert main(["train", str(data_folder), "--out", str(tmp_path / "x.slimseg"), *FAST]) == 2
    assert "differs" in capsys.readouterr().err
    tifffile.imwrite(data_folder / "labels" / "img0.tif", np.zeros((48, 48), np.float32))
    assert main(["train", str(data_folder), "--out", str(tmp_path / "x.slimseg"), *FAST]) == 2
    assert "integer" in capsys.readouterr().err


def test_help_for_every_command(capsys):
    for cmd in ("train", "predict", "evaluate", "demo"):
        with pytest.raises(SystemExit) as ex:
            main([cmd, "--help"])
        assert ex.value.code == 0
        assert "usage" in capsys.readouterr().out

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


# -- real microscopy layouts: RGB folders, stacks, channels (issue 16) --------------------------------
def _folder(root, images, labels, **write):
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for i, (img, lab) in enumerate(zip(images, labels)):
        tifffile.imwrite(root / "images" / f"img{i}.tif", img, **write)
        tifffile.imwrite(root / "labels" / f"img{i}.tif", lab)
    return root


def _model_config(path):
    from slimseg import io

    return io.load(path).model_config


def test_train_on_rgb_images_counts_their_channels(tmp_path, disks, capsys):
    images, labels = disks
    tint = np.array([1.0, 0.6, 0.3])  # H&E-like colour: the channels differ
    rgb = [(img[..., None] * tint).astype(np.uint8) for img in images]
    data = _folder(tmp_path / "he", rgb, labels, photometric="rgb")
    model = tmp_path / "rgb.slimseg"
    assert main(["train", str(data), "--out", str(model), *FAST]) == 0
    assert _model_config(model).in_channels == 3
    assert main(["predict", str(model), str(data / "images"), "--out", str(tmp_path / "pred")]) == 0
    assert tifffile.imread(tmp_path / "pred" / "img0.tif").shape == (48, 48)
    grey = _folder(tmp_path / "grey", images, labels)
    assert main(["train", str(grey), "--out", str(tmp_path / "g3.slimseg"), "--in-channels", "3", *FAST]) == 2
    assert "this model takes (H, W, 3) images (this is a grey image" in capsys.readouterr().err  # the option wins


def test_predict_a_stack_tiff_writes_a_label_stack(tmp_path, trained, disks, capsys):
    images, _ = disks
    stack = np.stack(images)  # (4, 48, 48), no axes metadata: planes for a grey model
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    capsys.readouterr()
    out = tmp_path / "pred"
    assert main(["predict", str(trained), str(tmp_path / "stack.tif"), "--out", str(out)]) == 0
    labels = tifffile.imread(out / "stack.tif")
    assert labels.shape == (4, 48, 48) and labels.dtype in (np.uint16, np.uint32)
    ids = [set(np.unique(p)) - {0} for p in labels]
    assert all(not (a & b) for k, a in enumerate(ids) for b in ids[k + 1:])  # unique across the stack
    err = capsys.readouterr().err
    assert "planes: plane 1 of 4" in err and "planes: plane 4 of 4" in err
    assert main(["predict", str(trained), str(tmp_path / "stack.tif"), "--out", str(out), "--overwrite",
                 "--stitch-threshold", "0.3"]) == 0
    linked = tifffile.imread(out / "stack.tif")
    assert len(np.unique(linked)) <= len(np.unique(labels))


def test_channels_chosen_by_index_are_recorded_and_checked(tmp_path, disks, capsys):
    images, labels = disks
    rng = np.random.default_rng(1)
    three = [np.stack([img, rng.integers(0, 50, img.shape).astype(np.uint8), 255 - img]) for img in images]
    data = _folder(tmp_path / "cyx", three, labels, photometric="minisblack")  # (C, Y, X), labels (Y, X)
    model = tmp_path / "two.slimseg"
    assert main(["train", str(data), "--out", str(model), "--channels", "0,2", *FAST]) == 0
    mc = _model_config(model)
    assert (mc.in_channels, mc.channels) == (2, (0, 2))
    out = tmp_path / "pred"
    assert main(["predict", str(model), str(data / "images"), "--out", str(out)]) == 0  # the recorded channels
    assert tifffile.imread(out / "img0.tif").shape == (48, 48)
    assert main(["evaluate", str(model), str(data)]) == 0
    capsys.readouterr()
    assert main(["predict", str(model), str(data / "images"), "--out", str(out), "--overwrite",
                 "--channels", "0,5"]) == 2
    assert "channel 5 is out of range: axis 0 of shape (3, 48, 48)" in capsys.readouterr().err
    square = np.stack([np.stack([img, img]) for img in images[:2]])  # (2, 2, 48, 48): planes or channels?
    tifffile.imwrite(tmp_path / "ambiguous.tif", square, photometric="minisblack")
    assert main(["predict", str(model), str(tmp_path / "ambiguous.tif"), "--out", str(out), "--channels", "0,1"]) == 2
    assert "cannot tell which axis holds the channels" in capsys.readouterr().err
    assert main(["predict", str(model), str(tmp_path / "ambiguous.tif"), "--out", str(out), "--channels", "0,1",
                 "--channel-axis", "1"]) == 0
    assert tifffile.imread(out / "ambiguous.tif").shape == (2, 48, 48)
    with pytest.raises(SystemExit) as ex:  # argparse's own exit for a malformed option
        main(["predict", str(model), str(tmp_path / "ambiguous.tif"), "--out", str(out), "--channels", "0,x"])
    assert ex.value.code == 2 and "not a comma-separated list of whole numbers" in capsys.readouterr().err


@pytest.mark.parametrize("existing", [False, True])
def test_a_training_run_that_learned_nothing_exits_2_and_writes_nothing(tmp_path, data_folder, capsys, existing):
    out = tmp_path / "m.slimseg"
    if existing:
        out.write_bytes(b"the previous model")
    # SGD at a huge learning rate diverges: the validation Dice is 0 after every epoch
    args = ["train", str(data_folder), "--out", str(out), *FAST, "--optimizer", "sgd", "--lr", "1e6"]
    args += ["--overwrite"] if existing else []
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "training failed" in err and "validation Dice" in err
    assert "lower the learning rate" in err and "labels match the images" in err and "more epochs" in err
    assert "not written" in err
    if existing:
        assert out.read_bytes() == b"the previous model"
    else:
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["data", "m.slimseg"] if existing else ["data"])

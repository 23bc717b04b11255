"""Images larger than memory: block-wise prediction into an OME-Zarr label store (slimseg.large), and
prediction of many images over Dask distributed (slimseg.distributed, `slimseg predict --workers`)."""

import json
import time

import numpy as np
import pytest
import tifffile
import zarr
from _fake_model import disks_image, fake_segmenter

from slimseg.cli import main
from slimseg.errors import InputError
from slimseg.events import run
from slimseg.large import LargeConfig, fit_normalizer, predict_large, read_labels, seam_pairs
from slimseg.predict import predict

FAST = ["--epochs", "2", "--patch-size", "32", "--patches-per-epoch", "8", "--batch-size", "4",
        "--depth", "2", "--base-width", "4", "--device", "cpu", "--bf16", "off"]


class CountingArray:
    """A lazy array that records every region read from it."""

    def __init__(self, data):
        self.data, self.reads = data, []
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, key):
        out = np.asarray(self.data[key])
        self.reads.append(out.shape)
        return out


def _bijection(a, b):
    """a and b are the same labelling up to renumbering."""
    pairs = set(zip(a.ravel().tolist(), b.ravel().tolist()))
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def test_block_prediction_equals_whole_image_prediction_objects_crossing_blocks(tmp_path):
    seg, img = fake_segmenter(), disks_image()
    z = zarr.create_array(str(tmp_path / "in.zarr"), shape=img.shape, chunks=(64, 64), dtype="uint16")
    z[:] = img
    whole = run(predict(seg.model_fn, img, fit_normalizer(z, seg.norm), seg.predict_config)).labels
    lcfg = LargeConfig(block=100, margin=20)
    res = run(predict_large(seg, tmp_path / "in.zarr", tmp_path / "out.zarr", lcfg=lcfg))
    labels = read_labels(tmp_path / "out.zarr")[:]
    assert res.n_blocks == 9 and res.n_merged > 0  # objects do cross the block borders
    assert res.n_objects == labels.max() == len(np.unique(whole)) - 1
    assert _bijection(whole, labels)  # one object, one id, however many blocks it touches


def test_a_lazy_input_is_read_only_by_blocks(tmp_path):
    seg, img = fake_segmenter(), disks_image()
    lazy = CountingArray(img)
    lcfg = LargeConfig(block=100, margin=20)
    run(predict_large(seg, lazy, tmp_path / "out.zarr", lcfg=lcfg))
    biggest = max(h * w for h, w in lazy.reads)
    tile = seg.predict_config.tile  # a block is read with the whole image's tiles that touch it and its margin
    assert biggest <= (100 + 2 * 20 + 2 * tile) ** 2 < img.size
    # each block once with its margin and tiles (large here next to a 100-pixel block), plus the percentiles
    assert sum(h * w for h, w in lazy.reads) < 5 * img.size


def test_dask_array_input_and_ome_zarr_metadata(tmp_path):
    da = pytest.importorskip("dask.array")
    from slimseg.data.readers import read

    seg, img = fake_segmenter(), disks_image(size=200, n=40)
    run(predict_large(seg, da.from_array(img, chunks=50), tmp_path / "out.zarr", lcfg=LargeConfig(block=64, margin=16)))
    attrs = json.loads((tmp_path / "out.zarr" / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["y", "x"]
    assert ms["datasets"][0]["path"] == "0" and ms["datasets"][0]["coordinateTransformations"][0]["type"] == "scale"
    assert "image-label" in attrs
    arr = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["0"]
    assert arr.chunks == (64, 64) and arr.dtype == np.uint32 and arr.shape == (200, 200)
    back = read(tmp_path / "out.zarr")  # slimseg's own OME-Zarr reader
    assert back.axes == "YX" and back.data.shape == (200, 200)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary store left


def test_existing_store_refused_and_not_an_image_refused(tmp_path):
    seg, img = fake_segmenter(), disks_image(size=100, n=10)
    out = tmp_path / "out.zarr"
    run(predict_large(seg, img, out, lcfg=LargeConfig(block=64, margin=8)))
    before = read_labels(out)[:]
    with pytest.raises(InputError, match="exists already.*--overwrite"):
        run(predict_large(seg, img[::-1].copy(), out, lcfg=LargeConfig(block=64, margin=8)))
    assert np.array_equal(read_labels(out)[:], before)
    run(predict_large(seg, img[::-1].copy(), out, lcfg=LargeConfig(block=64, margin=8), overwrite=True))
    assert not np.array_equal(read_labels(out)[:], before)
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w")  # a group that is no image
    with pytest.raises(InputError, match="without OME-Zarr multiscales"):
        run(predict_large(seg, tmp_path / "group.zarr", tmp_path / "o2.zarr"))


def test_seam_pairs_join_only_overlapping_objects():
    a = np.array([[1, 1, 0, 2, 2]])
    b = np.array([[5, 5, 0, 0, 7]])
    assert seam_pairs(a, b, 0.5) == [(1, 5), (2, 7)]  # 2 and 7 overlap by 1 of 2 pixels: IoU 0.5
    assert seam_pairs(a, b, 0.6) == [(1, 5)]
    assert seam_pairs(a, np.zeros_like(b), 0.1) == []


@pytest.fixture
def trained(tmp_path, data_folder):
    out = tmp_path / "m.slimseg"
    assert main(["train", str(data_folder), "--out", str(out), *FAST]) == 0
    return out


def test_cli_zarr_output_workers_same_as_one_process_and_resume(tmp_path, data_folder, trained, capsys):
    images = data_folder / "images"
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["predict", str(trained), str(images), "--out", str(one), "--out-format", "zarr",
                 "--block", "64", "--margin", "16"]) == 0
    assert main(["predict", str(trained), str(images), "--out", str(two), "--out-format", "zarr",
                 "--block", "64", "--margin", "16", "--workers", "2"]) == 0
    names = sorted(p.name for p in one.iterdir())
    assert names == ["img0.zarr", "img1.zarr", "img2.zarr", "img3.zarr"] == sorted(p.name for p in two.iterdir())
    for n in names:
        assert np.array_equal(read_labels(one / n)[:], read_labels(two / n)[:])
    tif = tmp_path / "tif"
    assert main(["predict", str(trained), str(images), "--out", str(tif), "--workers", "2"]) == 0
    ref = tmp_path / "ref"
    assert main(["predict", str(trained), str(images), "--out", str(ref)]) == 0
    for n in sorted(p.name for p in ref.iterdir()):
        assert np.array_equal(tifffile.imread(tif / n), tifffile.imread(ref / n))
    # a rerun is refused, or skips what is done
    assert main(["predict", str(trained), str(images), "--out", str(two), "--out-format", "zarr"]) == 2
    (tif / "img2.tif").unlink()
    stamp = {p.name: p.stat().st_mtime_ns for p in tif.iterdir()}
    capsys.readouterr()
    assert main(["predict", str(trained), str(images), "--out", str(tif), "--workers", "2", "--resume"]) == 0
    assert "3 outputs exist already: skipped" in capsys.readouterr().err
    assert sorted(p.name for p in tif.iterdir()) == ["img0.tif", "img1.tif", "img2.tif", "img3.tif"]
    assert all(tif.joinpath(n).stat().st_mtime_ns == t for n, t in stamp.items())
    assert np.array_equal(tifffile.imread(tif / "img2.tif"), tifffile.imread(ref / "img2.tif"))


def test_unreachable_scheduler_fails_fast(tmp_path, data_folder, trained, capsys):
    t0 = time.perf_counter()
    assert main(["predict", str(trained), str(data_folder / "images"), "--out", str(tmp_path / "o"),
                 "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert time.perf_counter() - t0 < 30
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err


def wide_context_model(x):
    """Like the fake model, with a 31-pixel context: its output near a tile's edge depends on where the
    tile lies, as a U-Net's does."""
    from _fake_model import local_model
    from torch.nn.functional import avg_pool2d

    out = local_model(x)
    context = avg_pool2d(x[:, :1], 31, stride=1, padding=15, count_include_pad=False)
    return out + (context - 0.3) * 8


def test_block_labels_equal_whole_image_labels_with_a_model_that_sees_context(tmp_path):
    seg, img = fake_segmenter(tile=64, overlap=16), disks_image(size=260, n=110)
    seg.model_fn = wide_context_model
    for k in (100, 200):  # objects right on the block borders, in both directions
        for c in range(10, 250, 24):
            yy, xx = np.mgrid[:260, :260]
            img[((yy - k) ** 2 + (xx - c) ** 2 <= 36) | ((yy - c) ** 2 + (xx - k) ** 2 <= 36)] = 1000
    whole = run(seg.predict_events(img)).labels  # in memory, as Segmenter.predict does
    res = run(predict_large(seg, img, tmp_path / "out.zarr", lcfg=LargeConfig(block=100, margin=24)))
    labels = read_labels(tmp_path / "out.zarr")[:]
    crossing = {int(i) for i in np.unique(whole[[99, 100, 199, 200]]) if i} | \
        {int(i) for i in np.unique(whole[:, [99, 100, 199, 200]]) if i}
    assert len(crossing) >= 20 and res.n_merged >= 20  # many objects lie on block borders
    assert res.n_objects == len(np.unique(whole)) - 1
    assert _bijection(whole, labels)  # pixel for pixel the same objects, one id each


def test_stop_writes_the_blocks_done_with_global_ids(tmp_path):
    seg, img = fake_segmenter(), disks_image()
    seen = []

    def stop():
        seen.append(1)
        return len(seen) >= 2  # after the second block

    res = run(predict_large(seg, img, tmp_path / "out.zarr", lcfg=LargeConfig(block=100, margin=20), stop=stop))
    labels = read_labels(tmp_path / "out.zarr")[:]
    assert not res.complete and res.blocks_done == 2 and res.n_blocks == 9
    assert labels[:100, :200].any() and not labels[100:].any() and not labels[:, 200:].any()
    assert np.array_equal(np.unique(labels), np.arange(res.n_objects + 1))  # consecutive global ids
    assert run(predict_large(seg, img, tmp_path / "full.zarr", lcfg=LargeConfig(block=100, margin=20))).complete

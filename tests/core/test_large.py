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


def test_cli_ctrl_c_keeps_the_finished_blocks_and_the_same_command_goes_on(tmp_path, capsys, monkeypatch):
    from slimseg import large

    tifffile.imwrite(image := tmp_path / "img0.tif", disks_image(size=200, n=60))
    argv = ["predict", "nuclei", str(image), "--out-format", "zarr", "--block", "64", "--margin", "16", "--out"]
    assert main([*argv, str(tmp_path / "ref")]) == 0
    ref = read_labels(tmp_path / "ref" / "img0.zarr")[:]
    assert ref.max() > 20  # the built-in model finds the disks
    real, calls = large.segment_block, []

    def ctrl_c_at_the_third_block(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(large, "segment_block", ctrl_c_at_the_third_block)
    capsys.readouterr()
    assert main([*argv, str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "the same command goes on from them" in err
    assert not (tmp_path / "out" / "img0.zarr").exists()
    monkeypatch.setattr(large, "segment_block", real)
    assert main([*argv, str(tmp_path / "out")]) == 0
    assert "continuing an interrupted run: 2 of" in capsys.readouterr().err
    assert np.array_equal(read_labels(tmp_path / "out" / "img0.zarr")[:], ref)


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


def test_tile_cache_keeps_the_tiles_the_next_regions_touch():
    from slimseg.large import TileCache

    regions = [(0, 10, 0, 10), (0, 10, 10, 20), (0, 10, 20, 30)]
    for lookahead, kept in ((1, {(0, 8), (0, 12)}), (2, {(0, 8), (0, 12), (0, 24)})):
        cache = TileCache(regions, tile=(4, 4), lookahead=lookahead)
        for key in [(0, 0), (0, 8), (0, 12), (0, 24)]:
            cache.put(key, np.full(1, key[1]))
        assert cache.get((0, 8))[0] == 8 and cache.get((4, 4)) is None
        cache.done(regions[0])  # x in [10, 20) is next; [20, 30) after it
        assert set(cache.tiles) == kept
    cache.done(regions[1])
    assert set(cache.tiles) == {(0, 24)}
    cache.done(regions[2])
    assert cache.tiles == {}


def _tile_counter(model_fn, log):
    def counted(x):
        log.append(x.shape[0])
        return model_fn(x)
    return counted


def test_block_prediction_computes_each_tile_once(tmp_path):
    """Neighbouring blocks' margins share tiles: in one process each is computed once (the cache),
    and the labels stay those of whole-image prediction."""
    from slimseg.distributed import Job, predict_zarr
    from slimseg.large import _grow, block_grid
    from slimseg.predict import tile_plan

    seg, img = fake_segmenter(tile=64, overlap=16), disks_image(size=260, n=110)
    seg.model_fn = wide_context_model
    whole = run(seg.predict_events(img)).labels
    lcfg, cfg = LargeConfig(block=100, margin=24), seg.predict_config
    plan = tile_plan(260, 260, cfg, seg.model_config.size_multiple)
    regions = [_grow(c, lcfg.margin, (260, 260)) for c in block_grid((260, 260), lcfg.block).values()]
    without_cache = sum(len(p.ys) * len(p.xs) for p in (plan.within(*r) for r in regions))
    assert without_cache > 1.5 * len(plan.ys) * len(plan.xs)  # what the margins cost without it

    log, model_fn = [], seg.model_fn
    seg.model_fn = _tile_counter(model_fn, log)
    run(predict_large(seg, img, tmp_path / "a.zarr", lcfg=lcfg))
    assert sum(log) == len(plan.ys) * len(plan.xs)
    assert _bijection(whole, read_labels(tmp_path / "a.zarr")[:])

    log.clear()  # the command line's path (slimseg predict --out-format zarr): the same
    tifffile.imwrite(tmp_path / "in.tif", img)
    run(predict_zarr(seg, Job(str(tmp_path / "in.tif"), str(tmp_path / "b.zarr"), "zarr"), None, None, lcfg))
    assert sum(log) == len(plan.ys) * len(plan.xs)
    assert _bijection(whole, read_labels(tmp_path / "b.zarr")[:])


def test_a_small_tile_cache_segments_the_blocks_in_strips(tmp_path, monkeypatch):
    """Where two rows of tiles across the image do not fit in the cache, blocks go row by row within
    vertical strips: only the tiles at the strips' seams are computed twice; labels are the same."""
    from slimseg import large
    from slimseg.predict import tile_plan

    seg, img = fake_segmenter(tile=64, overlap=16), disks_image(size=260, n=110)
    seg.model_fn = wide_context_model
    whole = run(seg.predict_events(img)).labels
    lcfg = LargeConfig(block=100, margin=24)
    plan = tile_plan(260, 260, seg.predict_config, seg.model_config.size_multiple)
    # room for 30 tiles: a block's region touches up to 20, two rows across two blocks' regions are 12
    monkeypatch.setattr(large, "CACHE_BYTES", 2 * plan.th * plan.tw * 4 * 30)
    order, cache = large.block_schedule(img.shape, seg.predict_config, lcfg, seg.model_config.size_multiple)
    assert order[:4] == [(0, 0), (1, 0), (2, 0), (0, 1)] and cache.lookahead == 2
    log, model_fn = [], seg.model_fn
    seg.model_fn = _tile_counter(model_fn, log)
    run(predict_large(seg, img, tmp_path / "a.zarr", lcfg=lcfg))
    assert len(plan.ys) * len(plan.xs) < sum(log) < 1.5 * len(plan.ys) * len(plan.xs)
    assert _bijection(whole, read_labels(tmp_path / "a.zarr")[:])


class _Interrupting:
    """A model that raises KeyboardInterrupt (Ctrl-C) at its ``at``-th call; counts its calls and tiles."""

    def __init__(self, model_fn, at=None):
        self.model_fn, self.at, self.calls, self.tiles = model_fn, at, 0, 0

    def __call__(self, x):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        self.tiles += x.shape[0]
        return self.model_fn(x)


def test_an_interrupted_large_prediction_goes_on_from_its_finished_blocks(tmp_path):
    from slimseg.distributed import Job, predict_zarr
    from slimseg.large import partial_path

    seg, img = fake_segmenter(tile=64, overlap=16), disks_image(size=260, n=110)
    tifffile.imwrite(tmp_path / "in.tif", img)
    lcfg = LargeConfig(block=100, margin=24)

    def job(name, model_fn, model_id="m1"):
        seg.model_fn = model_fn
        return predict_zarr(seg, Job(str(tmp_path / "in.tif"), str(tmp_path / name), "zarr"), None, None, lcfg,
                            model_id=model_id)

    fresh = _Interrupting(wide_context_model)
    run(job("fresh.zarr", fresh))
    ref = read_labels(tmp_path / "fresh.zarr")[:]
    assert not partial_path(tmp_path / "fresh.zarr").exists()

    cut = _Interrupting(wide_context_model, at=fresh.calls // 2)
    with pytest.raises(KeyboardInterrupt):
        run(job("out.zarr", cut))
    partial = partial_path(tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists() and (partial / "progress.json").exists()
    finished = len(json.loads((partial / "progress.json").read_text())["blocks"])
    assert 0 < finished < 9

    events = []
    run(job("out.zarr", _Interrupting(wide_context_model)), events.append)
    assert any(f"{finished} of 9 blocks were done" in getattr(e, "text", "") for e in events)
    blocks = [e.done for e in events if getattr(e, "stage", "") == "blocks"]
    assert blocks == list(range(finished + 1, 10))  # the finished blocks were not segmented again
    assert np.array_equal(read_labels(tmp_path / "out.zarr")[:], ref)  # the same labels, the same ids
    assert not partial.exists() and sorted(p.name for p in (tmp_path / "out.zarr").iterdir()) == \
        sorted(p.name for p in (tmp_path / "fresh.zarr").iterdir())  # no trace of the record in the store

    with pytest.raises(KeyboardInterrupt):  # another model (or settings): its partial is not continued
        run(job("other.zarr", _Interrupting(wide_context_model, at=fresh.calls // 2)))
    other = _Interrupting(wide_context_model)
    run(job("other.zarr", other, model_id="m2"))
    assert other.tiles == fresh.tiles
    assert np.array_equal(read_labels(tmp_path / "other.zarr")[:], ref)


def test_the_run_record_keeps_finished_blocks_and_forgets_a_relabelling(tmp_path):
    from slimseg.large import BlockResult, _RunRecord

    record = _RunRecord(tmp := tmp_path, "key")
    assert record.load() is None  # nothing yet
    reach = {(0, 1): np.array([[0, 3], [3, 3]], np.uint32)}
    record.update({(0, 0): 3}, res=BlockResult((0, 0), np.zeros((2, 2), np.uint32), 3, reach))
    (got,) = record.load().values()
    assert got.index == (0, 0) and got.n == 3 and np.array_equal(got.reach[(0, 1)], reach[(0, 1)])
    assert _RunRecord(tmp, "another key").load() is None
    record.update({(0, 0): 3}, phase="relabel")  # ids were being rewritten in place: nothing to continue
    assert record.load() is None
    (tmp / "progress.json").write_text("{not json")
    assert record.load() is None


def test_an_unreadable_record_starts_again(tmp_path):
    from slimseg.distributed import Job, predict_zarr
    from slimseg.large import partial_path

    tifffile.imwrite(tmp_path / "in.tif", disks_image())
    partial = partial_path(tmp_path / "out.zarr")
    partial.mkdir()
    (partial / "progress.json").write_text("{not json")
    seg = fake_segmenter()
    seg.model_fn = counted = _Interrupting(wide_context_model)
    run(predict_zarr(seg, Job(str(tmp_path / "in.tif"), str(tmp_path / "out.zarr"), "zarr"), None, None,
                     LargeConfig(block=100, margin=20), model_id="m"))
    assert counted.calls > 0 and not partial.exists() and read_labels(tmp_path / "out.zarr")[:].max() > 0


def test_large_objects_are_predicted_block_by_block_at_a_smaller_scale(tmp_path):
    """As in memory (tests/core/test_scale.py): objects four times the model's trained size are predicted
    at 1/4 scale, block by block, with full-size labels, one id per object across block borders."""
    from test_scale import ShapeRecorder

    from slimseg.config import ModelConfig, NormConfig, PredictConfig
    from slimseg.metrics import instance_scores
    from slimseg.segmenter import Segmenter

    yy, xx = np.mgrid[:600, :600]
    truth = np.zeros((600, 600), np.uint16)
    for k, (cy, cx) in enumerate([(y, x) for y in range(50, 600, 100) for x in range(50, 600, 100)], 1):
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 <= 20 ** 2] = k  # 36 discs of diameter 41, a third on block borders
    img = np.where(truth > 0, 200, 20).astype(np.uint16)
    lcfg = LargeConfig(block=200, margin=48)
    for rescale, f1 in ((True, 1.0), (False, None)):
        model = ShapeRecorder()
        seg = Segmenter(model, ModelConfig(widths=(4, 8)), NormConfig(), "float",
                        predict_config=PredictConfig(trained_diameter=10.0, min_size=0, rescale=rescale))
        events = []
        res = run(predict_large(seg, img, tmp_path / f"{rescale}.zarr", lcfg=lcfg), events.append)
        labels = read_labels(tmp_path / f"{rescale}.zarr")[:]
        sides = [min(s) for s in model.shapes]
        if rescale:
            assert any("1/4 scale" in getattr(e, "text", "") for e in events)
            assert sides[0] == 600 and max(sides[1:]) <= 600 // 4  # the estimate, then each block at 1/4 scale
            assert instance_scores(labels, truth)["instance_f1"] == f1 and res.n_objects == 36
            assert instance_scores(labels, truth)["dsb_score"] > 0.8
        else:
            assert not any("scale" in getattr(e, "text", "") for e in events) and min(sides) >= 64

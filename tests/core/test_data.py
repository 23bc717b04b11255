import numpy as np
import pytest
import tifffile

from slimseg.config import NormConfig
from slimseg.data import (Normalizer, PatchSampler, as_image, as_labels, blend_window, check_pairs,
                          load_folder, split_indices, targets_from_labels, tile_starts)
from slimseg.errors import InputError


def test_as_image_shapes():
    assert as_image(np.zeros((5, 6), np.uint8)).shape == (5, 6)
    grey_rgb = np.repeat(np.arange(30, dtype=np.uint8).reshape(5, 6, 1), 3, axis=2)
    assert as_image(grey_rgb).shape == (5, 6)  # equal channels -> grey
    rgba = np.zeros((5, 6, 4), np.uint8)
    assert as_image(rgba, in_channels=3).shape == (5, 6, 3)
    with pytest.raises(InputError, match="RGB"):
        as_image(np.random.default_rng(0).integers(0, 255, (5, 6, 3)).astype(np.uint8))
    with pytest.raises(InputError, match="stack"):
        as_image(np.zeros((7, 5, 6)))
    with pytest.raises(InputError, match="NaN"):
        as_image(np.array([[1.0, np.nan], [np.inf, 0.0]]))


def test_as_labels():
    with pytest.raises(InputError, match="integer"):
        as_labels(np.zeros((3, 3), np.float32))
    with pytest.raises(InputError, match="differs"):
        as_labels(np.zeros((3, 3), np.uint8), shape=(3, 4))
    mask = np.array([[1, 1, 0, 1]], bool)
    assert as_labels(mask).max() == 2  # boolean mask -> connected components


def test_check_pairs_refuses_no_foreground_and_mismatch():
    img = np.zeros((8, 8), np.uint8)
    with pytest.raises(InputError, match="no objects"):
        check_pairs([img], [np.zeros((8, 8), np.uint8)])
    with pytest.raises(InputError, match="2 images but 1"):
        check_pairs([img, img], [np.ones((8, 8), np.uint8)])


def test_load_folder_pairs_by_name_and_reports_unmatched(data_folder):
    names, images, labels = load_folder(data_folder)
    assert names == ["img0", "img1", "img2", "img3"] and images[0].shape == labels[0].shape
    tifffile.imwrite(data_folder / "images" / "orphan.tif", images[0])
    with pytest.raises(InputError, match="orphan"):
        load_folder(data_folder)
    with pytest.raises(InputError, match="images/ and labels/"):
        load_folder(data_folder / "images")


def test_normalizer_percentiles():
    img = np.arange(101, dtype=np.float32).reshape(1, 101)
    n = Normalizer.fit(img, NormConfig(pmin=10, pmax=90))
    assert (n.lo, n.hi) == pytest.approx((10.0, 90.0))
    out = n(img)
    assert out.shape == (1, 1, 101) and out[0, 0, 10] == pytest.approx(0) and out[0, 0, 90] == pytest.approx(1)
    flat = Normalizer.fit(np.full((4, 4), 7.0), NormConfig())
    assert np.isfinite(flat(np.full((4, 4), 7.0))).all()


def test_normalizer_per_channel_except_rgb():
    two = np.stack([np.arange(101, dtype=np.float32), 1000 + 10 * np.arange(101, dtype=np.float32)], -1)[None]
    each = Normalizer.fit(two, NormConfig(pmin=0, pmax=100))  # (1, 101, 2): two channels, each its own range
    assert each.lo == pytest.approx((0.0, 1000.0)) and each.hi == pytest.approx((100.0, 2000.0))
    out = each(two)
    assert out.shape == (2, 1, 101) and out[:, 0, 100] == pytest.approx([1, 1]) and out[:, 0, 0] == pytest.approx([0, 0])
    rgb = np.concatenate([two, two[..., :1]], -1)  # 3 channels: RGB, normalised together as before
    joint = Normalizer.fit(rgb, NormConfig(pmin=0, pmax=100))
    assert (joint.lo, joint.hi) == pytest.approx((0.0, 2000.0))
    assert Normalizer.fit(rgb, NormConfig(pmin=0, pmax=100, per_channel=True)).lo == pytest.approx((0, 1000, 0))
    assert np.isscalar(Normalizer.fit(two, NormConfig(per_channel=False)).lo)


def test_targets_from_labels_centredness():
    lab = np.zeros((9, 14), np.uint16)
    lab[1:8, 1:8] = 1  # 7x7 square
    lab[1:8, 8:13] = 2  # touching 7x5 block
    t = targets_from_labels(lab)
    assert t.shape == (2, 9, 14) and t.dtype == np.uint8
    assert (t[0] == 255 * (lab > 0)).all()
    assert t[1, 4, 4] == 255  # the centre of object 1
    assert t[1, 4, 7] == 0 and t[1, 4, 8] == 0  # the touching rims separate the cores
    cores = t[1] > 127
    from scipy import ndimage as ndi
    assert ndi.label(cores)[1] == 2


def test_split_indices_seeded_and_disjoint():
    tr, va = split_indices(10, 0.2, seed=3)
    assert len(va) == 2 and not set(tr) & set(va) and sorted(tr + va) == list(range(10))
    assert split_indices(10, 0.2, seed=3) == (tr, va)
    assert split_indices(2, 0.2, 0)[1] != []  # at least one validation image
    assert split_indices(1, 0.2, 0) == ([0], [])


def test_patch_sampler_pads_small_images_and_is_seeded():
    img = np.random.default_rng(0).random((1, 10, 12)).astype(np.float32)
    tgt = np.zeros((2, 10, 12), np.uint8)
    s1 = PatchSampler([img], [tgt], patch=16, seed=1)
    x, y = s1.batch(3)
    assert x.shape == (3, 1, 16, 16) and y.shape == (3, 2, 16, 16) and x.dtype == np.float32
    x2, _ = PatchSampler([img], [tgt], patch=16, seed=1).batch(3)
    np.testing.assert_array_equal(x, x2)


def test_tiling():
    assert tile_starts(100, 40, 10) == [0, 30, 60]
    assert tile_starts(30, 40, 10) == [0]
    starts = tile_starts(1000, 256, 32)
    assert starts[-1] == 1000 - 256 and all(b - a <= 256 - 32 for a, b in zip(starts, starts[1:]))
    w = blend_window(8, 6, 2)
    assert w.shape == (8, 6) and w.min() > 0 and w[4, 3] == 1.0 and w[0, 0] < w[1, 1]


def test_a_single_image_splits_into_train_and_validation_regions():
    from slimseg.data.patches import split_regions

    img, lab = np.arange(200 * 60, dtype=np.float32).reshape(200, 60), np.zeros((200, 60), np.uint16)
    lab[170:190, 10:30] = 3
    names, images, labels = split_regions(img, lab, 0.2, "one")
    assert names == ["one [rows 0-160]", "one [rows 160-200]"]
    assert [i.shape for i in images] == [(160, 60), (40, 60)]
    assert np.array_equal(np.concatenate(images), img) and np.array_equal(np.concatenate(labels), lab)
    assert split_regions(img, lab, 0.0) is None
    assert split_regions(img[:100], lab[:100], 0.2) is None  # a region would be too narrow to validate on
    names, images, _ = split_regions(img.T, lab.T, 0.5)
    assert names[1] == "image [columns 100-200]" and images[1].shape == (60, 100)


def test_training_on_one_image_validates_on_a_region_of_it():
    from _synthetic import make_disks

    from slimseg.config import ModelConfig, TrainConfig
    from slimseg.training import Trainer

    images, labels = make_disks(n_images=1, size=200, n_disks=12)
    trainer = Trainer(images, labels, TrainConfig(epochs=1, patch_size=32, patches_per_epoch=4, batch_size=4,
                                                  device="cpu", bf16="off"), ModelConfig.from_depth(2, 4))
    assert trainer.split == {"train": ["image 0 [rows 0-160]"], "val": ["image 0 [rows 160-200]"]}
    assert [img.shape for img, _ in trainer.val] == [(40, 200)] and trainer.sampler.images[0].shape[-2] == 160
    from slimseg.errors import TrainingFailedError
    from slimseg.events import run

    try:
        history = run(trainer.fit()).history
    except TrainingFailedError:  # one step may learn next to nothing: refused, but it was validated
        history = trainer.result(recalibrate=False).history
    assert not np.isnan(history[0]["val_dice"])  # validation ran


def _disk_grid(size=512, spacing=40, radius=10):
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    k = 0
    for cy in range(spacing // 2, size, spacing):
        for cx in range(spacing // 2, size, spacing):
            k += 1
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = k
    return labels


def _largest_objects(sampler, n=24):
    from scipy import ndimage as ndi

    _, y = sampler.batch(n)
    out = []
    for t in y:
        comp, k = ndi.label(t[0] >= 128)
        out.append(np.bincount(comp.ravel())[1:].max() if k else 0)
    return np.array(out)


def test_zoom_augmentation_scales_image_and_target_together():
    labels = _disk_grid()
    img = (labels > 0)[None].astype(np.float32)
    tgt = targets_from_labels(labels)
    plain = _largest_objects(PatchSampler([img], [tgt], patch=64, seed=0, augment=True))
    # without zoom every patch holds a whole disk of the same area (rotations and flips keep it)
    assert plain.min() == plain.max() == np.count_nonzero(labels == 1)
    zoomed = PatchSampler([img], [tgt], patch=64, seed=0, augment=True, zoom=2.0)
    areas = _largest_objects(zoomed, 64)
    assert areas.max() / areas.min() > 3  # disks shrunk up to 2x and grown up to 2x in each axis
    x, y = zoomed.batch(16)
    for xi, yi in zip(x, y):  # the image's disks stay where the target's are
        assert np.corrcoef(xi[0].ravel(), yi[0].ravel())[0, 1] > 0.8
    with pytest.raises(InputError, match="zoom"):
        PatchSampler([img], [tgt], patch=64, seed=0, zoom=0.5)

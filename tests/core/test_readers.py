"""The reader layer: TIFF / OME-TIFF / ImageJ, PNG, zarr and OME-Zarr -> an array and its axes."""

import sys

import numpy as np
import pytest
import tifffile

from slimseg.data.folder import list_images, load_folder, read_image
from slimseg.data.readers import ImageData, is_zarr, read
from slimseg.errors import InputError

zarr = pytest.importorskip("zarr")

RNG = np.random.default_rng(0)


def test_tiff_axes_from_metadata(tmp_path):
    plain = RNG.integers(0, 255, (3, 16, 20), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "plain.tif", plain)
    got = read(tmp_path / "plain.tif")
    assert got.shape == (3, 16, 20) and set(got.axes[:1]) <= {"Q"} and got.axes.endswith("YX")
    np.testing.assert_array_equal(got.asarray(), plain)

    hyper = RNG.integers(0, 255, (4, 2, 16, 20), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "hyper.tif", hyper, imagej=True, metadata={"axes": "ZCYX"})
    assert read(tmp_path / "hyper.tif").axes == "ZCYX"
    tifffile.imwrite(tmp_path / "cells.ome.tif", hyper, ome=True, metadata={"axes": "TCYX"})
    ome = read(tmp_path / "cells.ome.tif")
    assert ome.axes == "TCYX" and ome.shape == (4, 2, 16, 20)

    rgb = RNG.integers(0, 255, (16, 20, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    assert read(tmp_path / "rgb.tif").axes == "YXS"


def test_png_grey_rgb_and_grey_alpha(tmp_path):
    from skimage import io

    grey = RNG.integers(0, 255, (16, 20), dtype=np.uint8)
    io.imsave(tmp_path / "g.png", grey, check_contrast=False)
    assert read(tmp_path / "g.png").axes == "YX"
    rgb = RNG.integers(0, 255, (16, 20, 3), dtype=np.uint8)
    io.imsave(tmp_path / "c.png", rgb, check_contrast=False)
    got = read(tmp_path / "c.png")
    assert got.axes == "YXS" and np.array_equal(got.asarray(), rgb)
    io.imsave(tmp_path / "ga.png", np.stack([grey, np.full_like(grey, 255)], axis=-1), check_contrast=False)
    got = read(tmp_path / "ga.png")
    assert got.axes == "YX" and np.array_equal(got.asarray(), grey)


def test_zarr_array_stays_lazy_and_ome_zarr_gives_its_highest_resolution(tmp_path):
    data = RNG.integers(0, 255, (3, 16, 20), dtype=np.uint8)
    arr = zarr.open(str(tmp_path / "plain.zarr"), mode="w", shape=data.shape, dtype=data.dtype, chunks=(1, 8, 8))
    arr[:] = data
    got = read(tmp_path / "plain.zarr")
    assert not isinstance(got.data, np.ndarray) and got.axes is None  # an array-like, read when sliced
    np.testing.assert_array_equal(np.asarray(got.data[1]), data[1])

    root = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w")
    full = RNG.integers(0, 255, (2, 3, 16, 20), dtype=np.uint16)
    for level, values in (("0", full), ("1", full[..., ::2, ::2])):
        a = root.create_array(level, shape=values.shape, dtype=values.dtype) if hasattr(root, "create_array") \
            else root.create_dataset(level, shape=values.shape, dtype=values.dtype)
        a[:] = values
    axes = [{"name": "c", "type": "channel"}, {"name": "z", "type": "space"},
            {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    root.attrs["multiscales"] = [{"version": "0.4", "axes": axes,
                                  "datasets": [{"path": "0"}, {"path": "1"}]}]
    got = read(tmp_path / "img.ome.zarr")
    assert got.axes == "CZYX" and got.shape == (2, 3, 16, 20)
    np.testing.assert_array_equal(np.asarray(got.data), full)
    assert is_zarr(tmp_path / "img.ome.zarr") and list_images(tmp_path / "img.ome.zarr") == [tmp_path / "img.ome.zarr"]
    assert {p.name for p in list_images(tmp_path)} == {"plain.zarr", "img.ome.zarr"}

    zarr.open_group(str(tmp_path / "bare.zarr"), mode="w")
    with pytest.raises(InputError, match="without OME-Zarr multiscales"):
        read(tmp_path / "bare.zarr")


def test_reader_errors(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="no such file"):
        read(tmp_path / "missing.tif")
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="cannot read it as an image"):
        read(tmp_path / "broken.tif")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        read(tmp_path / "folder")
    (tmp_path / "x.zarr").mkdir()
    monkeypatch.setitem(sys.modules, "zarr", None)  # as if zarr were not installed
    with pytest.raises(InputError, match=r"needs the optional package zarr.*napari-slimseg\[zarr\]"):
        read(tmp_path / "x.zarr")


def test_read_image_is_the_array_as_stored(tmp_path):
    data = RNG.integers(0, 255, (2, 8, 8), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", data)
    assert np.array_equal(read_image(tmp_path / "a.tif"), data)
    assert isinstance(read(tmp_path / "a.tif"), ImageData)


def test_load_folder_splits_stacks_and_reads_channel_axes(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    labels = np.zeros((3, 16, 16), np.uint16)
    labels[:, 4:10, 4:10] = 1
    image = np.stack([labels * 100, np.full_like(labels, 7)], axis=1).astype(np.uint16)  # (Z, C, Y, X)
    tifffile.imwrite(tmp_path / "images" / "cells.ome.tif", image, ome=True, metadata={"axes": "ZCYX"})
    tifffile.imwrite(tmp_path / "labels" / "cells.ome.tif", labels)
    names, images, labs = load_folder(tmp_path)
    assert names == ["cells[0]", "cells[1]", "cells[2]"]
    assert images[0].shape == (16, 16, 2) and labs[0].shape == (16, 16)
    assert np.array_equal(images[0][..., 1], np.full((16, 16), 7))
    from slimseg.config import ChannelConfig

    _, images, _ = load_folder(tmp_path, ChannelConfig(channels=(0,)))
    assert images[0].shape == (16, 16)
    with pytest.raises(InputError, match="channel 4 is out of range: axis 1 .* holds 2 channels"):
        load_folder(tmp_path, ChannelConfig(channels=(0, 4)))

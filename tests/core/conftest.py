import pytest
from _synthetic import make_disks


@pytest.fixture
def disks():
    return make_disks()


@pytest.fixture
def data_folder(tmp_path, disks):
    import tifffile

    images, labels = disks
    for sub in ("images", "labels"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i, (img, lab) in enumerate(zip(images, labels)):
        tifffile.imwrite(tmp_path / "data" / "images" / f"img{i}.tif", img)
        tifffile.imwrite(tmp_path / "data" / "labels" / f"img{i}.tif", lab)
    return tmp_path / "data"

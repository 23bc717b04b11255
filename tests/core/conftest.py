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


@pytest.fixture(autouse=True, scope="session")
def _private_compile_cache(tmp_path_factory):
    """torch.compile's cache (slimseg.kinds.compile_cache) in a folder of the test session, not the user's."""
    import os

    old = os.environ.get("SLIMSEG_CACHE_DIR")
    os.environ["SLIMSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("slimseg-cache"))
    yield
    if old is None:
        del os.environ["SLIMSEG_CACHE_DIR"]
    else:
        os.environ["SLIMSEG_CACHE_DIR"] = old

import numpy as np
import pytest


def make_disks(n_images=4, size=48, seed=0, n_disks=4, radius=5):
    """Bright noisy disks on a dark background, with their instance labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n_images):
        lab = np.zeros((size, size), np.uint16)
        for k in range(1, n_disks + 1):
            cy, cx = rng.integers(radius + 1, size - radius - 1, 2)
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = k
        img = (lab > 0) * 150.0 + rng.normal(20, 8, (size, size))
        images.append(np.clip(img, 0, 255).astype(np.uint8))
        labels.append(lab)
    return images, labels


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

"""napari sample data: a real DSB2018 nuclei image with its ground-truth labels."""

from __future__ import annotations

ATTRIBUTION = ("DSB2018 / BBBC038v1 (Caicedo et al., Nature Methods 2019), CC0; "
               "see slimseg/sample_data/README.md")


def nuclei_sample():
    from ..sample import load_sample

    names, images, labels = load_sample("test")
    i = max(range(len(images)), key=lambda k: images[k].size)  # the largest test image
    meta = {"metadata": {"source": ATTRIBUTION, "id": names[i]}}
    return [
        (images[i], {"name": "nuclei", **meta}, "image"),
        (labels[i], {"name": "nuclei labels (ground truth)", **meta}, "labels"),
    ]

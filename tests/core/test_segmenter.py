"""A Segmenter builds from in-memory model-file content (a model trained in a napari session) exactly as
from the saved file."""

import torch

from slimseg import io
from slimseg.config import ModelConfig, NormConfig
from slimseg.model import UNet
from slimseg.segmenter import from_model_file, load_segmenter


def test_segmenter_from_in_memory_model_file_matches_loaded_file(tmp_path):
    torch.manual_seed(0)
    model = UNet(ModelConfig(widths=(4, 8))).eval()
    mf = io.from_module(model, model.config, NormConfig())
    x = torch.rand(1, 1, 32, 32)
    in_memory = from_model_file(mf)
    from_disk = load_segmenter(io.save(mf, tmp_path / "m.slimseg"))
    with torch.inference_mode():
        expected = model(x)
        # float models run channels-last: equal up to float rounding
        torch.testing.assert_close(in_memory.model_fn(x), expected)
        torch.testing.assert_close(from_disk.model_fn(x), expected)
    assert from_disk.meta["path"].endswith("m.slimseg")

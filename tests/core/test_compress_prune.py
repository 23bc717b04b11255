"""Pruning on tiny models: exact global sparsity stored sparse, structured widths honoured in the
config, masks kept through fine-tuning, prune-then-quantise."""

import numpy as np
import pytest
import torch

from slimseg import io
from slimseg.compress import CompressConfig, compress
from slimseg.compress.prune import apply_masks, magnitude_masks, prune_channels
from slimseg.config import ModelConfig, NormConfig
from slimseg.errors import InputError, ModelFileError
from slimseg.events import run
from slimseg.kinds.sparse import dense_tensors
from slimseg.model import UNet, count_parameters
from slimseg.segmenter import from_model_file

FAST = {"calibration_patches": 8, "patch_size": 32, "batch_size": 4, "backend": "pt2e"}


def model_file(widths=(8, 16, 32), seed=0):
    torch.manual_seed(seed)
    model = UNet(ModelConfig(widths=widths)).eval()
    return io.from_module(model, model.config, NormConfig())


def test_magnitude_masks_drop_exactly_the_smallest_weights_network_wide():
    model = UNet(ModelConfig(widths=(4, 8)))
    masks = magnitude_masks(model, 0.3)
    params = dict(model.named_parameters())
    kept = torch.cat([params[n].detach().abs()[m] for n, m in masks.items()])
    dropped = torch.cat([params[n].detach().abs()[~m] for n, m in masks.items()])
    total = sum(m.numel() for m in masks.values())
    assert dropped.numel() == round(0.3 * total)
    assert kept.min() >= dropped.max()
    assert len(masks) == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    # one threshold for all layers: layers are not pruned evenly
    fractions = {float((~m).float().mean()) for m in masks.values()}
    assert len(fractions) > 1


@pytest.mark.parametrize("sparsity", [0.0, 1.0])
def test_magnitude_masks_refuse_a_sparsity_outside_zero_one(sparsity):
    with pytest.raises(InputError, match="strictly between"):
        magnitude_masks(UNet(ModelConfig(widths=(4, 8))), sparsity)


def test_unstructured_file_is_sparse_smaller_and_keeps_masks_through_fine_tuning(disks, tmp_path):
    src = model_file()
    images, labels = disks
    cfg = CompressConfig(method="prune-unstructured", ratio=0.8, max_steps=2, **FAST)
    mf = run(compress(src, images, labels, cfg))
    assert mf.kind == "float-sparse"
    comp = mf.meta["compression"]
    assert comp["sparsity"] == pytest.approx(0.8, abs=1e-3) and comp["fine_tune"]["steps"] == 2
    dense = dense_tensors(io.load(io.save(mf, tmp_path / "s.slimseg")))
    conv_w = [k for k in mf.meta["sparse"]["weights"]]
    zeros = sum(int((dense[k] == 0).sum()) for k in conv_w)
    assert zeros >= 0.8 * sum(dense[k].size for k in conv_w) - 1
    assert comp["nonzero_parameters"] == comp["parameters"] - round(0.8 * sum(dense[k].size for k in conv_w))
    float_size = io.save(src, tmp_path / "f.slimseg").stat().st_size
    assert (tmp_path / "s.slimseg").stat().st_size < 0.5 * float_size
    seg = from_model_file(io.load(tmp_path / "s.slimseg"))
    assert seg.kind == "float-sparse" and "not time" in seg.meta["runtime"]
    assert seg.predict(images[0][:45, :37]).shape == (45, 37)


def test_apply_masks_zeroes_the_dropped_weights():
    model = UNet(ModelConfig(widths=(4, 8)))
    masks = magnitude_masks(model, 0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # as an optimiser step would
    apply_masks(model, masks)
    params = dict(model.named_parameters())
    assert all(torch.all(params[n][~m] == 0) for n, m in masks.items())


def test_a_damaged_sparse_file_is_refused(disks):
    mf = run(compress(model_file(), disks[0], disks[1], CompressConfig(method="prune-unstructured", minutes=0, **FAST)))
    name = next(iter(mf.meta["sparse"]["weights"]))
    del mf.tensors[name + ".mask"]
    with pytest.raises(ModelFileError, match="damaged"):
        from_model_file(mf)


def test_a_sparse_file_declaring_a_huge_weight_is_refused_before_allocating(disks):
    mf = run(compress(model_file(), disks[0], disks[1], CompressConfig(method="prune-unstructured", minutes=0, **FAST)))
    name = next(iter(mf.meta["sparse"]["weights"]))
    mf.meta["sparse"]["weights"][name] = [1 << 20, 1 << 20, 3, 3]  # 36 TiB of float32 if allocated
    with pytest.raises(ModelFileError, match="does not have|do not have"):
        from_model_file(mf)


def test_structured_pruning_writes_the_pruned_widths_into_the_config():
    model = UNet(ModelConfig(widths=(8, 16, 32)))
    pruned = prune_channels(model, 0.5)
    assert pruned.config.widths == (4, 8, 16) and pruned.config.dec_widths() == (8, 4)
    rebuilt = UNet(pruned.config)
    rebuilt.load_state_dict(pruned.state_dict())  # strict: widths fit every tensor
    ratio = count_parameters(pruned) / count_parameters(model)
    assert 0.24 < ratio < 0.27  # about (1 - 0.5)**2
    pruned = prune_channels(model, 0.25)
    assert pruned.config.widths == (6, 12, 24)


def test_prune_structured_fine_tunes_and_loads_as_a_float_model(disks, tmp_path):
    src = model_file()
    images, labels = disks
    events = []
    cfg = CompressConfig(method="prune-structured", ratio=0.5, max_steps=2, **FAST)
    mf = run(compress(src, images, labels, cfg), events.append)
    assert mf.kind == "float" and mf.model_config.widths == (4, 8, 16)
    assert mf.meta["compression"]["widths"] == [4, 8, 16]
    texts = [getattr(e, "text", "") for e in events]
    assert any("widths [8, 16, 32] -> [4, 8, 16]" in t for t in texts)
    assert any("head refitted" in t for t in texts) and "head_refit_rms" in mf.meta["compression"]
    from slimseg.tune import SEED_THRESHOLDS

    tuned = mf.meta["compression"]["thresholds"]
    assert tuned["tuned_on_images"] == len(images) and tuned["seed_threshold"] in SEED_THRESHOLDS + (0.5,)
    assert tuned["instance_f1"] >= tuned["inherited"]["instance_f1"]
    if tuned["changed"]:
        assert tuned["instance_f1"] > tuned["inherited"]["instance_f1"] + 0.01
        assert mf.meta["predict"]["seed_threshold"] == tuned["seed_threshold"]
    else:
        assert mf.meta.get("predict") is None and tuned["seed_threshold"] == 0.5  # the default kept
    seg = from_model_file(io.load(io.save(mf, tmp_path / "p.slimseg")))
    assert count_parameters(seg.module) == mf.meta["compression"]["parameters"]
    assert seg.predict(images[0]).shape == images[0].shape


def test_prune_then_quantise_keeps_the_pruned_widths(disks, tmp_path):
    src = model_file()
    images, labels = disks
    mf = run(compress(src, images, labels, CompressConfig(method="prune-ptq", ratio=0.5, max_steps=1, **FAST)))
    assert mf.kind == "int8-pt2e" and mf.model_config.widths == (4, 8, 16)
    assert ["encoders.0.0.weight", [4, 1, 3, 3]] in mf.meta["int8"]["weight_layout"]
    assert mf.tensors["weights_int8"].dtype == np.int8
    assert "history" not in mf.meta.get("training", {})
    seg = from_model_file(io.load(io.save(mf, tmp_path / "pq.slimseg")), engine="reference")
    assert seg.predict(images[0][:40, :44]).shape == (40, 44)


def test_pruning_needs_labels_unless_it_does_not_fine_tune(disks):
    src = model_file()
    with pytest.raises(InputError, match="label"):
        run(compress(src, disks[0], None, CompressConfig(method="prune-structured", max_steps=1, **FAST)))
    mf = run(compress(src, disks[0], None, CompressConfig(method="prune-structured", minutes=0, **FAST)))
    assert mf.model_config.widths == (4, 8, 16)


def test_a_pruned_model_cannot_be_unstructured_pruned_again(disks):
    mf = run(compress(model_file(), disks[0], None, CompressConfig(method="prune-unstructured", minutes=0, **FAST)))
    with pytest.raises(InputError, match="already compressed"):
        run(compress(mf, disks[0], None, CompressConfig(method="prune-unstructured", minutes=0, **FAST)))


def test_refit_head_reproduces_the_teacher_where_features_allow_it():
    from slimseg.compress.prune import refit_head

    torch.manual_seed(0)
    teacher = UNet(ModelConfig(widths=(4, 8))).eval()
    student = UNet(ModelConfig(widths=(4, 8))).eval()
    student.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        student.head.weight.mul_(-3.0)  # wrong signs, as magnitude pruning can leave them
        student.head.bias.add_(2.0)
    batches = [torch.rand(2, 1, 32, 32) for _ in range(2)]
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        before = (student(x) - teacher(x)).abs().max()
        rms = refit_head(student, teacher, batches)
        after = (student(x) - teacher(x)).abs().max()
    assert rms < 1e-3 and after < 1e-3 < before  # same features: the refit recovers the head exactly


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_the_teacher_is_the_float_model_folded_and_channels_last(norm):
    from slimseg.compress.methods import _teacher

    torch.manual_seed(0)
    net = UNet(ModelConfig(widths=(4, 8), norm=norm)).train()
    net(torch.rand(4, 1, 32, 32))  # running BatchNorm statistics that are not the identity
    net.eval()
    teacher = _teacher(net)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(teacher(x), net(x), atol=1e-5)  # the same function
    assert not teacher.training and net.config.norm == norm  # the float model itself is left as it was
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in teacher.modules())
    assert teacher.config.norm == ("none" if norm == "batch" else norm) and not has_bn
    conv = next(m for m in teacher.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1
                and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()

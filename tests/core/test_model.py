import pytest
import torch

from slimseg.config import ModelConfig
from slimseg.errors import InputError
from slimseg.model import UNet, count_parameters, fold_batchnorm, recalibrate_batchnorm
from slimseg.segmenter import Segmenter


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (2, 1, 37, 50), (1, 1, 9, 13)])
def test_any_input_size_gives_same_size_output(shape):
    model = UNet(ModelConfig(widths=(4, 8, 16))).eval()
    out = model(torch.randn(shape))
    assert out.shape == (shape[0], 2, *shape[2:])


def test_rgb_input_and_norms():
    for norm in ("batch", "group", "none"):
        model = UNet(ModelConfig(in_channels=3, widths=(4, 8), norm=norm)).eval()
        assert model(torch.randn(1, 3, 16, 16)).shape == (1, 2, 16, 16)


def test_any_number_of_input_channels():
    model = UNet(ModelConfig(in_channels=2, widths=(4, 8), channels=(0, 2))).eval()
    assert model(torch.randn(1, 2, 16, 16)).shape == (1, 2, 16, 16)
    assert ModelConfig(in_channels=2, channels=[2, 0]).channels == (2, 0)  # a model file's JSON list


def test_widths_recorded_and_from_depth():
    cfg = ModelConfig.from_depth(depth=3, base_width=8)
    assert cfg.widths == (8, 16, 32) and cfg.depth == 3 and cfg.size_multiple == 4
    assert cfg.dec_widths() == (16, 8)
    model = UNet(cfg)
    assert model.encoders[2][0].out_channels == 32
    custom = UNet(ModelConfig(widths=(3, 5, 7), decoder_widths=(6, 2)))
    assert custom.decoders[0].block[0].out_channels == 6 and custom.head.in_channels == 2
    assert count_parameters(custom) < count_parameters(model)


def test_bad_configs():
    with pytest.raises(InputError):
        ModelConfig(widths=(8,))
    for bad in (0, 65, 2.5, True):  # any whole number of channels from 1 to MAX_CHANNELS (issue 16)
        with pytest.raises(InputError, match="in_channels"):
            ModelConfig(in_channels=bad)
    with pytest.raises(InputError, match="one index per input channel"):
        ModelConfig(in_channels=2, channels=(0, 1, 2))
    with pytest.raises(InputError):
        ModelConfig(norm="layer")


def test_recalibrate_batchnorm_matches_data_statistics():
    torch.manual_seed(0)
    model = UNet(ModelConfig(widths=(4, 8))).eval()
    bn = model.encoders[0][1]
    bn.running_mean.fill_(100.0)  # stale
    x = torch.randn(4, 1, 16, 16) * 3 + 5
    recalibrate_batchnorm(model, [x], max_batches=1)
    with torch.no_grad():
        conv_out = model.encoders[0][0](x)
    torch.testing.assert_close(bn.running_mean, conv_out.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    assert bn.momentum == 0.1 and not model.training


def _trained_looking(net: UNet) -> UNet:
    for m in net.modules():  # non-trivial statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
    return net.eval()


def test_folding_batchnorm_keeps_the_function_and_the_original():
    torch.manual_seed(0)
    net = _trained_looking(UNet(ModelConfig(widths=(4, 8))))
    folded = fold_batchnorm(net)
    assert folded.config.norm == "none" and net.config.norm == "batch"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(InputError, match="group"):
        fold_batchnorm(UNet(ModelConfig(widths=(8, 8), norm="group")))


def test_float_segmenter_runs_the_folded_model():
    torch.manual_seed(0)
    net = _trained_looking(UNet(ModelConfig(widths=(4, 8))))
    seg = Segmenter.from_module(net, None)
    assert seg.module is net
    x = torch.randn(1, 1, 24, 40)
    with torch.no_grad():
        torch.testing.assert_close(seg.model_fn(x), net(x), atol=1e-4, rtol=1e-4)

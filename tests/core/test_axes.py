"""Planes, channels, Y and X told apart: from the metadata, the model's channel count, or the labels."""

import numpy as np
import pytest

from slimseg.data.axes import count_channels, standardize, training_planes
from slimseg.data.checks import as_image
from slimseg.data.readers import ImageData
from slimseg.errors import InputError


def layout(shape, axes=None, **kw):
    std = standardize(np.zeros(shape, np.uint8), axes, **kw)
    return std.data.shape, std.plane_axes


@pytest.mark.parametrize("shape, axes, kw, expected", [
    ((64, 64), None, {}, ((64, 64), "")),
    ((10, 64, 64), None, {}, ((10, 64, 64), "Q")),  # a grey model: a stack of planes
    ((64, 64, 3), None, {}, ((64, 64, 3), "")),  # RGB stays channel-last
    ((64, 64, 4), None, {"in_channels": 3}, ((64, 64, 3), "")),  # alpha dropped
    ((2, 64, 64), None, {"in_channels": 2}, ((64, 64, 2), "")),  # channels first -> last
    ((10, 2, 64, 64), None, {"in_channels": 2}, ((10, 64, 64, 2), "Q")),  # the one axis of length 2
    ((3, 64, 64), None, {"in_channels": 2, "channels": (0, 2)}, ((64, 64, 2), "")),
    ((10, 3, 64, 64), "ZCYX", {"in_channels": 2, "channels": (2, 0)}, ((10, 64, 64, 2), "Z")),
    ((5, 6, 64, 64), "TZYX", {}, ((5, 6, 64, 64), "TZ")),
    ((64, 64, 5), "YXZ", {}, ((5, 64, 64), "Z")),  # Y and X moved last
    ((2, 64, 64), None, {"in_channels": 2, "channel_axis": 0}, ((64, 64, 2), "")),
    ((3, 64, 64), "CYX", {"in_channels": 1, "channels": (1,)}, ((64, 64), "")),
    ((3, 64, 64), None, {"labels_shape": (64, 64)}, ((64, 64, 3), "")),  # training: the labels lack C
    ((3, 64, 64), None, {"labels_shape": (3, 64, 64)}, ((3, 64, 64), "Q")),  # ... or have the stack axis
])
def test_layouts(shape, axes, kw, expected):
    assert layout(shape, axes, **kw) == expected


def test_channels_are_picked_in_the_order_given():
    image = np.stack([np.full((8, 8), c, np.uint8) for c in range(3)])  # (C, Y, X), channel c holds c
    std = standardize(ImageData(image, "CYX"), in_channels=2, channels=(2, 0))
    assert std.data[0, 0].tolist() == [2, 0] and std.channel_axis == 0 and not std.rgb


@pytest.mark.parametrize("shape, axes, kw, message", [
    ((2, 2, 64, 64), None, {"in_channels": 2},
     r"cannot tell which axis holds the channels: axes 0 and 1 of shape \(2, 2, 64, 64\) \(no axes metadata\) "
     r"could each be channels or a stack of planes; name it with --channel-axis N"),
    ((10, 3, 64, 64), None, {"in_channels": 2, "channels": (0, 2)}, "cannot tell which axis holds the channels"),
    ((10, 64, 64), None, {"in_channels": 2}, r"takes 2 channels, but shape \(10, 64, 64\) .* has no channel axis"),
    ((3, 64, 64), "CYX", {"in_channels": 2, "channels": (0, 5)},
     r"channel 5 is out of range: axis 0 of shape \(3, 64, 64\) \(axes CYX\) holds 3 channels \(indices 0..2\)"),
    ((3, 64, 64), None, {"in_channels": 2, "channels": (0, 5)},
     r"channel 5 is out of range: axis 0 of shape \(3, 64, 64\) \(no axes metadata\) holds 3"),
    ((3, 4, 64, 64), None, {"in_channels": 2, "channels": (0, 5)}, "channel 5 is out of range: no axis"),
    ((3, 64, 64), "CYX", {"in_channels": 2}, r"takes 2 channels, but .* gives 3 on axis 0; choose 2 with --channels 0,1"),
    ((3, 64, 64), "CYX", {"in_channels": 4}, "give an image with 4 channels, or train a model with in_channels=3"),
    ((10, 3, 64, 64), "ZCYX", {"in_channels": 1}, r"takes grey images \(1 channel\).*--channels 0"),
    ((64, 64), None, {"channels": (1,)}, r"channel 1 is out of range: no axis of shape \(64, 64\)"),
    ((64, 64), None, {"channels": (0, 1)}, "channel 1 is out of range"),
    ((64, 64, 3), None, {"channel_axis": 5}, "channel axis 5 is out of range .* 3 axes"),
    ((64, 64, 3), None, {"channel_axis": 1}, "cannot hold the channels"),
    ((3, 3, 64, 64), None, {"labels_shape": (3, 64, 64)}, "removing axis 0 or 1 .* leaves the labels' shape"),
    ((3, 64, 64), None, {"labels_shape": (64, 65)}, "differs from the image's"),
    ((64,), None, {}, "needs at least 2"),
])
def test_bad_layouts_say_what_was_found_and_how_to_choose(shape, axes, kw, message):
    with pytest.raises(InputError, match=message):
        layout(shape, axes, **kw)


def test_a_grey_model_takes_grey_rgb_and_refuses_colour():
    grey_rgb = np.repeat(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64, 1) % 255, 3, axis=2)
    std = standardize(grey_rgb, in_channels=1)
    assert std.rgb and as_image(std.data, 1).shape == (64, 64)
    colour = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    with pytest.raises(InputError, match=r"an RGB image .* takes grey .* --in-channels"):
        as_image(standardize(colour, in_channels=1).data, 1)
    assert as_image(np.zeros((8, 8, 5)), 5).shape == (8, 8, 5)
    with pytest.raises(InputError, match=r"channels first\?"):
        as_image(np.zeros((5, 8, 8)), 5)


def test_training_planes_and_channel_counts():
    image = np.zeros((2, 3, 16, 16), np.uint8)  # (Z, C, Y, X) without metadata: the labels tell
    names, images, labels = training_planes(image, np.zeros((2, 16, 16), np.uint16), name="a")
    assert names == ["a[0]", "a[1]"] and images[0].shape == (16, 16, 3) and labels[0].shape == (16, 16)
    assert count_channels(images) == 1  # RGB-like samples that are all equal count as grey
    two = [np.zeros((8, 8, 2)), np.ones((8, 8, 2))]
    assert count_channels(two) == 2 and count_channels([np.zeros((7, 5, 6))]) == 1  # not channel-last
    with pytest.raises(InputError, match=r"different channel counts: 1 \(g\), 2 \(c\)"):
        count_channels([np.zeros((8, 8)), np.zeros((8, 8, 2))], names=["g", "c"])


def test_channel_config_checks_its_values():
    from slimseg.config import ChannelConfig

    assert ChannelConfig(channels="2, 0", channel_axis=np.int64(-1)) == ChannelConfig((2, 0), -1)
    for bad in ({"channels": (0, 0)}, {"channels": (-1,)}, {"channels": ()}, {"channels": (1.5,)},
                {"channel_axis": "first"}, {"channel_axis": True}):
        with pytest.raises(InputError, match="channel"):
            ChannelConfig(**bad)

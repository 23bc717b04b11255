"""Stacks segmented plane by plane: ids unique across the stack, IoU stitching across z, Stop keeps planes."""

import numpy as np
import pytest
import torch

from slimseg.config import ChannelConfig, ModelConfig, NormConfig, PredictConfig
from slimseg.data.axes import standardize
from slimseg.errors import InputError
from slimseg.events import Progress, run
from slimseg.predict import Prediction
from slimseg.segmenter import Segmenter
from slimseg.stacks import StackJob, link_axis, relabel_after, stitch

SETTINGS = PredictConfig(tile=64, overlap=8, min_size=1)


def bright_model(x: torch.Tensor) -> torch.Tensor:
    """Foreground and centredness where the first channel is bright (a stand-in for a trained model)."""
    logit = (x[:, :1] - 0.5) * 20
    return torch.cat([logit, logit], dim=1)


def segmenter(in_channels: int = 1, **model) -> Segmenter:
    return Segmenter(bright_model, ModelConfig(in_channels=in_channels, widths=(4, 8), **model), NormConfig(),
                     predict_config=SETTINGS)


def squares(n_planes: int = 3, size: int = 40, shift: int = 0) -> np.ndarray:
    """Two bright squares per plane, moved right by ``shift`` pixels per plane."""
    stack = np.zeros((n_planes, size, size), np.uint8)
    for z in range(n_planes):
        stack[z, 5:15, 5 + z * shift:15 + z * shift] = 200
        stack[z, 25:35, 25:35] = 200
    return stack


def test_relabel_after_and_stitch_by_hand():
    labels, last = relabel_after(np.array([[0, 7, 7], [3, 0, 0]]), 10)
    assert last == 12 and labels.tolist() == [[0, 12, 12], [11, 0, 0]]
    previous = np.array([[5, 5, 0, 0], [5, 5, 0, 9]])
    current = np.array([[1, 1, 0, 0], [1, 0, 0, 2]])  # 1 overlaps 5 (IoU 3/4), 2 is 9 (IoU 1)
    out, last = stitch(current, previous, 0.5, 20)
    assert out.tolist() == [[5, 5, 0, 0], [5, 0, 0, 9]] and last == 20
    out, last = stitch(current, previous, 0.8, 20)  # 1's IoU is below the threshold: a new object
    assert out.tolist() == [[21, 21, 0, 0], [21, 0, 0, 9]] and last == 21
    split = np.array([[1, 2, 0, 0], [1, 2, 0, 0]])  # 5 split in two: only its best match continues it
    out, _ = stitch(split, previous, 0.1, 20)
    assert sorted(np.unique(out[:, :2]).tolist()) == [5, 21]
    empty, last = stitch(np.zeros((2, 4), np.uint32), previous, 0.5, 3)
    assert not empty.any() and last == 3


def test_stack_gives_labels_of_its_shape_with_ids_unique_across_planes():
    seg = segmenter()
    stack = squares(3)
    job = seg.stack_job(stack)
    events = []
    result = run(job.run(), events.append)
    assert result.labels.shape == (3, 40, 40) and result.labels.dtype == np.uint32 and result.complete
    ids = [set(np.unique(plane)) - {0} for plane in result.labels]
    assert [len(i) for i in ids] == [2, 2, 2] and not (ids[0] & ids[1]) and not (ids[1] & ids[2])
    planes = [e for e in events if isinstance(e, Progress) and e.stage == "planes"]
    assert [(e.done, e.total) for e in planes] == [(1, 3), (2, 3), (3, 3)] and planes[0].message == "plane 1 of 3"
    assert np.array_equal(seg.predict(stack), result.labels)  # the blocking call takes stacks too
    assert seg.predict(stack[0]).shape == (40, 40)


def test_stitching_links_overlapping_objects_into_3d_objects():
    seg = segmenter()
    stack = squares(4, shift=2)  # the first square moves 2 px per plane: IoU 8/12 with its neighbour
    linked = seg.predict(stack, PredictConfig(**{**vars(SETTINGS), "stitch_threshold": 0.5}))
    assert len(np.unique(linked)) - 1 == 2  # two objects through all planes
    assert all(len(np.unique(plane)) - 1 == 2 for plane in linked)
    strict = seg.predict(stack, PredictConfig(**{**vars(SETTINGS), "stitch_threshold": 0.9}))
    assert len(np.unique(strict)) - 1 == 5  # the moving square starts anew on each plane, the other is kept


def test_stitching_runs_along_z_for_tz_stacks():
    assert link_axis("TZ") == 1 and link_axis("ZT") == 0 and link_axis("Q") == 0 and link_axis("TQ") == 1
    assert link_axis("T") is None and link_axis("") is None  # time is never linked
    seg = segmenter()
    tz = np.stack([squares(3), squares(3)])  # (T, Z, Y, X)
    out = run(seg.stack_job(standardize(tz, "TZYX"), PredictConfig(**{**vars(SETTINGS), "stitch_threshold": 0.5})).run())
    assert out.labels.shape == (2, 3, 40, 40) and out.plane_axes == "TZ"
    assert len(np.unique(out.labels[0])) - 1 == 2 and len(np.unique(out.labels[1])) - 1 == 2
    assert not (set(np.unique(out.labels[0])) - {0}) & set(np.unique(out.labels[1]))  # time points not linked


def test_a_stopped_stack_keeps_the_planes_done():
    job = segmenter().stack_job(squares(4), keep_probabilities=True)
    gen = job.run()
    planes_seen = 0
    for event in gen:
        if isinstance(event, Progress) and event.stage == "planes":
            planes_seen += 1
            if planes_seen == 2:
                break
    gen.close()
    result = job.result()
    assert result.planes_done == 2 and result.planes == 4 and not result.complete
    assert result.labels[:2].any() and not result.labels[2:].any()
    assert result.probabilities.shape == (4, 40, 40) and result.probabilities[0].max() > 0.9


def test_channels_picked_by_index_and_recorded_channels_used():
    two = segmenter(2)
    nuclei = squares(1)[0]
    membrane = np.full_like(nuclei, 50)
    image = np.stack([membrane, nuclei, membrane])  # (C, Y, X): the model takes channels 1 and 0
    labels = two.predict(image, channels=ChannelConfig(channels=(1, 0)))
    assert labels.shape == (40, 40) and len(np.unique(labels)) - 1 == 2
    recorded = segmenter(2, channels=(1, 0))
    assert np.array_equal(recorded.predict(image), labels)  # the model file's channels by default
    with pytest.raises(InputError, match="channel 5 is out of range"):
        two.predict(image, channels=ChannelConfig(channels=(0, 5)))
    with pytest.raises(InputError, match="takes 2 channels.*gives 3 on axis 0"):
        two.predict(image, channels=ChannelConfig(channel_axis=0))
    stack = np.stack([np.stack([nuclei, membrane])] * 3)  # (Z, C, Y, X)
    assert two.predict(stack).shape == (3, 40, 40)


def test_bad_stitch_threshold():
    with pytest.raises(InputError, match="stitch_threshold"):
        PredictConfig(stitch_threshold=1.5)
    with pytest.raises(InputError, match="stitch_threshold"):
        StackJob(lambda p: iter(()), standardize(np.zeros((8, 8))), stitch_threshold=-1)


def test_plane_predictor_is_any_generator():
    def fake(plane):
        yield Progress("predict", 1, 1)
        return Prediction(np.where(plane > 0, 1, 0).astype(np.uint32), np.zeros((2, *plane.shape), np.float16))

    stack = np.zeros((2, 8, 8), np.uint8)
    stack[:, 2:4, 2:4] = 1
    result = run(StackJob(fake, standardize(stack)).run())
    assert sorted(np.unique(result.labels).tolist()) == [0, 1, 2]

import numpy as np
import pytest

from slimseg.errors import InputError
from slimseg.metrics import (SegmentationScores, confusion, instance_scores, iou_matrix, match_counts,
                             pixel_scores, pooled_dice, pooled_instance_f1, score_images)


def test_confusion_and_pixel_scores_hand_computed():
    pred = np.array([[1, 1, 0], [0, 1, 0]])
    truth = np.array([[1, 0, 0], [0, 1, 1]])
    c = confusion(pred, truth)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 2)
    s = pixel_scores(c)
    assert s["dice"] == pytest.approx(4 / 6)
    assert s["jaccard"] == pytest.approx(2 / 4)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["accuracy"] == pytest.approx(4 / 6)


def test_empty_policy():
    z = np.zeros((3, 3), int)
    assert pixel_scores(confusion(z, z))["dice"] == 1.0
    one = z.copy()
    one[1, 1] = 1
    assert pixel_scores(confusion(one, z))["dice"] == 0.0
    assert pixel_scores(confusion(z, one))["precision"] == 0.0
    assert instance_scores(z, z)["dsb_score"] == 1.0


def test_iou_matrix_and_matching():
    truth = np.array([[1, 1, 0, 2],
                      [1, 1, 0, 2]])
    pred = np.array([[5, 5, 0, 0],
                     [5, 0, 0, 7]])
    iou = iou_matrix(pred, truth)
    assert iou.shape == (2, 2)
    assert iou[0, 0] == pytest.approx(3 / 4)  # object 1 vs 5
    assert iou[1, 1] == pytest.approx(1 / 2)  # object 2 vs 7
    assert match_counts(iou, 0.5) == (1, 1, 1)  # 0.5 is not > 0.5
    with pytest.raises(InputError):
        match_counts(iou, 0.3)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.uint64, np.float32])
def test_iou_matrix_matches_a_direct_count_for_any_label_values(dtype):
    rng = np.random.default_rng(0)
    big = 60_000 if dtype == np.uint16 else 10**9  # sparse ids, beyond a dense lookup table for 10**9
    truth = rng.choice([0, 3, 9, big], size=(20, 30)).astype(dtype)
    pred = rng.choice([0, 1, 2], size=(20, 30)).astype(dtype)
    expect = np.array([[((truth == t) & (pred == p)).sum() / ((truth == t) | (pred == p)).sum()
                        for p in (1, 2)] for t in (3, 9, big)])
    np.testing.assert_allclose(iou_matrix(pred, truth), expect)


def test_iou_matrix_of_boolean_masks():
    truth = np.array([[True, True, False]])
    pred = np.array([[True, False, False]])
    np.testing.assert_allclose(iou_matrix(pred, truth), [[0.5]])


def test_dsb_score_hand_computed():
    truth = np.array([[1, 1, 0, 2],
                      [1, 1, 0, 2]])
    pred = np.array([[5, 5, 0, 0],
                     [5, 0, 0, 7]])
    s = instance_scores(pred, truth)
    # IoU 0.75 is a match at thresholds 0.5..0.70 (5 of 10): 1/(1+1+1); else 0/(0+2+2)
    assert s["dsb_score"] == pytest.approx(5 / 10 * (1 / 3))
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 1)


def test_pooled_vs_per_image_mean_differ_as_stated():
    big_t = np.zeros((10, 10), int)
    big_t[:, :5] = 1
    big_p = big_t.copy()  # perfect on the big image
    small_t = np.array([[1, 0]])
    small_p = np.array([[0, 1]])  # all wrong on the small one
    acc = SegmentationScores()
    acc.add(big_p, big_t)
    acc.add(small_p, small_t)
    s = acc.summary()
    assert s["dice"] == pytest.approx(100 / 102)  # pooled: 2*50 / (2*50 + 1 + 1)
    assert s["dice_mean"] == pytest.approx(0.5)
    assert s["n_images"] == 2
    assert s["instance_f1"] == pytest.approx(2 * 1 / (2 + 1 + 1))


def test_pooled_dice_and_instance_f1_sum_counts_over_images():
    big_t = np.zeros((10, 10), int)
    big_t[:, :5] = 1
    small_t, small_p = np.array([[1, 0]]), np.array([[0, 1]])
    assert pooled_dice([big_t > 0, small_p > 0], [big_t, small_t]) == pytest.approx(100 / 102)
    assert pooled_dice([], []) == 1.0  # nothing anywhere: perfect, as for one empty image
    # image 1: one object found, image 2: one missed and one spurious -> TP 1, FP 1, FN 1
    assert pooled_instance_f1([big_t, small_p], [big_t, small_t]) == pytest.approx(2 / (2 + 1 + 1))
    acc = SegmentationScores()
    acc.add(big_t, big_t), acc.add(small_p, small_t)
    assert acc.summary()["instance_f1"] == pooled_instance_f1([big_t, small_p], [big_t, small_t])
    with pytest.raises(ValueError):
        pooled_dice([big_t], [big_t, small_t])  # unpaired


def test_score_images_checks_shapes():
    with pytest.raises(InputError, match="shape"):
        score_images([np.zeros((2, 2), int)], [np.zeros((3, 3), int)])

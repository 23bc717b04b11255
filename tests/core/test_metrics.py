import numpy as np
import pytest

from slimseg.errors import InputError
from slimseg.metrics import (DSB_THRESHOLDS, SegmentationScores, confusion, instance_counts, instance_prf,
                             instance_scores, iou_matrix, match_counts, pixel_scores, pooled_dice,
                             pooled_instance_f1, score_images)


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
    # instance scores follow stardist.matching: 0 whenever TP is 0, also with no objects anywhere
    assert instance_scores(z, z)["dsb_score"] == 0.0


def test_iou_matrix_and_matching():
    truth = np.array([[1, 1, 0, 2],
                      [1, 1, 0, 2]])
    pred = np.array([[5, 5, 0, 0],
                     [5, 0, 0, 7]])
    iou = iou_matrix(pred, truth)
    assert iou.shape == (2, 2)
    assert iou[0, 0] == pytest.approx(3 / 4)  # object 1 vs 5
    assert iou[1, 1] == pytest.approx(1 / 2)  # object 2 vs 7
    assert match_counts(iou, 0.5) == (2, 0, 0)  # IoU >= 0.5 matches, as in stardist.matching
    assert match_counts(iou, 0.51) == (1, 1, 1)
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
    # at 0.5 both match (IoU 0.75 and exactly 0.5): 2/2; at 0.55..0.75 (IoU >= threshold) only IoU 0.75
    # (5 of 10): 1/(1+1+1); else 0/(0+2+2)
    assert s["dsb_score"] == pytest.approx((1 + 5 / 3) / 10)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 0, 0)


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
    assert s["instance_accuracy"] == pytest.approx(1 / 3)


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


def _scores(pred, truth):
    s = instance_scores(np.asarray(pred), np.asarray(truth))
    return (s["tp"], s["fp"], s["fn"]), s


def test_iou_exactly_one_half_is_a_match():
    truth = np.array([[1, 1, 1, 1]])
    pred = np.array([[2, 2, 0, 0]])  # IoU 2/4
    (counts, s) = _scores(pred, truth)
    assert counts == (1, 0, 0)
    assert s["instance_f1"] == s["instance_precision"] == s["instance_recall"] == s["instance_accuracy"] == 1.0
    assert s["dsb_score"] == pytest.approx(1 / 10)  # a match at 0.5 only


def test_an_object_split_in_halves_matches_one_half():
    truth = np.array([[1, 1, 1, 1]])
    pred = np.array([[4, 4, 9, 9]])  # each half has IoU exactly 0.5 with the one true object
    counts, s = _scores(pred, truth)
    assert counts == (1, 1, 0)
    assert s["instance_precision"] == 0.5 and s["instance_recall"] == 1.0
    assert s["instance_f1"] == pytest.approx(2 / 3) and s["instance_accuracy"] == 0.5


def test_two_objects_merged_into_one_prediction():
    truth = np.array([[1, 1, 0, 2, 2]])
    pred = np.array([[3, 3, 3, 3, 3]])  # IoU 2/5 with each: no match
    counts, s = _scores(pred, truth)
    assert counts == (0, 1, 2) and s["instance_f1"] == 0.0 and s["dsb_score"] == 0.0
    pred = np.array([[3, 3, 3, 3, 0]])  # IoU 2/4 with object 1, 1/5 with object 2
    assert _scores(pred, truth)[0] == (1, 0, 1)


def test_ties_at_one_half_match_one_object_each():
    # disjoint objects tie at exactly 0.5 only as halves (one object split in two, two merged in one);
    # each such group gives one match
    truth = np.array([[1, 1, 1, 1, 2, 2, 2, 2]])
    pred = np.array([[5, 5, 6, 6, 6, 6, 0, 0]])  # 1-5: 2/4, 1-6: 2/6, 2-6: 2/6
    assert _scores(pred, truth)[0] == (1, 1, 1)
    truth = np.array([[1, 1, 2, 2, 3, 3, 3, 3]])
    pred = np.array([[7, 7, 7, 7, 8, 8, 9, 9]])  # 7 is half of 1 and of 2 -> one; 3 halves into 8, 9 -> one
    assert _scores(pred, truth)[0] == (2, 1, 1)


def test_empty_images():
    z = np.zeros((4, 4), np.uint16)
    obj = z.copy()
    obj[1:3, 1:3] = 1
    counts, s = _scores(z, obj)  # empty prediction
    assert counts == (0, 0, 1) and s["instance_f1"] == 0.0 and s["dsb_score"] == 0.0
    counts, s = _scores(obj, z)  # empty ground truth
    assert counts == (0, 1, 0) and s["instance_precision"] == 0.0 and s["dsb_score"] == 0.0
    counts, s = _scores(z, z)  # both empty: 0, as stardist.matching scores it (no TP)
    assert counts == (0, 0, 0)
    assert all(s[k] == 0.0 for k in ("instance_precision", "instance_recall", "instance_f1", "instance_accuracy",
                                     "dsb_score"))
    assert pooled_instance_f1([z], [z]) == 0.0
    assert pixel_scores(confusion(z, z))["dice"] == 1.0  # the pixel policy is unchanged


def test_label_ids_with_gaps():
    truth = np.zeros((6, 6), np.int32)
    truth[0:2, 0:2], truth[3:6, 3:6], truth[0:2, 4:6] = 3, 7, 1000
    pred = np.zeros_like(truth)
    pred[0:2, 0:2] = 1000  # perfect for 3
    pred[3:6, 3:5] = 2  # 6/9 of 7
    pred[5, 0] = 42  # spurious
    counts, s = _scores(pred, truth)
    assert counts == (2, 1, 1)
    # DSB: 0.5..0.65 (4 thresholds) 2/(2+1+1); 0.70..0.95 one match (IoU 1): 1/(1+2+2)
    assert s["dsb_score"] == pytest.approx((4 * 0.5 + 6 * 0.2) / 10)
    relabelled = np.select([truth == 3, truth == 7, truth == 1000], [1, 2, 3], 0)
    assert instance_scores(pred, relabelled) == s


def test_pooled_counts_vs_per_image_values():
    t1 = np.array([[1, 1, 0, 2, 2, 0, 3, 3]])
    p1 = np.array([[1, 1, 0, 2, 2, 0, 3, 3]])  # 3 TP
    t2 = np.array([[1, 1, 0, 0]])
    p2 = np.array([[0, 0, 4, 4]])  # 0 TP, 1 FP, 1 FN
    acc = SegmentationScores()
    r1, r2 = acc.add(p1, t1), acc.add(p2, t2)
    assert r1["instance_f1"] == 1.0 and r2["instance_f1"] == 0.0
    s = acc.summary()
    # pooled: TP 3, FP 1, FN 1, not the per-image mean 0.5
    assert s["instance_precision"] == s["instance_recall"] == 0.75
    assert s["instance_f1"] == pytest.approx(6 / 8)
    assert s["instance_accuracy"] == pytest.approx(3 / 5)
    assert s["dsb_score"] == pytest.approx(0.5)  # per-image mean of 1.0 and 0.0
    assert instance_prf(3, 1, 1)["instance_f1"] == s["instance_f1"]


def test_instance_counts_at_several_thresholds_match_the_dense_matrix():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 6, size=(12, 12))
    pred = np.roll(truth, 1, axis=1) * (rng.random((12, 12)) > 0.2)
    iou = iou_matrix(pred, truth)
    assert instance_counts(pred, truth, DSB_THRESHOLDS) == [match_counts(iou, t) for t in DSB_THRESHOLDS]

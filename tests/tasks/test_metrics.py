"""Metrics against hand-computed cases and against scikit-learn (an independent implementation)."""

from __future__ import annotations

import numpy as np
import pytest

from slowfast_zoo import metrics
from slowfast_zoo.tasks.metrics import (
    ava_frame_map,
    average_precision,
    mean_average_precision,
    read_ava_label_map,
    topk_accuracy,
    voc_average_precision,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


# ---- top-k --------------------------------------------------------------------------------------------------------
def test_topk_hand_computed_with_ties():
    scores = [[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.2, 0.2, 0.6]]
    labels = np.array([1, 0, 2])
    # row 1: its label (0.3) ties class 1 and is below class 2: two classes at least as high -> only top-3
    assert topk_accuracy(scores, labels, 1) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, labels, 3) == 1.0
    # all scores equal: no class is "the" prediction, nothing is right at top-1
    assert topk_accuracy(np.ones((2, 4)), np.array([0, 3]), 1) == 0.0


def test_topk_matches_sklearn_without_ties():
    rng = np.random.default_rng(0)
    scores = rng.random((200, 12))
    labels = rng.integers(0, 12, 200)
    for k in (1, 3, 5):
        expected = sklearn_metrics.top_k_accuracy_score(labels, scores, k=k, labels=np.arange(12))
        assert topk_accuracy(scores, labels, k) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        (np.ones(3), np.array([0]), "shape"),
        (np.ones((2, 3)), np.array([0, 3]), r"\[0, 3\)"),
        (np.ones((2, 3)), np.array([0.0, 1.0]), "integer labels"),
        (np.full((1, 3), np.nan), np.array([0]), "NaN"),
    ],
)
def test_topk_rejects_bad_input(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        topk_accuracy(scores, labels, 1)


# ---- Charades mAP -------------------------------------------------------------------------------------------------
def test_average_precision_hand_computed():
    # ranked: + - + -  -> precision 1 at recall 1/2, 2/3 at recall 1: AP = 1/2 * 1 + 1/2 * 2/3
    ap = average_precision([[0.9], [0.8], [0.7], [0.6]], [[1], [0], [1], [0]])
    assert ap[0] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_average_precision_ties_are_one_threshold():
    # the first two tie at 0.8 (one positive, one negative): at that threshold precision 1/2, recall 1/2;
    # then 2/3 at recall 1 -> 1/2 * 1/2 + 1/2 * 2/3. Ranking the tie positive-first would give 5/6 instead.
    ap = average_precision([[0.8], [0.8], [0.7]], [[1], [0], [1]])
    assert ap[0] == pytest.approx(0.25 + 1 / 3)


def test_map_skips_classes_without_positives():
    scores = [[0.9, 0.1, 0.5], [0.2, 0.8, 0.4], [0.3, 0.7, 0.6]]
    targets = [[1, 0, 0], [0, 0, 0], [0, 1, 0]]
    ap = average_precision(scores, targets)
    assert ap[0] == 1.0 and ap[1] == pytest.approx(0.5) and np.isnan(ap[2])
    assert mean_average_precision(scores, targets) == pytest.approx(0.75)  # (1 + 0.5) / 2, class 2 left out
    with pytest.raises(ValueError, match="no class has a positive"):
        mean_average_precision(scores, np.zeros((3, 3), dtype=int))


def test_map_matches_sklearn_with_ties_and_empty_classes():
    rng = np.random.default_rng(1)
    scores = np.round(rng.random((300, 20)), 1)  # one decimal: many ties
    targets = (rng.random((300, 20)) < 0.1).astype(int)
    targets[:, 7] = 0  # a class without positives
    keep = targets.sum(0) > 0
    # PySlowFast's Charades mAP: sklearn's AP per class over the classes that have a positive, then the mean
    expected = sklearn_metrics.average_precision_score(targets[:, keep], scores[:, keep], average=None)
    np.testing.assert_allclose(average_precision(scores, targets)[keep], expected)
    assert mean_average_precision(scores, targets) == pytest.approx(expected.mean())


# ---- VOC AP -------------------------------------------------------------------------------------------------------
def test_voc_ap_interpolates_precision():
    # ranked: - + - +, 2 positives: precision 0, 1/2, 1/3, 1/2 -> non-increasing from the right: 1/2 everywhere;
    # recall steps of 1/2 at ranks 2 and 4 -> AP 1/2
    assert voc_average_precision([0.95, 0.9, 0.8, 0.7], [False, True, False, True], 2) == pytest.approx(0.5)
    assert voc_average_precision([], [], 3) == 0.0
    # a missed positive caps recall: one hit of 2 at rank 1 -> AP 1/2
    assert voc_average_precision([0.5], [True], 2) == pytest.approx(0.5)


# ---- AVA frame mAP ------------------------------------------------------------------------------------------------
LABEL_MAP = """item {
  name: "bend/bow (at the waist)"
  id: 1
}
item {
  name: "sit"
  id: 2
}
item {
  name: "never annotated"
  id: 3
}
"""
A = [0.1, 0.1, 0.5, 0.5]
A_SHIFTED = [0.12, 0.1, 0.52, 0.5]  # IoU with A: 0.152 / 0.168 = 0.905
B = [0.5, 0.5, 0.9, 0.9]


def _rows(*rows):
    return "".join(",".join(str(v) for v in r) + "\n" for r in rows)


@pytest.fixture
def ava_files(tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text(
        _rows(
            ("vid1", "0902", *A, 1, 0),
            ("vid1", "0902", *B, 1, 1),
            ("vid1", "0902", *B, 2, 1),
            ("vid1", "0903", *A, 2, 0),
            ("vid1", "0904", *A, 1, 0),  # excluded keyframe: not a positive
            ("vid1", "0902", *A, 80, 0),  # action outside the label map
        )
    )
    det = tmp_path / "det.csv"
    det.write_text(
        _rows(
            ("vid1", "0902", *A_SHIFTED, 1, 0.8),  # a duplicate of A, written first, scored lower: false positive
            ("vid1", "0902", *A, 1, 0.9),  # true positive
            ("vid1", "0902", *B, 1, 0.7),  # true positive
            ("vid1", "0903", *A, 1, 0.95),  # no class-1 box at 0903: false positive
            ("vid1", "0904", *A, 1, 0.99),  # excluded keyframe: dropped
            ("vid1", "0902", *B, 2, 0.6),  # true positive
            ("vid1", "0902", *A, 2, 0.55),  # A does not overlap B: false positive
            ("vid1", "0903", *A, 2, 0.5),  # true positive
            ("vid1", "0902", *A, 80, 0.9),  # not scored
        )
    )
    excluded = tmp_path / "excluded.csv"
    excluded.write_text("vid1,0904\n")
    labels = tmp_path / "labels.pbtxt"
    labels.write_text(LABEL_MAP)
    return gt, det, labels, excluded


def test_ava_frame_map_hand_computed(ava_files):
    gt, det, labels, excluded = ava_files
    result = ava_frame_map(gt, det, labels, excluded)
    # class 1 (2 boxes): ranked 0.95 -, 0.9 +, 0.8 -, 0.7 + -> AP 1/2 (see test_voc_ap_interpolates_precision)
    # class 2 (2 boxes): ranked 0.6 +, 0.55 -, 0.5 + -> precision 1, 1/2, 2/3 -> 1/2 * 1 + 1/2 * 2/3
    assert result.per_class[1] == pytest.approx(0.5)
    assert result.per_class[2] == pytest.approx(0.5 + 1 / 3)
    assert np.isnan(result.per_class[3])  # no ground truth: left out of the mean
    assert result.map == pytest.approx((0.5 + 0.5 + 1 / 3) / 2)
    assert result.named()["sit"] == result.per_class[2]
    assert result.num_keyframes == 2


def test_ava_excluded_timestamps_matter(ava_files):
    gt, det, labels, _ = ava_files
    # without the exclusion, 0904 adds a class-1 box and its 0.99 detection hits it:
    # ranked 0.99 +, 0.95 -, 0.9 +, 0.8 -, 0.7 + of 3 -> precision 1, 1/2, 2/3, 1/2, 3/5 -> 1/3 * (1 + 2/3 + 3/5)
    result = ava_frame_map(gt, det, labels)
    assert result.per_class[1] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_ava_capacity_keeps_the_best_per_keyframe(ava_files):
    gt, det, labels, excluded = ava_files
    # one detection per keyframe: 0902 keeps A/1 (0.9, +), 0903 keeps A/1 (0.95, -)
    result = ava_frame_map(gt, det, labels, excluded, capacity=1)
    assert result.per_class[1] == pytest.approx(0.5 * 0.5)  # ranked -, + of 2 boxes: precision 1/2 at recall 1/2
    assert result.per_class[2] == 0.0


def test_ava_label_map_and_bad_rows(tmp_path, ava_files):
    _, det, labels, _ = ava_files
    assert read_ava_label_map(labels) == {1: "bend/bow (at the waist)", 2: "sit", 3: "never annotated"}
    bad = tmp_path / "bad.csv"
    bad.write_text("vid1,0902,0.1,0.1\n")
    with pytest.raises(ValueError, match=r"bad\.csv:1: expected video,timestamp"):
        ava_frame_map(bad, det, labels)
    (tmp_path / "empty.pbtxt").write_text("")
    with pytest.raises(ValueError, match="no 'item"):
        read_ava_label_map(tmp_path / "empty.pbtxt")
    assert metrics.ava_frame_map is ava_frame_map

"""Metrics against hand-computed cases and against scikit-learn (an independent implementation)."""

from __future__ import annotations

import numpy as np
import pytest

from slowfast_zoo.tasks.metrics import (
    average_precision,
    mean_average_precision,
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

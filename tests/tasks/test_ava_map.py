"""AVA frame mAP: hand-computed cases, and cases scored by the authors' two evaluators (equal to 1e-9)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slowfast_zoo import metrics
from slowfast_zoo.errors import AnnotationError
from slowfast_zoo.tasks.metrics import ava_frame_map, read_ava_label_map

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
            ("vid1", "0902", *A_SHIFTED, 1, 0.8),  # written first: matched first (file order), takes A: true positive
            ("vid1", "0902", *A, 1, 0.9),  # A is taken: false positive, though it scores higher
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
    # class 1 (2 boxes): ranked 0.95 -, 0.9 -, 0.8 +, 0.7 + -> precision 0, 0, 1/3, 1/2 -> 1/2 * 1/2 + 1/2 * 1/2
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
    # ranked 0.99 +, 0.95 -, 0.9 -, 0.8 +, 0.7 + of 3 -> precision 1, 1/2, 1/3, 1/2, 3/5 -> 1/3 * (1 + 3/5 + 3/5)
    result = ava_frame_map(gt, det, labels)
    assert result.per_class[1] == pytest.approx((1 + 3 / 5 + 3 / 5) / 3)


def test_ava_activitynet_keeps_fifty_per_keyframe(tmp_path, ava_files):
    gt, _, labels, _ = ava_files
    # 60 false positives at 0902 scored above the true positive: the challenge script's heap of 50 drops the 10
    # lowest-scoring, and the true positive (0.05) with them; PySlowFast keeps everything
    det = tmp_path / "crowded.csv"
    det.write_text(_rows(("vid1", "0902", *A, 1, 0.05), *[("vid1", "0902", *B, 1, 0.9 - i / 100) for i in range(60)]))
    pysf = ava_frame_map(gt, det, labels, protocol="pyslowfast")
    anet = ava_frame_map(gt, det, labels, protocol="activitynet")
    assert pysf.num_detections == 61 and anet.num_detections == 50
    # PySlowFast: one box B hit at rank 1, then A at rank 61 of 3 class-1 boxes (0902 A, B; 0904 A)
    assert pysf.per_class[1] == pytest.approx((1 + 2 / 61) / 3)
    assert anet.per_class[1] == pytest.approx(1 / 3)  # only B is found


def test_ava_protocols_differ_on_unlisted_keyframes(tmp_path, ava_files):
    gt, det, labels, excluded = ava_files
    # ActivityNet scores only the keyframes the ground truth lists: a detection at an unlisted keyframe is ignored;
    # PySlowFast counts it as a false positive
    extra = tmp_path / "extra.csv"
    extra.write_text(det.read_text() + _rows(("vid1", "0950", *A, 1, 0.999)))
    assert ava_frame_map(gt, extra, labels, excluded, protocol="activitynet").per_class[1] == pytest.approx(
        ava_frame_map(gt, det, labels, excluded, protocol="activitynet").per_class[1]
    )
    assert (
        ava_frame_map(gt, extra, labels, excluded).per_class[1] < ava_frame_map(gt, det, labels, excluded).per_class[1]
    )
    with pytest.raises(ValueError, match="protocol"):
        ava_frame_map(gt, det, labels, protocol="coco")


def test_ava_label_map_and_bad_rows(tmp_path, ava_files):
    gt, det, labels, excluded = ava_files
    assert read_ava_label_map(labels) == {1: "bend/bow (at the waist)", 2: "sit", 3: "never annotated"}
    # malformed rows are skipped with their reason and counted; the rest is scored as if they were not there
    bad = tmp_path / "bad.csv"
    bad.write_bytes(
        gt.read_bytes()
        + b"vid1,0902,0.1,0.1\n"  # too few fields
        + b"vid1,09x2,0.1,0.1,0.5,0.5,1\n"  # timestamp not a number
        + b"vid1,0902,0.1,0.1,0.5,0.5,\xff\n"  # not UTF-8
        + b"vid1,"
        + b"9" * 70000
        + b"\n"  # overlong line
        + b'vid1,"0902\n'  # unterminated quote
    )
    good = ava_frame_map(gt, det, labels, excluded)
    result = ava_frame_map(bad, det, labels, excluded)
    assert [w.rsplit(":", 1)[1] for w, _ in result.skipped] == ["7", "8", "9", "10", "11"]
    assert result.skipped[0][1].endswith("got 4") and "ValueError" in result.skipped[1][1]
    assert result.map == good.map and good.skipped == []
    # a detection without a score: PySlowFast's reader needs row[7] (skipped here), ActivityNet's takes 1.0
    unscored = tmp_path / "unscored.csv"
    unscored.write_text(det.read_text() + "vid1,0903,0.5,0.5,0.9,0.9,2\n")
    assert [w for w, _ in ava_frame_map(gt, unscored, labels, excluded).skipped] == [f"{unscored}:10"]
    assert ava_frame_map(gt, unscored, labels, excluded, protocol="activitynet").num_detections == 8
    (tmp_path / "empty.pbtxt").write_text("")
    with pytest.raises(AnnotationError, match="no 'item"):
        read_ava_label_map(tmp_path / "empty.pbtxt")
    with pytest.raises(AnnotationError, match="not a regular file"):
        ava_frame_map(tmp_path, det, labels)
    assert metrics.ava_frame_map is ava_frame_map


AVA_CASES = sorted((Path(__file__).parents[1] / "data" / "ava_eval").glob("case*"))


@pytest.mark.parametrize("protocol", ["pyslowfast", "activitynet"])
@pytest.mark.parametrize("case", AVA_CASES, ids=lambda p: p.name)
def test_ava_frame_map_equals_the_authors_evaluators(case, protocol):
    """Each case was scored by PySlowFast's ava_eval_helper.py (SlowFast 287ec00) and by ActivityNet's
    get_ava_performance.py; expected.json holds the mAP and per-class AP they printed."""
    expected = json.loads((case / "expected.json").read_text())[protocol]
    if protocol == "pyslowfast" and case.name == "case101" and np.lib.NumpyVersion(np.__version__) < "2.0.0":
        # PySlowFast ranks tied scores with numpy's default (unstable) argsort, and numpy 1.26 orders case101's tied
        # scores of action 29 otherwise than numpy 2, under which expected.json was printed (numpy 1.26.1: AP 0.11356
        # for 0.11156, mAP 0.13795 for 0.13755, measured); the authors' script itself gives what numpy gives
        pytest.skip("case101's tied scores rank differently under numpy < 2 (numpy's default argsort, as the authors')")
    if protocol == "pyslowfast":
        gt, excluded = case / "groundtruth.csv", case / "excluded_timestamps.csv"
    else:  # the challenge's layout: no exclusion file, 2-column rows list scored keyframes without actions
        gt, excluded = case / "groundtruth_activitynet.csv", None
    result = ava_frame_map(gt, case / "detections.csv", case / "label_map.pbtxt", excluded, protocol=protocol)
    assert result.protocol == protocol and result.skipped == []
    assert abs(result.map - expected["mAP"]) <= 1e-9
    named = result.named()
    assert set(named) == set(expected["per_class"])
    for name, ap in expected["per_class"].items():
        if ap is None:
            assert np.isnan(named[name]), name
        else:
            assert abs(named[name] - ap) <= 1e-9, name

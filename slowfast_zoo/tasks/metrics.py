"""The benchmarks' metrics as plain functions on arrays and files: top-k accuracy, Charades mAP, AVA frame mAP.

* :func:`topk_accuracy`: the share of videos whose true class is among the ``k`` highest scores (Kinetics, SSv2).
* :func:`mean_average_precision`: Charades' mAP, the mean over classes with at least one positive video of the
  average precision (area under the step-wise precision/recall curve; equal scores form one threshold).
* :func:`ava_frame_map`: AVA's frame-level mAP at IoU 0.5 as the ActivityNet challenge's evaluator defines it: per
  class, detections of all keyframes sorted by score; in each keyframe a detection is a true positive when the
  ground-truth box it overlaps most (IoU >= 0.5) is not yet taken by a higher-scoring detection, so a box is matched
  at most once; PASCAL VOC AP (precision made non-increasing, summed over recall steps); excluded keyframes are
  dropped from both files; classes without ground truth are left out of the mean.

Results are fractions in [0, 1]; papers print them times 100.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "AvaMapResult",
    "ava_frame_map",
    "average_precision",
    "mean_average_precision",
    "read_ava_label_map",
    "topk_accuracy",
    "voc_average_precision",
    "write_ava_csv",
]


def _scores_2d(scores: object, name: str = "scores") -> np.ndarray:
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"expected {name} of shape (videos, classes), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return a


def topk_accuracy(scores: object, labels: object, k: int = 1) -> float:
    """Share of rows whose label is among the ``k`` highest scores; ties are broken against the label.

    ``scores`` ``(N, C)``, ``labels`` ``(N,)`` integer class indices. A label counts as top-k only when fewer than
    ``k`` other classes score at least as high, so equal scores never make a prediction right by luck.
    """
    s = _scores_2d(scores)
    y = np.asarray(labels)
    if y.shape != (s.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"expected integer labels of shape ({s.shape[0]},), got {y.dtype} {y.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if s.shape[0] == 0:
        raise ValueError("no rows to score")
    if y.min() < 0 or y.max() >= s.shape[1]:
        raise ValueError(f"labels must lie in [0, {s.shape[1]}), got [{y.min()}, {y.max()}]")
    true = s[np.arange(len(y)), y]
    others_at_least = (s >= true[:, None]).sum(axis=1) - 1  # classes other than the label scoring >= it
    return float((others_at_least < k).mean())


def average_precision(scores: object, targets: object) -> np.ndarray:
    """Per-class average precision ``(C,)`` of ``scores`` ``(N, C)`` against 0/1 ``targets`` ``(N, C)``.

    AP = sum over distinct score thresholds (highest first) of (recall gain) x (precision at that threshold), the
    step-wise area PySlowFast takes from scikit-learn for Charades; a class without positives gets NaN.
    """
    s = _scores_2d(scores)
    t = np.asarray(targets)
    if t.shape != s.shape:
        raise ValueError(f"targets shape {t.shape} differs from scores shape {s.shape}")
    if not np.isin(t, (0, 1)).all():
        raise ValueError("targets must be 0 or 1")
    t = t.astype(bool)
    out = np.full(s.shape[1], np.nan)
    for c in range(s.shape[1]):
        positives = int(t[:, c].sum())
        if positives == 0:
            continue
        order = np.argsort(-s[:, c], kind="stable")
        sc, hit = s[order, c], t[order, c]
        tp, seen = np.cumsum(hit), np.arange(1, len(hit) + 1)
        last = np.r_[sc[1:] != sc[:-1], True]  # the last row of each run of equal scores: one threshold
        precision, recall = tp[last] / seen[last], tp[last] / positives
        out[c] = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return out


def mean_average_precision(scores: object, targets: object) -> float:
    """Charades mAP: mean of :func:`average_precision` over the classes with at least one positive."""
    ap = average_precision(scores, targets)
    if np.isnan(ap).all():
        raise ValueError("no class has a positive target: mAP is undefined")
    return float(np.nanmean(ap))


def voc_average_precision(scores: object, is_true_positive: object, num_positives: int) -> float:
    """PASCAL VOC AP of ranked detections: precision made non-increasing in recall, summed over recall steps.

    Detections are ranked by score, highest first (equal scores keep their given order). With no detections the AP
    is 0; ``num_positives`` must be at least 1.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    tp = np.asarray(is_true_positive, dtype=bool).reshape(-1)
    if s.shape != tp.shape:
        raise ValueError(f"{s.size} scores but {tp.size} true-positive flags")
    if num_positives < 1 or tp.sum() > num_positives:
        raise ValueError(f"num_positives {num_positives} must be >= 1 and >= the {int(tp.sum())} true positives")
    if s.size == 0:
        return 0.0
    hits = tp[np.argsort(-s, kind="stable")]
    cum_tp = np.cumsum(hits)
    precision = cum_tp / np.arange(1, len(hits) + 1)
    recall = cum_tp / num_positives
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or beyond
    gains = np.diff(np.r_[0.0, recall])
    return float(np.sum(gains * precision))


# ---- AVA ---------------------------------------------------------------------------------------------------------
@dataclass
class AvaMapResult:
    """Frame mAP over the label map's classes and the AP of each (NaN: no ground truth left for that class)."""

    map: float
    #: class id (as in the label map) -> AP
    per_class: dict[int, float]
    #: class id -> name from the label map
    names: dict[int, str] = field(default_factory=dict)
    #: keyframes scored (ground truth present, not excluded) and detections kept
    num_keyframes: int = 0
    num_detections: int = 0

    def named(self) -> dict[str, float]:
        """Per-class AP by class name."""
        return {self.names.get(c, str(c)): ap for c, ap in self.per_class.items()}


_PBTXT_ITEM = re.compile(r"item\s*\{(.*?)\}", re.S)


def read_ava_label_map(path: str | os.PathLike[str]) -> dict[int, str]:
    """``{id: name}`` of an AVA label map ``.pbtxt`` (``item { name: "..." id: N }``, ``label_id`` also read)."""
    text = Path(path).read_text(encoding="utf-8")
    out: dict[int, str] = {}
    for body in _PBTXT_ITEM.findall(text):
        name = re.search(r'name:\s*"([^"]*)"', body)
        ident = re.search(r"\b(?:label_id|id):\s*(-?\d+)", body)
        if not name or not ident:
            raise ValueError(f"{path}: label map item without name and id: {body.strip()!r}")
        out[int(ident.group(1))] = name.group(1)
    if not out:
        raise ValueError(f"{path}: no 'item {{ name: ... id: ... }}' entries (expected an AVA label map .pbtxt)")
    return out


def _key(video: str, timestamp: str) -> tuple[str, int]:
    return video, int(float(timestamp))


def _read_ava_rows(
    path: str | os.PathLike[str], classes: set[int], with_score: bool
) -> dict[tuple[str, int], list[tuple[int, float, list[float]]]]:
    """(video, second) -> [(action, score, [x1, y1, x2, y2])] of an AVA CSV, only for ``classes``."""
    rows: dict[tuple[str, int], list[tuple[int, float, list[float]]]] = defaultdict(list)
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, r in enumerate(csv.reader(f), 1):
            if not r or all(not x.strip() for x in r):
                continue
            need = 8 if with_score else 7
            if len(r) < need or len(r) > 8:
                what = "video,timestamp,x1,y1,x2,y2,action" + (",score" if with_score else "")
                raise ValueError(f"{path}:{lineno}: expected {what}, got {len(r)} fields")
            try:
                action = int(r[6])
                box = [float(v) for v in r[2:6]]
                score = float(r[7]) if with_score else 1.0
                key = _key(r[0], r[1])
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
            if action in classes:
                rows[key].append((action, score, box))
    return rows


def _read_excluded(path: str | os.PathLike[str] | None) -> set[tuple[str, int]]:
    if path is None:
        return set()
    out = set()
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, r in enumerate(csv.reader(f), 1):
            if not r:
                continue
            if len(r) != 2:
                raise ValueError(f"{path}:{lineno}: expected video,timestamp, got {len(r)} fields")
            out.add(_key(r[0], r[1]))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import torch
    from torchvision.ops import box_iou

    return box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def _match_keyframe(dets: list[tuple[float, list[float]]], gts: list[list[float]], thr: float) -> list[bool]:
    """True-positive flags of one class's detections in one keyframe, in the order given (sorted by score)."""
    if not gts:
        return [False] * len(dets)
    iou = _iou(np.array([d[1] for d in dets], dtype=np.float64), np.array(gts, dtype=np.float64))
    taken = np.zeros(len(gts), dtype=bool)
    flags = []
    for row in iou:
        best = int(np.argmax(row))  # the box it overlaps most; if that one is taken, it is a false positive
        hit = bool(row[best] >= thr and not taken[best])
        taken[best] |= hit
        flags.append(hit)
    return flags


def ava_frame_map(
    groundtruth_csv: str | os.PathLike[str],
    detections_csv: str | os.PathLike[str],
    label_map: str | os.PathLike[str] | dict[int, str],
    excluded_timestamps: str | os.PathLike[str] | None = None,
    *,
    iou_threshold: float = 0.5,
    capacity: int | None = None,
) -> AvaMapResult:
    """AVA frame mAP of ``detections_csv`` against ``groundtruth_csv`` over the classes of ``label_map``.

    Args:
        groundtruth_csv: ``video,timestamp,x1,y1,x2,y2,action[,person]`` rows (e.g. ``ava_val_v2.2.csv``).
        detections_csv: ``video,timestamp,x1,y1,x2,y2,action,score`` rows, one per box and action.
        label_map: the ``.pbtxt`` of the scored actions (or ``{id: name}``); other actions are ignored.
        excluded_timestamps: ``video,timestamp`` keyframes left out of both files.
        capacity: keep only the ``capacity`` highest-scoring detections per keyframe (the ActivityNet challenge
            script keeps 50; PySlowFast, whose numbers the model zoo publishes, keeps all: None).

    Detections of a keyframe without ground truth are false positives. Within a keyframe and class, detections are
    matched highest score first (equal scores in file order).
    """
    names = label_map if isinstance(label_map, dict) else read_ava_label_map(label_map)
    classes = set(names)
    excluded = _read_excluded(excluded_timestamps)
    gt = {k: v for k, v in _read_ava_rows(groundtruth_csv, classes, False).items() if k not in excluded}
    det = {k: v for k, v in _read_ava_rows(detections_csv, classes, True).items() if k not in excluded}
    num_gt: dict[int, int] = defaultdict(int)
    for rows in gt.values():
        for action, _, _ in rows:
            num_gt[action] += 1
    scores: dict[int, list[float]] = defaultdict(list)
    hits: dict[int, list[bool]] = defaultdict(list)
    kept = 0
    for key, rows in det.items():
        if capacity is not None:
            rows = sorted(rows, key=lambda r: -r[1])[:capacity]
        kept += len(rows)
        for c in {r[0] for r in rows}:
            mine = sorted(((s, b) for a, s, b in rows if a == c), key=lambda d: -d[0])
            boxes = [b for a, _, b in gt.get(key, []) if a == c]
            scores[c] += [s for s, _ in mine]
            hits[c] += _match_keyframe(mine, boxes, iou_threshold)
    per_class = {
        c: voc_average_precision(scores[c], hits[c], num_gt[c]) if num_gt[c] else float("nan") for c in sorted(names)
    }
    valid = [v for v in per_class.values() if not np.isnan(v)]
    if not valid:
        raise ValueError(f"{groundtruth_csv}: no ground-truth box of the label map's classes is left to score")
    return AvaMapResult(float(np.mean(valid)), per_class, dict(names), len(gt), kept)


def write_ava_csv(path: str | os.PathLike[str], rows: Iterable[tuple[object, ...]]) -> None:
    """Write AVA CSV rows (``video,timestamp,x1,y1,x2,y2,action[,score]``) as plain comma-separated lines."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)

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
import decimal
import heapq
import io
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import AnnotationError
from ..weights.cache import atomic_write
from .annotations import csv_rows, open_regular

__all__ = [
    "AVA_PROTOCOLS",
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
    """PASCAL VOC AP of ranked detections, as the AVA evaluators compute it (``ava_evaluation/metrics.py``).

    Detections are ranked with ``np.argsort(scores)[::-1]`` (so equal scores fall where numpy's default sort puts
    them, as in the authors' code); precision is made non-increasing in recall and summed over the recall steps.
    With no detections the AP is 0; ``num_positives`` must be at least 1.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    tp = np.asarray(is_true_positive, dtype=bool).reshape(-1)
    if s.shape != tp.shape:
        raise ValueError(f"{s.size} scores but {tp.size} true-positive flags")
    if num_positives < 1 or tp.sum() > num_positives:
        raise ValueError(f"num_positives {num_positives} must be >= 1 and >= the {int(tp.sum())} true positives")
    if s.size == 0:
        return 0.0
    hits = tp.astype(int)[np.argsort(s)[::-1]]
    cum_tp, cum_fp = np.cumsum(hits), np.cumsum(1 - hits)
    precision = np.concatenate([[0.0], cum_tp.astype(float) / (cum_tp + cum_fp), [0.0]])
    recall = np.concatenate([[0.0], cum_tp.astype(float) / num_positives, [1.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or beyond
    steps = np.where(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


# ---- AVA ---------------------------------------------------------------------------------------------------------
#: the AVA evaluators :func:`ava_frame_map` reproduces (see its docstring)
AVA_PROTOCOLS = ("pyslowfast", "activitynet")
#: detections kept per keyframe by the ActivityNet challenge script (``read_csv(detections, ..., 50)``)
ACTIVITYNET_CAPACITY = 50
#: the largest label map read (AVA's is 3 KiB)
MAX_LABEL_MAP_BYTES = 4 << 20
#: the largest action id accepted (AVA has 80; the evaluators allocate per-id arrays)
MAX_ACTION_ID = 100_000


@dataclass
class AvaMapResult:
    """Frame mAP over the label map's classes and the AP of each (NaN: no ground truth left for that class)."""

    map: float
    #: class id (as in the label map) -> AP
    per_class: dict[int, float]
    #: class id -> name from the label map
    names: dict[int, str] = field(default_factory=dict)
    #: keyframes scored and detections that took part in matching
    num_keyframes: int = 0
    num_detections: int = 0
    #: which evaluator's rules were applied (one of :data:`AVA_PROTOCOLS`)
    protocol: str = "pyslowfast"
    #: ``("file:line", reason)`` of each malformed row left out of both files
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def named(self) -> dict[str, float]:
        """Per-class AP by class name."""
        return {self.names.get(c, str(c)): ap for c, ap in self.per_class.items()}


_PBTXT_ITEM = re.compile(r"item\s*\{(.*?)\}", re.S)


def read_ava_label_map(path: str | os.PathLike[str]) -> dict[int, str]:
    """``{id: name}`` of an AVA label map ``.pbtxt`` (``item { name: "..." id: N }``, ``label_id`` also read)."""
    with open_regular(path) as f:
        raw = f.read(MAX_LABEL_MAP_BYTES + 1)
    if len(raw) > MAX_LABEL_MAP_BYTES:
        raise AnnotationError(f"{path}: larger than {MAX_LABEL_MAP_BYTES >> 20} MiB (expected an AVA label map .pbtxt)")
    text = raw.decode("utf-8", "replace")
    out: dict[int, str] = {}
    for body in _PBTXT_ITEM.findall(text):
        name = re.search(r'name:\s*"([^"]*)"', body)
        ident = re.search(r"\b(?:label_id|id):\s*(-?\d+)", body)
        if not name or not ident:
            raise AnnotationError(f"{path}: label map item without name and id: {body.strip()!r}")
        out[int(ident.group(1))] = name.group(1)
    if not out:
        raise AnnotationError(f"{path}: no 'item {{ name: ... id: ... }}' entries (expected an AVA label map .pbtxt)")
    return out


_Box = tuple[float, float, float, float]  # y1, x1, y2, x2: the authors' order (IoU is the same either way)


@dataclass
class _AvaRow:
    key: tuple[str, object]
    action: int  # 0: a 2-column ``video,timestamp`` row (action ids start at 1)
    score: float
    box: _Box


def _ava_rows(
    path: str | os.PathLike[str],
    key: Callable[[str, str], tuple[str, object]],
    scored: bool,
    skipped: list,
    sizes: tuple[int, ...] = (2, 7, 8),
) -> Iterator[_AvaRow]:
    """The rows of an AVA CSV with ``sizes`` fields; ``scored``: an 8th column is the score (else it is ignored)."""
    for where, r in csv_rows(path, skipped):
        if len(r) not in sizes:
            skipped.append(
                (
                    where,
                    f"expected {' or '.join(map(str, sizes))} fields (video,timestamp,x1,y1,x2,y2,"
                    f"action,score), got {len(r)}",
                )
            )
            continue
        try:
            k = key(r[0], r[1])
            if len(r) == 2:
                yield _AvaRow(k, 0, 1.0, (0.0, 0.0, 0.0, 0.0))
                continue
            x1, y1, x2, y2 = (float(v) for v in r[2:6])
            action = int(r[6])
            score = float(r[7]) if scored and len(r) == 8 else 1.0
        except (ValueError, ArithmeticError) as e:  # decimal.InvalidOperation is an ArithmeticError
            skipped.append((where, f"not video,timestamp,x1,y1,x2,y2,action[,score] ({type(e).__name__}: {e})"))
            continue
        yield _AvaRow(k, action, score, (y1, x1, y2, x2))


def _pyslowfast_key(video: str, timestamp: str) -> tuple[str, object]:
    return video, int(timestamp)  # ava_eval_helper.make_image_key: "%s,%04d" % (video, int(timestamp))


def _activitynet_key(video: str, timestamp: str) -> tuple[str, object]:
    # get_ava_performance.make_image_key: %-formatting turns the Decimal into a float first (str.format would not)
    return video, "%.6f" % decimal.Decimal(timestamp)  # noqa: UP031


def _iou(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` boxes, with the authors' operations in their order (np_box_ops)."""
    d, g = dets[:, :, None], gts.T[None]
    heights = np.maximum(0.0, np.minimum(d[:, 2], g[:, 2]) - np.maximum(d[:, 0], g[:, 0]))
    widths = np.maximum(0.0, np.minimum(d[:, 3], g[:, 3]) - np.maximum(d[:, 1], g[:, 1]))
    inter = heights * widths
    area_d = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
    area_g = (gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):  # a degenerate ground-truth box: NaN, never a match
        return inter / (area_d[:, None] + area_g[None, :] - inter)


def _true_positives(dets: list[_Box], gts: list[_Box], threshold: float) -> np.ndarray:
    """Flags of one class's detections in one keyframe, matched in the order given to the box each overlaps most."""
    flags = np.zeros(len(dets), dtype=bool)
    if not gts:
        return flags
    iou = _iou(np.array(dets, dtype=float), np.array(gts, dtype=float))
    taken = np.zeros(len(gts), dtype=bool)
    for i, best in enumerate(np.argmax(iou, axis=1)):
        if iou[i, best] >= threshold and not taken[best]:
            flags[i] = taken[best] = True
    return flags


def _by_keyframe(rows: Iterable[_AvaRow], classes: set[int]) -> dict[tuple[str, object], list[_AvaRow]]:
    out: dict[tuple[str, object], list[_AvaRow]] = defaultdict(list)
    for row in rows:
        if row.action in classes:
            out[row.key].append(row)
    return out


def _heap_order(rows: list[_AvaRow], capacity: int) -> list[_AvaRow]:
    """The ActivityNet script's per-keyframe order: a min-heap of ``capacity`` (0: all), then sorted by -score."""
    heap: list[tuple[float, int, float, float, float, float]] = []
    for r in rows:
        entry = (r.score, r.action, *r.box)  # the script's tuple: ties compare by action, then box
        if capacity < 1 or len(heap) < capacity:
            heapq.heappush(heap, entry)
        elif r.score > heap[0][0]:
            heapq.heapreplace(heap, entry)
    key = rows[0].key if rows else ("", 0)
    return [_AvaRow(key, a, s, (b0, b1, b2, b3)) for s, a, b0, b1, b2, b3 in sorted(heap, key=lambda e: -e[0])]


# long: both evaluators' reading rules side by side, then the one matching and AP they share
def ava_frame_map(
    groundtruth_csv: str | os.PathLike[str],
    detections_csv: str | os.PathLike[str],
    label_map: str | os.PathLike[str] | dict[int, str],
    excluded_timestamps: str | os.PathLike[str] | None = None,
    *,
    protocol: str = "pyslowfast",
    iou_threshold: float = 0.5,
) -> AvaMapResult:
    """AVA frame mAP of ``detections_csv`` against ``groundtruth_csv`` over the classes of ``label_map``.

    Equal (to rounding) to the evaluator ``protocol`` names, per class and overall:

    * ``"pyslowfast"``: PySlowFast's ``slowfast/utils/ava_eval_helper.py`` on its ``ava_evaluation/`` package
      (facebookresearch/SlowFast), the evaluator behind the model zoo's AVA numbers. Keyframes are
      ``(video, int(timestamp))``; every detection is kept; excluded keyframes leave both files; detections in a
      keyframe without ground truth are false positives. Ground-truth rows may carry an 8th column (ignored).
    * ``"activitynet"``: the ActivityNet challenge's ``Evaluation/get_ava_performance.py`` (activitynet/ActivityNet).
      Keyframes are ``(video, "%.6f" % timestamp)``; the ground-truth file lists the keyframes scored (a
      ``video,timestamp`` row: a scored keyframe without action); detections elsewhere are ignored; per keyframe
      only the 50 highest-scoring detections are kept (its heap), in score order.

    Shared by both: boxes with ``x2 <= x1`` or ``y2 <= y1`` are dropped from the detections; within a keyframe and
    class, detections are matched in order, each to the ground-truth box it overlaps most (IoU >=
    ``iou_threshold``), a false positive if that box is taken; each class's detections, concatenated keyframe by
    keyframe, are ranked with ``np.argsort(scores)[::-1]`` for :func:`voc_average_precision`; classes without ground
    truth are left out of the mean. A malformed row is skipped, listed in ``skipped`` of the result (the authors'
    scripts stop at it).

    Args:
        groundtruth_csv: ``video,timestamp,x1,y1,x2,y2,action[,person]`` rows (e.g. ``ava_val_v2.2.csv``).
        detections_csv: ``video,timestamp,x1,y1,x2,y2,action,score`` rows, one per box and action.
        label_map: the ``.pbtxt`` of the scored actions (or ``{id: name}``, ids from 1); other actions are ignored.
        excluded_timestamps: ``video,timestamp`` keyframes left out of both files (PySlowFast's layout; the
            ActivityNet script takes none, its ground truth lists what is scored: pass None to equal it).
    """
    if protocol not in AVA_PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(AVA_PROTOCOLS)}, got {protocol!r}")
    names = label_map if isinstance(label_map, dict) else read_ava_label_map(label_map)
    if not names or min(names) < 1 or max(names) > MAX_ACTION_ID:
        raise AnnotationError(f"{label_map}: AVA action ids must lie in 1..{MAX_ACTION_ID}")
    classes = set(names)
    skipped: list[tuple[str, str]] = []
    pysf = protocol == "pyslowfast"
    key = _pyslowfast_key if pysf else _activitynet_key
    excluded = set()
    if excluded_timestamps is not None:
        for where, r in csv_rows(excluded_timestamps, skipped):
            try:
                if len(r) != 2:
                    raise ValueError(f"expected video,timestamp, got {len(r)} fields")
                excluded.add(key(r[0], r[1]))
            except (ValueError, ArithmeticError) as e:
                skipped.append((where, str(e)))

    gt_rows = [r for r in _ava_rows(groundtruth_csv, key, not pysf, skipped) if r.key not in excluded]
    scored_keys = {r.key for r in gt_rows}  # activitynet: every keyframe the file lists, with or without actions
    gt = _by_keyframe(gt_rows, classes)
    det_sizes = (8,) if pysf else (2, 7, 8)  # PySlowFast reads row[7] of every detection; ActivityNet: 1.0 if absent
    det = _by_keyframe(_ava_rows(detections_csv, key, True, skipped, det_sizes), classes)
    if pysf:
        det = {k: rows for k, rows in det.items() if k not in excluded}
    else:
        gt = {k: _heap_order(rows, 0) for k, rows in gt.items()}
        det = {k: _heap_order(rows, ACTIVITYNET_CAPACITY) for k, rows in det.items() if k in scored_keys}

    num_gt: dict[int, int] = defaultdict(int)
    for rows in gt.values():
        for row in rows:
            num_gt[row.action] += 1
    scores: dict[int, list[float]] = defaultdict(list)
    hits: dict[int, list[np.ndarray]] = defaultdict(list)
    kept = 0
    for k, rows in det.items():
        rows = [r for r in rows if r.box[0] < r.box[2] and r.box[1] < r.box[3]]  # degenerate boxes dropped
        kept += len(rows)
        for c in {r.action for r in rows}:
            mine = [r for r in rows if r.action == c]
            scores[c] += [r.score for r in mine]
            hits[c].append(
                _true_positives([r.box for r in mine], [g.box for g in gt.get(k, ()) if g.action == c], iou_threshold)
            )
    per_class = {
        c: voc_average_precision(scores[c], np.concatenate(hits[c]) if hits[c] else [], num_gt[c])
        if num_gt[c]
        else float("nan")
        for c in sorted(names)
    }
    if all(np.isnan(v) for v in per_class.values()):
        raise AnnotationError(f"{groundtruth_csv}: no ground-truth box of the label map's classes is left to score")
    by_index = np.full(max(names), np.nan)  # the evaluators' array: class id i at index i - 1, NaN-mean over it
    by_index[np.array(sorted(names)) - 1] = [per_class[c] for c in sorted(names)]
    num_keyframes = len(gt) if pysf else len(scored_keys)
    return AvaMapResult(float(np.nanmean(by_index)), per_class, dict(names), num_keyframes, kept, protocol, skipped)


def write_ava_csv(path: str | os.PathLike[str], rows: Iterable[tuple[object, ...]]) -> None:
    """Write AVA CSV rows (``video,timestamp,x1,y1,x2,y2,action[,score]``) all or nothing (the atomic writer)."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    atomic_write(path, text.getvalue())

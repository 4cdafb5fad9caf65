"""Reproduce a checkpoint's published accuracy on your own copy of a dataset, with the benchmark's own metric.

``evaluate(model, dataset, root, annotations)`` reads the split (:mod:`slowfast_zoo.tasks.eval_datasets`), runs each
video through :func:`slowfast_zoo.predict` with ``views="reference"`` (AVA: :func:`slowfast_zoo.detect` on the person
proposals) and scores the result (:mod:`slowfast_zoo.tasks.metrics`).

Resume and shards. Every finished video is appended as one JSON line (one ``write`` of a whole line, then
``fsync``) to ``<out>.parts/shard-I-of-N.jsonl``; a rerun reads what is there (dropping a line a killed process
left half-written) and does only the rest. Video ``k`` of the list belongs to shard ``k % N``: ``shard=(I, N)``,
or under ``torchrun`` the ``RANK`` / ``WORLD_SIZE`` variables. When the shards together hold every video, the run
that notices it (or :func:`merge`) writes ``<out>``: the metric table and the list of videos that could not be
used. The file holds no timings, so an interrupted and resumed run writes the same bytes as an uninterrupted one.
"""

# Over ~400 lines: the runner with its per-dataset jobs and scoring; records and readers are already split out.

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..video.codec import resolve_decoder
from ..video.io import VideoError
from ..weights.cache import output_dir
from . import metrics as M
from .eval_datasets import (
    AvaSet,
    EvalItem,
    EvalSet,
    FrameFolderVideo,
    read_ava,
    read_charades,
    read_kinetics,
    read_ssv2,
)
from .eval_records import (
    append_record,
    float32_list,
    parse_shard,
    parts_dir,
    read_header,
    read_records,
    write_json_atomic,
)
from .runner import (
    batch_for,
    eval_mode,
    load_model,
    portable_cfg,
    progress_bar,
    read_view_inputs,
    video_scores,
)
from .tables import text_table
from .workers import Prefetcher, WorkerKind, worker_device

__all__ = ["AVA_PROTOCOLS", "DATASETS", "EvalResult", "MetricRow", "evaluate", "merge", "parse_shard"]

log = logging.getLogger(__name__)

#: the benchmarks evaluate reads (the CLI's --dataset choices)
DATASETS = ("kinetics400", "kinetics600", "ssv2", "charades", "ava")
AVA_PROTOCOLS = M.AVA_PROTOCOLS
#: what the AVA mAP row says about the evaluator whose rules it applied
AVA_PROTOCOL_NOTES = {
    "pyslowfast": "AVA mAP by the rules of PySlowFast's evaluator (slowfast/utils/ava_eval_helper.py), the one behind "
    "the model zoo's published AVA numbers; --ava-protocol activitynet for the ActivityNet challenge script",
    "activitynet": "AVA mAP by the rules of the ActivityNet challenge script (Evaluation/get_ava_performance.py: "
    "50 detections per keyframe, only keyframes the ground truth lists); the published numbers used PySlowFast's",
}
#: annotation rows left out that the result lists one by one (the count covers all of them)
MAX_LISTED_ROWS = 100
FORMAT = "slowfast_zoo.evaluate/1"

#: how many videos the published numbers were measured on: no source the zoo draws on states it
PUBLISHED_VIDEOS_NOTE = "not stated by the authors (PySlowFast / PyTorchVideo model zoos)"
#: the official split sizes, for comparison (the dataset papers); everyone's copy of Kinetics has fewer
OFFICIAL_SPLIT = {
    "kinetics400": "20,000 validation clips listed (50 per class, Kay et al. 2017)",
    "kinetics600": "30,000 validation clips listed (50 per class, Carreira et al. 2018)",
    "ssv2": "24,777 validation videos listed",
    "charades": "1,863 test videos listed (Charades_v1_test.csv), used as validation",
    "ava": "64 validation movies",
}


@dataclass
class MetricRow:
    """One metric: measured (percent), published (percent, from the pretrained config), and on how many videos."""

    name: str
    measured: float
    published: float | None
    used: int
    skipped: int

    @property
    def difference(self) -> float | None:
        """Measured minus published, in points (None without a published number)."""
        return None if self.published is None else self.measured - self.published


@dataclass
class EvalResult:
    """The metric table of one model on one split, and the videos that could not be used."""

    model: str
    dataset: str
    metrics: list[MetricRow]
    videos: int
    #: video id -> why it was not used (``missing``: not found under root; else the decoder's reason)
    skipped: dict[str, str] = field(default_factory=dict)
    published_videos: int | None = None
    published_videos_note: str = PUBLISHED_VIDEOS_NOTE
    official_split: str = ""
    notes: list[str] = field(default_factory=list)
    #: malformed annotation rows left out (ground truth, proposals, lists), and the first of them with the reason
    rows_skipped: int = 0
    rows_skipped_first: list[tuple[str, str]] = field(default_factory=list)
    #: class name -> the metric of that class, in percent, for ``evaluate --plot``: AP (AVA, Charades: classes with
    #: ground truth) or top-1 accuracy (Kinetics, SSv2: classes with a video); ``per_class_metric`` names it
    per_class: dict[str, float] = field(default_factory=dict)
    per_class_metric: str = "AP (%)"

    @property
    def used(self) -> int:
        """Videos that went into the metric."""
        return self.videos - len(self.skipped)

    def table(self) -> str:
        """A plain-text table: one row per metric."""
        head = ["metric", "measured", "published", "difference", "videos used", "skipped"]
        rows = [
            [
                m.name,
                f"{m.measured:.2f}",
                "-" if m.published is None else f"{m.published:.2f}",
                "-" if m.difference is None else f"{m.difference:+.2f}",
                str(m.used),
                str(m.skipped),
            ]
            for m in self.metrics
        ]
        lines = text_table(head, rows).split("\n")
        used = f"{self.used} of {self.videos} videos used"
        lines.append(f"{used}; the published number used: {self.published_videos or self.published_videos_note}")
        if self.official_split:
            lines.append(f"official split: {self.official_split}")
        lines += self.notes
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (what ``out`` holds)."""
        d = asdict(self)
        for m, row in zip(self.metrics, d["metrics"]):
            row["difference"] = m.difference
        return d


# ---- models -------------------------------------------------------------------------------------------------------
def _default_device() -> str | None:
    if not torch.cuda.is_available():
        return None
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


# ---- the tasks: what one video gives, and the metrics of all of them ---------------------------------------------
@dataclass
class _Job:
    """One video to run: its index in the list, its id, and what the task needs to run it."""

    index: int
    id: str
    payload: Any


@dataclass
class _Decoded:
    """A video and, when it could be read, the model inputs of its views (made by a worker); else why not."""

    job: _Job
    views: list[torch.Tensor] | None = None
    reason: str = ""


def _decode_views(job: _Job, cfg: Any, device: torch.device, decoder: str = "auto") -> _Decoded:
    """Decode and transform one video's reference views (runs in a worker thread or process; no model)."""
    item: EvalItem = job.payload
    if item.path is None:
        return _Decoded(job, reason="not found under root")
    try:
        video = FrameFolderVideo(item.path, item.fps or 30.0) if item.frames else item.path
        _, views = read_view_inputs(video, cfg, "reference", device, decoder)
    except (VideoError, OSError) as e:
        return _Decoded(job, reason=str(e))
    return _Decoded(job, views)


def _crashed(job: _Job, reason: str) -> _Decoded:
    """The record of a video whose decoding worker process died: skipped, with the reason."""
    return _Decoded(job, reason=f"{job.payload.path}: {reason} while decoding it")


def _classify(decoded: _Decoded, model: Any, batch_size: int | None, precision: str) -> dict[str, Any]:
    """The model on one video's decoded views (in the one inference thread), batched as ``predict`` batches them."""
    if decoded.views is None:
        return _record(decoded.job, None, decoded.reason)
    bs = batch_size or batch_for(model, len(decoded.views), precision)  # type: ignore[arg-type]
    scores, _ = video_scores(model, decoded.views, bs, precision)  # type: ignore[arg-type]
    return _record(decoded.job, scores, "")


def _record(job: _Job, scores: torch.Tensor | None, reason: str) -> dict[str, Any]:
    """The line a classified video adds to its shard file (``reason``: why it could not be used)."""
    rec: dict[str, Any] = {"i": job.index, "id": job.id, "y": list(job.payload.target)}
    if job.payload.path is None:
        return {**rec, "status": "missing", "reason": reason}
    if scores is None:
        return {**rec, "status": "unreadable", "reason": reason}
    return {**rec, "status": "ok", "scores": float32_list(scores.tolist())}


def _classify_on_ray(todo: list[_Job], model: str, options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The records of ``todo`` computed by decode tasks and model actors on Ray (:mod:`.ray_jobs`)."""
    from .ray_jobs import classify

    for job in todo:
        if job.payload.path is None:
            yield _record(job, None, "not found under root")
    jobs = {j.index: j for j in todo if j.payload.path is not None}
    videos = [(i, j.payload.path, j.payload.fps if j.payload.frames else None) for i, j in jobs.items()]
    for i, scores, error in classify(videos, model, **options):
        # the decoder's reason, as the local path words it (VideoError: "<path>: <reason>")
        yield _record(jobs[i], scores, error and f"{jobs[i].payload.path}: {error}")


def _detect(job: _Job, model: Any, offset: float) -> dict[str, Any]:
    from .detect import detect

    path, keyframes = job.payload
    rec: dict[str, Any] = {"i": job.index, "id": job.id}
    if path is None:
        return {**rec, "status": "missing", "reason": "not found under root"}
    boxes = {ts - offset: rows for ts, rows in keyframes.items()}
    try:
        preds = detect(path, model, boxes, normalized=True, top_k=1)
    except (VideoError, OSError) as e:
        return {**rec, "status": "unreadable", "reason": str(e)}
    given = [(ts, box) for ts in sorted(keyframes) for box in keyframes[ts]]  # detect's order: keyframes sorted
    rows = [[ts, *box, float32_list(p.scores.tolist())] for (ts, box), p in zip(given, preds)]
    return {**rec, "status": "ok", "rows": rows}


def _published(metrics: Any, key: str) -> float | None:
    v = (metrics or {}).get(key)
    return None if v is None else float(v)


def _score_classification(
    header: dict[str, Any], records: list[dict[str, Any]], skipped: int
) -> tuple[list[MetricRow], dict[str, float], str]:
    """The metric rows, and per class (by label name) the AP (Charades) or top-1 accuracy, in percent."""
    ok = [r for r in records if r["status"] == "ok"]
    if not ok:
        raise ValueError("no video could be read: nothing to score")
    scores = np.array([r["scores"] for r in ok], dtype=np.float64)
    published = header["published"]
    names = header.get("labels") or [str(c) for c in range(scores.shape[1])]
    if header["dataset"] == "charades":
        targets = np.zeros_like(scores, dtype=np.int64)
        for row, r in zip(targets, ok):
            row[r["y"]] = 1
        value = 100 * M.mean_average_precision(scores, targets)
        ap = M.average_precision(scores, targets)  # NaN for a class without a positive: left out, as in the mean
        per_class = {names[c]: 100 * float(a) for c, a in enumerate(ap) if not math.isnan(a)}
        return [MetricRow("mAP", value, _published(published, "mAP"), len(ok), skipped)], per_class, "AP (%)"
    labels = np.array([r["y"][0] for r in ok], dtype=np.int64)
    rows = []
    for k in (1, 5):
        if k <= scores.shape[1]:
            value = 100 * M.topk_accuracy(scores, labels, k)
            rows.append(MetricRow(f"top{k}", value, _published(published, f"top{k}"), len(ok), skipped))
    right = scores.argmax(1) == labels
    per_class = {names[c]: 100 * float(right[labels == c].mean()) for c in sorted(set(labels.tolist()))}
    return rows, per_class, "top-1 (%)"


def _score_ava(
    header: dict[str, Any], records: list[dict[str, Any]], skipped: int, out: Path
) -> tuple[list[MetricRow], list[tuple[str, str]], dict[str, float]]:
    ava = header["ava"]
    names = {int(k): v for k, v in ava["classes"].items()}
    det_csv = out.with_name(out.name + ".detections.csv")
    rows = []
    for r in records:
        for ts, x1, y1, x2, y2, scores in r.get("rows", []):
            rows += [(r["id"], f"{ts:04d}", x1, y1, x2, y2, a, scores[a - 1]) for a in sorted(names)]
    M.write_ava_csv(det_csv, rows)
    protocol = ava.get("protocol", "pyslowfast")
    result = M.ava_frame_map(ava["groundtruth"], det_csv, names, ava["excluded"], protocol=protocol)
    used = sum(r["status"] == "ok" for r in records)
    metric = MetricRow("mAP", 100 * result.map, _published(header["published"], "mAP"), used, skipped)
    per_class = {name: 100 * ap for name, ap in result.named().items() if not math.isnan(ap)}  # NaN: no ground truth
    return [metric], result.skipped, per_class


def merge(out: str | os.PathLike[str]) -> EvalResult | None:
    """Score the shards of ``out`` and write ``out`` if together they hold every video; else None (still running)."""
    out = Path(out)
    parts = sorted(parts_dir(out).glob("shard-*.jsonl"))
    if not parts:
        raise FileNotFoundError(f"{parts_dir(out)}: no shard files (run evaluate with this --out first)")
    header = read_header(parts[0])
    records: dict[int, dict[str, Any]] = {}
    for p in parts:
        records.update(read_records(p, header))
    if len(records) < header["videos"]:
        log.info("%s: %d of %d videos done; merge when every shard has finished", out, len(records), header["videos"])
        return None
    ordered = [records[i] for i in range(header["videos"])]
    skipped = {r["id"]: r["reason"] for r in ordered if r["status"] != "ok"}
    bad_rows = [tuple(x) for x in header.get("rows_skipped", [])]
    n_bad = header.get("rows_skipped_count", len(bad_rows))
    if header["dataset"] == "ava":
        rows, more, per_class = _score_ava(header, ordered, len(skipped), out)
        bad_rows, n_bad, per_class_metric = bad_rows + more, n_bad + len(more), "AP (%)"
    else:
        rows, per_class, per_class_metric = _score_classification(header, ordered, len(skipped))
    result = EvalResult(
        header["model"],
        header["dataset"],
        rows,
        header["videos"],
        skipped,
        official_split=OFFICIAL_SPLIT.get(header["dataset"], ""),
        notes=header["notes"] + ([f"annotation rows left out: {n_bad} (see rows_skipped_first)"] if n_bad else []),
        rows_skipped=n_bad,
        rows_skipped_first=bad_rows[:MAX_LISTED_ROWS],
        per_class=per_class,
        per_class_metric=per_class_metric,
    )
    write_json_atomic(out, result.to_dict())
    return result


# ---- the runner ---------------------------------------------------------------------------------------------------
def _classification_jobs(cfg: Any, dataset: str, root: Any, annotations: Any, label_map: Any) -> tuple[list, list]:
    from ..registry.pretrained import label_names

    names = cfg.label_names
    if names is None or len(names) != cfg.num_classes:
        names = label_names(dataset)
    if dataset == "charades":
        evalset: EvalSet = read_charades(annotations, root, cfg.num_classes)
    elif dataset == "ssv2":
        evalset = read_ssv2(annotations, root, names, label_map)
    else:
        evalset = read_kinetics(annotations, root, names)
    jobs = [_Job(i, it.id, it) for i, it in enumerate(evalset.items)]
    return jobs, evalset.skipped


def _ava_jobs(cfg: Any, root: Any, proposals: Any, threshold: float | None) -> tuple[list, list, float, list]:
    notes = []
    if threshold is None:
        threshold = cfg.person_score_threshold
        if threshold is None:
            raise ValueError(f"{cfg.name}: no published person-box threshold; pass box_threshold (--box-threshold)")
        notes.append(f"person boxes scoring >= {threshold:g} (the checkpoint's person_score_threshold)")
    else:
        notes.append(f"person boxes scoring >= {threshold:g} (given)")
    ava: AvaSet = read_ava(proposals, root, threshold)
    jobs = [_Job(i, vid, (ava.paths[vid], keyframes)) for i, (vid, keyframes) in enumerate(ava.boxes.items())]
    return jobs, notes, threshold, ava.skipped


def _digest(jobs: list[_Job]) -> str:
    return hashlib.sha256("\n".join(j.id for j in jobs).encode()).hexdigest()[:16]


def _checked_arguments(
    dataset: str,
    model: Any,
    shard: tuple[int, int] | str | None,
    *,
    engine: str,
    ava_protocol: str,
    ava_files: tuple[Any, Any],
    precision: str,
    fast: bool,
) -> tuple[int, int]:
    """``(rank, world)`` of this process, after refusing every combination of arguments that cannot run."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if dataset == "ava" and None in ava_files:
        raise ValueError("AVA needs proposals (person boxes with scores) and label_map (the action list .pbtxt)")
    if ava_protocol not in AVA_PROTOCOLS:
        raise ValueError(f"ava_protocol must be one of {', '.join(AVA_PROTOCOLS)}, got {ava_protocol!r}")
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if engine == "ray" and (dataset == "ava" or not isinstance(model, str)):
        raise ValueError("the Ray engine evaluates classification sets with a model name or spec (AVA: local)")
    rank, world = shard if isinstance(shard, tuple) else parse_shard(shard)
    if not 0 <= rank < world:
        raise ValueError(f"shard {rank}/{world}: need 0 <= I < N")
    if engine == "ray" and world != 1:
        raise ValueError(f"shard {rank}/{world}: the Ray engine does the whole list (Ray spreads it); shards are local")
    if dataset == "ava" and (precision != "fp32" or fast):
        raise ValueError("AVA detection runs in fp32 only (precision='fp32', fast=False)")
    return rank, world


# long: the public entry point (32 lines of docstring); it sets up AVA or classification jobs, then runs one loop
def evaluate(
    model: Any,
    dataset: str,
    root: str | os.PathLike[str],
    annotations: str | os.PathLike[str],
    *,
    label_map: str | os.PathLike[str] | None = None,
    proposals: str | os.PathLike[str] | None = None,
    excluded_timestamps: str | os.PathLike[str] | None = None,
    box_threshold: float | None = None,
    ava_time_offset: float = 900.0,
    ava_protocol: str = "pyslowfast",
    limit: int | None = None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    workers: int = 1,
    decoder: str = "auto",
    worker_type: WorkerKind = "thread",
    precision: str = "fp32",
    fast: bool = False,
    out: str | os.PathLike[str] | None = None,
    shard: str | tuple[int, int] | None = None,
    progress: bool = True,
    engine: str = "local",
    ray_options: dict[str, Any] | None = None,
) -> EvalResult | None:
    """Measure a checkpoint on a dataset split with its published test protocol and the benchmark's metric.

    Args:
        model: a model name (published weights; ``hf-hub:`` and ``local-dir:`` too) or a model from ``create``.
        dataset: one of :data:`DATASETS`.
        root: the folder holding the videos (or frame folders).
        annotations: the split's list: Kinetics ``path label`` list or official CSV; SSv2 validation JSON;
            Charades CSV; AVA ground-truth CSV (``ava_val_v2.2.csv``).
        label_map: SSv2 ``something-something-v2-labels.json``; AVA action list ``.pbtxt`` (the scored classes).
        proposals: AVA person boxes with scores (the authors' ``ava_detection_val_boxes_and_labels.csv``).
        excluded_timestamps: AVA ``ava_val_excluded_timestamps_v2.x.csv``.
        box_threshold: AVA proposals kept (score >= it); default: the checkpoint's config value.
        ava_time_offset: seconds of the movie where the video files start (900 for the 15-minute cuts PySlowFast's
            DATASET.md makes; 0 for whole movies).
        ava_protocol: whose AVA evaluator the mAP equals: ``"pyslowfast"`` (the published numbers' evaluator) or
            ``"activitynet"`` (the challenge script; give its ground-truth layout), see :func:`~.metrics.ava_frame_map`.
        limit: only the first ``limit`` videos of the list.
        batch_size: views per forward pass (see :func:`slowfast_zoo.predict`).
        workers: threads or processes that decode and transform videos ahead of the model (0: none, in this
            thread). The model itself runs in one thread, in eval mode throughout, one video's views at a time (its
            mode is restored at the end).
        decoder: which library decodes the videos, as in :func:`slowfast_zoo.predict` (classification sets).
        worker_type: ``"thread"`` or ``"process"`` (:class:`~slowfast_zoo.tasks.workers.Prefetcher`; processes
            transform on the CPU; a video whose worker process dies is skipped with the reason).
        precision: ``"fp32"`` or ``"bf16"``, as in :func:`slowfast_zoo.predict` (classification; AVA runs in fp32).
        fast: run an optimized copy (:func:`slowfast_zoo.optimize_for_inference`), as in :func:`slowfast_zoo.predict`.
        out: results file; per-video records go to ``<out>.parts/`` (resume); None: a temporary folder, no resume.
        shard: ``(I, N)`` or ``"I/N"``: this process does videos ``k % N == I`` (default from RANK/WORLD_SIZE).
        progress: a progress bar (videos/s and ETA) on stderr.
        engine: ``local`` (this process) or ``ray``: decode tasks and model actors on Ray Data, the same records
            and result (classification sets; ``model`` a name or spec; ``slowfast-zoo[ray]``).
        ray_options: for ``ray``: ``address``, ``actors``, ``num_gpus_per_actor``, ``cpus_per_actor``.

    Returns:
        :class:`EvalResult` once every shard is done, else None (another shard still has to finish).
    """
    spec = model
    resolve_decoder(decoder)  # an unknown or unloadable decoder fails before the model loads
    rank, world = _checked_arguments(
        dataset,
        model,
        shard,
        engine=engine,
        ava_protocol=ava_protocol,
        ava_files=(proposals, label_map),
        precision=precision,
        fast=fast,
    )
    dev = device if device is not None else _default_device()
    task = "detect" if dataset == "ava" else "classify"
    model = load_model(model, device=dev, task=task, precision=precision, fast=fast)  # type: ignore[arg-type]
    cfg = model.pretrained_cfg
    run_all: Callable[[list[_Job]], Iterable[dict[str, Any]]] | None = None
    header: dict[str, Any] = {"format": FORMAT, "model": cfg.name, "dataset": dataset, "published": dict(cfg.metrics)}
    header["labels"] = list(cfg.label_names or ())  # names the per-class results (class index without names)
    if dataset == "ava":
        jobs, notes, threshold, bad_rows = _ava_jobs(cfg, root, proposals, box_threshold)
        notes.append(AVA_PROTOCOL_NOTES[ava_protocol])
        classes = M.read_ava_label_map(label_map)  # type: ignore[arg-type]
        if max(classes) > cfg.num_classes or min(classes) < 1:
            raise ValueError(f"{label_map}: action ids must lie in 1..{cfg.num_classes} (id i is model output i - 1)")
        header["ava"] = {
            "groundtruth": str(Path(annotations).resolve()),
            "excluded": str(Path(excluded_timestamps).resolve()) if excluded_timestamps else None,
            "classes": {str(k): v for k, v in sorted(classes.items())},
            "threshold": threshold,
            "offset": ava_time_offset,
            "protocol": ava_protocol,
        }
        decode: Callable[[_Job], Any] | None = None  # detect reads its own keyframe clips
        run: Callable[[Any], dict[str, Any]] = lambda job: _detect(job, model, ava_time_offset)  # noqa: E731
    else:
        jobs, bad_rows = _classification_jobs(cfg, dataset, root, annotations, label_map)
        notes = []
        device_ = worker_device(worker_type, next(model.parameters()).device)
        decode = functools.partial(_decode_views, cfg=portable_cfg(cfg), device=device_, decoder=decoder)
        run = lambda decoded: _classify(decoded, model, batch_size, precision)  # noqa: E731
        if engine == "ray":
            options = {"batch_size": batch_size, "precision": precision, "fast": fast, **(ray_options or {})}
            run_all = lambda todo: _classify_on_ray(todo, spec, options)  # noqa: E731
        if cfg.dataset != dataset and cfg.dataset in DATASETS:
            notes.append(f"note: {cfg.name} was trained on {cfg.dataset}, evaluated here on {dataset}")
    if limit is not None:
        jobs = jobs[: max(limit, 0)]
        notes.append(f"limited to the first {limit} videos of the list")
    for where, why in bad_rows:
        log.warning("annotation row left out: %s: %s", where, why)
    header.update(videos=len(jobs), ids=_digest(jobs), notes=notes)
    header.update(rows_skipped_count=len(bad_rows), rows_skipped=[list(x) for x in bad_rows[:MAX_LISTED_ROWS]])
    if not jobs:
        raise ValueError(f"{annotations}: no videos to evaluate")

    with contextlib.ExitStack() as stack:
        if out is None:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sfz-eval-"))) / "results.json"
        out = Path(out)
        output_dir(parts_dir(out))
        prefetcher = stack.enter_context(Prefetcher(workers if decode is not None else 0, worker_type))
        with eval_mode(model), torch.inference_mode():
            _run_shard(jobs, decode, run, header, out, rank, world, prefetcher, progress, run_all)
        result = merge(out)
    return result


def _run_shard(
    jobs: list[_Job],
    decode: Callable[[_Job], Any] | None,
    run: Callable[[Any], dict[str, Any]],
    header: dict[str, Any],
    out: Path,
    rank: int,
    world: int,
    prefetcher: Prefetcher,
    progress: bool,
    run_all: Callable[[list[_Job]], Iterable[dict[str, Any]]] | None = None,
) -> None:
    """``decode`` each video in the prefetcher's workers, ahead of ``run`` (the model), which runs in this thread
    only; or ``run_all`` makes every record (the Ray engine)."""
    path = parts_dir(out) / f"shard-{rank:05d}-of-{world:05d}.jsonl"
    done = read_records(path, header)
    if not path.exists() or path.stat().st_size == 0:
        append_record(path, {"header": header})
    mine = [j for j in jobs if j.index % world == rank]
    todo = [j for j in mine if j.index not in done]
    bar = progress_bar(len(mine), "evaluate", "video", progress, initial=len(mine) - len(todo))
    start, failed = time.perf_counter(), 0
    try:  # on Ctrl-C: queued videos are dropped; threads finish the video they decode, processes are ended
        if run_all is not None:
            records = run_all(todo)
        else:
            records = map(run, todo if decode is None else prefetcher.map(decode, todo, _crashed))
        for rec in records:
            append_record(path, rec)
            failed += rec["status"] != "ok"
            if bar is not None:
                bar.update(1)
                bar.set_postfix(skipped=failed, refresh=False)
    finally:
        if bar is not None:
            bar.close()
    log.info("shard %d/%d: %d video(s) in %.1f s", rank, world, len(todo), time.perf_counter() - start)

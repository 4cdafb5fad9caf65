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
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..video.io import VideoError
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
from .eval_records import append_record, float32_list, parse_shard, parts_dir, read_records, write_json_atomic

__all__ = ["DATASETS", "EvalResult", "MetricRow", "evaluate", "merge", "parse_shard"]

log = logging.getLogger(__name__)

DATASETS = ("kinetics400", "kinetics600", "ssv2", "charades", "ava")
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
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
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
def _load(model: Any, device: str | torch.device | None) -> Any:
    """A model from a name (published weights; ``hf-hub:``/``local-dir:`` too) with the head pool it was tested with."""
    if not isinstance(model, str):
        if getattr(model, "pretrained_cfg", None) is None:
            raise TypeError("expected a model name or a model made by slowfast_zoo.create")
        return model.to(device) if device is not None else model
    from ..factory import create

    built = create(model, pretrained=True, device=device)
    cfg = built.pretrained_cfg
    if not built.cfg.roi_head and built.cfg.head_pool != cfg.test_head_pool:
        built = create(model, pretrained=True, device=device, head_pool=cfg.test_head_pool)
    return built.eval()


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


def _classify(job: _Job, model: Any, batch_size: int | None) -> dict[str, Any]:
    from .predict import predict

    item: EvalItem = job.payload
    if item.path is None:
        return _record(job, None, "not found under root")
    try:
        video = FrameFolderVideo(item.path, item.fps or 30.0) if item.frames else item.path
        scores = predict(video, model, views="reference", batch_size=batch_size).scores
    except (VideoError, OSError) as e:
        return _record(job, None, str(e))
    return _record(job, scores, "")


def _record(job: _Job, scores: torch.Tensor | None, reason: str) -> dict[str, Any]:
    """The line a classified video adds to its shard file (``reason``: why it could not be used)."""
    rec: dict[str, Any] = {"i": job.index, "id": job.id, "y": list(job.payload.target)}
    if job.payload.path is None:
        return {**rec, "status": "missing", "reason": reason}
    if scores is None:
        return {**rec, "status": "unreadable", "reason": reason}
    return {**rec, "status": "ok", "scores": float32_list(scores.tolist())}


def _classify_on_ray(todo: list[_Job], model: str, batch_size: int | None, options: dict[str, Any]) -> Iterator[dict]:
    """The records of ``todo`` computed by decode tasks and model actors on Ray (:mod:`.ray_jobs`)."""
    from .ray_jobs import classify

    for job in todo:
        if job.payload.path is None:
            yield _record(job, None, "not found under root")
    jobs = {j.index: j for j in todo if j.payload.path is not None}
    videos = [(i, j.payload.path, j.payload.fps if j.payload.frames else None) for i, j in jobs.items()]
    for i, scores, error in classify(videos, model, batch_size=batch_size, **options):
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


def _score_classification(header: dict[str, Any], records: list[dict[str, Any]], skipped: int) -> list[MetricRow]:
    ok = [r for r in records if r["status"] == "ok"]
    if not ok:
        raise ValueError("no video could be read: nothing to score")
    scores = np.array([r["scores"] for r in ok], dtype=np.float64)
    published = header["published"]
    if header["dataset"] == "charades":
        targets = np.zeros_like(scores, dtype=np.int64)
        for row, r in zip(targets, ok):
            row[r["y"]] = 1
        value = 100 * M.mean_average_precision(scores, targets)
        return [MetricRow("mAP", value, _published(published, "mAP"), len(ok), skipped)]
    labels = np.array([r["y"][0] for r in ok], dtype=np.int64)
    rows = []
    for k in (1, 5):
        if k <= scores.shape[1]:
            value = 100 * M.topk_accuracy(scores, labels, k)
            rows.append(MetricRow(f"top{k}", value, _published(published, f"top{k}"), len(ok), skipped))
    return rows


def _score_ava(header: dict[str, Any], records: list[dict[str, Any]], skipped: int, out: Path) -> list[MetricRow]:
    ava = header["ava"]
    names = {int(k): v for k, v in ava["classes"].items()}
    det_csv = out.with_name(out.name + ".detections.csv")
    rows = []
    for r in records:
        for ts, x1, y1, x2, y2, scores in r.get("rows", []):
            rows += [(r["id"], f"{ts:04d}", x1, y1, x2, y2, a, scores[a - 1]) for a in sorted(names)]
    tmp = det_csv.with_name(f".{det_csv.name}.tmp")
    M.write_ava_csv(tmp, rows)
    os.replace(tmp, det_csv)
    result = M.ava_frame_map(ava["groundtruth"], det_csv, names, ava["excluded"])
    used = sum(r["status"] == "ok" for r in records)
    return [MetricRow("mAP", 100 * result.map, _published(header["published"], "mAP"), used, skipped)]


def merge(out: str | os.PathLike[str]) -> EvalResult | None:
    """Score the shards of ``out`` and write ``out`` if together they hold every video; else None (still running)."""
    out = Path(out)
    parts = sorted(parts_dir(out).glob("shard-*.jsonl"))
    if not parts:
        raise FileNotFoundError(f"{parts_dir(out)}: no shard files (run evaluate with this --out first)")
    with open(parts[0], encoding="utf-8") as f:
        header = json.loads(f.readline())["header"]
    records: dict[int, dict[str, Any]] = {}
    for p in parts:
        records.update(read_records(p, header))
    if len(records) < header["videos"]:
        log.info("%s: %d of %d videos done; merge when every shard has finished", out, len(records), header["videos"])
        return None
    ordered = [records[i] for i in range(header["videos"])]
    skipped = {r["id"]: r["reason"] for r in ordered if r["status"] != "ok"}
    if header["dataset"] == "ava":
        rows = _score_ava(header, ordered, len(skipped), out)
    else:
        rows = _score_classification(header, ordered, len(skipped))
    result = EvalResult(
        header["model"],
        header["dataset"],
        rows,
        header["videos"],
        skipped,
        official_split=OFFICIAL_SPLIT.get(header["dataset"], ""),
        notes=header["notes"],
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
    for where, why in evalset.skipped:
        log.warning("annotation left out: %s: %s", where, why)
    jobs = [_Job(i, it.id, it) for i, it in enumerate(evalset.items)]
    return jobs, [f"annotation rows left out: {len(evalset.skipped)}"] if evalset.skipped else []


def _ava_jobs(cfg: Any, root: Any, proposals: Any, threshold: float | None) -> tuple[list, list, float]:
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
    return jobs, notes, threshold


def _digest(jobs: list[_Job]) -> str:
    return hashlib.sha256("\n".join(j.id for j in jobs).encode()).hexdigest()[:16]


# long: the public entry point; half of it is the docstring of its arguments
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
    limit: int | None = None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    workers: int = 1,
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
        limit: only the first ``limit`` videos of the list.
        batch_size: views per forward pass (see :func:`slowfast_zoo.predict`).
        workers: videos decoded and run at once (threads).
        out: results file; per-video records go to ``<out>.parts/`` (resume); None: a temporary folder, no resume.
        shard: ``(I, N)`` or ``"I/N"``: this process does videos ``k % N == I`` (default from RANK/WORLD_SIZE).
        progress: a progress bar (videos/s and ETA) on stderr.
        engine: ``local`` (this process) or ``ray``: decode tasks and model actors on Ray Data, the same records
            and result (classification sets; ``model`` a name or spec; ``slowfast-zoo[ray]``).
        ray_options: for ``ray``: ``address``, ``actors``, ``num_gpus_per_actor``, ``cpus_per_actor``.

    Returns:
        :class:`EvalResult` once every shard is done, else None (another shard still has to finish).
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if dataset == "ava" and (proposals is None or label_map is None):
        raise ValueError("AVA needs proposals (person boxes with scores) and label_map (the action list .pbtxt)")
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if engine == "ray" and (dataset == "ava" or not isinstance(model, str)):
        raise ValueError("the Ray engine evaluates classification sets with a model name or spec (AVA: local)")
    spec = model
    rank, world = shard if isinstance(shard, tuple) else parse_shard(shard)
    if not 0 <= rank < world:
        raise ValueError(f"shard {rank}/{world}: need 0 <= I < N")
    if engine == "ray" and world != 1:
        raise ValueError(f"shard {rank}/{world}: the Ray engine does the whole list (Ray spreads it); shards are local")
    model = _load(model, device if device is not None else _default_device())
    cfg = model.pretrained_cfg
    run_all: Callable[[list[_Job]], Iterable[dict[str, Any]]] | None = None
    header: dict[str, Any] = {"format": FORMAT, "model": cfg.name, "dataset": dataset, "published": dict(cfg.metrics)}
    if dataset == "ava":
        jobs, notes, threshold = _ava_jobs(cfg, root, proposals, box_threshold)
        classes = M.read_ava_label_map(label_map)  # type: ignore[arg-type]
        if max(classes) > cfg.num_classes or min(classes) < 1:
            raise ValueError(f"{label_map}: action ids must lie in 1..{cfg.num_classes} (id i is model output i - 1)")
        header["ava"] = {
            "groundtruth": str(Path(annotations).resolve()),
            "excluded": str(Path(excluded_timestamps).resolve()) if excluded_timestamps else None,
            "classes": {str(k): v for k, v in sorted(classes.items())},
            "threshold": threshold,
            "offset": ava_time_offset,
        }
        run: Callable[[_Job], dict[str, Any]] = lambda job: _detect(job, model, ava_time_offset)  # noqa: E731
    else:
        jobs, notes = _classification_jobs(cfg, dataset, root, annotations, label_map)
        run = lambda job: _classify(job, model, batch_size)  # noqa: E731
        if engine == "ray":
            run_all = lambda todo: _classify_on_ray(todo, spec, batch_size, ray_options or {})  # noqa: E731
        if cfg.dataset != dataset and cfg.dataset in DATASETS:
            notes.append(f"note: {cfg.name} was trained on {cfg.dataset}, evaluated here on {dataset}")
    if limit is not None:
        jobs = jobs[: max(limit, 0)]
        notes.append(f"limited to the first {limit} videos of the list")
    header.update(videos=len(jobs), ids=_digest(jobs), notes=notes)
    if not jobs:
        raise ValueError(f"{annotations}: no videos to evaluate")

    with contextlib.ExitStack() as stack:
        if out is None:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sfz-eval-"))) / "results.json"
        out = Path(out)
        parts_dir(out).mkdir(parents=True, exist_ok=True)
        _run_shard(jobs, run, header, out, rank, world, workers, progress, run_all)
        result = merge(out)
    return result


def _run_shard(
    jobs: list[_Job],
    run: Callable[[_Job], dict[str, Any]],
    header: dict[str, Any],
    out: Path,
    rank: int,
    world: int,
    workers: int,
    progress: bool,
    run_all: Callable[[list[_Job]], Iterable[dict[str, Any]]] | None = None,
) -> None:
    path = parts_dir(out) / f"shard-{rank:05d}-of-{world:05d}.jsonl"
    done = read_records(path, header)
    if not path.exists() or path.stat().st_size == 0:
        append_record(path, {"header": header})
    mine = [j for j in jobs if j.index % world == rank]
    todo = [j for j in mine if j.index not in done]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), unit="video", file=sys.stderr, desc="evaluate")
    start, failed = time.perf_counter(), 0
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 and run_all is None else None
    try:
        records = run_all(todo) if run_all is not None else pool.map(run, todo) if pool is not None else map(run, todo)
        for rec in records:
            append_record(path, rec)
            failed += rec["status"] != "ok"
            if bar is not None:
                bar.update(1)
                bar.set_postfix(skipped=failed, refresh=False)
    finally:
        if pool is not None:  # on Ctrl-C: finish the videos in flight, drop the queued ones
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    log.info("shard %d/%d: %d video(s) in %.1f s", rank, world, len(todo), time.perf_counter() - start)

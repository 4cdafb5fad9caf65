"""``features`` and ``evaluate`` on a Ray cluster: the same result files as one process, the work spread by Ray Data.

The driver (this process) plans the work as the single-process path does, skips what is already finished, and
streams the rest through two stages: :class:`~slowfast_zoo.tasks.ray_data.DecodeClips` as CPU tasks, then a pool
of model actors (:class:`~slowfast_zoo.tasks.ray_data.EmbedClips` / ``ClassifyClips``). Ray Data back-pressures
the stages, retries failed tasks and restarts a dead actor (its batch runs again). Results come back to the driver,
which writes them with the single-process writers: feature shards renamed into place once all their videos are in,
evaluation records appended one per video; so an interrupted driver leaves only complete files, and a rerun does
only the rest. Each row's views (a video's, or a window's) are batched on their own, so its numbers do not depend on
how Ray groups rows. The single-process path batches the views of a shard's videos together: where its batches hold
the same views (e.g. ``views="fast"`` with ``batch_size=1``) the files are equal byte for byte, else within float
rounding (~1e-6). Evaluation batches per video in both engines: its results are equal bit for bit.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from . import features as F
from .ray_data import ClassifyClips, DecodeClips, EmbedClips
from .runner import Precision, load_model, progress_bar

__all__ = ["classify", "extract", "init", "pipeline", "resource_shortfall"]

log = logging.getLogger(__name__)


def init(address: str | None = None) -> None:
    """Connect to Ray (``address``: ``auto``, ``ray://host:10001``, ...; None: an existing connection or a local
    instance on this machine)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False if address is None else None, log_to_driver=False)


def resource_shortfall(
    resources: dict[str, float], actors: int, cpus_per_actor: float, num_gpus_per_actor: float
) -> str | None:
    """Why a cluster with ``resources`` (``ray.cluster_resources()``) cannot run the model actors and one decode
    task at once, or None when it can. Without room for a decode task the actors wait for frames that never come."""
    need = {"CPU": actors * cpus_per_actor + 1, "GPU": actors * num_gpus_per_actor}
    short = [f"{need[k]:g} {k}s, it has {resources.get(k, 0):g}" for k in need if need[k] > resources.get(k, 0)]
    if not short:
        return None
    return (
        f"{actors} model actor(s) ({cpus_per_actor:g} CPU, {num_gpus_per_actor:g} GPU each) plus one decode task "
        f"(1 CPU) need more than the Ray cluster holds now ({'; '.join(short)}): the run waits until the cluster "
        "grows (an autoscaler) and never finishes on a fixed one; use fewer actors or CPUs per actor"
    )


def pipeline(
    rows: list[dict[str, Any]],
    decode: DecodeClips,
    stage: type,
    model: str,
    stage_kwargs: dict[str, Any],
    *,
    actors: int,
    num_gpus_per_actor: float,
    cpus_per_actor: float,
    rows_per_batch: int,
) -> Any:
    """A Ray dataset: ``rows`` -> decode tasks (one video each) -> a pool of ``actors`` model actors, results in
    the order of ``rows`` (it sets ``preserve_order`` on the current ``DataContext``)."""
    import ray

    short = resource_shortfall(ray.cluster_resources(), actors, cpus_per_actor, num_gpus_per_actor)
    if short:
        log.warning(short)
    # in order: shards complete one after another (an interrupted run leaves few half-done) and the driver holds
    # only the rows of shards in progress; the cost is that one slow video holds back the results behind it
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ds: ray.data.Dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 10_000)))
    # memory: what a decode task holds, so a node runs no more of them than fit; the model actors reserve none,
    # so Ray does not fuse decoding into them (fused, an actor would wait for its own frames)
    ds = ds.map_batches(decode, batch_size=1, num_cpus=1, memory=decode.task_memory())
    return ds.map_batches(
        stage,
        fn_constructor_args=(model,),
        fn_constructor_kwargs=stage_kwargs,
        batch_size=rows_per_batch,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=num_gpus_per_actor,
        num_cpus=cpus_per_actor,
    )


class _Gather:
    """Rows of a video arrive in any order, windows of it in any order: a video is done when all its rows are in."""

    def __init__(self) -> None:
        self.rows: dict[int, list[dict[str, Any]]] = {}

    def add(self, row: dict[str, Any]) -> list[dict[str, Any]] | None:
        got = self.rows.setdefault(int(row["order"]), [])
        got.append(row)
        if len(got) < int(row["windows"]):
            return None
        del self.rows[int(row["order"])]
        return sorted(got, key=lambda r: (float(r["start"]), float(r["end"])))


def _rows(ds: Any) -> Iterator[dict[str, Any]]:
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        n = len(batch["order"])
        for i in range(n):
            yield {k: v[i] for k, v in batch.items()}


def extract(
    videos: Sequence[str | os.PathLike[str]],
    model: str,
    out_dir: str | os.PathLike[str],
    *,
    per: Literal["video", "window"] = "video",
    window_s: float = 2.0,
    stride_s: float = 1.0,
    views: Literal["fast", "reference"] = "fast",
    shard_size: int = 256,
    format: Literal["safetensors", "npz", "parquet"] = "safetensors",
    checkpoint: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    precision: Precision = "fp32",
    fast: bool = False,
    address: str | None = None,
    actors: int = 1,
    num_gpus_per_actor: float = 0.0,
    cpus_per_actor: float = 1.0,
    mix_rows: bool = False,
    progress: bool = True,
    stage: type[EmbedClips] = EmbedClips,
    stage_kwargs: dict[str, Any] | None = None,
) -> F.ExtractSummary:
    """:func:`slowfast_zoo.features.extract` on Ray: the same shard files (every shard of the list), written by
    this driver as their videos come back from ``actors`` model actors.

    Args:
        model: a model name, ``hf-hub:`` or ``local-dir:`` spec (every actor builds it; a local-dir folder or
            ``checkpoint`` must be readable on every node).
        address: the Ray cluster (``auto``: the one this machine belongs to); None: a local instance.
        actors: model actors (each holds one copy of the model).
        num_gpus_per_actor: GPUs each actor reserves (0: CPU actors; fractions share a GPU).
        cpus_per_actor: CPUs each actor reserves (decode tasks take one CPU each).
        mix_rows: batch views of several videos together (faster on a GPU; embeddings equal within float rounding
            instead of bit for bit).
        stage, stage_kwargs: the model stage class (a subclass of :class:`EmbedClips`) and more arguments for it.
        Others: as :func:`slowfast_zoo.features.extract`.
    """
    _check_extract_args(model, format, shard_size, actors)
    decode = DecodeClips(model, views=views, per=per, window_s=window_s, stride_s=stride_s)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names, shard_paths = _plan_shards([str(v) for v in videos], shard_size, format)
    num_shards = len(names)
    F.remove_stale_temps(out, names.values())
    summary = F.ExtractSummary(str(out), 0, 1, num_shards)
    if not num_shards:
        return summary
    protocol = dict(per=per, views=views, window_s=window_s, stride_s=stride_s, precision=precision, fast=fast)
    run, dim = _model_record(model, checkpoint, protocol)
    todo = _unfinished_shards(out, names, shard_paths, run, summary)
    if not todo:
        return summary
    rows = [
        {"path": p, "order": k * shard_size + i, "shard": k, "index": i}
        for k in todo
        for i, p in enumerate(shard_paths[k])
    ]
    init(address)
    kwargs = {"checkpoint": checkpoint and str(checkpoint), "batch_size": batch_size, "mix_rows": mix_rows}
    kwargs.update(precision=precision, fast=fast)
    ds = pipeline(
        rows,
        decode,
        stage,
        model,
        {**kwargs, **(stage_kwargs or {})},
        actors=actors,
        num_gpus_per_actor=num_gpus_per_actor,
        cpus_per_actor=cpus_per_actor,
        rows_per_batch=4 if mix_rows else 1,
    )
    bar = progress_bar(len(rows), "features[ray]", "video", progress)
    t0 = time.perf_counter()
    try:
        for k, shard in _completed_shards(_rows(ds), todo, shard_paths, summary, bar):
            _write(out / names[k], k, num_shards, shard_paths[k], shard, run, dim, format, summary)
    finally:
        summary.seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
    return summary


def _check_extract_args(model: Any, format: str, shard_size: int, actors: int) -> None:
    if format not in ("safetensors", "npz", "parquet"):
        raise ValueError(f"format must be safetensors, npz or parquet, got {format!r}")
    if shard_size < 1 or actors < 1:
        raise ValueError("shard_size and actors must be at least 1")
    if not isinstance(model, str):
        raise TypeError("the Ray engine builds the model in each actor: pass its name or hf-hub:/local-dir: spec")


def _plan_shards(paths: list[str], shard_size: int, format: str) -> tuple[dict[int, str], dict[int, list[str]]]:
    """The file name and the videos of each shard: ``shard_size`` videos per shard, in list order (none: no shard)."""
    num_shards = max(1, -(-len(paths) // shard_size)) if paths else 0
    names = {k: F.shard_name(k, num_shards, format) for k in range(num_shards)}
    return names, {k: paths[k * shard_size : (k + 1) * shard_size] for k in range(num_shards)}


def _model_record(
    model: str, checkpoint: str | os.PathLike[str] | None, protocol: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    """The run record (weights hashes) and the embedding size of the model the actors run, from a copy built here."""
    precision, fast = protocol["precision"], protocol["fast"]
    reference = load_model(model, checkpoint=checkpoint, device="cpu", precision=precision, fast=fast)
    return F.run_record(reference, **protocol), reference.num_features


def _unfinished_shards(
    out: Path, names: dict[int, str], shard_paths: dict[int, list[str]], run: dict[str, Any], summary: F.ExtractSummary
) -> list[int]:
    """The shards not written yet; each one already there is checked against this run and counted as skipped."""
    todo = []
    for k, name in names.items():
        if (out / name).exists():
            F.check_shard(out / name, shard_paths[k], run)
            summary.shards_skipped.append(name)
        else:
            todo.append(k)
    return todo


def _completed_shards(
    rows: Iterator[dict[str, Any]],
    todo: list[int],
    shard_paths: dict[int, list[str]],
    summary: F.ExtractSummary,
    bar: Any,
) -> Iterator[tuple[int, dict[int, list[dict[str, Any]]]]]:
    """``(shard, {index in shard: the video's rows})`` for each shard as soon as all its videos are back; each video
    is counted in ``summary`` and on ``bar`` (None: no bar) when its last row arrives."""
    done: dict[int, dict[int, list[dict[str, Any]]]] = {k: {} for k in todo}
    gather = _Gather()
    for row in rows:
        video = gather.add(row)
        if video is None:
            continue
        k = int(row["shard"])
        done[k][int(row["index"])] = video
        summary.videos += 1
        if bar is not None:
            bar.update(1)
        if len(done[k]) == len(shard_paths[k]):
            yield k, done.pop(k)


def _write(
    path: Path,
    k: int,
    num_shards: int,
    paths: list[str],
    videos: dict[int, list[dict[str, Any]]],
    run: dict[str, Any],
    dim: int,
    format: str,
    summary: F.ExtractSummary,
) -> None:
    """One shard, in the single-process writer's layout (videos in list order, windows in time order)."""
    rows, index, starts, ends, failed = [], [], [], [], {}
    for i, path_i in enumerate(paths):
        video = videos[i]
        if str(video[0]["error"]):
            failed[path_i] = str(video[0]["error"])
            log.warning("features: skipped %s: %s", path_i, failed[path_i])
            continue
        for r in video:
            rows.append(torch.from_numpy(r["embedding"].copy()))
            index.append(i)
            starts.append(float(r["start"]))
            ends.append(float(r["end"]))
            summary.clips += int(r["num_views"])
    metadata = {**run, "shard": k, "num_shards": num_shards, "paths": paths, "failed": failed}
    F.write_shard(path, F.shard_tensors(rows, index, starts, ends, dim), metadata, format)
    summary.rows += len(rows)
    summary.shards_written.append(path.name)
    summary.failed.update(failed)


def classify(
    videos: Sequence[tuple[int, str, float | None]],
    model: str,
    *,
    views: Literal["fast", "reference"] = "reference",
    batch_size: int | None = None,
    precision: Precision = "fp32",
    fast: bool = False,
    address: str | None = None,
    actors: int = 1,
    num_gpus_per_actor: float = 0.0,
    cpus_per_actor: float = 1.0,
) -> Iterator[tuple[int, torch.Tensor | None, str]]:
    """``(key, scores, error)`` for each ``(key, path, fps)`` (``fps``: of a frame folder, else None), in the order
    given: ``scores`` as :func:`slowfast_zoo.predict` gives them (None and the reason in ``error`` when the video
    could not be read). Runs the decode stage and ``actors`` :class:`ClassifyClips` actors on Ray."""
    if not isinstance(model, str):
        raise TypeError("the Ray engine builds the model in each actor: pass its name or hf-hub:/local-dir: spec")
    if not videos:
        return
    rows = [{"path": p, "order": key, "fps": float("nan") if fps is None else fps} for key, p, fps in videos]
    init(address)
    ds = pipeline(
        rows,
        DecodeClips(model, views=views),
        ClassifyClips,
        model,
        {"batch_size": batch_size, "precision": precision, "fast": fast},
        actors=actors,
        num_gpus_per_actor=num_gpus_per_actor,
        cpus_per_actor=cpus_per_actor,
        rows_per_batch=1,
    )
    for row in _rows(ds):
        error = str(row["error"])
        yield int(row["order"]), None if error else torch.from_numpy(row["scores"].copy()), error

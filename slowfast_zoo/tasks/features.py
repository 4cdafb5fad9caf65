"""Embeddings of many videos, written to shards: resumable, shardable across machines, with a progress bar.

``extract(videos, model, out_dir)`` computes, per video (``per="video"``) or per sliding window (``per="window"``),
the pooled embedding ``model.forward_head(model.forward_features(x), pre_logits=True)`` of the checkpoint's own
views (``views="fast"``: one centred clip and crop; ``"reference"``: the published clips x crops, embeddings
averaged), preprocessed exactly as :func:`slowfast_zoo.predict` preprocesses them.

Shards. The video list is cut into shards of ``shard_size`` consecutive videos, ``features-KKKKK-of-NNNNN.<ext>``;
shard ``k`` belongs to rank ``k % world_size``, so any number of machines can share one list without talking to
each other (each runs with its own ``rank``). A shard is written to a temporary file and renamed into place when
all its videos are done, so a file that exists is complete; a rerun skips the shards that exist (resume) and
recomputes the rest. Batches mix the views of one shard's videos only, so a shard's bytes depend on its own videos
alone: an interrupted and resumed run writes the same bytes as one uninterrupted run.

Each shard holds ``embeddings`` ``(rows, num_features)``, ``video_index`` ``(rows,)`` (index into the shard's
``paths``), ``start`` / ``end`` ``(rows,)`` seconds, and one metadata entry ``slowfast_zoo.features``, a JSON
object: ``paths`` (every video of the shard), ``failed`` (path -> reason, videos that could not be read: they have
no rows), shard numbers and the run (:data:`RUN_FIELDS`: model, weights file sha256 and tensors sha256,
architecture, preprocessing, ``per``, ``views``, window) (``.npz``: arrays ``paths`` and ``metadata``;
``.parquet``: one row per embedding, the metadata in the schema). A resumed
run refuses shards of another run, and :func:`load_features` refuses to merge shards of different runs.
"""

# Over ~400 lines: extraction, the shard format and its run record belong together (resume checks all three).

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..errors import FeatureShardError
from ..video.codec import resolve_decoder
from ..video.io import VideoError
from ..video.views import plan_views
from ..weights.cache import atomic_writer
from ..weights.formats import read_npz
from .predict import iter_windows
from .runner import (
    ViewRunner,
    eval_mode,
    iter_view_inputs,
    load_model,
    open_video,
    pooled_features,
    portable_cfg,
    progress_bar,
)
from .tuning import tuned_batch
from .workers import Prefetcher, WorkerKind, worker_device

__all__ = [
    "ExtractSummary",
    "check_shard",
    "extract",
    "load_features",
    "read_shard_meta",
    "read_video_list",
    "remove_stale_temps",
    "shard_name",
    "shard_tensors",
    "write_shard",
]

log = logging.getLogger(__name__)

#: 2: shards record the run (model, weights, preprocessing); resume and merge compare it
FORMAT_VERSION = "2"
_EXT = {"safetensors": ".safetensors", "npz": ".npz", "parquet": ".parquet"}


@dataclass
class ExtractSummary:
    """What one :func:`extract` call did (for this rank)."""

    out_dir: str
    rank: int
    world_size: int
    num_shards: int
    shards_written: list[str] = field(default_factory=list)
    #: shards of this rank that already existed (resumed runs)
    shards_skipped: list[str] = field(default_factory=list)
    videos: int = 0
    #: rows written (videos or windows)
    rows: int = 0
    #: model inputs run (views)
    clips: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        s = (
            f"rank {self.rank}/{self.world_size}: {len(self.shards_written)} shard(s) written, "
            f"{len(self.shards_skipped)} already done, {self.videos} video(s), {self.rows} row(s), "
            f"{self.clips} clip(s) in {self.seconds:.1f}s ({self.clips_per_second:.1f} clips/s)"
        )
        if self.failed:
            s += f"; {len(self.failed)} video(s) failed: " + "; ".join(f"{p}: {r}" for p, r in self.failed.items())
        return s


def shard_name(index: int, num_shards: int, format: str = "safetensors") -> str:
    """``features-00003-of-00012.safetensors``."""
    return f"features-{index:05d}-of-{num_shards:05d}{_EXT[format]}"


def read_video_list(items: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Video paths from arguments: a ``.txt`` / ``.csv`` / ``.lst`` file lists one video per line (a CSV's first
    field; relative to the list's folder; ``#`` comments and a ``path`` header skipped); anything else is a video."""
    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.suffix.lower() in (".txt", ".csv", ".lst") and p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                first = line.split(",", 1)[0].strip() if p.suffix.lower() == ".csv" else line
                if first.lower() == "path":
                    continue
                out.append(first if os.path.isabs(first) else str(p.parent / first))
        else:
            out.append(str(p))
    return out


# ---- computing embeddings -----------------------------------------------------------------------------------------
@dataclass
class _Settings:
    per: str
    views: str
    window_s: float
    stride_s: float
    decoder: str = "auto"


@dataclass
class _Rows:
    """One video's model inputs (made by a worker): ``views`` for each row (video or window), or why it failed."""

    views: list[list[torch.Tensor]] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    error: VideoError | None = None


def _crashed(path: str, reason: str) -> _Rows:
    """The rows of a video whose decoding worker process died: none, and the reason."""
    return _Rows(error=VideoError(path, f"{reason} while decoding it"))


def _decode_rows(path: str, cfg: Any, device: torch.device, settings: _Settings) -> _Rows:
    """Decode and transform one video's views, per row, as :func:`predict` makes them (no model: a worker thread or
    process runs it)."""
    rows = _Rows()
    try:
        with torch.inference_mode(), open_video(path, settings.decoder) as reader:
            info = reader.info
            whole = settings.per == "video"
            bounds = (
                [(0.0, info.duration)] if whole else iter_windows(info.duration, settings.window_s, settings.stride_s)
            )
            for start, end in bounds:
                plan = plan_views(cfg, info, settings.views, window=None if whole else (start, end))  # type: ignore[arg-type]
                rows.views.append(list(iter_view_inputs(reader, cfg, plan, device)))
                rows.starts.append(float(start))
                rows.ends.append(float(end))
    except VideoError as err:
        return _Rows(error=err)
    return rows


def _embed_shard(
    shard_paths: list[str], model: Any, settings: _Settings, runner: ViewRunner, prefetcher: Prefetcher, bar: Any,
    summary: ExtractSummary,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:  # fmt: skip
    """The tensors of one shard: every view of its videos, batched across them, one mean embedding per row.

    Batches mix the videos of one shard only, so a shard's bytes depend on its own videos alone (resume is exact).
    """
    cfg = model.pretrained_cfg
    device = worker_device(prefetcher.kind, runner.device)
    counts: list[int] = []  # views per row
    index: list[int] = []
    starts: list[float] = []
    ends: list[float] = []
    failed: dict[str, str] = {}
    t0 = time.perf_counter()
    decode = functools.partial(_decode_rows, cfg=portable_cfg(cfg), device=device, settings=settings)
    decoded = prefetcher.map(decode, shard_paths, _crashed)
    for i, (path, rows) in enumerate(zip(shard_paths, decoded)):
        if rows.error is not None:
            failed[path] = rows.error.reason
            log.warning("features: skipped %s", rows.error)
        for views in rows.views:
            for view in views:
                runner.add(view)
            counts.append(len(views))
        index += [i] * len(rows.views)
        starts += rows.starts
        ends += rows.ends
        summary.clips += sum(len(v) for v in rows.views)
        summary.rows += len(rows.views)
        summary.videos += 1
        if bar is not None:
            bar.set_postfix(clips_per_s=f"{summary.clips / max(time.perf_counter() - t0, 1e-9):.1f}", refresh=False)
            bar.update(1)
        del rows  # only the views waiting in the runner's batch stay while the next video is taken
    views = runner.take() if counts else torch.zeros(0, model.num_features)
    embeddings = [chunk.mean(dim=0) for chunk in views.split(counts)]
    return shard_tensors(embeddings, index, starts, ends, model.num_features), failed


def shard_tensors(
    rows: list[torch.Tensor], index: list[int], starts: list[float], ends: list[float], dim: int
) -> dict[str, torch.Tensor]:
    """The tensors of a shard: embeddings ``(rows, dim)``, ``video_index``, ``start`` / ``end`` seconds."""
    return {
        "embeddings": torch.stack(rows) if rows else torch.zeros(0, dim),
        "video_index": torch.tensor(index, dtype=torch.int64),
        "start": torch.tensor(starts, dtype=torch.float64),
        "end": torch.tensor(ends, dtype=torch.float64),
    }


# ---- writing shards -----------------------------------------------------------------------------------------------
#: the one safetensors metadata entry (a JSON object): several entries would be written in an unspecified order
META_KEY = "slowfast_zoo.features"


def write_shard(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any], format: str) -> None:
    """Write a shard all or nothing (the cache's fsync'ed temp-file-and-rename writer).

    The bytes depend only on the contents (sorted JSON metadata, one entry), so reruns give identical files
    (safetensors, parquet; a zip archive as npz stores the time it was written). Parquet: one row per embedding,
    columns ``video``, ``start``, ``end``, ``embedding`` (float32 list), the metadata in the schema (needs pyarrow).
    """
    meta = json.dumps(metadata, sort_keys=True)
    with atomic_writer(path) as f:
        if format == "safetensors":
            from safetensors.torch import save

            f.write(save({k: v.contiguous() for k, v in sorted(tensors.items())}, metadata={META_KEY: meta}))
        elif format == "parquet":
            _write_parquet(f, tensors, metadata, meta)
        else:
            arrays: dict[str, Any] = {k: v.numpy() for k, v in tensors.items()}
            arrays["paths"] = np.array(metadata["paths"], dtype=str)
            arrays["metadata"] = np.array(meta)
            np.savez(f, **arrays)


def _require_pyarrow() -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError as e:
        raise ImportError("format='parquet' needs pyarrow: pip install 'slowfast-zoo[ray]' (or pyarrow)") from e


def _write_parquet(f: Any, tensors: dict[str, torch.Tensor], metadata: dict[str, Any], meta: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    emb = tensors["embeddings"].numpy()
    table = pa.table(
        {
            "video": pa.array([metadata["paths"][i] for i in tensors["video_index"].tolist()], pa.string()),
            "start": pa.array(tensors["start"].numpy()),
            "end": pa.array(tensors["end"].numpy()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1]),
        },
        metadata={META_KEY: meta},
    )
    pq.write_table(table, f)


def remove_stale_temps(out_dir: Path, names: Iterable[str]) -> None:
    """Temporary files an interrupted run of these shards left behind (a killed process cannot clean up)."""
    for name in names:
        for stale in out_dir.glob(f".{name}.*.incomplete"):
            with contextlib.suppress(OSError):
                stale.unlink()


def extract(
    videos: Sequence[str | os.PathLike[str]],
    model: Any,
    out_dir: str | os.PathLike[str],
    *,
    per: Literal["video", "window"] = "video",
    window_s: float = 2.0,
    stride_s: float = 1.0,
    views: Literal["fast", "reference"] = "fast",
    rank: int = 0,
    world_size: int = 1,
    shard_size: int = 256,
    format: Literal["safetensors", "npz", "parquet"] = "safetensors",
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    workers: int = 1,
    decoder: str = "auto",
    worker_type: WorkerKind = "thread",
    precision: Literal["fp32", "bf16"] = "fp32",
    fast: bool = False,
    progress: bool = True,
) -> ExtractSummary:
    """Write the embeddings of ``videos`` (this rank's shards) to ``out_dir``; see the module doc for the layout.

    Args:
        videos: video files, in the order that defines the shards (give every rank the same list).
        model: a model name (built with its published weights, or ``checkpoint``) or a model from ``create``
            (its ``pretrained_cfg`` gives frames, sampling, sizes and mean/std).
        per: one embedding per ``video``, or per ``window`` of ``window_s`` seconds every ``stride_s`` seconds
            (windows as :func:`slowfast_zoo.predict_windows` places them).
        views: ``fast`` (one centred clip and crop per video or window) or ``reference`` (the checkpoint's
            published clips x crops, embeddings averaged).
        rank: this process's share: shards ``rank, rank + world_size, ...``.
        world_size: the number of processes sharing the work.
        shard_size: videos per shard file (1 makes every video its own file: the finest resume granularity).
        format: ``safetensors``, ``npz`` or ``parquet`` (needs pyarrow, e.g. ``slowfast-zoo[ray]``).
        batch_size: views per forward pass (default: the batch :func:`slowfast_zoo.tune` measured for this model
            on its device, else 8 on CPU and 32 on GPU); batches mix the videos of one shard.
        workers: threads or processes decoding and transforming videos ahead of the model (0: none); the model
            runs in one thread.
        decoder: which library decodes the videos, as in :func:`slowfast_zoo.predict` (the local engine).
        worker_type: ``"thread"`` or ``"process"`` (:class:`~slowfast_zoo.tasks.workers.Prefetcher`; processes
            transform on the CPU; a video whose worker process dies is listed in ``failed``).
        precision: as in :func:`slowfast_zoo.predict` (recorded with the run: resume needs the same).
        fast: as in :func:`slowfast_zoo.predict` (recorded with the run: resume needs the same).
        progress: a tqdm bar on stderr with videos done and clips/s.

    Returns:
        :class:`ExtractSummary` (shards written and skipped, failures with reasons, clips/s).
    """
    _check_arguments(per, format, rank, world_size, shard_size, window_s, stride_s)
    resolve_decoder(decoder)  # an unknown or unloadable decoder fails before any work
    paths = [str(v) for v in videos]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    num_shards = max(1, -(-len(paths) // shard_size)) if paths else 0
    names = {k: shard_name(k, num_shards, format) for k in range(rank, num_shards, world_size)}
    remove_stale_temps(out, names.values())
    summary = ExtractSummary(str(out), rank, world_size, num_shards)
    if not names:
        return summary
    model = load_model(model, checkpoint=checkpoint, device=device)
    if fast:
        model = load_model(model, precision=precision, fast=True)
    run = run_record(model, per=per, views=views, window_s=window_s, stride_s=stride_s, precision=precision, fast=fast)
    shard_of = {k: paths[k * shard_size : (k + 1) * shard_size] for k in names}
    todo = _unfinished(out, names, shard_of, run, summary)
    if not todo:
        return summary
    device_type = next(model.parameters()).device.type
    bs = batch_size or tuned_batch(model, precision) or (8 if device_type == "cpu" else 32)
    runner = ViewRunner(model, pooled_features(model), bs, precision=precision)
    settings = _Settings(per, views, window_s, stride_s, decoder)
    bar = progress_bar(sum(len(shard_of[k]) for k in todo), f"features[{rank}]", "video", progress)
    t0 = time.perf_counter()
    try:
        with eval_mode(model), torch.inference_mode(), Prefetcher(workers, worker_type) as prefetcher:
            for k in todo:
                tensors, failed = _embed_shard(shard_of[k], model, settings, runner, prefetcher, bar, summary)
                meta = {**run, "shard": k, "num_shards": num_shards, "paths": shard_of[k], "failed": failed}
                write_shard(out / names[k], tensors, meta, format)
                summary.shards_written.append(names[k])
                summary.failed.update(failed)
    finally:
        summary.seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
    return summary


def _check_arguments(
    per: str, format: str, rank: int, world_size: int, shard_size: int, window_s: float, stride_s: float
) -> None:
    if per not in ("video", "window"):
        raise ValueError(f"per must be 'video' or 'window', got {per!r}")
    if format not in _EXT:
        raise ValueError(f"format must be one of {sorted(_EXT)}, got {format!r}")
    if format == "parquet":
        _require_pyarrow()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    if per == "window" and (window_s <= 0 or stride_s <= 0):
        raise ValueError("window_s and stride_s must be positive")


def _unfinished(
    out: Path, names: dict[int, str], shard_of: dict[int, list[str]], run: dict[str, Any], summary: ExtractSummary
) -> list[int]:
    """The shards still to write; finished ones must hold the same videos and come from the same run."""
    todo = []
    for k, name in names.items():
        if not (out / name).exists():
            todo.append(k)
            continue
        check_shard(out / name, shard_of[k], run)
        summary.shards_skipped.append(name)
    return todo


#: what a shard records about the run that wrote it; resuming and merging need all of them equal
RUN_FIELDS = (
    "format_version",
    "model",
    "weights_sha256",
    "tensors_sha256",
    "architecture",
    "preprocessing",
    "per",
    "views",
    "window_s",
    "stride_s",
)
#: pretrained-config fields that describe provenance, not how videos become model inputs
_NOT_PREPROCESSING = {
    "arch", "tag", "model", "dataset", "labels", "evaluated_classes", "metrics", "params", "gflops", "origin", "hub",
    "license", "citation", "notes", "weights", "parent",
}  # fmt: skip


def run_record(
    model: Any, *, per: str, views: str, window_s: float, stride_s: float, precision: str = "fp32", fast: bool = False
) -> dict[str, Any]:
    """The run a shard belongs to: model name, weights (file sha256 and the tensors used), architecture and
    preprocessing (every pretrained-config field that shapes the input, and the precision unless fp32), and the
    extraction settings."""
    from ..weights.cache import tensors_sha256

    cfg = model.pretrained_cfg
    record = {
        "format_version": FORMAT_VERSION,
        "model": cfg.name,
        "weights_sha256": cfg.weights.sha256 if getattr(cfg, "weights", None) is not None else None,
        "tensors_sha256": tensors_sha256(model.state_dict()),
        "architecture": _plain(model.cfg),
        "preprocessing": {k: v for k, v in cfg.to_dict().items() if k not in _NOT_PREPROCESSING},
        "per": per,
        "views": views,
        "window_s": window_s if per == "window" else None,
        "stride_s": stride_s if per == "window" else None,
    }
    if precision != "fp32" or fast:
        record["preprocessing"]["precision"] = f"{precision}{' fast' if fast else ''}"
    return json.loads(json.dumps(record))  # the form it has once read back from a shard


def _plain(x: Any) -> Any:
    import dataclasses

    return {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}


def check_shard(path: Path, paths: Sequence[str], run: dict[str, Any]) -> None:
    """Raise ValueError unless the finished shard ``path`` holds ``paths`` and was written by ``run`` (resume)."""
    meta = read_shard_meta(path)
    if meta.get("paths") != list(paths):
        raise ValueError(
            f"{path} holds other videos than this shard of the list: "
            "use a new out_dir for a new list (or the same list, shard_size and order to resume)"
        )
    differ = _run_differences(meta, run)
    if differ:
        raise ValueError(
            f"{path} was written by another run ({', '.join(differ)} differ): use a new out_dir, "
            "or the same model, weights, views and settings to resume"
        )


def _run_differences(meta: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """The run fields in which a shard's metadata differs from ``run``."""
    return [k for k in RUN_FIELDS if meta.get(k) != run.get(k)]


# ---- reading shards -----------------------------------------------------------------------------------------------
def _parse_meta(path: Path, raw: object) -> dict[str, Any]:
    """A shard's metadata object, checked: a JSON object with a ``paths`` list and a ``failed`` mapping."""
    try:
        meta = json.loads(raw) if isinstance(raw, str) else None
    except (json.JSONDecodeError, RecursionError):
        meta = None
    if not (isinstance(meta, dict) and isinstance(meta.get("paths"), list) and isinstance(meta.get("failed"), dict)):
        raise FeatureShardError(
            f"{path}: no valid {META_KEY!r} metadata (a JSON object with 'paths' and 'failed'): "
            "not a shard this zoo wrote, or a damaged one; delete it to extract it again"
        )
    return meta


def read_shard_meta(path: Path) -> dict[str, Any]:
    """The metadata object of a shard file (paths, failed videos, the run), without reading its tensors."""
    if path.suffix == ".parquet":
        return _parse_meta(path, _parquet_meta(_parquet_schema(path)))
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as sf:
            return _parse_meta(path, (sf.metadata() or {}).get(META_KEY))
    z = read_npz(path)  # bounded by the file's size, unlike np.load
    return _parse_meta(path, str(z["metadata"]) if "metadata" in z else None)


def _parquet_schema(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise FeatureShardError(f"{path}: not a readable Parquet file ({e}); delete it to extract it again") from e


def _parquet_meta(schema: Any) -> str | None:
    raw = (schema.metadata or {}).get(META_KEY.encode())
    try:
        return raw.decode() if raw is not None else None
    except UnicodeDecodeError:
        return None


def _read_parquet(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A Parquet shard's tensors and metadata, checked: the columns :func:`write_shard` writes, videos of its list."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema(path)
    meta = _parse_meta(path, _parquet_meta(schema))
    want = {"video": pa.string(), "start": pa.float64(), "end": pa.float64()}
    emb_type = schema.field("embedding").type if "embedding" in schema.names else None
    if (
        emb_type is None
        or any(n not in schema.names or schema.field(n).type != t for n, t in want.items())
        or not (pa.types.is_fixed_size_list(emb_type) and emb_type.value_type == pa.float32())
    ):
        raise FeatureShardError(
            f"{path}: expected columns video (string), start / end (float64), embedding (fixed-size float32 list): "
            "not a shard this zoo wrote, or damaged"
        )
    table = pq.read_table(path, columns=["video", "start", "end", "embedding"])
    dim = emb_type.list_size
    emb = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dim)
    index = {p: i for i, p in enumerate(meta["paths"])}
    videos = table.column("video").to_pylist()
    if any(v not in index for v in videos):
        raise FeatureShardError(f"{path}: a row names a video that is not in its {len(index)} paths (damaged)")
    t = {
        "embeddings": torch.from_numpy(emb.copy()),
        "video_index": torch.tensor([index[v] for v in videos], dtype=torch.int64),
        "start": torch.from_numpy(table.column("start").to_numpy().copy()),
        "end": torch.from_numpy(table.column("end").to_numpy().copy()),
    }
    return t, meta


def load_features(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Every shard in ``out_dir`` (safetensors, npz, parquet), concatenated in shard order.

    Returns ``embeddings`` ``(rows, D)``, ``paths`` (one per row), ``start``, ``end``, ``failed`` (path -> reason)
    and ``shards`` (file names read).
    """
    out = Path(out_dir)
    files = sorted(p for p in out.iterdir() if p.name.startswith("features-") and p.suffix in _EXT.values())
    embs, row_paths, starts, ends, failed = [], [], [], [], {}
    first: dict[str, Any] = {}
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as sf:
                meta = _parse_meta(f, (sf.metadata() or {}).get(META_KEY))
                t = {k: sf.get_tensor(k) for k in sf.keys()}  # noqa: SIM118  (safe_open has no __iter__)
        elif f.suffix == ".parquet":
            t, meta = _read_parquet(f)
        else:
            z = read_npz(f)  # bounded by the file's size, unlike np.load
            meta = _parse_meta(f, str(z["metadata"]) if "metadata" in z else None)
            t = {k: torch.from_numpy(z[k]) for k in ("embeddings", "video_index", "start", "end") if k in z}
        if files and f is not files[0]:
            differ = _run_differences(meta, first)
            if differ:
                raise ValueError(
                    f"{f} and {files[0]} were written by different runs ({', '.join(differ)} differ): "
                    "their embeddings cannot be merged; load each run's folder separately"
                )
        else:
            first = meta
        shard_paths = meta["paths"]
        shard_failed = meta["failed"]
        missing = [k for k in ("embeddings", "video_index", "start", "end") if k not in t]
        if missing:
            raise FeatureShardError(f"{f}: no {', '.join(missing)} tensor(s) (not a shard this zoo wrote, or damaged)")
        index = t["video_index"]
        if index.numel() and not 0 <= index.min() <= index.max() < len(shard_paths):
            raise FeatureShardError(f"{f}: its video_index does not point into its {len(shard_paths)} paths (damaged)")
        embs.append(t["embeddings"])
        row_paths += [shard_paths[i] for i in t["video_index"].tolist()]
        starts.append(t["start"])
        ends.append(t["end"])
        failed.update(shard_failed)
    return {
        "embeddings": torch.cat(embs) if embs else torch.zeros(0, 0),
        "paths": row_paths,
        "start": torch.cat(starts) if starts else torch.zeros(0, dtype=torch.float64),
        "end": torch.cat(ends) if ends else torch.zeros(0, dtype=torch.float64),
        "failed": failed,
        "shards": [f.name for f in files],
    }

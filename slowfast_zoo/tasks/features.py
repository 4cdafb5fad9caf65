"""Embeddings of many videos, written to shards: resumable, shardable across machines, with a progress bar.

``extract(videos, model, out_dir)`` computes, per video (``per="video"``) or per sliding window (``per="window"``),
the pooled embedding ``model.forward_head(model.forward_features(x), pre_logits=True)`` of the checkpoint's own
views (``views="fast"``: one centred clip and crop; ``"reference"``: the published clips x crops, embeddings
averaged), preprocessed exactly as :func:`slowfast_zoo.predict` preprocesses them.

Shards. The video list is cut into shards of ``shard_size`` consecutive videos, ``features-KKKKK-of-NNNNN.<ext>``;
shard ``k`` belongs to rank ``k % world_size``, so any number of machines can share one list without talking to
each other (each runs with its own ``rank``). A shard is written to a temporary file and renamed into place when
all its videos are done, so a file that exists is complete; a rerun skips the shards that exist (resume) and
recomputes the rest. Each video is computed in batches of its own views only, so its embeddings do not depend on
which other videos a run processed: an interrupted and resumed run writes the same bytes as one uninterrupted run.

Each shard holds ``embeddings`` ``(rows, num_features)``, ``video_index`` ``(rows,)`` (index into the shard's
``paths``), ``start`` / ``end`` ``(rows,)`` seconds, and one metadata entry ``slowfast_zoo.features``, a JSON
object: ``paths`` (every video of the shard), ``failed`` (path -> reason, videos that could not be read: they have
no rows), shard numbers and the run (:data:`RUN_FIELDS`: model, weights file sha256 and tensors sha256,
architecture, preprocessing, ``per``, ``views``, window) (``.npz``: arrays ``paths`` and ``metadata``). A resumed
run refuses shards of another run, and :func:`load_features` refuses to merge shards of different runs.
"""

# Over ~400 lines: extraction, the shard format and its run record belong together (resume checks all three).

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..video import transforms as T
from ..video.io import VideoError, VideoReader
from ..weights.cache import atomic_writer
from .predict import load_model, plan_views, window_bounds

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
class _Embedder:
    """Views of one video -> one embedding per clip group (views averaged), batched within the video only."""

    def __init__(self, model: Any, batch_size: int) -> None:
        self.model = model
        self.cfg = model.pretrained_cfg
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.batch_size = batch_size
        self.transform = T.create_transforms(self.cfg, "eval")

    def crops(self, frames: torch.Tensor, positions: Sequence[str]) -> list[torch.Tensor]:
        """Model-layout crops ``(3, T, S, S)`` of uint8 frames ``(T, H, W, 3)``, as :func:`predict` makes them."""
        return self.transform.crops(frames.to(self.device), positions)

    def embed(self, views: list[torch.Tensor]) -> torch.Tensor:
        """``(len(views), num_features)`` float32 on the CPU."""
        out = []
        for i in range(0, len(views), self.batch_size):
            batch = torch.stack(views[i : i + self.batch_size]).to(self.dtype)
            inputs = T.pack_pathways(batch, self.cfg.alpha)
            x = inputs if self.cfg.alpha is not None else inputs[0]
            feats = self.model.forward_features(x)
            out.append(self.model.forward_head(feats, pre_logits=True).float().cpu())
        return torch.cat(out)


def _video_rows(
    reader: Any, emb: _Embedder, per: str, views: str, window_s: float, stride_s: float
) -> tuple[list[torch.Tensor], list[float], list[float], int]:
    """(embeddings, starts, ends, clips run) of one video."""
    info = reader.info
    bounds = [(0.0, info.duration)] if per == "video" else window_bounds(info.duration, window_s, stride_s)
    rows, starts, ends, clips = [], [], [], 0
    for start, end in bounds:
        plan = plan_views(emb.cfg, info, views, window=None if per == "video" else (start, end))
        crops: list[torch.Tensor] = []
        for view in plan:
            crops += emb.crops(view.read(reader), view.crops)
        e = emb.embed(crops)
        rows.append(e.mean(dim=0))
        starts.append(float(start))
        ends.append(float(end))
        clips += len(crops)
    return rows, starts, ends, clips


# ---- writing shards -----------------------------------------------------------------------------------------------
#: the one safetensors metadata entry (a JSON object): several entries would be written in an unspecified order
META_KEY = "slowfast_zoo.features"


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


def _read_parquet(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[META_KEY.encode()])
    dim = table.schema.field("embedding").type.list_size
    emb = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dim)
    index = {p: i for i, p in enumerate(meta["paths"])}
    t = {
        "embeddings": torch.from_numpy(emb.copy()),
        "video_index": torch.tensor([index[v] for v in table.column("video").to_pylist()], dtype=torch.int64),
        "start": torch.from_numpy(table.column("start").to_numpy().copy()),
        "end": torch.from_numpy(table.column("end").to_numpy().copy()),
    }
    return t, meta


def remove_stale_temps(out_dir: Path, names: Iterable[str]) -> None:
    """Temporary files an interrupted run of these shards left behind (a killed process cannot clean up)."""
    for name in names:
        for stale in out_dir.glob(f".{name}.*.incomplete"):
            with contextlib.suppress(OSError):
                stale.unlink()


def _progress(total: int, enabled: bool, rank: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"features[{rank}]", unit="video", file=sys.stderr, dynamic_ncols=True)


# long: one resumable loop (plan shards, skip finished ones, decode, embed, write) sharing its state (to be split)
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
        rank, world_size: this process's share: shards ``rank, rank + world_size, ...``.
        shard_size: videos per shard file (1 makes every video its own file: the finest resume granularity).
        format: ``safetensors``, ``npz`` or ``parquet`` (needs pyarrow, e.g. ``slowfast-zoo[ray]``).
        batch_size: views per forward pass (default: 8 on CPU, 32 on GPU); batches never mix videos.
        progress: a tqdm bar on stderr with videos done and clips/s.

    Returns:
        :class:`ExtractSummary` (shards written and skipped, failures with reasons, clips/s).
    """
    if per not in ("video", "window"):
        raise ValueError(f"per must be 'video' or 'window', got {per!r}")
    if format not in _EXT:
        raise ValueError(f"format must be one of {sorted(_EXT)}, got {format!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    if per == "window" and (window_s <= 0 or stride_s <= 0):
        raise ValueError("window_s and stride_s must be positive")
    paths = [str(v) for v in videos]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    num_shards = max(1, -(-len(paths) // shard_size)) if paths else 0
    mine = list(range(rank, num_shards, world_size))
    names = {k: shard_name(k, num_shards, format) for k in mine}
    remove_stale_temps(out, names.values())
    summary = ExtractSummary(str(out), rank, world_size, num_shards)
    if not mine:
        return summary
    model = load_model(model, checkpoint=checkpoint, device=device)
    run = run_record(model, per=per, views=views, window_s=window_s, stride_s=stride_s)
    todo = []
    for k in mine:
        if (out / names[k]).exists():
            check_shard(out / names[k], paths[k * shard_size : (k + 1) * shard_size], run)
            summary.shards_skipped.append(names[k])
        else:
            todo.append(k)
    if not todo:
        return summary

    device_type = next(model.parameters()).device.type
    emb = _Embedder(model, batch_size or (8 if device_type == "cpu" else 32))
    was_training = model.training
    model.eval()
    total = sum(len(paths[k * shard_size : (k + 1) * shard_size]) for k in todo)
    bar = _progress(total, progress, rank)
    t0 = time.perf_counter()
    try:
        for k in todo:
            shard_paths = paths[k * shard_size : (k + 1) * shard_size]
            rows: list[torch.Tensor] = []
            index: list[int] = []
            starts: list[float] = []
            ends: list[float] = []
            failed: dict[str, str] = {}
            for i, path in enumerate(shard_paths):
                try:
                    with torch.inference_mode(), _open(path) as reader:
                        r, s, e, n = _video_rows(reader, emb, per, views, window_s, stride_s)
                except VideoError as err:
                    failed[path] = err.reason
                    log.warning("features: skipped %s", err)
                    r, s, e, n = [], [], [], 0
                rows += r
                starts += s
                ends += e
                index += [i] * len(r)
                summary.clips += n
                summary.rows += len(r)
                summary.videos += 1
                if bar is not None:
                    elapsed = time.perf_counter() - t0
                    bar.set_postfix(clips_per_s=f"{summary.clips / max(elapsed, 1e-9):.1f}", refresh=False)
                    bar.update(1)
            tensors = shard_tensors(rows, index, starts, ends, model.num_features)
            metadata = {
                **run,
                "shard": k,
                "num_shards": num_shards,
                "paths": shard_paths,
                "failed": failed,
            }
            write_shard(out / names[k], tensors, metadata, format)
            summary.shards_written.append(names[k])
            summary.failed.update(failed)
    finally:
        summary.seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        model.train(was_training)
    return summary


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


def run_record(model: Any, *, per: str, views: str, window_s: float, stride_s: float) -> dict[str, Any]:
    """The run a shard belongs to: model name, weights (file sha256 and the tensors used), architecture and
    preprocessing (every pretrained-config field that shapes the input), and the extraction settings."""
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


def _open(path: str) -> VideoReader:
    return VideoReader(path)


# ---- reading shards -----------------------------------------------------------------------------------------------
def read_shard_meta(path: Path) -> dict[str, Any]:
    """The metadata object of a shard file (paths, failed videos, the run), without reading its tensors."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return json.loads(pq.read_schema(path).metadata[META_KEY.encode()])
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as sf:
            return json.loads(sf.metadata()[META_KEY])
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["metadata"]))


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
                meta = json.loads(sf.metadata()[META_KEY])
                t = {k: sf.get_tensor(k) for k in sf.keys()}  # noqa: SIM118  (safe_open has no __iter__)
        elif f.suffix == ".parquet":
            t, meta = _read_parquet(f)
        else:
            with np.load(f, allow_pickle=False) as z:
                t = {k: torch.from_numpy(z[k]) for k in ("embeddings", "video_index", "start", "end")}
                meta = json.loads(str(z["metadata"]))
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

"""Small, plain datasets for fine-tuning: (path, label) rows from a folder-per-class tree or a CSV, decoded clips.

* :func:`read_folder` (``root/<class>/<video>``) and :func:`read_csv` (``path,label`` with an optional header) give
  :class:`VideoRows`: the rows, the class names and a :class:`SkipReport` of every row left out and why.
* :class:`VideoClipDataset` decodes one clip per row with :mod:`slowfast_zoo.video.io` and preprocesses it with
  :func:`slowfast_zoo.create_transforms`, as the checkpoint was trained (``train``: a random clip of the video,
  scale jitter, random crop and flip) or evaluated (``eval``: the centred clip, the centre crop).
  Every random choice of a sample comes from ``(seed, epoch, index)`` alone, so a sample is the same whichever
  process, worker or run loads it: distributed and resumed training see exactly the batches one process would.
* :class:`ShardedSampler` orders an epoch the same way for every world size and can start mid-epoch.
* :func:`collate_clips` stacks ``[slow, fast]`` lists (or single tensors) and labels.

Unreadable videos are found when the dataset is built (``probe=True``: each file is opened and its first frame
decoded) and reported in ``dataset.skipped``; a video that fails later, while a clip is decoded, is reported too and
replaced by the next readable row so that every batch keeps its size (distributed ranks must stay in step).
"""

# Over ~400 lines: the rows readers (folder, CSV) and the dataset/sampler that consume them, one data path.

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch.utils.data import Dataset, Sampler

from ..video.io import VideoError, VideoReader
from .preprocess import create_transforms, pretrained_cfg_of

__all__ = [
    "VIDEO_EXTENSIONS",
    "ShardedSampler",
    "SkipReport",
    "VideoClipDataset",
    "VideoRow",
    "VideoRows",
    "collate_clips",
    "read_csv",
    "read_folder",
    "read_rows",
]

log = logging.getLogger(__name__)

#: file name endings :func:`read_folder` takes as videos (lower case)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".gif")

#: how many following rows a dataset tries when a video fails while its clip is decoded
MAX_REPLACEMENTS = 10


@dataclass(frozen=True)
class VideoRow:
    """One example: a video file and its class index."""

    path: str
    label: int


@dataclass
class SkipReport:
    """Rows left out of a dataset, each with where it came from and why; ``len(report)`` is the count."""

    entries: list[tuple[str, str]] = field(default_factory=list)

    def add(self, where: str, reason: str) -> None:
        self.entries.append((where, reason))
        log.warning("skipped %s: %s", where, reason)

    def extend(self, other: SkipReport) -> None:
        self.entries.extend(other.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def summary(self, limit: int = 10) -> str:
        """``N rows skipped`` and the first ``limit`` of them with their reasons."""
        if not self.entries:
            return "0 rows skipped"
        lines = [f"{len(self.entries)} row(s) skipped:"]
        lines += [f"  {where}: {reason}" for where, reason in self.entries[:limit]]
        if len(self.entries) > limit:
            lines.append(f"  ... and {len(self.entries) - limit} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


@dataclass
class VideoRows:
    """Rows read from a folder or a CSV, the class names (index = label) and what was skipped."""

    rows: list[VideoRow]
    class_names: list[str]
    skipped: SkipReport = field(default_factory=SkipReport)

    def __len__(self) -> int:
        return len(self.rows)


def read_folder(root: str | os.PathLike[str], extensions: Sequence[str] = VIDEO_EXTENSIONS) -> VideoRows:
    """``root/<class name>/**/<video>``: classes are the sub-folders in sorted order, videos found recursively.

    Files whose ending is not in ``extensions`` and files directly in ``root`` are reported as skipped; hidden
    files and folders (starting with ``.``) are ignored.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: not a folder")
    exts = tuple(e.lower() for e in extensions)
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{base}: no class folders (expected root/<class>/<video files>)")
    skipped = SkipReport()
    for p in sorted(base.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            skipped.add(str(p), "file outside a class folder")
    rows: list[VideoRow] = []
    for label, name in enumerate(classes):
        for p in sorted((base / name).rglob("*")):
            if not p.is_file() or any(part.startswith(".") for part in p.relative_to(base).parts):
                continue
            if p.suffix.lower() not in exts:
                skipped.add(str(p), f"not a video file extension ({p.suffix or 'none'})")
                continue
            rows.append(VideoRow(str(p), label))
    return VideoRows(rows, classes, skipped)


# long: every malformed-row case of a user's CSV gets its own message
def read_csv(
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> VideoRows:
    """Rows ``path,label`` of a CSV file (an optional header row ``path,label`` is recognized).

    ``label`` is a class name or an integer index. Without ``class_names``, names are the sorted distinct labels
    (integer labels ``0..K-1`` keep their values, names ``"0"``, ``"1"``, ...); with them, a label outside the list
    is skipped. Relative paths are taken from ``root`` (default: the CSV's folder). Rows with a wrong number of
    fields, an empty path, an unknown label or a file that does not exist are skipped and reported.
    """
    csv_path = Path(path)
    base = Path(root) if root is not None else csv_path.parent
    skipped = SkipReport()
    raw: list[tuple[str, str, str]] = []  # (where, path, label)
    with open(csv_path, newline="", encoding="utf-8") as f:
        for lineno, fields in enumerate(csv.reader(f), 1):
            where = f"{csv_path}:{lineno}"
            if not fields or all(not x.strip() for x in fields):
                continue
            if lineno == 1 and [x.strip().lower() for x in fields] == ["path", "label"]:
                continue
            if len(fields) != 2:
                skipped.add(where, f"expected 2 fields (path,label), got {len(fields)}")
                continue
            p, label = fields[0].strip(), fields[1].strip()
            if not p or not label:
                skipped.add(where, "empty path or label")
                continue
            raw.append((where, p, label))

    if class_names is None:
        labels = {label for _, _, label in raw}
        if labels and all(_is_int(x) for x in labels):
            ints = sorted({int(x) for x in labels})
            if ints[0] < 0:
                raise ValueError(f"{csv_path}: negative class index {ints[0]}")
            names = [str(i) for i in range(ints[-1] + 1)]
        else:
            names = sorted(labels)
    else:
        names = list(class_names)
    index = {n: i for i, n in enumerate(names)}

    rows: list[VideoRow] = []
    for where, p, label in raw:
        if label in index:
            y = index[label]
        elif _is_int(label) and 0 <= int(label) < len(names):
            y = int(label)
        else:
            skipped.add(where, f"unknown label {label!r}")
            continue
        file = Path(p) if os.path.isabs(p) else base / p
        if not file.is_file():
            skipped.add(where, f"no such file: {file}")
            continue
        rows.append(VideoRow(str(file), y))
    return VideoRows(rows, names, skipped)


def read_rows(source: str | os.PathLike[str], *, class_names: Sequence[str] | None = None) -> VideoRows:
    """A folder (:func:`read_folder`) or a CSV file (:func:`read_csv`), whichever ``source`` is."""
    p = Path(source)
    if p.is_dir():
        rows = read_folder(p)
        if class_names is not None:
            return _remap(rows, list(class_names))
        return rows
    return read_csv(p, class_names=class_names)


def _remap(rows: VideoRows, names: list[str]) -> VideoRows:
    """Folder rows relabelled to a given class list (e.g. a validation folder with the training classes)."""
    index = {n: i for i, n in enumerate(names)}
    out = []
    skipped = SkipReport(list(rows.skipped.entries))
    for row in rows.rows:
        name = rows.class_names[row.label]
        if name not in index:
            skipped.add(row.path, f"class {name!r} is not one of the training classes")
            continue
        out.append(VideoRow(row.path, index[name]))
    return VideoRows(out, names, skipped)


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def _probe(path: str) -> str | None:
    """None if the file opens and its first frame decodes, else why not."""
    try:
        with VideoReader(path) as reader:
            if reader.info.num_frames <= 0 or reader.info.fps <= 0:
                return "no frames"
    except (VideoError, OSError) as e:
        return str(getattr(e, "reason", e))
    return None


def _seed_of(*parts: object) -> int:
    """A stable 64-bit seed from values (unlike ``hash``, the same in every process)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class VideoClipDataset(Dataset):
    """One preprocessed clip and its label per row.

    Args:
        rows: :class:`VideoRows` (from :func:`read_folder` / :func:`read_csv`) or a sequence of :class:`VideoRow`.
        model: the model (or name, or ``PretrainedCfg``) whose preprocessing to use: frames, sampling rate, target
            fps, sizes, mean/std and the ``[slow, fast]`` packing all come from its ``pretrained_cfg``.
        mode: ``train``: a random clip of the video, then :func:`create_transforms` ``train`` (scale jitter, random
            crop, flip); ``eval``: the centred clip, then ``eval`` (test short side, centre crop).
        seed: with the epoch (:meth:`set_epoch`) and the row index, the only source of randomness of a sample.
        probe: open every file when the dataset is built and skip (and report) the unreadable ones.

    Items are ``(inputs, label)``: ``inputs`` is ``[slow, fast]`` (each ``(3, T, H, W)``) or one tensor.
    """

    def __init__(
        self,
        rows: VideoRows | Sequence[VideoRow],
        model: Any,
        mode: Literal["train", "eval"] = "train",
        *,
        seed: int = 0,
        probe: bool = True,
    ) -> None:
        if isinstance(rows, VideoRows):
            self.class_names: list[str] | None = list(rows.class_names)
            self.skipped = SkipReport(list(rows.skipped.entries))
            candidates = list(rows.rows)
        else:
            self.class_names = None
            self.skipped = SkipReport()
            candidates = list(rows)
        if probe:
            kept = []
            for row in candidates:
                reason = _probe(row.path)
                if reason is None:
                    kept.append(row)
                else:
                    self.skipped.add(row.path, reason)
            candidates = kept
        self.rows = candidates
        self.transform = create_transforms(model, mode)
        cfg = self.transform_cfg = _cfg(model)
        self.mode = mode
        self.seed = seed
        self.epoch = 0
        self.num_frames = cfg.num_frames
        self.sampling_rate = cfg.sampling_rate
        self.target_fps = cfg.target_fps
        self.segment = cfg.frame_sampling == "segment"

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """Draw different random clips and crops in each epoch (call before iterating, on every rank)."""
        self.epoch = epoch

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.rows]

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor] | torch.Tensor, int]:
        last: Exception | None = None
        for attempt in range(min(MAX_REPLACEMENTS, len(self.rows))):
            row = self.rows[(index + attempt) % len(self.rows)]
            rng = self._rng(index, attempt)
            try:
                frames = self._decode(row.path, rng)
            except (VideoError, OSError) as e:
                last = e
                self.skipped.add(row.path, f"decoding failed during training: {getattr(e, 'reason', e)}")
                continue
            transform = dataclasses.replace(self.transform, generator=rng)
            return transform(frames), row.label
        raise RuntimeError(f"{MAX_REPLACEMENTS} consecutive videos from row {index} failed to decode") from last

    def _rng(self, index: int, attempt: int = 0) -> random.Random:
        return random.Random(_seed_of(self.seed, self.epoch, index, attempt))

    def read_frames(self, index: int) -> torch.Tensor:
        """The decoded clip of row ``index`` before preprocessing, uint8 ``(T, H, W, 3)`` (what ``dataset[index]``
        transforms; failures raise instead of moving to the next row)."""
        return self._decode(self.rows[index].path, self._rng(index))

    def _decode(self, path: str, rng: random.Random) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)``: the clip the reference samples from this video in this mode."""
        from ..video.views import segment_indices

        with VideoReader(path) as reader:
            info = reader.info
            fps = info.fps
            if self.segment:  # SSv2: one frame per segment; training picks a random frame in each segment
                n = max(info.num_frames, 1)
                if self.mode == "eval":
                    return reader.frames_at_positions(segment_indices(n, self.num_frames).float())
                seg = n / self.num_frames
                pos = [min(math.floor(seg * i + rng.random() * seg), n - 1) for i in range(self.num_frames)]
                return reader.frames_at_positions(pos)
            clip_frames = self.sampling_rate * self.num_frames / self.target_fps * fps
            room = max(info.num_frames - clip_frames, 0.0)
            start = rng.uniform(0, room) if self.mode == "train" else room / 2
            return reader.read_clip(start / fps, self.num_frames, self.sampling_rate, self.target_fps)


def _cfg(model: Any) -> Any:
    return pretrained_cfg_of(model)


def collate_clips(
    batch: Sequence[tuple[list[torch.Tensor] | torch.Tensor, int]],
) -> tuple[list[torch.Tensor] | torch.Tensor, torch.Tensor]:
    """Stack ``(inputs, label)`` items: ``[slow (N, 3, Ts, H, W), fast (N, 3, Tf, H, W)]`` or ``(N, 3, T, H, W)``."""
    if not batch:
        raise ValueError("empty batch")
    inputs = [b[0] for b in batch]
    labels = torch.tensor([int(b[1]) for b in batch], dtype=torch.long)
    if isinstance(inputs[0], (list, tuple)):
        return [torch.stack([x[p] for x in inputs]) for p in range(len(inputs[0]))], labels
    return torch.stack(cast(list[torch.Tensor], inputs)), labels  # torch.stack refuses a batch mixing the forms


class ShardedSampler(Sampler[int]):
    """An epoch's order, the same for every world size: one permutation of ``seed + epoch``, dealt out to ranks.

    Rank ``r`` of ``W`` takes positions ``r, r + W, r + 2W, ...`` of the permutation, cut so that every rank
    gets the same number (``drop_last``) of whole ``batch_size`` batches; without ``drop_last`` the permutation is
    repeated until every rank has the same number of samples (as ``DistributedSampler`` pads), even with fewer
    samples than ranks. Step ``k`` of all ranks together therefore
    covers exactly the samples of step ``k`` of one process with a ``W``-times larger batch.
    ``start_step`` skips the first steps of the epoch (resuming mid-epoch) without loading them.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        if batch_size < 1 or (num_samples < 1 and not drop_last):  # nothing to pad with: ranks would differ
            raise ValueError(
                f"ShardedSampler needs samples and a batch size >= 1 (got {num_samples} samples, batch {batch_size})"
            )
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def steps_per_epoch(self) -> int:
        per_rank = self._per_rank()
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def _per_rank(self) -> int:
        if self.drop_last:
            return (self.num_samples // (self.world_size * self.batch_size)) * self.batch_size
        return math.ceil(self.num_samples / self.world_size)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_samples, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        per_rank = self._per_rank()
        total = per_rank * self.world_size
        if not self.drop_last and total > len(order):  # pad by repeating the order, as DistributedSampler does
            order = (order * math.ceil(total / len(order)))[:total]
        mine = order[self.rank :: self.world_size][:per_rank]
        return iter(mine[self.start_step * self.batch_size :])

    def __len__(self) -> int:
        return max(self._per_rank() - self.start_step * self.batch_size, 0)

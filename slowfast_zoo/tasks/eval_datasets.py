"""Readers for the benchmarks' validation sets in the layouts their users have on disk.

* Kinetics: a ``path label`` list (PySlowFast's ``val.csv``, MMAction2's ``*_val_list_videos.txt``; comma, space or
  tab separated; the label an index or a class name), or the official CSV ``label,youtube_id,time_start,time_end,
  split[,is_cc]`` whose videos are found under ``root`` as ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` (the
  ActivityNet downloader's name) or ``<youtube_id>.<ext>``, in any sub-folder (e.g. ``root/<label>/``).
* Something-Something v2: the official ``something-something-v2-validation.json`` (``id``, ``template``) with the
  label map ``something-something-v2-labels.json`` (template without brackets -> class index), videos
  ``root/<id>.webm`` or frame folders ``root/<id>/``.
* Charades: ``Charades_v1_test.csv`` (``id``, ``actions`` = ``cNNN start end;...``), videos ``root/<id>.mp4`` or
  frame folders ``root/<id>/<id>-NNNNNN.jpg`` (``Charades_v1_rgb``, stored at 24 fps).
* AVA: see :func:`read_ava` (ground truth, person-box proposals with scores, label map, excluded keyframes).

A video that is not found is kept as an item without a path, so the evaluation can count it as missing. A malformed
row (bad fields, not UTF-8, an unusable path) is left out with its reason in ``skipped``; the rest is still read.
"""

from __future__ import annotations

import itertools
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import AnnotationError
from ..video.io import VideoError, VideoInfo
from .annotations import csv_rows, load_json
from .data import VIDEO_EXTENSIONS
from .predict import TensorVideo

__all__ = [
    "IMAGE_EXTENSIONS",
    "AvaSet",
    "EvalItem",
    "EvalSet",
    "FrameFolderVideo",
    "read_ava",
    "read_charades",
    "read_kinetics",
    "read_ssv2",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: frame rate of the Charades frames PySlowFast reads (Charades_v1_rgb.tar,
#: SF:slowfast/datasets/DATASET.md)
CHARADES_FRAME_FPS = 24.0
#: frame rate assumed for SSv2 frame folders (its webm videos' rate); segment sampling does not depend on it
SSV2_FRAME_FPS = 12.0


@dataclass(frozen=True)
class EvalItem:
    """One video of an evaluation set: its id, where it is (None: not found) and its class(es)."""

    id: str
    path: str | None
    #: the class index (single-label) or every positive class (Charades)
    target: tuple[int, ...]
    #: ``path`` is a folder of frames at ``fps``
    frames: bool = False
    fps: float | None = None


@dataclass
class EvalSet:
    """The videos of a split, the number of classes and the annotation rows left out (with why)."""

    dataset: str
    items: list[EvalItem]
    num_classes: int
    multilabel: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        return [it.id for it in self.items if it.path is None]


# ---- finding files ------------------------------------------------------------------------------------------------
class _FileIndex:
    """Video files and frame folders under a root, by name without extension (found once, recursively)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: not a folder (expected the dataset's videos or frames)")
        self.files: dict[str, str] = {}
        self.folders: dict[str, str] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for d in dirnames:
                self.folders.setdefault(d, os.path.join(dirpath, d))
            for name in sorted(filenames):
                stem, ext = os.path.splitext(name)
                if ext.lower() in VIDEO_EXTENSIONS:
                    self.files.setdefault(stem, os.path.join(dirpath, name))

    def video(self, *stems: str) -> str | None:
        return next((self.files[s] for s in stems if s in self.files), None)

    def frames(self, stem: str) -> str | None:
        folder = self.folders.get(stem)
        if folder and any(Path(folder).glob("*")):
            return folder
        return None


def _norm(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip().strip('"').replace("_", " ")).lower()


def _class_index(names: Sequence[str]) -> dict[str, int]:
    return {_norm(n): i for i, n in enumerate(names)}


# ---- Kinetics -----------------------------------------------------------------------------------------------------
def read_kinetics(
    annotations: str | os.PathLike[str], root: str | os.PathLike[str], class_names: Sequence[str]
) -> EvalSet:
    """A Kinetics split from a ``path label`` list or the official CSV (see the module docstring)."""
    path = Path(annotations)
    skipped: list[tuple[str, str]] = []
    rows = csv_rows(path, skipped)
    first = next(rows, None)
    if first is not None and "youtube_id" in first[1]:
        return _read_kinetics_official(path, first[1], rows, root, class_names, skipped)
    return _read_path_label(path, itertools.chain([first] if first else [], rows), root, class_names, skipped)


def _read_kinetics_official(
    path: Path, header: list[str], rows: Any, root: str | os.PathLike[str], class_names: Sequence[str], skipped: list
) -> EvalSet:
    index, files = _class_index(class_names), _FileIndex(root)
    need = {"label", "youtube_id", "time_start", "time_end"}
    if not need <= set(header):
        raise AnnotationError(f"{path}: expected columns {sorted(need)}, got {header}")
    items = []
    for where, fields in rows:
        row = dict(zip(header, fields))
        if len(fields) < len(header):
            skipped.append((where, f"{len(fields)} fields, the header names {len(header)}"))
            continue
        label = index.get(_norm(row["label"]))
        if label is None:
            skipped.append((where, f"unknown class {row['label']!r}"))
            continue
        yid = row["youtube_id"].strip()
        try:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            name = f"{yid}_{start:06d}_{end:06d}"
        except (ValueError, OverflowError):
            skipped.append((where, "time_start/time_end are not numbers"))
            continue
        items.append(EvalItem(name, files.video(name, yid), (label,)))
    return EvalSet("kinetics", items, len(class_names), skipped=skipped)


def _read_path_label(
    path: Path, rows: Any, root: str | os.PathLike[str], class_names: Sequence[str], skipped: list
) -> EvalSet:
    base, index = Path(root), _class_index(class_names)
    items = []
    for n, (where, fields) in enumerate(rows):
        if fields[0].lstrip().startswith("#"):
            continue
        # ``path,label`` (csv) or ``path label`` / ``path<TAB>label`` (one csv field, split at the last blank)
        parts = fields[0].rsplit(None, 1) if len(fields) == 1 else [",".join(fields[:-1]), fields[-1]]
        if len(parts) != 2:
            skipped.append((where, "expected 'path label' or 'path,label'"))
            continue
        rel, label_text = parts[0].strip(), parts[1].strip()
        if n == 0 and (rel.lower(), label_text.lower()) == ("path", "label"):
            continue
        label = int(label_text) if label_text.isdigit() else index.get(_norm(label_text))
        if label is None or not 0 <= label < len(class_names):
            skipped.append((where, f"unknown label {label_text!r}"))
            continue
        file = Path(rel) if os.path.isabs(rel) else base / rel
        try:
            found = file.is_file()
        except (OSError, ValueError) as e:  # a name too long, a NUL byte: not a path
            skipped.append((where, f"not a usable path ({type(e).__name__}: {e})"))
            continue
        items.append(EvalItem(rel, str(file) if found else None, (label,)))
    return EvalSet("kinetics", items, len(class_names), skipped=skipped)


# ---- Something-Something v2 ----------------------------------------------------------------------------------------
def read_ssv2(
    annotations: str | os.PathLike[str],
    root: str | os.PathLike[str],
    class_names: Sequence[str],
    label_map: str | os.PathLike[str] | None = None,
) -> EvalSet:
    """SSv2 from the official validation JSON; classes from ``label_map`` (official labels JSON) or by name."""
    entries = load_json(annotations, list)
    if label_map is not None:
        raw = load_json(label_map, dict)
        try:
            index = {_norm(k): int(v) for k, v in raw.items()}
        except (TypeError, ValueError):
            raise AnnotationError(
                f"{label_map}: expected {{template: class index}} (something-something-v2-labels.json)"
            ) from None
    else:
        index = _class_index(class_names)
    files = _FileIndex(root)
    items, skipped = [], []
    for n, e in enumerate(entries):
        where = f"{annotations}[{n}]"
        if not isinstance(e, dict) or "id" not in e or "template" not in e:
            skipped.append((where, "expected an object with 'id' and 'template'"))
            continue
        vid = str(e["id"])
        label = index.get(_norm(str(e["template"]).replace("[", "").replace("]", "")))
        if label is None or not 0 <= label < len(class_names):
            skipped.append((where, f"template {e['template']!r} is not in the label map"))
            continue
        video, frames = files.video(vid), files.frames(vid)
        items.append(_item(vid, video, frames, (label,), SSV2_FRAME_FPS))
    return EvalSet("ssv2", items, len(class_names), skipped=skipped)


def _item(vid: str, video: str | None, frames: str | None, target: tuple[int, ...], fps: float) -> EvalItem:
    if video is not None:
        return EvalItem(vid, video, target)
    if frames is not None:
        return EvalItem(vid, frames, target, frames=True, fps=fps)
    return EvalItem(vid, None, target)


# ---- Charades -----------------------------------------------------------------------------------------------------
_CHARADES_ACTION = re.compile(r"^c(\d{3})\s+[-\d.]+\s+[-\d.]+$")


def read_charades(annotations: str | os.PathLike[str], root: str | os.PathLike[str], num_classes: int = 157) -> EvalSet:
    """Charades from its CSV: each video's targets are the classes of its action intervals (``cNNN start end``)."""
    files = _FileIndex(root)
    items: list[EvalItem] = []
    skipped: list[tuple[str, str]] = []
    rows = csv_rows(annotations, skipped)
    header = next(rows, (None, []))[1]
    if not {"id", "actions"} <= set(header):
        raise AnnotationError(f"{annotations}: expected Charades columns 'id' and 'actions', got {header}")
    for where, fields in rows:
        if len(fields) < len(header):
            skipped.append((where, f"{len(fields)} fields, the header names {len(header)}"))
            continue
        row = dict(zip(header, fields))
        vid = row["id"].strip()
        targets: set[int] = set()
        bad = None
        for action in filter(None, (a.strip() for a in row["actions"].split(";"))):
            m = _CHARADES_ACTION.match(action)
            if not m or int(m.group(1)) >= num_classes:
                bad = action
                break
            targets.add(int(m.group(1)))
        if bad is not None or not vid:
            skipped.append((where, f"bad id or action {bad!r} (expected 'cNNN start end')"))
            continue
        items.append(_item(vid, files.video(vid), files.frames(vid), tuple(sorted(targets)), CHARADES_FRAME_FPS))
    return EvalSet("charades", items, num_classes, multilabel=True, skipped=skipped)


# ---- AVA ----------------------------------------------------------------------------------------------------------
@dataclass
class AvaSet:
    """AVA videos to score: ``boxes[video_id][timestamp]`` = normalized person boxes (proposals kept)."""

    boxes: dict[str, dict[int, list[list[float]]]]
    paths: dict[str, str | None]
    threshold: float
    skipped: list[tuple[str, str]] = field(default_factory=list)


def read_ava(proposals: str | os.PathLike[str], root: str | os.PathLike[str], threshold: float) -> AvaSet:
    """Person boxes ``video,timestamp,x1,y1,x2,y2,action,score`` scoring at least ``threshold`` (as PySlowFast
    filters them), grouped per video and keyframe; one entry per distinct box; videos ``root/<video_id>.<ext>``."""
    files = _FileIndex(root)
    boxes: dict[str, dict[int, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    seen: set[tuple[str, int, tuple[float, ...]]] = set()
    skipped: list[tuple[str, str]] = []
    for where, r in csv_rows(proposals, skipped):
        try:
            if len(r) != 8:
                raise ValueError(f"expected 8 fields, got {len(r)}")
            vid, ts, box, score = r[0], int(float(r[1])), [float(v) for v in r[2:6]], float(r[7])
        except (ValueError, OverflowError) as e:
            skipped.append((where, f"not video,timestamp,x1,y1,x2,y2,action,score ({e})"))
            continue
        if score < threshold or (vid, ts, tuple(box)) in seen:
            continue
        seen.add((vid, ts, tuple(box)))
        boxes[vid][ts].append(box)
    out = {v: dict(sorted(k.items())) for v, k in sorted(boxes.items())}
    return AvaSet(out, {v: files.video(v) for v in out}, threshold, skipped)


# ---- frame folders ------------------------------------------------------------------------------------------------
class FrameFolderVideo(TensorVideo):
    """A folder of frame images (sorted by name) read like a video at ``fps``: only the frames asked for are loaded."""

    def __init__(self, folder: str | os.PathLike[str], fps: float) -> None:
        self.path = str(folder)
        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise VideoError(folder, f"no frame images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        self.files = files
        h, w = self._load(0).shape[:2]
        n = len(files)
        self.info = VideoInfo(self.path, int(w), int(h), float(fps), n / fps, n, 0, "image", "folder")

    def _load(self, i: int) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError  # Pillow: a torchvision dependency

        try:
            with Image.open(self.files[i]) as img:
                array = np.asarray(img.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise VideoError(self.files[i], f"not a readable image ({e})") from e
        return torch.from_numpy(array.copy())  # (H, W, 3) uint8

    @property
    def frames(self) -> torch.Tensor:  # type: ignore[override]
        """All frames ``(T, H, W, 3)`` (loads the whole folder)."""
        return torch.stack([self._load(i) for i in range(len(self.files))])

    def frames_at_positions(self, positions: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(positions, dtype=torch.float64).floor().clamp(0, len(self.files) - 1).long()
        cache: dict[int, torch.Tensor] = {}
        for i in idx.tolist():
            if i not in cache:
                cache[i] = self._load(i)
        return torch.stack([cache[i] for i in idx.tolist()])

"""Which frames and crops a checkpoint's test protocol takes from a video: one rule per protocol, chosen by config.

The rule is the pretrained config's ``test_clip_sampler`` (the authors' files: docs/sources.md):

* ``pysf_uniform`` (PySlowFast Kinetics, ``SF:slowfast/datasets/decoder.py``): clip ``i`` of ``n`` starts at
  ``max(N - clip_size, 0) * i / n`` frames (``N = stream.frames``, ``clip_size = T * tau * fps / target_fps``),
  converted to a timestamp with ``int(start * duration / N)``; the decoder keeps the frames from the first one at or
  after that timestamp (``F0``) to the end timestamp plus one, and frame ``k`` is ``F0 + floor(k * (clip_size - 1) /
  (T - 1))`` of them. Only a stream without a duration takes ``floor(linspace(start, start + clip_size - 1, T))``
  over all decoded frames.
* ``ptv_constant`` (PyTorchVideo Kinetics, pytorchvideo 0.1.5 ``ConstantClipsPerVideoSampler`` + ``EncodedVideo``
  (PyAV) + ``UniformTemporalSubsample``): clip ``i`` of ``n`` covers ``[s, s + T * tau / target_fps)``
  seconds with ``s = max(duration - clip_duration, 0) * i / n``; the frames whose timestamps fall in it are
  subsampled by ``linspace(0, len - 1, T)``.
* ``pysf_charades`` (PySlowFast ``charades.py``): frames stored at ``target_fps`` (24 for Charades); clip
  ``i`` starts at ``round(i * max(N - L, 0) / (n - 1))`` stored frames, ``L = (T - 1) * tau + 1``, one frame every
  ``tau``. A video at another rate is sampled as if it were stored at ``target_fps``: stored frame ``j`` is the
  frame on screen at ``j / 24`` s, and a video has ``round(frames * 24 / fps)`` of them. (Which instant the
  provider's extraction took for each stored frame is not documented; this is the plain reading.)
* ``ptv_charades`` (PySlowFast's ``Ptvcharades``: pytorchvideo 0.1.5 ``Charades`` on stored frames): the
  constant-clips sampler over a ``FrameVideo`` of 30 "fps", whose 30 cancels against ``TARGET_FPS`` 30: clip ``i``
  starts at frame ``ceil(30 * s)``, ``s = max(N / 30 - L / 30, 0) * i / n``, and takes ``linspace(0, len - 1, T)``
  of the stored frames in ``[start, ceil(30 * (s + L / 30)))``. Stored frames are at ``target_fps`` (24).
* ``segments`` (Something-Something v2): the middle frame of each of ``T`` equal segments of the whole video.
* ``keyframe`` (AVA): ``T`` frames every ``tau`` frames of a ``target_fps`` video, centred on a keyframe.

This module knows no models and no registry: it reads the fields it needs from any config object.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from typing import Any, Literal, Protocol

import torch

__all__ = [
    "ClipView",
    "FrameTable",
    "charades_clip_positions",
    "clip_positions",
    "keyframe_times",
    "plan_views",
    "ptv_charades_clip_positions",
    "ptv_constant_clip_indices",
    "pysf_uniform_clip_indices",
    "read_views",
    "segment_indices",
    "uniform_clip_start",
]

Views = Literal["reference", "fast"]


@dataclass(frozen=True)
class FrameTable:
    """Timestamps of every frame of a video stream in presentation order, and what its header declares."""

    #: presentation timestamps, ascending, in ``time_base`` units (as the container stores them)
    pts: tuple[int, ...]
    time_base: Fraction
    #: the stream's declared start timestamp (0 when it declares none)
    start_pts: int
    #: the stream's declared duration in ``time_base`` units, or None (e.g. Matroska declares none)
    duration: int | None
    #: the stream's declared frame count (0 when it declares none)
    frames: int
    #: average frame rate
    fps: float


class ViewConfig(Protocol):
    """The fields of a pretrained config that frame selection reads."""

    @property
    def num_frames(self) -> int: ...

    @property
    def sampling_rate(self) -> int: ...

    @property
    def target_fps(self) -> float: ...

    @property
    def test_clips(self) -> int: ...

    @property
    def test_crops(self) -> tuple[str, ...]: ...

    @property
    def test_clip_sampler(self) -> str: ...


# ---- positions (frames of a video's average rate; see slowfast_zoo.video.io) ---------------------------------------
def uniform_clip_start(video_frames: float, clip_size: float, clip_idx: int, num_clips: int) -> float:
    """Start of test clip ``clip_idx`` of ``num_clips``: ``max(len - clip_size, 0) * idx / num_clips``."""
    if not 0 <= clip_idx < num_clips:
        raise ValueError(f"clip_idx must be in [0, {num_clips}), got {clip_idx}")
    return max(video_frames - clip_size, 0.0) * clip_idx / num_clips


def clip_positions(start: float, num_frames: int, sampling_rate: int, target_fps: float, fps: float) -> torch.Tensor:
    """Positions ``linspace(start, start + clip_size - 1, T)`` of a clip of ``T * tau * fps / target_fps`` frames."""
    clip_size = sampling_rate * num_frames / target_fps * fps
    return torch.linspace(start, start + clip_size - 1, num_frames)


def charades_clip_positions(
    video_frames: int, num_frames: int, sampling_rate: int, clip_idx: int, num_clips: int
) -> torch.Tensor:
    """Stored-frame indices of PySlowFast's Charades test clip: ``start = round(idx * gap)``, then every ``tau``.

    ``gap = max(len - clip_length, 0) / (num_clips - 1)`` with ``clip_length = (T - 1) * tau + 1``; indices are
    clamped to the video (``charades.py`` ``get_seq_frames``).
    """
    clip_length = (num_frames - 1) * sampling_rate + 1
    gap = max(video_frames - clip_length, 0) / max(num_clips - 1, 1)
    start = round(gap * clip_idx)
    idx = [max(min(start + i * sampling_rate, video_frames - 1), 0) for i in range(num_frames)]
    return torch.tensor(idx, dtype=torch.float32)


def ptv_charades_clip_positions(
    video_frames: int, num_frames: int, sampling_rate: int, clip_idx: int, num_clips: int
) -> torch.Tensor:
    """Stored-frame indices of PySlowFast's PyTorchVideo Charades test clip (see the module doc).

    Keeps pytorchvideo's types: durations are floats (``FrameVideo``: ``len / 30``), the clip start a fraction.
    """
    if not 0 <= clip_idx < num_clips:
        raise ValueError(f"clip_idx must be in [0, {num_clips}), got {clip_idx}")
    rate = 30.0  # FrameVideo's default fps and the configs' default DATA.TARGET_FPS: they cancel
    duration = video_frames / rate
    clip_duration = ((num_frames - 1) * sampling_rate + 1) / rate
    start_sec = Fraction(Fraction(max(duration - clip_duration, 0)), num_clips) * clip_idx
    end_sec = min(start_sec + clip_duration, duration)
    first = math.ceil(rate * start_sec)
    stop = min(math.ceil(rate * end_sec), video_frames)
    count = max(stop - first, 1)  # at least the first frame (pytorchvideo would fail on an empty clip)
    idx = torch.linspace(0, count - 1, num_frames).clamp(0, count - 1).long()
    return (first + idx).clamp(max=video_frames - 1).float()


def segment_indices(video_frames: int, num_frames: int) -> torch.Tensor:
    """The middle frame of each of ``num_frames`` equal segments (PyTorchVideo ``ssv2.py``).

    ``seg = (len - 1) / T``; frame ``i`` is ``(round(seg * i) + round(seg * (i + 1))) // 2`` (half to even).
    """
    if video_frames < 1:
        raise ValueError("segment sampling needs at least one frame")
    seg = (video_frames - 1) / num_frames
    return torch.tensor([(round(seg * i) + round(seg * (i + 1))) // 2 for i in range(num_frames)], dtype=torch.long)


def keyframe_times(keyframe: float, num_frames: int, sampling_rate: int, target_fps: float) -> torch.Tensor:
    """Frame times (seconds) of the AVA clip centred on ``keyframe``, clamped at 0 (the reader clamps the end).

    ``num_frames`` frames every ``sampling_rate`` frames of a ``target_fps`` video, from half the clip length before
    the keyframe (PySlowFast ``ava_dataset.py``: ``range(center - T * tau // 2, center + T * tau // 2, tau)``).
    """
    half = num_frames * sampling_rate // 2
    offsets = torch.arange(num_frames) * sampling_rate - half
    return (keyframe + offsets / target_fps).clamp(min=0.0)


# ---- frame indices (into a FrameTable) --------------------------------------------------------------------------
def pysf_uniform_clip_indices(
    table: FrameTable, num_frames: int, sampling_rate: int, target_fps: float, clip_idx: int, num_clips: int
) -> list[int]:
    """Frames PySlowFast's PyAV decoder gives test clip ``clip_idx`` of ``num_clips`` (see the module doc)."""
    count = len(table.pts)
    clip_size = sampling_rate * num_frames / target_fps * table.fps
    if table.duration is None or table.frames <= 0:
        # the decode-everything branch (the reference divides by the frame count, so it needs one as well)
        start = uniform_clip_start(count, clip_size, clip_idx, num_clips)
        idx = torch.linspace(start, start + clip_size - 1, num_frames).clamp(0, count - 1).long()
        return idx.tolist()
    start = uniform_clip_start(table.frames, clip_size, clip_idx, num_clips)
    timebase = table.duration / table.frames
    start_pts, end_pts = int(start * timebase), int((start + clip_size - 1) * timebase)
    first = next((j for j, p in enumerate(table.pts) if p >= start_pts), None)
    if first is None:
        raise ValueError(f"no frame at or after timestamp {start_pts}: the header declares more video than there is")
    stop = next((j for j in range(first, count) if table.pts[j] > end_pts), count - 1)  # one frame past the end
    kept = stop - first + 1
    rel = torch.linspace(0, clip_size - 1, num_frames).clamp(0, kept - 1).long()
    return [first + int(r) for r in rel]


def ptv_constant_clip_indices(
    table: FrameTable, num_frames: int, sampling_rate: int, target_fps: float, clip_idx: int, num_clips: int
) -> list[int]:
    """Frames pytorchvideo 0.1.5 gives test clip ``clip_idx`` of ``num_clips`` (see the module doc).

    The arithmetic keeps pytorchvideo's types: the clip duration is a float, the duration and start are fractions
    (``pts_to_secs`` subtracts the start timestamp from the declared duration), the end is a float.
    """
    if not 0 <= clip_idx < num_clips:
        raise ValueError(f"clip_idx must be in [0, {num_clips}), got {clip_idx}")
    tb, offset = table.time_base, table.start_pts
    declared = table.duration if table.duration is not None else table.pts[-1]  # no header: the last frame's pts
    duration = int(declared - offset) * tb
    clip_duration = num_frames * sampling_rate / target_fps
    step = Fraction(Fraction(max(duration - clip_duration, 0)), num_clips)
    start_sec = step * clip_idx
    end_sec = start_sec + clip_duration
    start_pts = math.ceil(start_sec / tb) + offset
    end_pts = math.ceil(end_sec / tb) + offset
    kept = [j for j, p in enumerate(table.pts) if start_pts <= p < end_pts]
    if not kept:
        raise ValueError(
            f"no frame in [{float(start_sec):.3f}, {float(end_sec):.3f}) s: pytorchvideo skips such a video"
        )
    idx = torch.linspace(0, len(kept) - 1, num_frames).clamp(0, len(kept) - 1).long()
    return [kept[int(i)] for i in idx]


_INDEX_SAMPLERS: dict[str, Callable[..., list[int]]] = {
    "pysf_uniform": pysf_uniform_clip_indices,
    "ptv_constant": ptv_constant_clip_indices,
}


_STORED_FRAME_SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "pysf_charades": charades_clip_positions,
    "ptv_charades": ptv_charades_clip_positions,
}


# ---- view plans -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipView:
    """One temporal clip of a protocol and its crops: frame positions, or a rule that picks frames by timestamp."""

    positions: torch.Tensor | None
    crops: tuple[str, ...]
    #: picks frame indices from the video's :class:`FrameTable` (timestamp-based rules); None: use ``positions``
    select: Callable[[FrameTable], list[int]] | None = None

    def frame_indices(self, video: Any) -> list[int]:
        """Indices (presentation order) of the frames a timestamp-based view takes from ``video``."""
        if self.select is None:
            raise ValueError("this view is given by positions, not by frame indices")
        return self.select(video.frame_table())

    def read(self, video: Any) -> torch.Tensor:
        """The view's frames from a reader (``VideoReader`` or ``TensorVideo``), uint8 ``(T, H, W, 3)``."""
        if self.select is not None:
            return video.frames_at_indices(self.frame_indices(video))
        return video.frames_at_positions(self.positions)


def read_views(
    video: Any, plan: list[ClipView], frame_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> Iterator[torch.Tensor]:
    """Each view's frames, in plan order: ``frame_fn`` (default: none) applied to every uint8 ``(H, W, 3)`` frame.

    A reader with ``read_views`` (``VideoReader``) decodes all views in one pass; frames in memory are indexed per
    view (each distinct frame converted once per view).
    """
    if hasattr(video, "read_views"):
        yield from video.read_views(plan, frame_fn)
        return
    for view in plan:
        frames = view.read(video)
        yield frames if frame_fn is None else torch.stack([frame_fn(f) for f in frames])


def plan_views(
    cfg: ViewConfig, info: Any, views: Views = "reference", window: tuple[float, float] | None = None
) -> list[ClipView]:
    """The clips and crops a protocol takes from a video (``info``: fps, num_frames), or from ``window`` seconds.

    ``views="fast"`` is one centred clip and crop. Timestamp rules (``pysf_uniform``, ``ptv_constant``) apply to a
    whole video; inside a window the uniform clips are placed by position (the protocols define no windows).
    """
    if views not in ("reference", "fast"):
        raise ValueError(f"views must be 'reference' or 'fast', got {views!r}")
    fps = info.fps
    offset, length = 0.0, float(info.num_frames)
    if window is not None:
        offset = window[0] * fps
        length = max((window[1] - window[0]) * fps, 1.0)
    last = offset + length - 1
    frames, rate, target = cfg.num_frames, cfg.sampling_rate, cfg.target_fps
    sampler = cfg.test_clip_sampler
    clip_size = rate * frames / target * fps
    if views == "fast":
        if sampler == "segments":
            return [ClipView(offset + segment_indices(math.ceil(length), frames).float(), ("center",))]
        pos = clip_positions(offset + max(length - clip_size, 0.0) / 2, frames, rate, target, fps)
        return [ClipView(pos.clamp(offset, last), ("center",))]
    crops, clips = tuple(cfg.test_crops), cfg.test_clips
    if sampler == "segments":
        return [ClipView(offset + segment_indices(math.ceil(length), frames).float(), crops)] * clips
    if sampler in _STORED_FRAME_SAMPLERS:
        rule = _STORED_FRAME_SAMPLERS[sampler]
        scale = fps / target  # stored frames at target_fps, looked up in a video at fps
        stored = max(round(length / scale), 1)
        return [ClipView(offset + rule(stored, frames, rate, i, clips) * scale, crops) for i in range(clips)]
    if sampler in _INDEX_SAMPLERS and window is None:
        pick = partial(_INDEX_SAMPLERS[sampler], **_rule_args(cfg), num_clips=clips)
        return [ClipView(None, crops, partial(pick, clip_idx=i)) for i in range(clips)]
    if sampler not in _INDEX_SAMPLERS:
        raise ValueError(f"{sampler!r} is not a clip sampler for classification views")
    out = []
    for i in range(clips):
        pos = clip_positions(offset + uniform_clip_start(length, clip_size, i, clips), frames, rate, target, fps)
        out.append(ClipView(pos.clamp(offset, last), crops))
    return out


def _rule_args(cfg: ViewConfig) -> dict[str, Any]:
    return dict(num_frames=cfg.num_frames, sampling_rate=cfg.sampling_rate, target_fps=cfg.target_fps)

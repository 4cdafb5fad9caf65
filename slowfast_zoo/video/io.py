"""Video decoding with PyAV: the frames a clip needs, found by seeking, as uint8 RGB.

Needs the ``video`` extra (``pip install "slowfast-zoo[video]"``); PyAV is imported only when a video is opened.

Time and frame positions. A video's frames are addressed by *position* ``p``, in frames of the stream's average
frame rate counted from the first frame: position ``p`` is the frame on screen at time ``p / fps`` (the last frame
whose timestamp is at or before it). For a constant-frame-rate video, position ``p`` is frame ``floor(p)``; a
variable-frame-rate video is sampled at the right times instead of by frame count. Positions before the first frame
give the first frame, positions past the last frame repeat the last one (the reference pads short videos the same
way). Frames can also be taken by index in presentation order (:meth:`VideoReader.frames_at_indices`) from the
stream's timestamps (:meth:`VideoReader.frame_table`): the published test protocols select frames that way
(:mod:`slowfast_zoo.video.views`).
"""

# One module over ~400 lines on purpose: the reader and the timestamp table share PyAV's error handling (VideoError).
from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SlowFastZooError
from .views import FrameTable

__all__ = [
    "VideoError",
    "VideoInfo",
    "VideoNotFoundError",
    "VideoReader",
    "frame_table",
    "probe",
    "read_clip",
    "require_av",
]

log = logging.getLogger(__name__)

#: a wanted time this far (seconds) beyond the frame decoded last is reached by seeking, not by decoding through
SEEK_THRESHOLD_S = 1.0
#: frames larger than this (width x height; DCI 8K) are refused: one RGB frame of it is already 106 MB
MAX_PIXELS = 8192 * 4320
#: a stream with more frames than this (about 9 hours at 30 fps) is refused when its frame table is read
MAX_FRAMES = 1_000_000

#: what the reader does with each decoded frame (a uint8 RGB ``(H, W, 3)`` tensor, upright) before keeping it
FrameFn = Callable[[torch.Tensor], torch.Tensor]


class VideoError(SlowFastZooError, RuntimeError):
    """A video could not be read; the message names the file and what failed."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # rebuilt from (path, reason) in another process (decode workers)
        return type(self), (self.path, self.reason)


class VideoNotFoundError(VideoError, FileNotFoundError):
    """The video file does not exist."""


def require_av() -> Any:
    """The ``av`` module, or an ImportError that says how to install it."""
    try:
        import av
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('reading videos needs PyAV: pip install "slowfast-zoo[video]" (or pip install av)') from e
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What a video stream says about itself (``width``/``height`` as displayed, i.e. after rotation)."""

    path: str
    width: int
    height: int
    #: average frame rate (frames / second); positions are counted in frames of this rate
    fps: float
    #: seconds, from the first frame's timestamp
    duration: float
    #: frames in the stream (from the container, else ``duration * fps`` rounded)
    num_frames: int
    #: counter-clockwise degrees the decoded frames are turned by to be displayed upright
    rotation: int
    codec: str
    container: str


def _open_container(path: str | os.PathLike[str]) -> Any:
    """Open a regular file with FFmpeg's ``file:`` protocol (a name is never read as a URL or another protocol).

    FIFOs, devices and sockets are refused: they can block forever or never end (live sources are not read by
    accident). A regular file is finite, so demuxing it ends.
    """
    av = require_av()
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise VideoNotFoundError(path, "no such file") from None
    except OSError as e:
        raise VideoError(path, f"cannot be read ({e.strerror or e})") from e
    if stat.S_ISDIR(mode):
        raise VideoError(path, "is a directory, not a video file")
    if not stat.S_ISREG(mode):
        raise VideoError(path, "is not a regular file (a FIFO, device or socket): only video files are read")
    try:
        return av.open("file:" + str(p.absolute()), mode="r")
    except av.error.FFmpegError as e:
        raise VideoError(path, f"not a readable video container ({_ffmpeg_reason(e)})") from e


def _open(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> tuple[Any, Any]:
    """Open a file and its first video stream, turning every failure into a :class:`VideoError`."""
    container = _open_container(path)
    streams = container.streams.video
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise VideoError(path, f"has no video stream (streams: {', '.join(kinds)})")
    stream = streams[0]
    if stream.codec_context is None or stream.codec_context.name is None:
        container.close()
        raise VideoError(path, "video stream has no decoder available")
    try:
        _check_size(path, stream.codec_context.width, stream.codec_context.height, max_pixels)
    except VideoError:
        container.close()
        raise
    set_decoder_threads(stream)
    return container, stream


def set_decoder_threads(stream: Any) -> None:
    """FFmpeg's frame threads (several frames decoded at once) where they cannot deadlock, else one thread."""
    if _threads_cannot_deadlock(require_av()):
        stream.thread_type = "AUTO"
    else:
        stream.codec_context.thread_count = 1


def _threads_cannot_deadlock(av: Any) -> bool:
    """Whether FFmpeg's decoding threads can log without waiting for the GIL.

    A decoder is freed with the GIL held (PyAV's ``CodecContext`` deallocation), and freeing it waits for its frame
    threads, which may be logging. PyAV 15-17 drop messages without the GIL only while the log level is None (their
    default); once a level is set (``import torchvision`` sets ERROR: torchvision 0.19, ``torchvision/io/video.py``)
    their callback takes the GIL for every message and never returns: a deadlock. PyAV 18 checks the level first.
    Where threads could deadlock, decode on one thread.
    """
    return int(av.__version__.split(".")[0]) >= 18 or av.logging.get_level() is None


def _check_size(path: str | os.PathLike[str], width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise VideoError(
            path, f"frames of {width}x{height} exceed the limit of {max_pixels} pixels (max_pixels; 8192x4320)"
        )


def _stream_end(path: str | os.PathLike[str], stream_index: int, declared_pts: int | None) -> int | None:
    """The end timestamp (time-base units) of the last packet of a video stream, found without decoding.

    Seeks to the declared end (or the far end) and demuxes from the keyframe before it. None if that fails.
    """
    av = require_av()
    try:
        with _open_container(path) as container:
            stream = container.streams[stream_index]
            target = declared_pts if declared_pts is not None else 2**62
            container.seek(int(target), stream=stream, backward=True, any_frame=False)
            end = None
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size:
                    stop = packet.pts + (packet.duration or 0)
                    end = stop if end is None else max(end, stop)
            return end
    except (av.error.FFmpegError, VideoError, OverflowError, ValueError):
        return None


def _ffmpeg_reason(e: Exception) -> str:
    return str(getattr(e, "strerror", None) or e)


def _info(path: str | os.PathLike[str], container: Any, stream: Any, rotation: int) -> VideoInfo:
    fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate)
    duration = None
    tagged = _tagged_duration(stream)
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif tagged is not None:
        duration = tagged  # Matroska/WebM: the video stream's own length, not the container's (audio may outlast it)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
        if container.start_time is not None and stream.start_time is not None and stream.time_base is not None:
            # container duration is counted from the earliest stream
            duration -= float(stream.start_time * stream.time_base) - container.start_time / 1_000_000
    frames = int(stream.frames or 0)
    if duration is None or duration <= 0:
        duration = frames / fps if frames else 0.0
    if frames <= 0:
        frames = round(duration * fps)
    w, h = stream.codec_context.width, stream.codec_context.height
    if rotation % 180:
        w, h = h, w
    return VideoInfo(
        path=str(path),
        width=int(w),
        height=int(h),
        fps=fps,
        duration=float(duration),
        num_frames=int(frames),
        rotation=rotation,
        codec=str(stream.codec_context.name),
        container=str(container.format.name),
    )


def _tagged_duration(stream: Any) -> float | None:
    """Seconds in the stream's ``DURATION`` tag (``HH:MM:SS.fffffffff``, written per stream by Matroska muxers)."""
    text = (getattr(stream, "metadata", None) or {}).get("DURATION")
    if not text:
        return None
    try:
        h, m, sec = str(text).strip().split(":")
        value = int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        return None
    return value if value > 0 else None


def frame_table(path: str | os.PathLike[str]) -> FrameTable:
    """Timestamps of every frame of a video's first video stream, read from its packets (nothing is decoded)."""
    av = require_av()
    try:
        with _open_container(path) as container:
            stream = container.streams.video[0]
            pts = _bounded(path, (p.pts for p in container.demux(stream) if p.size))
            if any(p is None for p in pts):  # packets without timestamps (e.g. AVI): decode to learn them
                container.seek(0)
                pts = _bounded(path, (f.pts if f.pts is not None else f.dts for f in container.decode(stream)))
            table = FrameTable(
                pts=tuple(sorted({int(p) for p in pts if p is not None})),
                time_base=Fraction(stream.time_base) if stream.time_base else Fraction(1, 1),
                start_pts=int(stream.start_time or 0),
                duration=int(stream.duration) if stream.duration is not None else None,
                frames=int(stream.frames or 0),
                fps=float(stream.average_rate or stream.guessed_rate or stream.base_rate),
            )
    except (av.error.FFmpegError, IndexError) as e:
        raise VideoError(path, f"reading the frame timestamps failed ({_ffmpeg_reason(e)})") from e
    if not table.pts:
        raise VideoError(path, "video stream has zero frames")
    return table


def _bounded(path: str | os.PathLike[str], items: Iterator[Any]) -> list[Any]:
    out = []
    for item in items:
        out.append(item)
        if len(out) > MAX_FRAMES:
            raise VideoError(path, f"more than {MAX_FRAMES} frames (MAX_FRAMES): not read as one video")
    return out


def _normalize_rotation(deg: float) -> int:
    return round(deg / 90.0) * 90 % 360


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Size, frame rate, duration, frame count and rotation of a video, without decoding it."""
    with VideoReader(path) as reader:
        return reader.info


class VideoReader:
    """Random access to the frames of one video by time or position, decoding only what is asked for.

    Each request seeks to the keyframe before the first wanted frame and decodes forward from there; requests
    that move forward by less than :data:`SEEK_THRESHOLD_S` keep decoding without a seek, so consecutive clips
    of a long video (sliding windows) are read in one pass. ``frames_decoded`` and ``seeks`` count the work done.
    (:class:`slowfast_zoo.video.codec.TorchCodecReader` decodes the same frames with torchcodec instead.)
    """

    #: the library that decodes the frames
    decoder = "pyav"

    def __init__(
        self, path: str | os.PathLike[str], *, seek_threshold: float = SEEK_THRESHOLD_S, max_pixels: int = MAX_PIXELS
    ) -> None:
        self.path = str(path)
        self._container, self._stream = _open(path, max_pixels)
        stream = self._stream
        self.seek_threshold = seek_threshold
        self.max_pixels = max_pixels
        self.frames_decoded = 0
        self.seeks = 0
        self._tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1)
        # timestamps are rounded to the time base (1 ms in Matroska): a frame within half a tick counts as on time
        self._eps = self._tb / 2
        self._start_pts = stream.start_time if stream.start_time is not None else None
        #: timestamps of the frames the current request needs (None: decode every frame); see :meth:`_packets_decoded`
        self._wanted_pts: frozenset[int] | None = None
        self._skipping = True  # until a decoded frame's timestamp differs from the table's
        self._decoder: Any = self._packets_decoded()
        self._cur: Any = None  # last frame at or before the last wanted time
        self._next: Any = None  # lookahead: first frame after it
        self._eof = False
        self._at_start = True  # the decoder is at the first frame, nothing consumed yet
        self._table: FrameTable | None = None
        try:
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate or rate <= 0:
                raise VideoError(path, "video stream has no frame rate")
            self._fps = Fraction(rate)
            # the first frame: proves the stream decodes and carries the rotation (display matrix)
            self._next = self._advance()
            if self._next is None:
                raise VideoError(path, self._why_no_frames())
            rotation = _normalize_rotation(getattr(self._next, "rotation", 0) or 0)
            info = _info(path, self._container, stream, rotation)
            #: what the header declares (the truncation check compares with it); ``info`` is capped by the packets
            self.declared_duration = info.duration
            self.info = self._capped(info)
        except BaseException:
            self._container.close()
            raise

    def _capped(self, info: VideoInfo) -> VideoInfo:
        """``info`` with the duration and frame count no longer than the stream's packets reach.

        A header may declare any length (a Matroska tag of 1e12 s on a 2 kB file); windows and positions are placed
        in the video that is really there.
        """
        stream = self._stream
        frame = 1.0 / info.fps
        declared = None
        if stream.duration is not None:
            declared = (stream.start_time or 0) + stream.duration
        end_pts = _stream_end(self.path, stream.index, declared)
        if end_pts is None or self._start_pts is None:
            return info
        held = float((end_pts - self._start_pts) * self._tb)
        if held <= 0 or info.duration <= held + frame:
            return info
        log.debug("%s: header declares %.3fs, packets end at %.3fs", self.path, info.duration, held)
        frames = min(info.num_frames, math.ceil(held * info.fps))
        return dataclasses.replace(info, duration=held, num_frames=frames)

    def _why_no_frames(self) -> str:
        """Tell an empty video stream from one whose packets do not decode (only called on failure)."""
        packets = 0
        try:
            self._container.seek(0)
            packets = sum(1 for p in self._container.demux(self._stream) if p.size)
        except Exception:  # the stream is unreadable either way
            pass
        if packets:
            return f"truncated or corrupt video stream: {packets} packet(s) but no frame could be decoded"
        return "video stream has zero frames"

    # ---- context manager -------------------------------------------------------------------------------------
    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._decoder = self._cur = self._next = None
        self._container.close()

    # ---- public API --------------------------------------------------------------------------------------------
    def frames_at(self, times: Sequence[float] | torch.Tensor | np.ndarray) -> torch.Tensor:
        """The frames on screen at these times (seconds from the first frame), uint8 RGB ``(T, H, W, 3)``."""
        return self._frames([Fraction(float(t)) for t in _as_list(times)])

    def frames_at_positions(self, positions: Sequence[float] | torch.Tensor | np.ndarray) -> torch.Tensor:
        """The frames at positions in frames of the average rate (see the module doc), uint8 RGB ``(T, H, W, 3)``."""
        return self._frames(self._times(positions))

    def frame_table(self) -> FrameTable:
        """Timestamps of every frame (read once from the packets, then kept) and the stream's declared length."""
        if self._table is None:
            self._table = frame_table(self.path)
        return self._table

    def frames_at_indices(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames by index in presentation order (see :meth:`frame_table`), uint8 RGB ``(T, H, W, 3)``."""
        return self._frames(self._times_of_indices(indices))

    def read_clip(self, start: float, num_frames: int, sampling_rate: int, target_fps: float = 30.0) -> torch.Tensor:
        """A clip of ``num_frames`` frames taken every ``sampling_rate`` frames of a ``target_fps`` video.

        The clip window starts at ``start`` seconds and lasts ``num_frames * sampling_rate / target_fps`` seconds;
        its frames are at positions ``linspace(start, start + clip_size - 1, T)`` (in frames of the video). Returns
        uint8 RGB ``(num_frames, H, W, 3)``; a window that runs past the end repeats the last frame. (The published
        test protocols pick frames by timestamp instead: :mod:`slowfast_zoo.video.views`.)
        """
        fps = float(self._fps)
        first = start * fps
        clip_size = sampling_rate * num_frames / target_fps * fps
        return self.frames_at_positions(torch.linspace(first, first + clip_size - 1, num_frames))

    # ---- decoding ----------------------------------------------------------------------------------------------
    def _time(self, frame: Any) -> Fraction:
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            raise VideoError(self.path, "decoded frame has no timestamp")
        if self._start_pts is None:
            self._start_pts = pts
        return (pts - self._start_pts) * self._tb

    def _seek(self, t: Fraction) -> None:
        stream = self._stream
        offset = 0 if self._start_pts is None else self._start_pts
        target = offset + math.floor(max(t, Fraction(0)) / self._tb)
        try:
            self._container.seek(int(target), stream=stream, backward=True, any_frame=False)
        except Exception as e:
            raise VideoError(self.path, f"seeking to {float(t):.3f}s failed ({_ffmpeg_reason(e)})") from e
        self.seeks += 1
        self._decoder = self._packets_decoded()
        self._cur = self._next = None
        self._eof = False
        self._at_start = t <= 0

    def _packets_decoded(self) -> Iterator[Any]:
        """The decoded frames from here on (as ``container.decode``), skipping unwanted non-reference frames.

        While :attr:`_wanted_pts` is set, a packet whose timestamp is not a wanted frame's is decoded with FFmpeg's
        ``skip_frame = NONREF``: if no other frame refers to it (a B-frame of H.264 without b-pyramid, most of
        them with it), it is dropped undecoded; every other frame decodes as before, bit for bit, since a frame no
        other refers to changes none. A packet without a timestamp is always decoded. FFmpeg's frame threads copy
        ``skip_frame`` from this context as each packet is handed to them (``libavcodec/pthread_frame.c``,
        ``update_context_from_user`` in ``submit_packet``), so setting it per packet applies to that packet.
        """
        ctx = self._stream.codec_context
        for packet in self._container.demux(self._stream):
            wanted = self._wanted_pts
            skip = wanted is not None and packet.pts is not None and packet.pts not in wanted
            mode = "NONREF" if skip else "DEFAULT"
            if ctx.skip_frame != mode:
                ctx.skip_frame = mode
            yield from packet.decode()

    def _advance(self) -> Any:
        """The next decoded frame, or None at the end of the stream."""
        av = require_av()
        try:
            frame = next(self._decoder)
        except StopIteration:
            self._eof = True
            return None
        except av.error.EOFError:
            self._eof = True
            return None
        except av.error.FFmpegError as e:
            where = f" after {float(self._time(self._cur)):.3f}s" if self._cur is not None else ""
            raise VideoError(self.path, f"corrupt video stream: decoding failed{where} ({_ffmpeg_reason(e)})") from e
        self.frames_decoded += 1
        return frame

    def _frame_at(self, t: Fraction) -> Any:
        cur_t = self._time(self._cur) if self._cur is not None else (Fraction(0) if self._at_start else None)
        past_end = self._eof and self._next is None  # the last frame is on screen from cur_t on
        if cur_t is None or t < cur_t or (t - cur_t > self.seek_threshold and not past_end):
            self._seek(t)
            if t > 0 and self._scan(t, clamp=False) is None:
                # the seek landed after the wanted time (imprecise index): decode from the start instead
                log.debug("%s: seek to %.3fs overshot; decoding from the start", self.path, float(t))
                self._seek(Fraction(0))
        frame = self._scan(t, clamp=True)
        if frame is None:
            raise VideoError(self.path, "video stream has no decodable frames (zero frames)")
        return frame

    def _scan(self, t: Fraction, clamp: bool) -> Any:
        """Decode forward to the last frame at or before ``t`` (the first frame if ``clamp`` and all are later)."""
        while True:
            if self._next is None and not self._eof:
                self._next = self._advance()
            nxt = self._next
            if nxt is None:  # end of stream: the last frame stays on screen
                if self._cur is not None:
                    self._check_not_truncated(t, self._time(self._cur))
                return self._cur
            if self._time(nxt) <= t + self._eps or (self._cur is None and clamp):
                self._cur, self._next = nxt, None
                continue
            return self._cur

    def _check_not_truncated(self, t: Fraction, last_frame: Fraction) -> None:
        """At the end of the stream (its last frame at ``last_frame``): fail if the container promised much more
        video than was decodable."""
        last = float(last_frame)
        declared = self.declared_duration
        frame = 1.0 / float(self._fps)
        missing = min(float(t), declared - frame) - last
        if declared > 0 and missing > max(0.5, 0.1 * declared, 3 * frame):
            raise VideoError(
                self.path,
                f"truncated or corrupt video stream: decoding stops at {last:.3f}s but the file declares "
                f"{declared:.3f}s",
            )

    def _frames(self, ts: list[Fraction]) -> torch.Tensor:
        if not ts:
            raise ValueError("no frames requested")
        return next(self._groups([ts], None))

    def _times_of_indices(self, indices: Sequence[int]) -> list[Fraction]:
        table = self.frame_table()
        n = len(table.pts)
        bad = [i for i in indices if not 0 <= int(i) < n]
        if bad:
            raise IndexError(f"{self.path}: frame indices {bad[:3]} outside the video's {n} frames")
        if self._start_pts is None:
            self._start_pts = table.pts[0]
        return [(table.pts[int(i)] - self._start_pts) * self._tb for i in indices]

    def read_views(self, views: Sequence[Any], frame_fn: FrameFn | None = None) -> Iterator[torch.Tensor]:
        """The frames of each view of a plan (:func:`slowfast_zoo.video.views.plan_views`), in order, in one pass.

        Every frame the views need is gathered and sorted, then decoded forward once (seeking only across gaps
        longer than ``seek_threshold``); a frame two views share is decoded and converted once. ``frame_fn`` maps
        each decoded frame (uint8 RGB ``(H, W, 3)``) to what is kept, e.g. the checkpoint's resize, so a large
        frame is shrunk before frames are stacked; default: the uint8 frame as a tensor. Each view is yielded, as
        ``frame_fn``'s results stacked (``(T, ...)``), as soon as its frames are decoded; frames no later view
        needs are dropped, so memory holds about one clip.
        """
        groups = [
            self._times_of_indices(v.frame_indices(self)) if v.select is not None else self._times(v.positions)
            for v in views
        ]
        return self._groups(groups, frame_fn)

    def _times(self, positions: Sequence[float] | torch.Tensor | np.ndarray) -> list[Fraction]:
        return [Fraction(float(p)) / self._fps for p in _as_list(positions)]

    def _groups(self, groups: list[list[Fraction]], frame_fn: FrameFn | None) -> Iterator[torch.Tensor]:
        """Decode the union of the groups' times in one ordered pass; yield each group's frames in group order."""
        if not all(groups):
            raise ValueError("no frames requested")
        ends = [max(g) for g in groups]
        key_of: dict[Fraction, Fraction] = {}  # wanted time -> time of the frame on screen then
        kept: dict[Fraction, torch.Tensor] = {}  # frame time -> converted frame
        pending = sorted({t for g in groups for t in g})
        done = 0  # groups yielded so far
        for t, key, frame in self._decoded(pending):
            key_of[t] = key
            if key not in kept:
                rgb = self._rgb(frame)
                kept[key] = rgb if frame_fn is None else frame_fn(rgb)
            while done < len(groups) and ends[done] <= t:
                yield self._stack([kept[key_of[u]] for u in groups[done]])
                done += 1
                live = {key_of[u] for g in groups[done:] for u in g if u in key_of} | {key}
                kept = {k: v for k, v in kept.items() if k in live}

    def _decoded(self, times: list[Fraction]) -> Iterator[tuple[Fraction, Fraction, Any]]:
        """``(time, time of the frame on screen then, that frame)`` for each of the ascending ``times``.

        The one step a decoding backend replaces: the frame is what :meth:`_rgb` takes (here a PyAV frame).
        """
        expected = None
        if self._table is not None and self._skipping:  # the frames' timestamps are known: others may be skipped
            expected = [self._table.pts[i] for i in self._table_indices(times)]
        self._wanted_pts = None if expected is None else frozenset(expected)
        try:
            for n, t in enumerate(times):
                frame = self._frame_at(t)
                if self._wanted_pts is not None and expected is not None and frame.pts != expected[n]:
                    # not the frame the table names (skipped for an earlier request, or a decoder that rewrites
                    # timestamps): seek and decode again, and from now on skip nothing
                    log.debug("%s: frame at %.3fs has pts %s, not %s", self.path, float(t), frame.pts, expected[n])
                    self._wanted_pts = self._cur = self._next = None
                    self._skipping = False
                    self._at_start = False
                    frame = self._frame_at(t)
                yield t, self._time(frame), frame
        finally:
            self._wanted_pts = None

    def _table_indices(self, times: list[Fraction]) -> list[int]:
        """Index in the frame table of the frame on screen at each time: the last at or before it (within half a
        tick), else the first (what :meth:`_scan` finds by decoding)."""
        pts, start = self.frame_table().pts, self._start_pts
        if start is None:  # no declared start: the first frame's (as decoding learns it)
            start = self._start_pts = pts[0]
        return [max(bisect.bisect_right(pts, start + t / self._tb + Fraction(1, 2)) - 1, 0) for t in times]

    def _rgb(self, frame: Any) -> torch.Tensor:
        """A frame :meth:`_decoded` gave as a uint8 RGB ``(H, W, 3)`` tensor, upright."""
        return torch.from_numpy(self._to_rgb(frame))

    def _stack(self, frames: list[torch.Tensor]) -> torch.Tensor:
        shapes = {tuple(f.shape) for f in frames}
        if len(shapes) > 1:
            raise VideoError(self.path, f"frame size changes within the clip ({sorted(shapes)}); not supported")
        return torch.stack(frames)

    def _to_rgb(self, frame: Any) -> np.ndarray:
        if getattr(frame, "is_corrupt", False):
            raise VideoError(self.path, f"corrupt frame at {float(self._time(frame)):.3f}s")
        _check_size(self.path, frame.width, frame.height, self.max_pixels)
        try:
            rgb = frame.to_ndarray(format="rgb24")
        except Exception as e:
            raise VideoError(self.path, f"frame conversion to RGB failed ({e})") from e
        rotation = getattr(frame, "rotation", 0) or 0
        k = _normalize_rotation(rotation) // 90
        if k:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=k))  # counter-clockwise, as the display matrix says
        return rgb


def _as_list(x: Sequence[float] | torch.Tensor | np.ndarray) -> list[float]:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().reshape(-1).tolist()
    return [float(v) for v in np.asarray(x, dtype=np.float64).reshape(-1)]


def read_clip(
    path: str | os.PathLike[str],
    start: float = 0.0,
    num_frames: int = 8,
    sampling_rate: int = 8,
    target_fps: float = 30.0,
) -> torch.Tensor:
    """Decode one clip (see :meth:`VideoReader.read_clip`) and close the file: uint8 RGB ``(T, H, W, 3)``."""
    with VideoReader(path) as reader:
        return reader.read_clip(start, num_frames, sampling_rate, target_fps)

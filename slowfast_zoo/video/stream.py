"""Live video sources: a decode thread keeps the frames the next windows need, in a bounded buffer.

:class:`LiveSource` opens whatever PyAV (FFmpeg) opens, a URL (``rtsp://``, ``rtmp://``, ``http://``, ``tcp://``),
a webcam device (``format="v4l2"``, ``"/dev/video0"``), a pipe (``"pipe:0"``) or a file still being written, and
decodes it in its own thread. The caller says which instants it will want (``schedule``); the thread converts to RGB
and keeps only the frame on screen at each of those instants (the same rule as :class:`~.io.VideoReader`: the last
frame whose timestamp is at or before it), so the buffer holds frames at the model's sampling rate, not the stream's.
The buffer has a fixed number of entries; when the reader falls behind, the oldest are dropped (counted), never
queued without bound.

Everything from the source is hostile: a picture larger than ``max_pixels`` is refused before any frame is decoded,
a source that sends no data for ``read_timeout`` seconds ends as *stalled*, undecodable bytes raise
:class:`~.io.VideoError`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch

from .io import VideoError, require_av, set_decoder_threads

__all__ = ["DEFAULT_MAX_PIXELS", "LiveSource", "StreamInfo"]

#: largest picture accepted from a live source: 8K UHD (7680 x 4320), with room for a square 5760 x 5760
DEFAULT_MAX_PIXELS = 7680 * 4320

#: the instants wanted in ``[lo, hi)`` seconds of stream time (from the first frame)
Schedule = Callable[[Fraction, Fraction], Sequence[Fraction]]


@dataclass(frozen=True)
class StreamInfo:
    """What a live stream says about itself when opened."""

    path: str
    width: int
    height: int
    #: declared (or guessed) frame rate; frame positions are counted in frames of this rate, as for files
    fps: float
    codec: str
    container: str
    #: unknown for a live source
    num_frames: int = 0


class LiveSource:
    """A video source decoded in a background thread into a bounded buffer of the frames a schedule wants.

    Open it, then :meth:`start` it with the schedule; :meth:`wait` for stream time to pass, :meth:`frames_at` to get
    buffered frames and :meth:`release` those no longer needed. ``state`` is ``"running"``, ``"ended"`` (the source
    closed), ``"stalled"`` (no data for ``read_timeout`` s), ``"failed"`` (``error`` says why) or ``"closed"``.
    """

    def __init__(
        self,
        source: str,
        *,
        format: str | None = None,
        options: Mapping[str, str] | None = None,
        open_timeout: float = 10.0,
        read_timeout: float = 10.0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        av = require_av()
        self.path = str(source)
        self.read_timeout = read_timeout
        self.max_pixels = max_pixels
        self.clock = clock
        try:
            self._container = av.open(
                self.path, mode="r", format=format, options=dict(options or {}), timeout=(open_timeout, read_timeout)
            )
        except av.error.ExitError as e:
            raise VideoError(self.path, f"no video arrived within {open_timeout:g} s of opening") from e
        except av.error.FFmpegError as e:
            raise VideoError(self.path, f"not a readable video stream ({getattr(e, 'strerror', None) or e})") from e
        try:
            self._stream = self._video_stream()
            stream = self._stream
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate or rate <= 0:
                raise VideoError(self.path, "video stream declares no frame rate")
            self._fps = Fraction(rate)
            self._tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1)
            self._check_size(stream.codec_context.width, stream.codec_context.height)
            self.info = StreamInfo(
                self.path,
                int(stream.codec_context.width),
                int(stream.codec_context.height),
                float(self._fps),
                str(stream.codec_context.name),
                str(self._container.format.name),
            )
        except BaseException:
            self._container.close()
            raise
        self._cond = threading.Condition()
        self._frames: OrderedDict[Fraction, torch.Tensor] = OrderedDict()
        self._prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
        #: bytes of one buffered frame (as decoded, or as ``prepare`` made it), once the first is buffered
        self.frame_bytes = 0
        self._thread: threading.Thread | None = None
        self._stop = False
        self.state = "running"
        #: details of how the source stopped, if any (e.g. the connection's error after the last frame)
        self.reason = ""
        self.error: BaseException | None = None
        #: stream time (s) of the newest decoded frame, None before the first
        self.latest: Fraction | None = None
        #: the last decoded frame: on screen from its time on once the source has ended
        self._last: tuple[Fraction, Any] | None = None
        #: ``(stream time, clock())`` of the recent frames as they were decoded, and when the source stopped
        self.arrivals: deque[tuple[Fraction, float]] = deque(maxlen=4096)
        self.stopped_at: float | None = None
        self.frames_decoded = 0
        self.evicted = 0
        self.peak_buffered = 0
        self.capacity = 0

    # ---- setup ------------------------------------------------------------------------------------------------
    def _video_stream(self) -> Any:
        streams = self._container.streams.video
        if not streams:
            kinds = sorted({s.type for s in self._container.streams}) or ["none"]
            raise VideoError(self.path, f"has no video stream (streams: {', '.join(kinds)})")
        stream = streams[0]
        if stream.codec_context is None or stream.codec_context.name is None:
            raise VideoError(self.path, "video stream has no decoder available")
        set_decoder_threads(stream)
        return stream

    def _check_size(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise VideoError(
                self.path,
                f"{width}x{height} frames exceed the limit of {self.max_pixels} pixels (max_pixels); refusing to "
                "decode them",
            )

    @property
    def fps(self) -> Fraction:
        """The stream's frame rate, exact."""
        return self._fps

    @property
    def eps(self) -> Fraction:
        """Half a tick of the time base: a frame within it of an instant counts as on time (as for files)."""
        return self._tb / 2

    def start(
        self,
        schedule: Schedule,
        capacity: int,
        *,
        block: bool = False,
        prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """Start decoding; keep the frames at the instants ``schedule`` names, at most ``capacity`` of them.

        A full buffer drops its oldest frame (``evicted``), or with ``block=True`` the decoder waits for the reader
        to :meth:`release` some (the source is then read no faster than the reader reads). ``prepare`` (default:
        none) turns each uint8 ``(H, W, 3)`` frame into what is buffered, once, in the decode thread: a model's
        per-frame preprocessing keeps a high-resolution source's buffer at the model's resolution.
        """
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity, self.block, self._prepare = capacity, block, prepare
        self._schedule = schedule
        self._thread = threading.Thread(target=self._run, name=f"decode {self.path}", daemon=True)
        self._thread.start()

    # ---- decode thread ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        av = require_av()
        self._start_pts: int | None = None
        self._prev: tuple[Fraction, Any] | None = None
        state = "ended"
        error: BaseException | None = None
        try:
            for frame in self._container.decode(self._stream):
                if self._stop:
                    state = "closed"
                    break
                self._take(frame)
        except av.error.ExitError:
            state = "stalled"
            error = self._flush()  # the frames the decoder still holds are the newest ones the source sent
            state = "failed" if error is not None else state
        except av.error.EOFError:
            state = "ended"
        except av.error.OSError as e:
            if self.frames_decoded == 0:
                state, error = "failed", VideoError(self.path, f"reading failed ({getattr(e, 'strerror', None) or e})")
            else:  # the connection went away after video came: the source has ended (HTTP without a length does)
                state, self.reason = "ended", f"connection closed ({getattr(e, 'strerror', None) or e})"
                error = self._flush()
                state = "failed" if error is not None else state
        except av.error.FFmpegError as e:
            state, error = "failed", VideoError(self.path, f"decoding failed ({getattr(e, 'strerror', None) or e})")
        except VideoError as e:
            state, error = "failed", e
        except BaseException as e:  # pragma: no cover - reported to the reader, not lost in the thread
            state, error = "failed", e
        prev = self._prev
        with self._cond:
            if prev is not None and error is None:
                self._last = (prev[0], prev[1])
            if self.frames_decoded == 0 and state in ("ended", "stalled") and error is None:
                error = VideoError(self.path, f"the source {state_text(state, self.read_timeout)} before any frame")
                state = "failed"
            self.stopped_at = self.clock()
            self.state = state if self.state != "closed" else "closed"
            self.error = error
            self._cond.notify_all()

    def _take(self, frame: Any) -> None:
        """One decoded frame: the previous one now has a known span on screen; buffer it where wanted."""
        self._check_size(frame.width, frame.height)
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            raise VideoError(self.path, "decoded frame has no timestamp")
        self._start_pts = pts if self._start_pts is None else self._start_pts
        t = (pts - self._start_pts) * self._tb
        prev = self._prev
        if prev is not None and t <= prev[0]:
            return  # a repeated or out-of-order timestamp: the frame on screen does not change
        if prev is not None:
            self._keep(prev, prev[0] - self.eps if self.frames_decoded > 1 else None, t - self.eps)
        self._prev = (t, frame)
        self.frames_decoded += 1
        with self._cond:
            self.latest = t
            self.arrivals.append((t, self.clock()))
            self._cond.notify_all()

    def _flush(self) -> VideoError | None:
        """Hand out the frames the decoder holds back (a stalled source sends no packet that would push them)."""
        av = require_av()
        try:
            for frame in self._stream.codec_context.decode(None):
                self._take(frame)
        except av.error.FFmpegError:
            pass  # nothing more to get; the source has stalled either way
        except VideoError as e:
            return e
        return None

    def _keep(self, entry: tuple[Fraction, Any], lo: Fraction | None, hi: Fraction) -> None:
        """Buffer ``entry``'s frame for every wanted instant it covers, ``[lo, hi)`` (``lo=None``: from -inf)."""
        wanted = self._schedule(lo if lo is not None else Fraction(-(10**9)), hi)
        if not wanted:
            return
        rgb = self._picture(entry[1])
        with self._cond:
            if self.block:
                self._cond.wait_for(lambda: len(self._frames) + len(wanted) <= self.capacity or self._stop)
            for instant in wanted:
                self._frames[instant] = rgb
            while len(self._frames) > self.capacity:
                self._frames.popitem(last=False)
                self.evicted += 1
            self.peak_buffered = max(self.peak_buffered, len(self._frames))

    def _picture(self, frame: Any) -> torch.Tensor:
        """What the buffer holds for a decoded frame: its RGB pixels, through ``prepare`` when given."""
        if getattr(frame, "is_corrupt", False):
            raise VideoError(self.path, "corrupt frame")
        try:
            rgb = torch.from_numpy(frame.to_ndarray(format="rgb24"))
        except Exception as e:
            raise VideoError(self.path, f"frame conversion to RGB failed ({e})") from e
        out = rgb if self._prepare is None else self._prepare(rgb)
        self.frame_bytes = out.numel() * out.element_size()
        return out

    # ---- reader side --------------------------------------------------------------------------------------------
    def wait(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Block until ``predicate()`` (called under the lock) holds or the decoder has stopped; its last value."""
        with self._cond:
            self._cond.wait_for(lambda: predicate() or self.state != "running", timeout=timeout)
            return predicate()

    @property
    def lock(self) -> threading.Condition:
        """The lock the decode thread updates ``latest`` and the buffer under."""
        return self._cond

    def arrived_after(self, t: Fraction) -> float | None:
        """``clock()`` when the first frame later than ``t`` was decoded (or the source stopped); None: not yet."""
        with self._cond:
            for when, at in self.arrivals:
                if when > t:
                    return at
            return self.stopped_at

    @property
    def end_time(self) -> Fraction | None:
        """Stream time just past the last frame, once the source has ended (one frame of the declared rate)."""
        if self.state == "running" or self._last is None:
            return None
        return self._last[0] + 1 / self._fps

    def frames_at(self, instants: Sequence[Fraction]) -> torch.Tensor:
        """The buffered frames at these instants, stacked: uint8 RGB ``(T, H, W, 3)``, or as ``prepare`` made them."""
        out = []
        with self._cond:
            for t in instants:
                rgb = self._frames.get(t)
                if rgb is None and self._last is not None and t >= self._last[0] - self.eps:
                    rgb = self._frames.setdefault(t, self._picture(self._last[1]))  # the last frame stays on screen
                if rgb is None:
                    raise LookupError(f"{self.path}: no buffered frame at {float(t):.3f} s (not scheduled or dropped)")
                out.append(rgb)
        shapes = {a.shape for a in out}
        if len(shapes) > 1:
            raise VideoError(self.path, f"frame size changes within the clip ({sorted(shapes)}); not supported")
        return torch.stack(out)

    def release(self, before: Fraction) -> None:
        """Forget the buffered instants earlier than ``before`` (no later window wants them)."""
        with self._cond:
            while self._frames and next(iter(self._frames)) < before:
                self._frames.popitem(last=False)
            self._cond.notify_all()

    @property
    def buffered(self) -> int:
        return len(self._frames)

    def close(self) -> None:
        """Stop decoding and close the source (waits at most ``read_timeout`` for the thread)."""
        self._stop = True
        with self._cond:
            if self.state == "running":
                self.state = "closed"
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.read_timeout + 1)
        if self._thread is None or not self._thread.is_alive():
            self._container.close()

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def state_text(state: str, read_timeout: float, reason: str = "") -> str:
    """How a source stopped, in words."""
    if state == "stalled":
        return f"stalled: no data for {read_timeout:g} s"
    if state == "closed":
        return "was closed"
    return f"ended: {reason}" if reason else "ended"

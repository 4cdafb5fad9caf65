"""Predictions on a live video source, window after window, as fast as the model keeps up.

``predict_stream(source, model, window=2.0, hop=0.5)`` decodes ``source`` in a background thread
(:class:`slowfast_zoo.video.stream.LiveSource`) and, each ``hop`` seconds of stream time, scores the newest complete
``window`` with the checkpoint's one-view protocol, the frames picked exactly as :func:`predict_windows` picks them in
a file holding the same frames. When the model is slower than the stream, the windows it had no time for are skipped
(counted in ``dropped``) and the newest one is taken next; the frame buffer has a fixed size.

The model runs on the fast path by default: BatchNorm folded, convolutions fused with their activations and
channels-last (``optimize_for_inference``), its weights stored in bf16 on CPUs with native bf16, CUDA when present.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import partial
from typing import Any, Literal

import torch

from ..models.optimize import optimize_for_inference
from ..video.io import VideoInfo
from ..video.stream import DEFAULT_MAX_PIXELS, LiveSource, state_text
from ..video.transforms import create_transforms, short_side_size
from ..video.views import plan_views
from .predict import TensorVideo, VideoPrediction, load_model, predict

__all__ = ["LiveRun", "LiveStats", "LiveWindow", "predict_stream"]

Precision = Literal["auto", "fp32", "bf16"]


@dataclass
class LiveWindow:
    """One window's prediction on a live source, with when it became available."""

    #: ``start``/``end``: the window in stream seconds (from the first frame)
    prediction: VideoPrediction
    #: seconds from the window being complete (a frame past its last instant decoded) to its prediction
    latency: float
    #: seconds the model took on it
    compute: float
    #: windows skipped just before this one because the model was busy
    dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (one line of ``slowfast-zoo predict --live --json``)."""
        d = self.prediction.to_dict()
        d.update(latency=round(self.latency, 4), compute=round(self.compute, 4), dropped=self.dropped)
        return d


@dataclass
class LiveStats:
    """How a live run went: windows scored and skipped, speed, and why it stopped."""

    window: float
    hop: float
    windows: int = 0
    dropped: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)
    computes: list[float] = field(default_factory=list, repr=False)
    starts: list[float] = field(default_factory=list, repr=False)
    #: ``running``, ``ended``, ``stalled``, ``closed`` (or ``failed``)
    end: str = "running"
    #: most frames the buffer held / could hold
    peak_buffered: int = 0
    capacity: int = 0
    #: bytes of one buffered frame: decoded RGB, or already preprocessed where that is smaller
    frame_bytes: int = 0

    @property
    def peak_buffer_bytes(self) -> int:
        """Most bytes the frame buffer held."""
        return self.peak_buffered * self.frame_bytes

    @property
    def real_time_factor(self) -> float:
        """New video per window (``hop``) over the model's time per window: above 1 keeps up with the stream."""
        spent = sum(self.computes)
        return self.windows * self.hop / spent if spent > 0 else math.inf

    @property
    def sustained_hop(self) -> float:
        """Mean stream seconds between the windows actually scored (``hop`` when none were skipped)."""
        if len(self.starts) < 2:
            return self.hop
        return (self.starts[-1] - self.starts[0]) / (len(self.starts) - 1)

    def summary(self) -> str:
        """One line for people."""
        mean = sum(self.latencies) / len(self.latencies) if self.latencies else float("nan")
        return (
            f"{self.windows} windows scored, {self.dropped} skipped; real-time factor {self.real_time_factor:.2f}, "
            f"sustained hop {self.sustained_hop:.2f} s (asked {self.hop:g} s), mean latency {mean:.3f} s; "
            f"source {self.end}"
        )


class _Windows:
    """Window ``j`` = ``[start_j, start_j + window)`` seconds; the instants its one-view clip takes, as in a file."""

    def __init__(self, cfg: Any, source: LiveSource, window: float, hop: float) -> None:
        self.cfg, self.source, self.window, self.hop = cfg, source, window, hop
        self._starts = [0.0]
        self._times: dict[int, tuple[Fraction, ...]] = {}
        self._lock = threading.Lock()  # the decode thread and the scorer both ask
        #: windows before this one are past (scored or skipped): their frames are no longer wanted
        self.first = 0

    def start(self, j: int) -> float:
        with self._lock:
            while len(self._starts) <= j:  # the same rounded running sum as predict_windows / window_bounds
                self._starts.append(round(self._starts[-1] + self.hop, 9))
            return self._starts[j]

    def times(self, j: int) -> tuple[Fraction, ...]:
        s = self.start(j)
        with self._lock:
            got = self._times.get(j)
            if got is None:
                (view,) = plan_views(self.cfg, self.source.info, "fast", window=(s, s + self.window))
                assert view.positions is not None  # a "fast" view of a window is positions, never a frame rule
                fps = self.source.fps
                got = tuple(Fraction(float(p)) / fps for p in view.positions.tolist())  # as VideoReader does
                if len(self._times) > 512:
                    self._times.pop(min(self._times))
                self._times[j] = got
            return got

    def wanted(self, lo: Fraction, hi: Fraction) -> list[Fraction]:
        """Instants of any window in ``[lo, hi)``."""
        first = max(self.first, math.floor((float(lo) - self.window) / self.hop) - 1)
        last = max(0, math.floor(float(hi) / self.hop) + 1)
        return sorted({t for j in range(first, last + 1) for t in self.times(j) if lo <= t < hi})

    def ready(self, j: int) -> bool:
        """Every frame of window ``j`` is known (called under the source's lock)."""
        src = self.source
        if src.latest is not None and src.latest > self.times(j)[-1] + src.eps:
            return True
        end = src.end_time
        return end is not None and self.start(j) + self.window <= float(end) + 1e-6


class LiveRun:
    """Iterate to get :class:`LiveWindow` s as they are scored; ``stats`` says how it went. Close it when done."""

    def __init__(
        self,
        source: LiveSource,
        model: Any,
        window: float,
        hop: float,
        *,
        top_k: int,
        skip: bool,
        clock: Callable[[], float],
    ) -> None:
        self.source, self.model, self.top_k, self.clock = source, model, top_k, clock
        self.skip = skip
        self.cfg = model.pretrained_cfg
        self.windows = _Windows(self.cfg, source, window, hop)
        self.stats = LiveStats(window, hop)
        self._clip_video = _clip_layout(self.cfg)
        per_window = len(self.windows.times(0))
        self.stats.capacity = per_window * (2 * math.ceil(window / hop) + 3)
        self._prepare = _buffer_preprocessing(self.cfg, source.info, next(model.parameters()).device)
        source.start(self.windows.wanted, self.stats.capacity, block=not skip, prepare=self._prepare)

    def __iter__(self) -> Iterator[LiveWindow]:
        j, src, wins = 0, self.source, self.windows
        try:
            while True:
                if not src.wait(partial(wins.ready, j)):
                    break
                newest = j
                with src.lock:  # the newest window that is complete now
                    while self.skip and wins.ready(newest + 1):
                        newest += 1
                dropped, j = newest - j, newest
                # the window was complete when a frame past its last instant arrived (or the source stopped)
                arrived = src.arrived_after(wins.times(j)[-1] + src.eps)
                ready_at = arrived if arrived is not None else self.clock()
                frames = src.frames_at(wins.times(j))
                wins.first = j + 1
                src.release(wins.times(j + 1)[0])
                t0 = self.clock()
                pred = self._score(frames)
                done = self.clock()
                start = wins.start(j)
                pred = replace(pred, start=start, end=start + wins.window)
                self._count(start, done - ready_at, done - t0, dropped)
                yield LiveWindow(pred, done - ready_at, done - t0, dropped)
                j += 1
        finally:
            self.close()
        if src.error is not None:
            raise src.error

    def _count(self, start: float, latency: float, compute: float, dropped: int) -> None:
        s = self.stats
        s.windows += 1
        s.dropped += dropped
        s.starts.append(start)
        s.latencies.append(latency)
        s.computes.append(compute)
        s.peak_buffered, s.frame_bytes = self.source.peak_buffered, self.source.frame_bytes

    def _score(self, frames: torch.Tensor) -> VideoPrediction:
        """The one-view prediction of these clip frames, through :func:`predict` itself."""
        n, fps = self._clip_video
        if n > frames.shape[0]:
            frames = torch.cat([frames, frames[-1:].expand(n - frames.shape[0], -1, -1, -1)])
        video = (TensorVideo if self._prepare is None else _PreparedVideo)(frames, fps, name=self.source.path)
        return predict(video, self.model, views="fast", top_k=self.top_k)

    def close(self) -> None:
        """Stop decoding and close the source; ``stats.end`` says how the source ended."""
        self.source.close()
        self.stats.peak_buffered, self.stats.frame_bytes = self.source.peak_buffered, self.source.frame_bytes
        self.stats.end = self.end_message()

    def end_message(self) -> str:
        state = self.source.state
        if state == "failed":
            return f"failed: {self.source.error}"
        return state_text(state, self.source.read_timeout, self.source.reason)

    def __enter__(self) -> LiveRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _PreparedVideo(TensorVideo):
    """Frames the live buffer already put through the checkpoint's ``prepare_frame``, ``(T, 3, h, w)``.

    :func:`predict` reads them as it reads :class:`TensorVideo`, without preparing them a second time: the scores are
    those of the raw frames bit for bit (``prepare_frame`` is what :func:`predict` applies per frame).
    """

    def __init__(self, frames: torch.Tensor, fps: float, name: str = "<tensor>") -> None:
        n, _, h, w = frames.shape
        self.frames, self.path = frames, name
        self.info = VideoInfo(name, int(w), int(h), float(fps), n / fps, int(n), 0, "raw", "tensor")

    def read_views(self, plan: list[Any], frame_fn: Any = None) -> Iterator[torch.Tensor]:
        """Each view's frames, in plan order; ``frame_fn`` is the preprocessing already applied when buffered."""
        for view in plan:
            yield view.read(self)


def _buffer_preprocessing(cfg: Any, info: Any, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The per-frame preprocessing to buffer frames with, when its output is smaller than the decoded frame.

    At 1080p a decoded frame is 6.2 MB and a SlowFast window's buffer holds hundreds; resized to the checkpoint's
    short side and normalized (float32), the same frame is about 1.4 MB. Small sources stay uint8, which is smaller.
    """
    transform = create_transforms(cfg, "eval")
    h, w = short_side_size(info.height, info.width, transform.short_side[0])
    if 3 * h * w * torch.float32.itemsize >= 3 * info.height * info.width:
        return None

    def prepare(frame: torch.Tensor) -> torch.Tensor:
        return transform.prepare_frame(frame.to(device))

    return prepare


def _clip_layout(cfg: Any) -> tuple[int, float]:
    """Frames and rate of an in-memory clip whose one-view plan takes exactly its frames ``0 .. T-1`` in order.

    At ``fps = target_fps / sampling_rate`` a clip of ``T`` frames is ``T`` frames long, so the centred clip is all of
    it; the segment rule needs one frame more to take each of the first ``T`` once.
    """
    t = cfg.num_frames
    fps = cfg.target_fps / cfg.sampling_rate
    for n in (t, t + 1):
        info = TensorVideo(torch.zeros(n, 1, 1, 3, dtype=torch.uint8), fps).info
        (view,) = plan_views(cfg, info, "fast")
        if view.positions is not None and view.positions.floor().long().tolist() == list(range(t)):
            return n, fps
    raise NotImplementedError(f"{cfg.name}: no in-memory clip layout reproduces its one-view sampling")


def _fast_path(model: Any, device: str | torch.device | None, precision: Precision) -> Any:
    """``optimize_for_inference``'s copy on ``device`` (default: CUDA when present), its weights stored once in the
    low precision the hardware runs natively (``precision="auto"``), in bf16 (``"bf16"``) or kept float32."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else next(model.parameters()).device
    dev = torch.device(device)
    return optimize_for_inference(model, dtype=_fast_dtype(dev, precision)).to(dev)


def _fast_dtype(dev: torch.device, precision: Precision) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if dev.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
    else:
        bf16 = (
            dev.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    if precision == "bf16" or bf16:
        return torch.bfloat16
    return torch.float16 if dev.type == "cuda" else None


def predict_stream(
    source: str,
    model: Any,
    window: float = 2.0,
    hop: float = 0.5,
    *,
    top_k: int = 5,
    skip: bool = True,
    fast: bool = True,
    precision: Precision = "auto",
    device: str | torch.device | None = None,
    checkpoint: str | None = None,
    format: str | None = None,
    options: Mapping[str, str] | None = None,
    open_timeout: float = 10.0,
    read_timeout: float = 10.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    clock: Callable[[], float] = time.monotonic,
) -> LiveRun:
    """Predictions for the newest ``window`` seconds of a live source every ``hop`` seconds of stream time.

    Args:
        source: anything PyAV opens: ``rtsp://``/``rtmp://``/``http://``/``tcp://`` URLs, ``"/dev/video0"`` with
            ``format="v4l2"``, ``"pipe:0"``, a file still being written (``options={"follow": "1"}``: FFmpeg's
            file protocol waits for more). It is read as a live stream: no seeking.
        model: a classifier name or a model from ``create`` (as for :func:`predict`).
        skip: when the model falls behind, skip to the newest complete window (a camera); ``False`` scores every
            window and lets the decoder wait instead (a pipe or a growing file; the sender is slowed down).
        fast: run ``optimize_for_inference`` on a copy, on CUDA when present, in bf16 where the hardware has it
            (``precision="fp32"`` keeps float32 on the fast path; ``fast=False`` runs the model as given).
        format, options: FFmpeg's demuxer name and options (e.g. ``{"rtsp_transport": "tcp"}``).
        open_timeout, read_timeout: seconds to wait for the source to open and for each read; a source that
            sends nothing for ``read_timeout`` ends the run as *stalled*.
        max_pixels: larger pictures are refused before decoding (:class:`~slowfast_zoo.video.io.VideoError`).
        clock: the clock latencies are measured with.

    Returns a :class:`LiveRun`: iterate it for :class:`LiveWindow` s (the :class:`VideoPrediction` with the window's
    stream time, the latency, the windows skipped before it); it ends when the source ends or stalls, and raises
    :class:`VideoError` when the source sends what cannot be decoded.
    """
    if window <= 0 or hop <= 0:
        raise ValueError("window and hop must be positive")
    model = load_model(model, checkpoint=checkpoint, device=None if fast else device)
    model = _fast_path(model, device, precision) if fast else model.eval()
    live = LiveSource(
        source,
        format=format,
        options=options,
        open_timeout=open_timeout,
        read_timeout=read_timeout,
        max_pixels=max_pixels,
        clock=clock,
    )
    try:
        return LiveRun(live, model, window, hop, top_k=top_k, skip=skip, clock=clock)
    except BaseException:
        live.close()
        raise

"""Video in, predictions out: each checkpoint's published test protocol, or one quick view.

``predict(video, model)`` decodes the frames the protocol needs in one pass (:mod:`slowfast_zoo.video.io`), picks
them by the checkpoint's own rule (:mod:`slowfast_zoo.video.views`, chosen by ``test_clip_sampler``), preprocesses
them as the checkpoint was evaluated (:mod:`slowfast_zoo.video.transforms`), runs the views in batches under
``torch.inference_mode`` and combines them as the authors did (docs/sources.md, "Input and test protocol"):

* Kinetics: 10 clips x 3 crops (left/centre/right of the long side), mean of softmax; clips placed as PySlowFast's
  decoder places them, or as pytorchvideo 0.1.5's sampler does for the ``k400_ptv`` tags;
* Charades: 10 clips x 3 crops of frames at 24 fps, max over views of the sigmoid;
* Something-Something v2: one segment-sampled clip over the whole video, the checkpoint's crops, mean of softmax.

The activation is applied at every position of the head (a fixed-kernel head gives a 2x2 grid at 256 crops) and
then averaged, as the reference's fully-convolutional test does. ``views="fast"`` is one centred clip and crop.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch

from ..video.codec import resolve_decoder
from ..video.io import VideoInfo, VideoReader
from ..video.views import ClipView, FrameTable, plan_views
from .runner import (
    Precision,
    batch_for,
    eval_mode,
    iter_view_inputs,
    load_model,
    open_video,
    portable_cfg,
    progress_bar,
    read_view_inputs,
    video_scores,
)
from .tables import text_table
from .workers import Prefetcher, WorkerKind, portable, worker_device

__all__ = [
    "ClipView",
    "Prediction",
    "TensorVideo",
    "VideoPrediction",
    "format_table",
    "iter_windows",
    "load_model",
    "plan_views",
    "predict",
    "predict_many",
    "predict_windows",
    "sample_video",
    "to_json_lines",
    "window_bounds",
]

Views = Literal["reference", "fast"]
SAMPLE_VIDEO = "sample.mp4"


@dataclass(frozen=True)
class Prediction:
    """One class of a top-k list."""

    label: str
    index: int
    score: float


@dataclass
class VideoPrediction:
    """Predictions for one video (or one window of it): top-k labels and the aggregated scores of every class."""

    video: str
    model: str
    top: list[Prediction]
    #: aggregated scores ``(num_classes,)`` (probabilities for softmax models, per-class sigmoid for Charades)
    scores: torch.Tensor = field(repr=False)
    #: number of views (clips x crops) combined
    num_views: int = 1
    #: window bounds in seconds (``predict_windows``), else None
    start: float | None = None
    end: float | None = None

    def __iter__(self) -> Iterator[tuple[str, float]]:
        return iter((p.label, p.score) for p in self.top)

    def __len__(self) -> int:
        return len(self.top)

    def __getitem__(self, i: int) -> tuple[str, float]:
        p = self.top[i]
        return p.label, p.score

    @property
    def labels(self) -> list[str]:
        return [p.label for p in self.top]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (one line of ``--json`` output)."""
        d: dict[str, Any] = {"video": self.video, "model": self.model, "views": self.num_views}
        if self.start is not None:
            d["start"] = round(self.start, 3)
            d["end"] = round(float(self.end or 0.0), 3)
        d["predictions"] = [{"label": p.label, "index": p.index, "score": round(p.score, 6)} for p in self.top]
        return d


class TensorVideo:
    """Frames already in memory, uint8 ``(T, H, W, 3)``, read like a file by :func:`predict`."""

    def __init__(self, frames: torch.Tensor, fps: float, name: str = "<tensor>") -> None:
        if frames.dim() != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected frames (T, H, W, 3), got shape {tuple(frames.shape)}")
        if frames.shape[0] == 0:
            raise ValueError("expected at least one frame")
        self.frames = frames
        self.path = name
        n, h, w, _ = frames.shape
        self.info = VideoInfo(name, int(w), int(h), float(fps), n / fps, int(n), 0, "raw", "tensor")

    def frames_at_positions(self, positions: torch.Tensor) -> torch.Tensor:
        n = self.frames.shape[0]
        idx = torch.as_tensor(positions, dtype=torch.float64).floor().clamp(0, n - 1).long()
        return self.frames.index_select(0, idx.to(self.frames.device))

    def frame_table(self) -> FrameTable:
        """Timestamps of a constant-rate stream: frame ``i`` at ``i / fps`` (1000 ticks per frame)."""
        n = self.frames.shape[0]
        rate = Fraction(self.info.fps).limit_denominator(1_000_000)
        return FrameTable(tuple(range(0, 1000 * n, 1000)), 1 / (rate * 1000), 0, 1000 * n, n, self.info.fps)

    def frames_at_indices(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames by index, uint8 ``(T, H, W, 3)``."""
        return self.frames.index_select(0, torch.as_tensor(list(indices), dtype=torch.long, device=self.frames.device))

    def __enter__(self) -> TensorVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _labels(cfg: Any, num_classes: int) -> Sequence[str]:
    names = cfg.label_names
    if names is not None and len(names) == num_classes:
        return names
    return [f"class_{i}" for i in range(num_classes)]


def _top(scores: torch.Tensor, labels: Sequence[str], top_k: int) -> list[Prediction]:
    k = min(max(top_k, 1), scores.numel())
    values, idx = scores.topk(k)
    return [Prediction(labels[i], i, float(v)) for v, i in zip(values.tolist(), idx.tolist())]


def _run(
    reader: Any, model: Any, plan: list[ClipView], batch_size: int, precision: Precision, bar: Any
) -> tuple[torch.Tensor, int]:
    device = next(model.parameters()).device
    return video_scores(model, iter_view_inputs(reader, model.pretrained_cfg, plan, device), batch_size, precision, bar)


@torch.inference_mode()
def predict(
    video: str | os.PathLike[str] | VideoReader | TensorVideo,
    model: Any,
    *,
    views: Views = "reference",
    top_k: int = 5,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    precision: Precision = "fp32",
    fast: bool = False,
    progress: bool = False,
    decoder: str = "auto",
) -> VideoPrediction:
    """Class predictions for a video file with a checkpoint's own preprocessing and test protocol.

    Args:
        video: a file path (decoded with PyAV, ``slowfast-zoo[video]``), an open :class:`VideoReader`, or
            :class:`TensorVideo` for frames already in memory.
        model: a model name (built with its published weights, or ``checkpoint``) or a model from ``create``.
        views: ``"reference"``: the dataset's published multi-view protocol; ``"fast"``: one centred clip and crop.
        top_k: how many classes to return.
        device: where to run (a name builds the model there; a model is moved there).
        batch_size: views per forward pass (default: the batch :func:`slowfast_zoo.tune` measured for this model on
            its device, else all views on GPU and 6 on CPU).
        precision: ``"fp32"`` (exact, the default) or ``"bf16"`` (autocast; see the README for how far scores move).
        fast: run :func:`slowfast_zoo.optimize_for_inference`'s copy (made per call: for many videos, pass a model
            optimized once, or use ``evaluate`` / ``features.extract``).
        progress: show a progress bar over views on stderr.
        decoder: ``"auto"`` (torchcodec where it loads, else PyAV; the same frames), ``"pyav"`` or ``"torchcodec"``
            (:mod:`slowfast_zoo.video.codec`; ``slowfast-zoo[torchcodec]``).

    Returns:
        :class:`VideoPrediction`: ``top`` (label, index, score) and ``scores`` (all classes, aggregated).
    """
    resolve_decoder(decoder)  # an unknown or unloadable decoder fails before the model loads
    model = load_model(model, checkpoint=checkpoint, device=device, precision=precision, fast=fast)
    cfg = model.pretrained_cfg
    _warn_head_pool(model, cfg, views)
    with open_video(video, decoder) as reader:
        plan = plan_views(cfg, reader.info, views)
        inputs = iter_view_inputs(reader, cfg, plan, next(model.parameters()).device)  # decoded as the model takes them
        n = sum(len(v.crops) for v in plan)
        return _predict_views(str(reader.path), inputs, n, model, top_k, batch_size, precision, progress)


#: what a bad video raises, reported per video by :func:`predict_many` (anything else ends the run)
VIDEO_ERRORS = (OSError, RuntimeError, ValueError)


def _decode_video(video: Any, cfg: Any, views: Views, device: torch.device, decoder: str) -> tuple[str, Any]:
    """``(name, views' model inputs)``, or ``(name, the exception)`` for a video that cannot be read (in a worker)."""
    try:
        return read_view_inputs(video, cfg, views, device, decoder)
    except VIDEO_ERRORS as e:
        return str(video), portable(e)


def _crashed(video: Any, reason: str) -> tuple[str, Exception]:
    return str(video), RuntimeError(f"{video}: {reason} while decoding it")


def predict_many(
    videos: Iterable[str | os.PathLike[str] | VideoReader | TensorVideo],
    model: Any,
    *,
    views: Views = "reference",
    top_k: int = 5,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    precision: Precision = "fp32",
    fast: bool = False,
    workers: int = 0,
    worker_type: WorkerKind = "thread",
    decoder: str = "auto",
    progress: bool = False,
) -> Iterator[tuple[str, VideoPrediction | Exception]]:
    """:func:`predict` on each video, in order, the next videos decoded while the model runs on this one.

    Yields ``(video, prediction)``, or ``(video, exception)`` for a video that could not be read or run (an
    ``OSError``, ``RuntimeError`` or ``ValueError``; a decoding process that died is a ``RuntimeError`` naming the
    video), and goes on with the others. ``workers`` threads or processes (``worker_type``) decode and transform
    ahead of the model (0: in this thread, one video after the other; processes transform on the CPU and take open
    readers only if they pickle); the model runs in this thread only. Other arguments as in :func:`predict`, whose
    scores each prediction equals.
    """
    resolve_decoder(decoder)  # an unknown or unloadable decoder fails before the model loads
    model = load_model(model, checkpoint=checkpoint, device=device, precision=precision, fast=fast)
    cfg = model.pretrained_cfg
    _warn_head_pool(model, cfg, views)
    dev = worker_device(worker_type, next(model.parameters()).device)
    decode = functools.partial(_decode_video, cfg=portable_cfg(cfg), views=views, device=dev, decoder=decoder)
    with Prefetcher(workers, worker_type) as prefetcher:
        for name, inputs in prefetcher.map(decode, videos, _crashed):
            result: VideoPrediction | Exception
            if isinstance(inputs, Exception):  # a video that could not be read
                result = inputs
            else:
                try:
                    result = _predict_views(name, inputs, len(inputs), model, top_k, batch_size, precision, progress)
                except VIDEO_ERRORS as e:
                    result = e
            del inputs  # this video's views go before the next is taken: at most workers + 1 in memory
            yield name, result


@torch.inference_mode()
def _predict_views(
    name: str, inputs: Iterable[torch.Tensor], num_views: int, model: Any, top_k: int, batch_size: int | None,
    precision: Precision, progress: bool,
) -> VideoPrediction:  # fmt: skip
    """The prediction for one video from its ``num_views`` views' model inputs (what :func:`predict` and
    :func:`predict_many` return): batched, ensembled, the model in eval mode meanwhile."""
    cfg = model.pretrained_cfg
    bs = batch_size or batch_for(model, num_views, precision)
    bar = progress_bar(num_views, Path(name).name, "view", progress, leave=False)
    try:
        with eval_mode(model):
            scores, n = video_scores(model, inputs, bs, precision, bar)
    finally:
        if bar is not None:
            bar.close()
    return VideoPrediction(name, cfg.name, _top(scores, _labels(cfg, scores.numel()), top_k), scores, num_views=n)


def predict_windows(
    video: str | os.PathLike[str] | VideoReader | TensorVideo,
    model: Any,
    window_s: float,
    stride_s: float,
    *,
    views: Views = "fast",
    top_k: int = 5,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    precision: Precision = "fp32",
    fast: bool = False,
    progress: bool = False,
    decoder: str = "auto",
) -> Iterator[VideoPrediction]:
    """Predictions for consecutive windows ``[start, start + window_s)`` every ``stride_s`` seconds, as they come.

    Windows start at 0, ``stride_s``, ... while they fit in the video; if the last one ends before the video does,
    one more window is aligned to the end; a video shorter than ``window_s`` gives one window over all of it.
    Each window is its own protocol (``views``), decoded by one reader moving forward, so memory stays constant;
    windows are generated one at a time over the duration the stream's packets really hold. ``decoder``: as in
    :func:`predict`.
    """
    if window_s <= 0 or stride_s <= 0:
        raise ValueError("window_s and stride_s must be positive")
    resolve_decoder(decoder)
    model = load_model(model, checkpoint=checkpoint, device=device, precision=precision, fast=fast)
    cfg = model.pretrained_cfg
    _warn_head_pool(model, cfg, views)
    with open_video(video, decoder) as reader:
        bar = progress_bar(None, Path(str(reader.path)).name, "window", progress)
        labels = None
        try:
            for start, end in iter_windows(reader.info.duration, window_s, stride_s):
                plan = plan_views(cfg, reader.info, views, window=(start, end))
                bs = batch_size or batch_for(model, sum(len(v.crops) for v in plan), precision)
                # eval mode per window, restored before each is handed out: the caller may train between windows
                with torch.inference_mode(), eval_mode(model):
                    scores, n = _run(reader, model, plan, bs, precision, None)
                labels = labels or _labels(cfg, scores.numel())
                if bar is not None:
                    bar.update(1)
                yield VideoPrediction(
                    str(reader.path), cfg.name, _top(scores, labels, top_k), scores, n, start=start, end=end
                )
        finally:
            if bar is not None:
                bar.close()


def iter_windows(duration: float, window: float, stride: float) -> Iterator[tuple[float, float]]:
    """``(start, end)`` seconds of the windows :func:`predict_windows` takes (see its doc), one at a time."""
    eps = 1e-6
    if duration <= window + eps:
        yield (0.0, duration)
        return
    s, last_end = 0.0, 0.0
    while s + window <= duration + eps:
        yield (s, s + window)
        last_end = s + window
        s = round(s + stride, 9)
    if last_end < duration - eps:
        yield (duration - window, duration)


def window_bounds(duration: float, window: float, stride: float) -> list[tuple[float, float]]:
    """:func:`iter_windows` as a list."""
    return list(iter_windows(duration, window, stride))


def _warn_head_pool(model: Any, cfg: Any, views: Views) -> None:
    if views == "reference" and cfg.test_head_pool == "fixed" and getattr(model.cfg, "head_pool", "fixed") != "fixed":
        warnings.warn(
            f"{cfg.name} was evaluated with a fixed-kernel head; build it with "
            f"create(name, head_pool='fixed') to reproduce the published numbers (this model pools adaptively)",
            stacklevel=3,
        )


# ---- output -------------------------------------------------------------------------------------------------------
def format_table(results: Iterable[VideoPrediction]) -> str:
    """A plain-text table: one row per (video or window, rank)."""
    rows: list[tuple[str, ...]] = []
    windows = False
    for r in results:
        where = Path(r.video).name
        span = f"{r.start:.2f}-{float(r.end or 0.0):.2f}s" if r.start is not None else ""
        windows = windows or bool(span)
        for rank, p in enumerate(r.top, 1):
            first = rank == 1
            rows.append((where if first else "", span if first else "", str(rank), p.label, f"{p.score:.4f}"))
    header = ("video", "window", "#", "label", "score")
    keep = [i for i in range(len(header)) if i != 1 or windows]
    return text_table([header[i] for i in keep], [[row[i] for i in keep] for row in rows], right_align_last=True)


def to_json_lines(results: Iterable[VideoPrediction]) -> Iterator[str]:
    """One JSON object per video or window."""
    for r in results:
        yield json.dumps(r.to_dict(), ensure_ascii=False)


def sample_video() -> Path:
    """Path of the short sample clip shipped with the package (see ``slowfast_zoo/assets/README.md``)."""
    ref = resources.files("slowfast_zoo") / "assets" / SAMPLE_VIDEO
    path = Path(str(ref))
    if not path.is_file():  # pragma: no cover - zipped installs
        raise FileNotFoundError(f"sample clip missing from the installed package: {ref}")
    return path

"""Video in, predictions out: each checkpoint's published test protocol, or one quick view.

``predict(video, model)`` decodes only the clips the protocol needs (:mod:`slowfast_zoo.video.io`), preprocesses them as
the checkpoint was evaluated (:mod:`slowfast_zoo.video.transforms`), runs the views in batches under
``torch.inference_mode`` and combines them as the authors did (published_models.md §D):

* Kinetics: 10 uniformly spaced clips x 3 crops (left/centre/right of the long side), mean of softmax;
* Charades: 10 clips x 3 crops, max over views of the sigmoid;
* Something-Something v2: one segment-sampled clip over the whole video, the checkpoint's crops, mean of softmax.

The activation is applied at every position of the head (a fixed-kernel head gives a 2x2 grid at 256 crops) and
then averaged, as the reference's fully-convolutional test does. ``views="fast"`` is one centred clip and crop.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch

from ..video import transforms as T
from ..video.io import VideoInfo, VideoReader

__all__ = [
    "ClipView",
    "Prediction",
    "TensorVideo",
    "VideoPrediction",
    "format_table",
    "load_model",
    "plan_views",
    "predict",
    "predict_windows",
    "sample_video",
    "to_json_lines",
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


@dataclass(frozen=True)
class ClipView:
    """One temporal clip of a protocol: frame positions in the video (frames of its average rate) and its crops."""

    positions: torch.Tensor
    crops: tuple[str, ...]


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

    def __enter__(self) -> TensorVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


# ---- models -------------------------------------------------------------------------------------------------------
def load_model(
    model: Any, *, checkpoint: str | os.PathLike[str] | None = None, device: str | torch.device | None = None
) -> Any:
    """A model ready for :func:`predict`: a name is built with its weights (or ``checkpoint``) and test head pool."""
    if isinstance(model, str):
        from ..factory import create, resolve_cfg

        cfg = resolve_cfg(model)  # registry names, hf-hub: repos and local-dir: folders alike
        if cfg.model.roi_head:
            raise ValueError(f"{cfg.name} is an AVA detector: it scores person boxes, call model(clip, boxes)")
        built = create(
            model,
            pretrained=checkpoint is None,
            checkpoint=checkpoint,
            device=device,
            head_pool=cfg.test_head_pool,
        )
        return built.eval()
    if getattr(model, "pretrained_cfg", None) is None:
        raise TypeError("expected a model name or a model made by slowfast_zoo.create (it carries pretrained_cfg)")
    if model.cfg.roi_head:
        raise ValueError(
            f"{model.pretrained_cfg.name} is an AVA detector: it scores person boxes, call model(clip, boxes)"
        )
    if device is not None:
        model = model.to(device)
    return model


# ---- view plans ---------------------------------------------------------------------------------------------------
def plan_views(
    cfg: Any, info: VideoInfo, views: Views = "reference", window: tuple[float, float] | None = None
) -> list[ClipView]:
    """The clips (frame positions) and crops a protocol takes from a video, or from ``window`` (seconds) of it."""
    if views not in ("reference", "fast"):
        raise ValueError(f"views must be 'reference' or 'fast', got {views!r}")
    fps = info.fps
    offset, length = 0.0, float(info.num_frames)
    if window is not None:
        offset = window[0] * fps
        length = max((window[1] - window[0]) * fps, 1.0)
    last = offset + length - 1
    frames, rate, target = cfg.num_frames, cfg.sampling_rate, cfg.target_fps
    if views == "fast":
        crops: tuple[str, ...] = ("center",)
        if cfg.frame_sampling == "segment":
            return [ClipView(offset + T.segment_indices(math.ceil(length), frames).float(), crops)]
        clip_size = rate * frames / target * fps
        start = offset + max(length - clip_size, 0.0) / 2
        pos = T.clip_positions(start, frames, rate, target, fps)
        return [ClipView(pos.clamp(offset, last), crops)]
    crops = tuple(cfg.test_crops)
    clips = cfg.test_clips
    if cfg.frame_sampling == "segment":
        return [ClipView(offset + T.segment_indices(math.ceil(length), frames).float(), crops)] * clips
    if cfg.dataset == "charades":
        scale = fps / target  # PySlowFast's Charades positions are in frames of the training rate
        n_t = max(round(length / scale), 1)
        return [
            ClipView(offset + T.charades_clip_positions(n_t, frames, rate, i, clips) * scale, crops)
            for i in range(clips)
        ]
    clip_size = rate * frames / target * fps
    out = []
    for i in range(clips):
        start = offset + T.uniform_clip_start(length, clip_size, i, clips)
        pos = T.clip_positions(start, frames, rate, target, fps)
        out.append(ClipView(pos.clamp(offset, last), crops))
    return out


# ---- running views ----------------------------------------------------------------------------------------------
class _ViewRunner:
    """Preprocess clips into crops, run them in batches, keep the per-view scores."""

    def __init__(self, model: Any, cfg: Any, batch_size: int, progress: Any) -> None:
        self.model, self.cfg, self.batch_size, self.progress = model, cfg, batch_size, progress
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.pending: list[torch.Tensor] = []
        self.scores: list[torch.Tensor] = []

    def add_clip(self, frames: torch.Tensor, crops: Sequence[str]) -> None:
        cfg = self.cfg
        clip = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # (T, C, H, W) uint8
        clip = T.normalize(T.to_float(clip), cfg.mean, cfg.std)
        clip = T.short_side_resize(clip, cfg.test_short_side, cfg.interpolation)
        for position in crops:
            self.pending.append(T.to_model_layout(T.crop(clip, cfg.test_crop_size, position)))
            if len(self.pending) >= self.batch_size:
                self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch = torch.stack(self.pending).to(self.dtype)
        self.pending = []
        inputs = T.pack_pathways(batch, self.cfg.alpha)
        logits = self.model.position_logits(inputs if self.cfg.alpha is not None else inputs[0]).float()
        probs = logits.sigmoid() if self.cfg.activation == "sigmoid" else logits.softmax(dim=-1)
        self.scores.append(probs.flatten(1, -2).mean(dim=1).cpu())  # activation per position, then mean
        if self.progress is not None:
            self.progress.update(batch.shape[0])

    def result(self) -> tuple[torch.Tensor, int]:
        self.flush()
        views = torch.cat(self.scores)
        self.scores = []
        if self.cfg.ensemble == "max":
            return views.max(dim=0).values, views.shape[0]
        return views.mean(dim=0), views.shape[0]


def _labels(cfg: Any, num_classes: int) -> Sequence[str]:
    names = cfg.label_names
    if names is not None and len(names) == num_classes:
        return names
    return [f"class_{i}" for i in range(num_classes)]


def _top(scores: torch.Tensor, labels: Sequence[str], top_k: int) -> list[Prediction]:
    k = min(max(top_k, 1), scores.numel())
    values, idx = scores.topk(k)
    return [Prediction(labels[i], i, float(v)) for v, i in zip(values.tolist(), idx.tolist())]


def _open(video: Any) -> Any:
    if isinstance(video, (VideoReader, TensorVideo)):
        return video
    if isinstance(video, torch.Tensor):
        raise TypeError("for frames in memory pass TensorVideo(frames, fps)")
    return VideoReader(video)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="view", file=sys.stderr, leave=False)


def _run(
    reader: Any, model: Any, cfg: Any, plan: list[ClipView], batch_size: int, bar: Any
) -> tuple[torch.Tensor, int]:
    runner = _ViewRunner(model, cfg, batch_size, bar)
    for view in plan:
        runner.add_clip(reader.frames_at_positions(view.positions), view.crops)
    return runner.result()


def _default_batch(plan: list[ClipView], device: torch.device) -> int:
    views = sum(len(v.crops) for v in plan)
    return views if device.type != "cpu" else min(views, 6)


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
    progress: bool = False,
) -> VideoPrediction:
    """Class predictions for a video file with a checkpoint's own preprocessing and test protocol.

    Args:
        video: a file path (decoded with PyAV, ``slowfast-zoo[video]``), an open :class:`VideoReader`, or
            :class:`TensorVideo` for frames already in memory.
        model: a model name (built with its published weights, or ``checkpoint``) or a model from ``create``.
        views: ``"reference"``: the dataset's published multi-view protocol; ``"fast"``: one centred clip and crop.
        top_k: how many classes to return.
        device: where to run (a name builds the model there; a model is moved there).
        batch_size: views per forward pass (default: all views on GPU, 6 on CPU).
        progress: show a progress bar over views on stderr.

    Returns:
        :class:`VideoPrediction`: ``top`` (label, index, score) and ``scores`` (all classes, aggregated).
    """
    model = load_model(model, checkpoint=checkpoint, device=device)
    cfg = model.pretrained_cfg
    _warn_head_pool(model, cfg, views)
    was_training = model.training
    model.eval()
    try:
        with _opened(video) as reader:
            plan = plan_views(cfg, reader.info, views)
            dev = next(model.parameters()).device
            bs = batch_size or _default_batch(plan, dev)
            bar = _progress(sum(len(v.crops) for v in plan), Path(str(reader.path)).name, progress)
            try:
                scores, n = _run(reader, model, cfg, plan, bs, bar)
            finally:
                if bar is not None:
                    bar.close()
    finally:
        model.train(was_training)
    return VideoPrediction(
        str(reader.path), cfg.name, _top(scores, _labels(cfg, scores.numel()), top_k), scores, num_views=n
    )


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
    progress: bool = False,
) -> Iterator[VideoPrediction]:
    """Predictions for consecutive windows ``[start, start + window_s)`` every ``stride_s`` seconds, as they come.

    Windows start at 0, ``stride_s``, ... while they fit in the video; if the last one ends before the video does,
    one more window is aligned to the end; a video shorter than ``window_s`` gives one window over all of it.
    Each window is its own protocol (``views``), decoded by one reader moving forward, so memory stays constant.
    """
    if window_s <= 0 or stride_s <= 0:
        raise ValueError("window_s and stride_s must be positive")
    model = load_model(model, checkpoint=checkpoint, device=device)
    cfg = model.pretrained_cfg
    _warn_head_pool(model, cfg, views)
    with _opened(video) as reader:
        bounds = _windows(reader.info.duration, window_s, stride_s)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(bounds), desc=Path(str(reader.path)).name, unit="window", file=sys.stderr)
        labels = None
        try:
            for start, end in bounds:
                plan = plan_views(cfg, reader.info, views, window=(start, end))
                dev = next(model.parameters()).device
                with torch.inference_mode():
                    model.eval()
                    scores, n = _run(reader, model, cfg, plan, batch_size or _default_batch(plan, dev), None)
                labels = labels or _labels(cfg, scores.numel())
                if bar is not None:
                    bar.update(1)
                yield VideoPrediction(
                    str(reader.path), cfg.name, _top(scores, labels, top_k), scores, n, start=start, end=end
                )
        finally:
            if bar is not None:
                bar.close()


def _windows(duration: float, window: float, stride: float) -> list[tuple[float, float]]:
    eps = 1e-6
    if duration <= window + eps:
        return [(0.0, duration)]
    out = []
    s = 0.0
    while s + window <= duration + eps:
        out.append((s, s + window))
        s = round(s + stride, 9)
    if out[-1][1] < duration - eps:
        out.append((duration - window, duration))
    return out


class _opened:
    """Open a path (and close it afterwards), or use a reader the caller owns."""

    def __init__(self, video: Any) -> None:
        self.owned = not isinstance(video, (VideoReader, TensorVideo))
        self.reader = _open(video)

    def __enter__(self) -> Any:
        return self.reader

    def __exit__(self, *exc: object) -> None:
        if self.owned:
            self.reader.close()


def _warn_head_pool(model: Any, cfg: Any, views: Views) -> None:
    if views == "reference" and cfg.test_head_pool == "fixed" and model.cfg.head_pool != "fixed":
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
    table = [tuple(row[i] for i in keep) for row in [header, *rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(keep))]
    lines = [
        "  ".join(c.ljust(w) if j != len(widths) - 1 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths)))
        for row in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def to_json_lines(results: Iterable[VideoPrediction]) -> Iterator[str]:
    """One JSON object per video or window."""
    for r in results:
        yield json.dumps(r.to_dict(), ensure_ascii=False)


def sample_video() -> Path:
    """Path of the short sample clip shipped with the package (see ``slowfast_zoo/assets/README.md``)."""
    ref = resources.files("slowfast_zoo").joinpath("assets", SAMPLE_VIDEO)
    path = Path(str(ref))
    if not path.is_file():  # pragma: no cover - zipped installs
        raise FileNotFoundError(f"sample clip missing from the installed package: {ref}")
    return path

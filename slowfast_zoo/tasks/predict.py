"""Video in, predictions out: each checkpoint's published test protocol, or one quick view.

``predict(video, model)`` decodes only the clips the protocol needs (:mod:`slowfast_zoo.video.io`), picks their
frames by the checkpoint's own rule (:mod:`slowfast_zoo.video.views`, chosen by ``test_clip_sampler``), preprocesses
them as the checkpoint was evaluated (:mod:`slowfast_zoo.video.transforms`), runs the views in batches under
``torch.inference_mode`` and combines them as the authors did (published_models.md §D, §G):

* Kinetics: 10 clips x 3 crops (left/centre/right of the long side), mean of softmax; clips placed as PySlowFast's
  decoder places them, or as pytorchvideo 0.1.5's sampler does for the ``k400_ptv`` tags;
* Charades: 10 clips x 3 crops of frames at 24 fps, max over views of the sigmoid;
* Something-Something v2: one segment-sampled clip over the whole video, the checkpoint's crops, mean of softmax.

The activation is applied at every position of the head (a fixed-kernel head gives a 2x2 grid at 256 crops) and
then averaged, as the reference's fully-convolutional test does. ``views="fast"`` is one centred clip and crop.
"""

# Over ~400 lines: the protocol runner and its result types; views and transforms are already in video/.

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch

from ..video import transforms as T
from ..video.io import VideoInfo, VideoReader
from ..video.views import ClipView, FrameTable, plan_views

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
    if not hasattr(model, "position_logits") or getattr(model.cfg, "num_classes", 0) == 0:
        raise TypeError(
            f"{model.pretrained_cfg.name}: predict needs a classifier, and this model returns features "
            "(features_only or num_classes=0); use slowfast_zoo.features.extract or model.forward_features"
        )
    if model.cfg.roi_head:
        raise ValueError(
            f"{model.pretrained_cfg.name} is an AVA detector: it scores person boxes, call model(clip, boxes)"
        )
    if device is not None:
        model = model.to(device)
    return model


# ---- running views ----------------------------------------------------------------------------------------------
class _ViewRunner:
    """Preprocess clips into crops, run them in batches, keep the per-view scores."""

    def __init__(self, model: Any, cfg: Any, batch_size: int, progress: Any) -> None:
        self.model, self.cfg, self.batch_size, self.progress = model, cfg, batch_size, progress
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.transform = T.create_transforms(cfg, "eval")
        self.pending: list[torch.Tensor] = []
        self.scores: list[torch.Tensor] = []

    def add_clip(self, frames: torch.Tensor, crops: Sequence[str]) -> None:
        for view in self.transform.crops(frames.to(self.device, non_blocking=True), crops):
            self.pending.append(view)
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
        runner.add_clip(view.read(reader), view.crops)
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
        bounds = window_bounds(reader.info.duration, window_s, stride_s)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(bounds), desc=Path(str(reader.path)).name, unit="window", file=sys.stderr)
        labels = None
        try:
            for start, end in bounds:
                plan = plan_views(cfg, reader.info, views, window=(start, end))
                dev = next(model.parameters()).device
                was_training = model.training
                try:  # restored before each window is handed out: the caller may train between windows
                    with torch.inference_mode():
                        model.eval()
                        scores, n = _run(reader, model, cfg, plan, batch_size or _default_batch(plan, dev), None)
                finally:
                    model.train(was_training)
                labels = labels or _labels(cfg, scores.numel())
                if bar is not None:
                    bar.update(1)
                yield VideoPrediction(
                    str(reader.path), cfg.name, _top(scores, labels, top_k), scores, n, start=start, end=end
                )
        finally:
            if bar is not None:
                bar.close()


def window_bounds(duration: float, window: float, stride: float) -> list[tuple[float, float]]:
    """``(start, end)`` seconds of the windows :func:`predict_windows` takes (see its doc)."""
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
    ref = resources.files("slowfast_zoo") / "assets" / SAMPLE_VIDEO
    path = Path(str(ref))
    if not path.is_file():  # pragma: no cover - zipped installs
        raise FileNotFoundError(f"sample clip missing from the installed package: {ref}")
    return path

"""What every task that runs a model on videos shares: the model ready for the task, the views decoded and
transformed (in worker threads), batched through the model in one thread, and a progress bar."""

from __future__ import annotations

import collections
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import torch

from ..video import transforms as T
from ..video.codec import open_reader
from ..video.views import ClipView, read_views

Precision = Literal["fp32", "bf16"]

__all__ = [
    "Precision",
    "ViewRunner",
    "class_scores",
    "default_batch",
    "ensemble",
    "eval_mode",
    "iter_view_inputs",
    "load_model",
    "open_video",
    "pooled_features",
    "prefetch",
    "progress_bar",
]


# ---- models -------------------------------------------------------------------------------------------------------
def load_model(
    model: Any,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    task: Literal["classify", "detect"] = "classify",
    precision: Precision = "fp32",
    fast: bool = False,
) -> Any:
    """A model ready for a task: a name is built with its weights (or ``checkpoint``) and its test head pool.

    ``task="classify"`` (predict, evaluate, features) refuses AVA detectors and models without a classifier;
    ``"detect"`` wants a detector. ``fast=True`` returns :func:`slowfast_zoo.optimize_for_inference`'s copy (BatchNorm
    folded, channels-last; with ``precision="bf16"`` its weights stored in bf16 once). A model in training mode is
    left in it (the tasks switch to eval mode themselves).
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    if isinstance(model, str):
        from ..factory import create, resolve_cfg

        cfg = resolve_cfg(model)  # registry names, hf-hub: repos and local-dir: folders alike
        _check_task(cfg.name, cfg.model.roi_head, True, task)
        pool: dict[str, Any] = {} if cfg.model.roi_head else {"head_pool": cfg.test_head_pool}
        model = create(model, pretrained=checkpoint is None, checkpoint=checkpoint, device=device, **pool).eval()
    else:
        if getattr(model, "pretrained_cfg", None) is None:
            raise TypeError("expected a model name or a model made by slowfast_zoo.create (it carries pretrained_cfg)")
        classifier = hasattr(model, "position_logits") and getattr(model.cfg, "num_classes", 0) != 0
        _check_task(model.pretrained_cfg.name, model.cfg.roi_head, classifier, task)
        if device is not None:
            model = model.to(device)
    if fast:
        from ..models.optimize import optimize_for_inference

        model = optimize_for_inference(model, dtype=torch.bfloat16 if precision == "bf16" else None)
    return model


def _check_task(name: str, detector: bool, classifier: bool, task: str) -> None:
    if task == "detect":
        if not detector:
            raise ValueError(f"{name}: detect needs an AVA detector (e.g. slowfast_r50_8x8_det); use predict")
        return
    if detector:
        raise ValueError(f"{name} is an AVA detector: it scores person boxes, call model(clip, boxes)")
    if not classifier:
        raise TypeError(
            f"{name}: predict needs a classifier, and this model returns features "
            "(features_only or num_classes=0); use slowfast_zoo.features.extract or model.forward_features"
        )


# ---- running views ----------------------------------------------------------------------------------------------
class ViewRunner:
    """Views in, ``fn`` run on batches of ``batch_size`` of them (packed into pathways), per-view outputs out.

    One runner is used from one thread. ``precision="bf16"`` runs a float32 model under ``torch.autocast``; a model
    whose weights are bf16 already (``fast``) gets bf16 inputs instead.
    """

    def __init__(
        self,
        model: Any,
        fn: Callable[[Any], torch.Tensor],
        batch_size: int,
        *,
        precision: Precision = "fp32",
        progress: Any = None,
    ) -> None:
        param = next(model.parameters())
        self.device, self.dtype, self.alpha = param.device, param.dtype, model.pretrained_cfg.alpha
        self.fn, self.batch_size, self.progress = fn, batch_size, progress
        self.autocast = precision == "bf16" and self.dtype == torch.float32
        self.pending: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def add(self, view: torch.Tensor) -> None:
        self.pending.append(view)
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch = torch.stack(self.pending).to(self.device, self.dtype, non_blocking=True)
        self.pending = []
        inputs = T.pack_pathways(batch, self.alpha)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.fn(inputs if self.alpha is not None else inputs[0])
        self.outputs.append(out.float().cpu())
        if self.progress is not None:
            self.progress.update(batch.shape[0])

    def take(self) -> torch.Tensor:
        """Every output since the last ``take``, ``(views, ...)`` float32 on the CPU."""
        self.flush()
        out, self.outputs = torch.cat(self.outputs), []
        return out


def class_scores(model: Any) -> Callable[[Any], torch.Tensor]:
    """Per-view class scores: the activation at every head position, then their mean (the reference's test)."""
    sigmoid = model.pretrained_cfg.activation == "sigmoid"

    def fn(x: Any) -> torch.Tensor:
        logits = model.position_logits(x).float()
        probs = logits.sigmoid() if sigmoid else logits.softmax(dim=-1)
        return probs.flatten(1, -2).mean(dim=1)

    return fn


def pooled_features(model: Any) -> Callable[[Any], torch.Tensor]:
    """Per-view embeddings: ``forward_head(forward_features(x), pre_logits=True)``."""

    def fn(x: Any) -> torch.Tensor:
        return model.forward_head(model.forward_features(x), pre_logits=True)

    return fn


def ensemble(cfg: Any, views: torch.Tensor) -> torch.Tensor:
    """The video's scores from its views' (``max`` or mean, as the checkpoint's protocol says)."""
    return views.max(dim=0).values if cfg.ensemble == "max" else views.mean(dim=0)


def iter_view_inputs(reader: Any, cfg: Any, plan: list[ClipView], device: torch.device) -> Iterator[torch.Tensor]:
    """The model-layout crops ``(3, T, S, S)`` of every view of ``plan``, in order, decoded in one pass.

    Each frame is scaled, normalized and resized as it is decoded (on ``device``); each clip is cropped per view.
    """
    transform = T.create_transforms(cfg, "eval")

    def frame_fn(frame: torch.Tensor) -> torch.Tensor:
        return transform.prepare_frame(frame.to(device, non_blocking=True))

    for view, frames in zip(plan, read_views(reader, plan, frame_fn)):
        yield from transform.crops_of_frames(frames, view.crops)


def prefetch(fn: Callable[[Any], Any], items: Iterable[Any], workers: int) -> Iterator[Any]:
    """``map(fn, items)`` in order, computed ahead by ``workers`` threads (0: in the caller's thread).

    At most ``2 * workers`` results wait, so memory stays bounded when the consumer (the model) is slower.
    """
    if workers <= 0:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slowfast-zoo-decode") as pool:
        queue: collections.deque[Any] = collections.deque()
        try:
            for item in items:
                queue.append(pool.submit(fn, item))
                if len(queue) >= 2 * workers:
                    yield queue.popleft().result()
            while queue:
                yield queue.popleft().result()
        finally:
            for future in queue:
                future.cancel()


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar on stderr, or None when disabled."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, **kwargs)


def default_batch(views: int, device: torch.device) -> int:
    """Views per forward pass unless given: all of a video's on a GPU, 6 on the CPU."""
    return views if device.type != "cpu" else min(views, 6)


class eval_mode:
    """The model in eval mode inside the block, its own mode restored after (the caller may be training it)."""

    def __init__(self, model: Any) -> None:
        self.model, self.was_training = model, model.training

    def __enter__(self) -> Any:
        return self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


def _is_reader(video: Any) -> bool:
    """An open reader (``VideoReader``, ``TensorVideo``, a frame folder): it has ``info`` and ``frame_table``."""
    return hasattr(video, "info") and hasattr(video, "frame_table")


class open_video:
    """A reader for a path (closed afterwards) decoding with ``decoder``, or the reader the caller gave (left open).

    ``decoder``: ``"auto"`` (torchcodec where it loads, else PyAV), ``"pyav"`` or ``"torchcodec"``
    (:mod:`slowfast_zoo.video.codec`).
    """

    def __init__(self, video: Any, decoder: str = "auto") -> None:
        if isinstance(video, torch.Tensor):
            raise TypeError("for frames in memory pass TensorVideo(frames, fps)")
        self.owned = not _is_reader(video)
        self.reader = open_reader(video, decoder) if self.owned else video

    def __enter__(self) -> Any:
        return self.reader

    def __exit__(self, *exc: object) -> None:
        if self.owned:
            self.reader.close()

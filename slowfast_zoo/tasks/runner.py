"""What every task that runs a model on videos shares: the model ready for the task, the views decoded and
transformed (ahead of the model by :class:`~.workers.Prefetcher`'s threads or processes), batched through the model
in one thread (on CUDA: pinned host batches copied on a side stream while the previous batch computes), and a
progress bar."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import torch

from ..registry.family import DEFAULT_FAMILY, family_of
from ..video import transforms as T
from ..video.codec import open_reader
from ..video.views import ClipView, Views, plan_views, read_views
from .tuning import Precision, tuned_batch, tuned_channels_last

__all__ = [
    "Precision",
    "TransferPlan",
    "ViewRunner",
    "batch_for",
    "class_scores",
    "default_batch",
    "ensemble",
    "eval_mode",
    "iter_view_inputs",
    "load_model",
    "open_video",
    "pooled_features",
    "portable_cfg",
    "progress_bar",
    "read_view_inputs",
    "transfer_plan",
    "video_scores",
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
        detector = getattr(cfg.model, "roi_head", False)
        _check_task(cfg.name, detector, True, task)
        # the test-time head pooling is a ResNet3d field; another family's network takes its config as it is
        pool: dict[str, Any] = (
            {"head_pool": cfg.test_head_pool} if hasattr(cfg.model, "head_pool") and not detector else {}
        )
        model = create(model, pretrained=checkpoint is None, checkpoint=checkpoint, device=device, **pool).eval()
    else:
        if getattr(model, "pretrained_cfg", None) is None:
            raise TypeError("expected a model name or a model made by slowfast_zoo.create (it carries pretrained_cfg)")
        classifier = _is_classifier(model)
        _check_task(model.pretrained_cfg.name, getattr(model.cfg, "roi_head", False), classifier, task)
        if device is not None:
            model = model.to(device)
    if fast:
        from ..models.optimize import optimize_for_inference

        dtype = torch.bfloat16 if precision == "bf16" else None
        model = optimize_for_inference(model, dtype=dtype, channels_last=tuned_channels_last(model, dtype))
    return model


def _is_classifier(model: Any) -> bool:
    """Class scores can be had: ResNet3d's ``position_logits``, or another family's network (its ``forward`` gives
    the logits ``(N, num_classes)``, as a family's builder promises), with classes."""
    if getattr(model.cfg, "num_classes", 0) == 0:
        return False
    return hasattr(model, "position_logits") or family_of(model.cfg).name != DEFAULT_FAMILY


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
@dataclass(frozen=True)
class TransferPlan:
    """How a batch made on the host reaches the model's device."""

    #: stack the batch into page-locked memory (a CUDA copy from it can be asynchronous)
    pin: bool = False
    #: copy with ``non_blocking=True`` on a side stream, so it overlaps the previous batch's compute
    overlap: bool = False


def transfer_plan(device: torch.device, source: torch.device) -> TransferPlan:
    """Pinned memory and an overlapped copy for host batches going to a CUDA device; nothing to plan otherwise
    (batches already on the device, or a CPU model)."""
    if device.type == "cuda" and source.type == "cpu":
        return TransferPlan(pin=True, overlap=True)
    return TransferPlan()


class ViewRunner:
    """Views in, ``fn`` run on batches of ``batch_size`` of them (packed into pathways), per-view outputs out.

    One runner is used from one thread. ``precision="bf16"`` runs a float32 model under ``torch.autocast``; a model
    whose weights are bf16 already (``fast``) gets bf16 inputs instead. Host views for a CUDA model follow
    :func:`transfer_plan`; outputs stay on the device until :meth:`take`, so the host never waits for a batch.
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
        self._copy_stream: Any = None

    def add(self, view: torch.Tensor) -> None:
        self.pending.append(view)
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        views, self.pending = self.pending, []
        plan = transfer_plan(self.device, views[0].device)
        if plan.overlap:
            batch = self._copy_overlapped(views, plan.pin)
        else:
            batch = torch.stack(views).to(self.device, self.dtype, non_blocking=True)
        inputs = T.pack_pathways(batch, self.alpha)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.fn(inputs if self.alpha is not None else inputs[0])
        self.outputs.append(out.float())  # on the model's device until take(): the host never waits for a batch
        if self.progress is not None:
            self.progress.update(batch.shape[0])

    def _copy_overlapped(self, views: list[torch.Tensor], pin: bool) -> torch.Tensor:
        """The batch on the device, copied from (pinned) host memory on a side stream; the compute stream waits for
        the copy only, so the copy runs while the previous batch still computes."""
        host = torch.empty((len(views), *views[0].shape), dtype=views[0].dtype, pin_memory=pin)
        torch.stack(views, out=host)
        compute = torch.cuda.current_stream(self.device)
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._copy_stream):
            batch = host.to(self.device, non_blocking=True)
        compute.wait_stream(self._copy_stream)
        batch.record_stream(compute)  # allocated on the copy stream, used on the compute stream
        return batch.to(self.dtype)

    def take(self) -> torch.Tensor:
        """Every output since the last ``take``, ``(views, ...)`` float32 on the CPU."""
        self.flush()
        out, self.outputs = torch.cat(self.outputs).cpu(), []
        return out


def class_scores(model: Any) -> Callable[[Any], torch.Tensor]:
    """Per-view class scores: the activation at every head position, then their mean (the reference's test)."""
    sigmoid = model.pretrained_cfg.activation == "sigmoid"

    def fn(x: Any) -> torch.Tensor:
        # ResNet3d: logits at each head position (N, ..., C); another family: its forward's logits (N, C)
        logits = (model.position_logits(x) if hasattr(model, "position_logits") else model(x)).float()
        probs = logits.sigmoid() if sigmoid else logits.softmax(dim=-1)
        return probs.flatten(1, -2).mean(dim=1) if probs.dim() > 2 else probs

    return fn


def pooled_features(model: Any) -> Callable[[Any], torch.Tensor]:
    """Per-view embeddings: ``forward_head(forward_features(x), pre_logits=True)``."""

    def fn(x: Any) -> torch.Tensor:
        return model.forward_head(model.forward_features(x), pre_logits=True)

    return fn


def ensemble(cfg: Any, views: torch.Tensor) -> torch.Tensor:
    """The video's scores from its views' (``max`` or mean, as the checkpoint's protocol says)."""
    return views.max(dim=0).values if cfg.ensemble == "max" else views.mean(dim=0)


def video_scores(
    model: Any, views: Iterable[torch.Tensor], batch_size: int, precision: Precision = "fp32", progress: Any = None
) -> tuple[torch.Tensor, int]:
    """A video's class scores from its views' model inputs (batched, ensembled) and how many views there were."""
    runner = ViewRunner(model, class_scores(model), batch_size, precision=precision, progress=progress)
    for view in views:
        runner.add(view)
    out = runner.take()
    return ensemble(model.pretrained_cfg, out), out.shape[0]


def iter_view_inputs(reader: Any, cfg: Any, plan: list[ClipView], device: torch.device) -> Iterator[torch.Tensor]:
    """The model-layout crops ``(3, T, S, S)`` of every view of ``plan``, in order, decoded in one pass.

    Each frame is scaled, normalized and resized as it is decoded (on ``device``); each clip is cropped per view. On
    the CPU this runs torch on one thread (:class:`one_torch_thread`), as decode processes do.
    """
    transform = T.create_transforms(cfg, "eval")
    threads = one_torch_thread if device.type == "cpu" else contextlib.nullcontext

    def frame_fn(frame: torch.Tensor) -> torch.Tensor:
        with threads():
            return transform.prepare_frame(frame.to(device, non_blocking=True))

    for view, frames in zip(plan, read_views(reader, plan, frame_fn)):
        with threads():
            crops = transform.crops_of_frames(frames, view.crops)
        yield from crops


class one_torch_thread:
    """torch on one CPU thread in this thread inside the block, its count restored after.

    Per-frame transforms are small: on several threads torch's workers spin against the decoder's own threads for
    the same cores. Measured with PyAV on 2 cores (``benchmarks/pipeline.py --stages decode-prepare``, SlowFast R50's
    30 views): 1.32 CPU s on two threads against 0.45 on one at 340x256, 3.38 against 1.72 at 1280x720. One thread
    also gives the same bits in every worker kind: a resize's sums are split by the thread count. (OpenMP's count
    is per thread: a model running in another thread keeps its own.)
    """

    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        if self.threads != 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        if self.threads != 1:
            torch.set_num_threads(self.threads)


def portable_cfg(cfg: Any) -> Any:
    """The pretrained config as a decode process can receive it (its read-only ``metrics`` view does not pickle)."""
    return cfg.replace(metrics=dict(cfg.metrics)) if isinstance(cfg.metrics, MappingProxyType) else cfg


def read_view_inputs(
    video: Any, cfg: Any, views: Views, device: torch.device, decoder: str = "auto"
) -> tuple[str, list[torch.Tensor]]:
    """A video's name and the model inputs of every view of its ``views`` protocol (what a decode worker makes)."""
    with torch.inference_mode(), open_video(video, decoder) as reader:
        plan = plan_views(cfg, reader.info, views)
        return str(reader.path), list(iter_view_inputs(reader, cfg, plan, device))


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar on stderr, or None when disabled."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, **kwargs)


def default_batch(views: int, device: torch.device) -> int:
    """Views per forward pass where nothing was measured: all of a video's on a GPU, 6 on the CPU."""
    return views if device.type != "cpu" else min(views, 6)


def batch_for(model: Any, views: int, precision: Precision = "fp32") -> int:
    """Views per forward pass for a video of ``views`` views: the batch measured for this model on its device
    (:func:`slowfast_zoo.tune`), at most ``views``, else :func:`default_batch`."""
    tuned = tuned_batch(model, precision)
    return min(views, tuned) if tuned else default_batch(views, next(model.parameters()).device)


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

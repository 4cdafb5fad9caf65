"""Stages for Ray Data pipelines: decode videos on CPU tasks, embed or classify them on (GPU) model actors.

A user's pipeline (``pip install "slowfast-zoo[ray]"``)::

    ds = ray.data.read_csv("videos.csv")                      # a "path" column (optional "start" / "end", s)
    ds = ds.map_batches(DecodeClips("slowfast_r50_8x8"), batch_size=1)
    ds = ds.map_batches(EmbedClips, fn_constructor_args=("slowfast_r50_8x8",), batch_size=8,
                        compute=ActorPoolStrategy(size=4), num_gpus=1)
    ds.drop_columns(["views"]).write_parquet("s3://bucket/features/")

:class:`DecodeClips` turns each row (a video, or its ``[start, end)`` seconds) into one row per video or per sliding
window holding the checkpoint's own views, preprocessed as :func:`slowfast_zoo.predict` preprocesses them
(``plan_views`` + :func:`~slowfast_zoo.tasks.runner.iter_view_inputs`). A video that cannot be read gives one row
whose ``error`` says why (and no views), so a corrupt file never stops the job. :class:`EmbedClips` and
:class:`ClassifyClips` are the model stages: each actor builds the model once with :func:`slowfast_zoo.create`
(weights verified by sha256) and runs each row's views through a :class:`~slowfast_zoo.tasks.runner.ViewRunner`
(the single-process tasks' batcher) in batches of that row only, so a row's result does not depend on which rows
Ray batched together (``mix_rows=True`` packs views of several rows into one forward pass: faster on a GPU, equal
within float rounding).

This module imports no Ray: the stages are plain callables. :mod:`slowfast_zoo.tasks.ray_jobs` runs them on Ray.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from ..registry.pretrained import PretrainedCfg
from ..video.io import VideoError, VideoReader
from ..video.views import plan_views
from .eval_datasets import FrameFolderVideo
from .predict import window_bounds
from .preprocess import pretrained_cfg_of
from .runner import Precision, ViewRunner, class_scores, ensemble, iter_view_inputs, load_model, pooled_features
from .tuning import tuned_batch

__all__ = ["ClassifyClips", "DecodeClips", "EmbedClips"]

#: columns a decode stage adds (any other input column is passed through, repeated for each window)
DECODED = ("path", "start", "end", "views", "error", "windows")


def _spec_cfg(model: str | PretrainedCfg | Any) -> PretrainedCfg:
    if isinstance(model, str):
        from ..factory import resolve_cfg

        return resolve_cfg(model)  # registry name, hf-hub: or local-dir: (the config only, no weights)
    return pretrained_cfg_of(model)


def _given(batch: dict[str, Any], column: str, i: int) -> float | None:
    if column not in batch:
        return None
    v = batch[column][i]
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


class DecodeClips:
    """CPU stage: rows with a ``path`` (and optional ``start`` / ``end`` seconds) -> rows of preprocessed views.

    A ``path`` that is a folder is read as frame images (sorted by name) at the row's ``fps`` (default 30).

    Output rows: ``path``, ``start`` / ``end`` (seconds of the video or window), ``views`` float32
    ``(V, 3, T, S, S)`` (the model-layout crops of the checkpoint's ``views``: ``fast`` one, ``reference`` its
    clips x crops), ``error`` (empty, or why the video could not be read: then ``views`` is empty) and ``windows``
    (rows this video gave). ``per="window"`` gives one row per ``window_s`` window every ``stride_s`` seconds, placed
    as :func:`slowfast_zoo.predict_windows` places them (inside ``[start, end)`` when given).
    """

    def __init__(
        self,
        model: str | PretrainedCfg | Any,
        *,
        views: Literal["fast", "reference"] = "fast",
        per: Literal["video", "window"] = "video",
        window_s: float = 2.0,
        stride_s: float = 1.0,
    ) -> None:
        if per not in ("video", "window"):
            raise ValueError(f"per must be 'video' or 'window', got {per!r}")
        if views not in ("fast", "reference"):
            raise ValueError(f"views must be 'fast' or 'reference', got {views!r}")
        if per == "window" and (window_s <= 0 or stride_s <= 0):
            raise ValueError("window_s and stride_s must be positive")
        self.cfg = _spec_cfg(model)
        self.views, self.per, self.window_s, self.stride_s = views, per, window_s, stride_s

    def task_memory(self) -> int:
        """Bytes to reserve for one decode task (Ray's ``memory``): twice the float32 views of a row, plus 256 MiB
        for the decoder."""
        cfg = self.cfg
        views = 1 if self.views == "fast" else cfg.test_clips * len(cfg.test_crops)
        return 2 * views * 3 * cfg.num_frames * cfg.test_crop_size**2 * 4 + (256 << 20)

    def spans(self, duration: float, start: float | None, end: float | None) -> list[tuple[float, float]]:
        """``(start, end)`` seconds of the rows one video gives."""
        lo = 0.0 if start is None else max(start, 0.0)
        hi = duration if end is None else min(end, duration)
        if hi <= lo:
            raise ValueError(f"empty span [{lo:g}, {hi:g}) s of a {duration:g} s video")
        if self.per == "video":
            return [(lo, hi)]
        return [(lo + s, lo + e) for s, e in window_bounds(hi - lo, self.window_s, self.stride_s)]

    def decode(
        self, path: str, start: float | None = None, end: float | None = None, fps: float | None = None
    ) -> list[dict[str, Any]]:
        """The rows of one video file, or of a folder of frame images at ``fps`` (raises on an unreadable one)."""
        rows = []
        cpu = torch.device("cpu")
        with FrameFolderVideo(path, fps or 30.0) if os.path.isdir(path) else VideoReader(path) as reader:
            whole = start is None and end is None and self.per == "video"
            for lo, hi in self.spans(reader.info.duration, start, end):
                plan = plan_views(self.cfg, reader.info, self.views, window=None if whole else (lo, hi))
                with torch.inference_mode():
                    crops = list(iter_view_inputs(reader, self.cfg, plan, cpu))
                rows.append({"start": lo, "end": hi, "views": torch.stack(crops).numpy()})
        return rows

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        n = len(batch["path"])
        for i in range(n):
            path = str(batch["path"][i])
            start, end = _given(batch, "start", i), _given(batch, "end", i)
            try:
                rows = self.decode(path, start, end, _given(batch, "fps", i))
                error = ""
            except Exception as e:  # one bad file (any decoder error) must not stop a dataset-wide job
                rows = [{"start": start or 0.0, "end": end or 0.0, "views": np.zeros((0,), np.float32)}]
                error = e.reason if isinstance(e, VideoError) else f"{type(e).__name__}: {e}"
            for row in rows:
                row.update(path=path, error=error, windows=len(rows))
                for k, v in batch.items():
                    if k not in DECODED:
                        row[k] = v[i]
                for k, v in row.items():
                    out.setdefault(k, []).append(v)
        return out


class _ModelStage:
    """Builds the model once per actor (``create``, verified weights) and runs each row's views through a
    :class:`~slowfast_zoo.tasks.runner.ViewRunner`."""

    def __init__(
        self,
        model: str | Any,
        *,
        checkpoint: str | None = None,
        device: str | None = None,
        batch_size: int | None = None,
        mix_rows: bool = False,
        precision: Precision = "fp32",
        fast: bool = False,
    ) -> None:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(model, checkpoint=checkpoint, device=device, precision=precision, fast=fast).eval()
        self.cfg = self.model.pretrained_cfg
        param_device = next(self.model.parameters()).device
        self.runner = ViewRunner(
            self.model,
            self.view_fn(),
            batch_size or tuned_batch(self.model, precision) or self.default_batch(param_device),
            precision=precision,
        )
        self.mix_rows = mix_rows

    def default_batch(self, device: torch.device) -> int:
        """Views per forward pass unless given or measured (:func:`slowfast_zoo.tune`)."""
        raise NotImplementedError

    def view_fn(self) -> Any:
        """What the runner computes per view (on packed model inputs)."""
        raise NotImplementedError

    def outputs(self, views: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Per-view outputs of each row, views of one row (or, ``mix_rows``, of all rows) batched together."""
        groups = [list(views)] if self.mix_rows else [[v] for v in views]
        out: list[torch.Tensor] = []
        with torch.inference_mode():
            for group in groups:
                counts = [len(v) for v in group]
                for row in group:
                    for view in torch.from_numpy(np.asarray(row)):
                        self.runner.add(view)
                out += list(self.runner.take().split(counts)) if sum(counts) else [torch.zeros(0)] * len(group)
        return out

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        errors = [str(e) for e in batch.get("error", [""] * len(batch["views"]))]
        rows = [i for i, e in enumerate(errors) if not e]
        results = dict(zip(rows, self.outputs([batch["views"][i] for i in rows])))
        out = {k: v for k, v in batch.items() if k != "views"}
        out.update(self.combine(results, len(errors)))
        out["num_views"] = np.array([len(results[i]) if i in results else 0 for i in range(len(errors))], np.int64)
        return out

    def combine(self, results: dict[int, torch.Tensor], n: int) -> dict[str, Any]:
        raise NotImplementedError


class EmbedClips(_ModelStage):
    """Model stage: ``views`` -> ``embedding`` float32 ``(D,)``: ``forward_head(forward_features(x),
    pre_logits=True)`` of each view, averaged over the row's views (NaN for a row with an ``error``); both model
    stages add ``num_views`` (views run) and drop ``views``."""

    def default_batch(self, device: torch.device) -> int:
        return 8 if device.type == "cpu" else 32  # features.extract's

    def view_fn(self) -> Any:
        return pooled_features(self.model)

    def combine(self, results: dict[int, torch.Tensor], n: int) -> dict[str, Any]:
        empty = np.full((self.model.num_features,), np.nan, np.float32)
        return {"embedding": np.stack([results[i].mean(dim=0).numpy() if i in results else empty for i in range(n)])}


class ClassifyClips(_ModelStage):
    """Model stage: ``views`` -> ``scores`` float32 ``(C,)`` and ``label`` (top-1), as :func:`slowfast_zoo.predict`
    scores them: the activation at every head position, averaged, then the checkpoint's ensemble over views (mean,
    or max for Charades). Use ``DecodeClips(..., views="reference")`` for the
    published protocol. A row with an ``error`` gets NaN scores and an empty label."""

    def default_batch(self, device: torch.device) -> int:
        # predict's: 6 views on the CPU; on a GPU every view (30: the most any published protocol takes)
        return 6 if device.type == "cpu" else 30

    def view_fn(self) -> Any:
        return class_scores(self.model)

    def combine(self, results: dict[int, torch.Tensor], n: int) -> dict[str, Any]:
        classes = self.model.cfg.num_classes
        names = self.cfg.label_names if self.cfg.label_names and len(self.cfg.label_names) == classes else None
        scores, labels = [], []
        for i in range(n):
            if i not in results:
                scores.append(np.full((classes,), np.nan, np.float32))
                labels.append("")
                continue
            s = ensemble(self.cfg, results[i])
            top = int(s.argmax())
            scores.append(s.numpy())
            labels.append(names[top] if names else f"class_{top}")
        return {"scores": np.stack(scores), "label": np.array(labels)}

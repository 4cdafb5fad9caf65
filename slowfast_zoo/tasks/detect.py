"""AVA action detection on a video: a keyframe-centred clip, person boxes from the user, actions per box."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..video import transforms as T
from ..video.io import VideoReader
from ..video.views import keyframe_times
from .runner import load_model

__all__ = ["BoxPrediction", "detect", "keyframe_times", "parse_boxes"]


@dataclass
class BoxPrediction:
    """The actions scored for one person box at one keyframe."""

    keyframe: float
    #: ``[x1, y1, x2, y2]`` in pixels of the video frame (as given)
    box: list[float]
    #: ``(label, score)`` pairs, highest first (scores are sigmoid probabilities, one per action)
    actions: list[tuple[str, float]]
    scores: torch.Tensor = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (one line of ``slowfast-zoo detect --json``)."""
        return {
            "keyframe": round(self.keyframe, 3),
            "box": [round(v, 2) for v in self.box],
            "actions": [{"label": label, "score": round(score, 6)} for label, score in self.actions],
        }


def parse_boxes(spec: Any, default_keyframe: float | None = None) -> dict[float, list[list[float]]]:
    """Boxes per keyframe from ``{"<seconds>": [[x1, y1, x2, y2], ...]}`` or a plain list (one keyframe)."""
    if isinstance(spec, Mapping):
        items = [(float(k), v) for k, v in spec.items()]
    elif isinstance(spec, Sequence) and not isinstance(spec, str):
        if default_keyframe is None:
            raise ValueError("a plain list of boxes needs the keyframe time (seconds)")
        items = [(default_keyframe, spec)]
    else:
        raise ValueError('boxes must be {"<keyframe seconds>": [[x1, y1, x2, y2], ...]} or a list of boxes')
    out: dict[float, list[list[float]]] = {}
    for t, boxes in items:
        try:
            rows = [list(map(float, b)) for b in boxes]
        except (TypeError, ValueError):
            rows = []
        if not rows or any(len(b) != 4 for b in rows):
            raise ValueError(f"keyframe {t:g} s: expected a non-empty list of [x1, y1, x2, y2] boxes, got {boxes!r}")
        out[t] = rows
    return out


# long: the public entry point (15 lines of docstring); boxes given or detected, then one loop over keyframes
@torch.inference_mode()
def detect(
    video: str | os.PathLike[str],
    model: Any,
    boxes: Mapping[float, Sequence[Sequence[float]]] | Sequence[Sequence[float]] | None = None,
    *,
    keyframe: float | None = None,
    keyframes: Sequence[float] | None = None,
    person_detector: Any = None,
    normalized: bool = False,
    top_k: int = 5,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
) -> list[BoxPrediction]:
    """Score the actions of given person boxes at keyframes of a video with an AVA detector.

    Args:
        video: a video file (PyAV).
        model: a detector name (e.g. ``slowfast_r50_8x8_det``, built with its weights) or a model from ``create``.
        boxes: ``{keyframe_seconds: [[x1, y1, x2, y2], ...]}``, or one list of boxes for ``keyframe``. Boxes are
            in pixels of the video frame as displayed, or in [0, 1] with ``normalized=True`` (AVA's csv form).
            ``None``: persons found by torchvision's Faster R-CNN on each of ``keyframes`` (default: every whole
            second), kept above the checkpoint's ``person_score_threshold``
            (:func:`slowfast_zoo.tasks.persons.person_boxes`; ``person_detector`` replaces the detector).
        top_k: actions per box to return.

    The clip is centred on each keyframe, resized to the checkpoint's short side (full frame, no crop) with the
    boxes scaled alike, normalized and packed, as the reference evaluates AVA.
    """
    model = load_model(model, checkpoint=checkpoint, device=device, task="detect")
    cfg = model.pretrained_cfg
    if boxes is None:
        from .persons import person_boxes

        if cfg.person_score_threshold is None:
            raise ValueError(f"{cfg.name} names no person_score_threshold: pass boxes")
        found = person_boxes(video, cfg.person_score_threshold, keyframes=keyframes, detector=person_detector)
        if not found:
            return []
        boxes, normalized = found, False
    per_keyframe = parse_boxes(boxes, keyframe)
    labels = cfg.label_names or tuple(str(i) for i in range(model.num_classes))
    dev = next(model.parameters()).device
    transform = T.create_transforms(cfg, "eval")
    was_training = model.training
    model.eval()
    results: list[BoxPrediction] = []
    try:
        with VideoReader(video) as reader:
            height, width = reader.info.height, reader.info.width
            new_h, new_w = T.short_side_size(height, width, cfg.test_short_side)
            for t, rows in sorted(per_keyframe.items()):
                times = keyframe_times(t, cfg.num_frames, cfg.sampling_rate, cfg.target_fps)
                frames = reader.frames_at(times)  # (T, H, W, 3) uint8
                clip = transform.crops(frames.to(dev), ["full"])[0].unsqueeze(0)  # boxes need the whole frame
                given = torch.tensor(rows, dtype=torch.float32)
                scale = torch.tensor([width, height, width, height]) if normalized else torch.ones(4)
                pixels = given * scale
                resized = pixels * torch.tensor([new_w / width, new_h / height] * 2)
                scores = model(T.pack_pathways(clip, cfg.alpha), [resized.to(dev)]).sigmoid().cpu()
                for box, s in zip(pixels.tolist(), scores):
                    top = s.topk(min(top_k, s.numel()))
                    actions = [(labels[i], float(v)) for v, i in zip(top.values.tolist(), top.indices.tolist())]
                    results.append(BoxPrediction(t, box, actions, s))
    finally:
        model.train(was_training)
    return results

"""Person boxes for AVA detectors from the raw video: torchvision's Faster R-CNN on each keyframe.

:func:`person_boxes` runs ``fasterrcnn_resnet50_fpn_v2`` (COCO weights, torchvision's own download and cache under
``torch.hub.get_dir()/checkpoints``) on the frame at each keyframe and keeps the COCO ``person`` detections scoring at
least the checkpoint's ``person_score_threshold`` (0.8 for SlowFast, 0.9 for Slow, as the authors' AVA configs
say), in pixels of the displayed frame: the form :func:`slowfast_zoo.tasks.detect.detect` takes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from ..video.io import VideoReader

__all__ = ["PERSON", "default_keyframes", "person_boxes", "person_detector"]

#: COCO category index of ``person`` in torchvision's detection models
PERSON = 1


def person_detector(device: str | torch.device | None = None) -> torch.nn.Module:
    """torchvision's ``fasterrcnn_resnet50_fpn_v2`` with its COCO weights, in eval mode.

    The weights come through torchvision (``torch.hub``'s cache); offline, the error names the file to place.
    """
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_V2_Weights, fasterrcnn_resnet50_fpn_v2

    weights = FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1
    try:
        model = fasterrcnn_resnet50_fpn_v2(weights=weights)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; a partial download a RuntimeError
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
        raise RuntimeError(
            f"the person detector's weights could not be loaded ({e}); place {weights.url} at {path} "
            "(or pass boxes yourself)"
        ) from e
    return model.eval().to(device or "cpu")


def default_keyframes(duration: float) -> list[float]:
    """Every whole second of the video (AVA labels one keyframe per second)."""
    return [float(t) for t in range(int(duration) + 1) if t <= duration]


@torch.inference_mode()
def person_boxes(
    video: str | os.PathLike[str],
    threshold: float,
    *,
    keyframes: Sequence[float] | None = None,
    detector: Any = None,
) -> dict[float, list[list[float]]]:
    """``{keyframe: [[x1, y1, x2, y2], ...]}``: persons scoring ``>= threshold`` on the frame at each keyframe.

    Keyframes without a person are left out. ``detector`` is any torchvision-style detection model (a list of
    ``(3, H, W)`` float images in [0, 1] in; ``boxes``/``labels``/``scores`` per image out); default
    :func:`person_detector`.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"person score threshold must be in [0, 1], got {threshold}")
    detector = detector if detector is not None else person_detector()
    dev = next(detector.parameters()).device
    out: dict[float, list[list[float]]] = {}
    with VideoReader(video) as reader:
        times = list(keyframes) if keyframes is not None else default_keyframes(reader.info.duration)
        for t in times:
            frame = reader.frames_at([t])[0]
            image = frame.permute(2, 0, 1).to(dev, torch.float32) / 255
            (found,) = detector([image])
            keep = (found["labels"] == PERSON) & (found["scores"] >= threshold)
            boxes = found["boxes"][keep].float().cpu().tolist()
            if boxes:
                out[float(t)] = boxes
    return out

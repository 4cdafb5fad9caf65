"""Predictions drawn on the video: labels and a score timeline per window, person boxes with their actions.

``render_predictions(video, windows, "out.mp4")`` writes the input video, every frame at its own timestamp, with the
top labels of the window it belongs to (the newest window started at or before it) and a strip along the bottom:
one bar per window, as high as its top score, and a cursor at the frame's time. ``render_detections`` draws each
keyframe's person boxes (torchvision's ``draw_bounding_boxes``) with their top actions, held until the next keyframe.

Frames are decoded with :class:`~slowfast_zoo.video.io.VideoReader` (display rotation applied) and encoded with PyAV:
``.mp4`` as H.264 (yuv420p, plays in browsers; odd sizes yuv444p), ``.mkv`` as lossless FFV1. The file is written
atomically: a temporary file in the output folder renamed over ``out`` (a symlink planted at ``out`` is replaced,
never followed).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..video.io import VideoReader, require_av
from ..weights.cache import atomic_writer
from .detect import BoxPrediction
from .predict import VideoPrediction

__all__ = ["draw_boxes", "draw_labels", "render_detections", "render_predictions"]

#: frames decoded and encoded per step
CHUNK = 32


def _color(label: str) -> tuple[int, int, int]:
    """A stable, bright colour per label."""
    h = hashlib.sha256(label.encode()).digest()
    return (64 + h[0] % 192, 64 + h[1] % 192, 64 + h[2] % 192)


def _font(height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(10, height // 24))


def draw_labels(
    frame: torch.Tensor, pred: VideoPrediction | None, windows: Sequence[VideoPrediction], t: float, duration: float
) -> torch.Tensor:
    """``frame`` (uint8 ``(H, W, 3)``) with ``pred``'s labels and scores top-left and the windows' score timeline."""
    img = Image.fromarray(frame.numpy())
    draw = ImageDraw.Draw(img)
    h, w = frame.shape[:2]
    font = _font(h)
    if pred is not None:
        lines = [f"{p.label}  {p.score:.2f}" for p in pred.top]
        y: float = 2
        for line in lines:
            box = draw.textbbox((4, y), line, font=font)
            draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
            draw.text((4, y), line, fill=_color(line.split("  ")[0]), font=font)
            y = box[3] + 3
    strip = max(6, h // 12)
    top = h - strip
    draw.rectangle((0, top, w, h), fill=(0, 0, 0))
    span = max(duration, 1e-9)
    for i, win in enumerate(windows):
        x0 = round(w * (win.start or 0.0) / span)
        nxt = windows[i + 1].start if i + 1 < len(windows) else win.end
        x1 = max(x0 + 1, round(w * float(nxt or span) / span))
        best = win.top[0]
        draw.rectangle((x0, h - 1 - round((strip - 1) * best.score), x1 - 1, h - 1), fill=_color(best.label))
    x = min(w - 1, round(w * t / span))
    draw.line((x, top, x, h - 1), fill=(255, 255, 255))
    return torch.from_numpy(np.asarray(img).copy())


def draw_boxes(frame: torch.Tensor, boxes: Sequence[BoxPrediction], top_k: int = 2) -> torch.Tensor:
    """``frame`` (uint8 ``(H, W, 3)``) with each person box and its ``top_k`` actions."""
    from torchvision.utils import draw_bounding_boxes

    if not boxes:
        return frame
    labels = [", ".join(f"{a} {s:.2f}" for a, s in b.actions[:top_k]) for b in boxes]
    colors = [_color(b.actions[0][0]) if b.actions else (255, 255, 255) for b in boxes]
    drawn = draw_bounding_boxes(
        frame.permute(2, 0, 1),
        torch.tensor([b.box for b in boxes], dtype=torch.float32),
        labels=labels,
        colors=colors,
        width=max(1, frame.shape[0] // 160),
    )
    return drawn.permute(1, 2, 0).contiguous()


def render_predictions(
    video: str | os.PathLike[str], windows: Sequence[VideoPrediction], out: str | os.PathLike[str]
) -> Path:
    """Write ``video`` with each window's top labels and a score timeline drawn on it (see the module doc)."""
    wins = sorted(windows, key=lambda p: p.start or 0.0)
    starts = [p.start or 0.0 for p in wins]

    def draw(frame: torch.Tensor, t: float, duration: float) -> torch.Tensor:
        i = int(np.searchsorted(starts, t + 1e-9, side="right")) - 1
        return draw_labels(frame, wins[i] if i >= 0 else None, wins, t, duration)

    return _render(video, out, draw)


def render_detections(
    video: str | os.PathLike[str], boxes: Sequence[BoxPrediction], out: str | os.PathLike[str], top_k: int = 2
) -> Path:
    """Write ``video`` with each keyframe's boxes and top actions, held until the next keyframe."""
    keyframes = sorted({b.keyframe for b in boxes})
    by_key = {k: [b for b in boxes if b.keyframe == k] for k in keyframes}

    def draw(frame: torch.Tensor, t: float, duration: float) -> torch.Tensor:
        i = int(np.searchsorted(keyframes, t + 1e-9, side="right")) - 1
        return draw_boxes(frame, by_key[keyframes[i]], top_k) if i >= 0 else frame

    return _render(video, out, draw)


def _render(video: str | os.PathLike[str], out: str | os.PathLike[str], draw: Any) -> Path:
    av = require_av()
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".mp4", ".mkv"):
        raise ValueError(f"{out}: render to a .mp4 (H.264) or .mkv (lossless FFV1) file")
    with VideoReader(video) as reader:
        table = reader.frame_table()
        info = reader.info
        first = table.pts[0]
        duration = float((table.pts[-1] - first) * table.time_base) + 1 / info.fps
        with atomic_writer(out) as f, av.open(f, mode="w", format="mp4" if suffix == ".mp4" else "matroska") as dst:
            stream = dst.add_stream(
                "libx264" if suffix == ".mp4" else "ffv1", rate=Fraction(info.fps).limit_denominator(100000)
            )
            stream.width, stream.height = info.width, info.height
            if suffix == ".mp4":
                even = info.width % 2 == 0 and info.height % 2 == 0
                stream.pix_fmt = "yuv420p" if even else "yuv444p"
                stream.codec_context.options = {"crf": "18", "preset": "veryfast"}
            else:
                stream.pix_fmt = "bgr0"
            stream.codec_context.time_base = table.time_base
            for lo in range(0, len(table.pts), CHUNK):
                idx = list(range(lo, min(lo + CHUNK, len(table.pts))))
                for i, frame in zip(idx, reader.frames_at_indices(idx)):
                    t = float((table.pts[i] - first) * table.time_base)
                    vf = av.VideoFrame.from_ndarray(draw(frame, t, duration).numpy(), format="rgb24")
                    vf.pts, vf.time_base = table.pts[i] - first, table.time_base
                    for packet in stream.encode(vf):
                        dst.mux(packet)
            for packet in stream.encode():
                dst.mux(packet)
    return out

"""Video transforms as the reference applies them, built on ``torchvision.transforms.v2.functional`` and einops.

Layout. Spatial functions take ``(..., C, H, W)`` tensors, so a clip is ``(T, C, H, W)`` and a batch of clips
``(N, T, C, H, W)`` (torchvision's video layout); they run on any device. The model wants ``(N, C, T, H, W)`` per
pathway: :func:`to_model_layout` rearranges, :func:`pack_pathways` splits ``[slow, fast]``.
Decoded videos (:mod:`slowfast_zoo.video.io`) are uint8 ``(T, H, W, 3)``; :func:`create_transforms` takes them
as they are. Which frames a protocol takes is :mod:`slowfast_zoo.video.views`' business (its sampling functions are
re-exported here).

Reference formulas reproduced (SF:slowfast/datasets/transform.py, utils.py; docs/sources.md):
pixel values ``x / 255`` then ``(x - mean) / std``
*before* resizing (the reference's order); short side resized to ``S`` with the long side ``floor(long / short * S)``
by bilinear ``interpolate(align_corners=False)`` (no antialias); crops at ``ceil((L - size) / 2)`` (centre) or the
ends of the long side, or the full frame (``"full"``, AVA); slow frames ``linspace(0, T - 1, T // alpha).long()``.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from einops import rearrange
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .views import charades_clip_positions, clip_positions, segment_indices, uniform_clip_start

__all__ = [
    "CROP_POSITIONS",
    "PackPathway",
    "VideoTransform",
    "charades_clip_positions",
    "clip_positions",
    "create_transforms",
    "crop",
    "crop_offsets",
    "horizontal_flip",
    "normalize",
    "pack_pathways",
    "random_crop",
    "segment_indices",
    "short_side_resize",
    "short_side_size",
    "to_float",
    "to_model_layout",
    "uniform_clip_start",
    "uniform_temporal_subsample",
]

#: crop positions along the long side of a frame; ``left``/``top`` and ``right``/``bottom`` are the same position;
#: ``full`` keeps the whole (resized) frame
CROP_POSITIONS = {"left": 0, "top": 0, "center": 1, "centre": 1, "right": 2, "bottom": 2, "full": -1}

Layout = Literal["THWC", "TCHW", "CTHW"]


# ---- temporal sampling ------------------------------------------------------------------------------------------
def uniform_temporal_subsample(x: torch.Tensor, num_samples: int, dim: int = -4) -> torch.Tensor:
    """``num_samples`` frames spread evenly over ``dim`` by ``linspace(0, T - 1, n).long()`` (identity if equal)."""
    t = x.shape[dim]
    if t == num_samples:
        return x
    idx = torch.linspace(0, t - 1, num_samples).clamp(0, t - 1).long().to(x.device)
    return x.index_select(dim, idx)


# ---- pixel values -----------------------------------------------------------------------------------------------
def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float32 in [0, 1] (``x.float() / 255``); floating tensors are returned unchanged."""
    if x.is_floating_point():
        return x
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 or floating pixels, got {x.dtype}")
    return x.float() / 255.0


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel of a float ``(..., C, H, W)`` tensor."""
    return TF.normalize(x, list(mean), list(std))


# ---- spatial ------------------------------------------------------------------------------------------------------
def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(new_h, new_w) with the short side ``size`` and the long side ``floor(long / short * size)``."""
    if width < height:
        return math.floor(height / width * size), size
    return size, math.floor(width / height * size)


_INTERPOLATION = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


def short_side_resize(x: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Resize ``(..., C, H, W)`` so the short side is ``size`` (bilinear, ``align_corners=False``, no antialias)."""
    h, w = x.shape[-2:]
    new_h, new_w = short_side_size(h, w, size)
    if (new_h, new_w) == (h, w):
        return x
    mode = _INTERPOLATION[interpolation]
    return TF.resize(x, [new_h, new_w], interpolation=mode, antialias=False)


def crop_offsets(height: int, width: int, size: int, position: str | int = "center") -> tuple[int, int]:
    """(top, left) of a ``size`` crop: centre ``ceil((L - size) / 2)``, or either end of the long side."""
    idx = CROP_POSITIONS[position] if isinstance(position, str) else int(position)
    if idx not in (0, 1, 2):
        raise ValueError(f"crop position must be one of {sorted(CROP_POSITIONS)} or 0, 1, 2; got {position!r}")
    if size > height or size > width:
        raise ValueError(f"crop {size} is larger than the frame {height}x{width}")
    top = math.ceil((height - size) / 2)
    left = math.ceil((width - size) / 2)
    if height > width:
        top = {0: 0, 1: top, 2: height - size}[idx]
    else:
        left = {0: 0, 1: left, 2: width - size}[idx]
    return top, left


def crop(x: torch.Tensor, size: int, position: str | int = "center") -> torch.Tensor:
    """A ``size`` x ``size`` crop of ``(..., C, H, W)`` at ``left``/``center``/``right`` along the long side.

    ``full`` returns the frame uncropped (AVA's protocol: the whole frame, short side resized).
    """
    if position == "full":
        return x
    top, left = crop_offsets(x.shape[-2], x.shape[-1], size, position)
    return TF.crop(x, top, left, size, size)


def random_crop(x: torch.Tensor, size: int, generator: random.Random | None = None) -> torch.Tensor:
    """A ``size`` x ``size`` crop at a uniformly random offset (the reference's training crop)."""
    rng = generator or random
    h, w = x.shape[-2:]
    if size > h or size > w:
        raise ValueError(f"crop {size} is larger than the frame {h}x{w}")
    top = rng.randint(0, h - size)
    left = rng.randint(0, w - size)
    return TF.crop(x, top, left, size, size)


def horizontal_flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror ``(..., C, H, W)`` left-right."""
    return TF.horizontal_flip(x)


# ---- layout and pathways ----------------------------------------------------------------------------------------
def to_model_layout(x: torch.Tensor) -> torch.Tensor:
    """``(..., T, C, H, W)`` -> ``(..., C, T, H, W)``."""
    return rearrange(x, "... t c h w -> ... c t h w")


def pack_pathways(clip: torch.Tensor, alpha: int | None, time_dim: int = -3) -> list[torch.Tensor]:
    """``[slow, fast]`` for a SlowFast network: slow frames ``linspace(0, T - 1, T // alpha).long()``, fast = all.

    ``clip`` is ``(C, T, H, W)`` or ``(N, C, T, H, W)`` (time at ``time_dim``). ``alpha=None`` (single pathway)
    returns ``[clip]``.
    """
    if alpha is None:
        return [clip]
    t = clip.shape[time_dim]
    if t % alpha:
        raise ValueError(f"SlowFast needs the number of frames ({t}) to be a multiple of alpha={alpha}")
    return [uniform_temporal_subsample(clip, t // alpha, dim=time_dim), clip]


class PackPathway(nn.Module):
    """Module form of :func:`pack_pathways` (as in the PyTorchVideo tutorial)."""

    def __init__(self, alpha: int | None, time_dim: int = -3) -> None:
        super().__init__()
        self.alpha = alpha
        self.time_dim = time_dim

    def forward(self, clip: torch.Tensor) -> list[torch.Tensor]:
        return pack_pathways(clip, self.alpha, self.time_dim)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


# ---- the whole pipeline of a checkpoint -------------------------------------------------------------------------
_CHANNEL_OFFSETS = torch.tensor([0, 256, 512], dtype=torch.int32)


@functools.lru_cache(maxsize=16)
def _pixel_table(
    mean: tuple[float, ...], std: tuple[float, ...], normalized: bool, device: torch.device
) -> torch.Tensor:
    """``(3 * 256,)``: what :func:`to_float` then :func:`normalize` (if ``normalized``) give each uint8 value."""
    values = to_float(torch.arange(256, dtype=torch.uint8)).expand(3, 1, 256).contiguous()
    return (normalize(values, mean, std) if normalized else values).reshape(-1).to(device)


_TO_TCHW = {
    "THWC": "... t h w c -> ... t c h w",
    "TCHW": "... t c h w -> ... t c h w",
    "CTHW": "... c t h w -> ... t c h w",
}


@dataclass(frozen=True)
class VideoTransform:
    """A checkpoint's preprocessing: video in, model input out (built by :func:`create_transforms`).

    Input: one clip ``(T, ...)`` or a batch ``(N, T, ...)`` in ``input_layout`` (default ``THWC``, what
    :mod:`slowfast_zoo.video.io` decodes), uint8 (scaled by 1/255) or float already in [0, 1]. A clip with a different
    number of frames than the model's is subsampled evenly first. Output: ``[slow, fast]`` (two-pathway) or one
    tensor, each ``(N, 3, T, H, W)`` (no ``N`` if none came in).
    """

    mode: Literal["eval", "train"]
    num_frames: int
    alpha: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    short_side: tuple[int, int]
    crop_size: int
    #: ``left``/``center``/``right`` along the long side, or ``full`` (no crop)
    crop_position: str = "center"
    flip: bool = False
    interpolation: str = "bilinear"
    input_layout: Layout = "THWC"
    generator: random.Random | None = None
    #: normalize before resizing (PySlowFast's Kinetics order) or after (its AVA order)
    normalize_before_resize: bool = True

    def frames(self, video: torch.Tensor) -> torch.Tensor:
        """Subsampled frames ``(..., T, C, H, W)`` in [0, 1], normalized if that comes before resizing."""
        x = rearrange(video, _TO_TCHW[self.input_layout])
        x = to_float(uniform_temporal_subsample(x, self.num_frames, dim=-4))
        return normalize(x, self.mean, self.std) if self.normalize_before_resize else x

    def _resized(self, x: torch.Tensor, size: int) -> torch.Tensor:
        x = short_side_resize(x, size, self.interpolation)
        return x if self.normalize_before_resize else normalize(x, self.mean, self.std)

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        """Resize and crop ``(T, C, H, W)`` frames (eval: fixed; train: jittered, random crop, random flip)."""
        if self.mode == "eval":
            return crop(self._resized(x, self.short_side[0]), self.crop_size, self.crop_position)
        rng = self.generator or random
        x = self._resized(x, round(rng.uniform(*self.short_side)))
        x = random_crop(x, self.crop_size, generator=self.generator)  # the same rng: its default is random
        if self.flip and rng.random() < 0.5:
            x = horizontal_flip(x)
        return x

    def crops(self, video: torch.Tensor, positions: Sequence[str]) -> list[torch.Tensor]:
        """Test views of one clip: one model-layout ``(3, T, S, S)`` tensor per crop position (eval; not packed).

        The clip is scaled, normalized and resized once; each position is then cropped from it.
        """
        if self.mode != "eval":
            raise ValueError("crops() is the test-time pipeline: build the transform with mode='eval'")
        return self.crops_of_frames(self._resized(self.frames(video), self.short_side[0]), positions)

    def prepare_frame(self, frame: torch.Tensor) -> torch.Tensor:
        """One decoded uint8 ``(H, W, 3)`` frame scaled, normalized and resized as :meth:`crops` does: ``(3, h, w)``.

        Equal bit for bit to :meth:`crops`' frames (``tests/video/test_transforms.py``): the per-pixel steps are one
        lookup in a 256-entry table per channel, computed with the reference's own float32 operations. A decoder
        calls this per frame, so a large frame is shrunk before a clip's frames are stacked.
        """
        if self.mode != "eval" or self.input_layout != "THWC":
            raise ValueError("prepare_frame() takes THWC frames in an eval transform")
        if frame.dtype != torch.uint8:
            raise TypeError(f"expected a uint8 (H, W, 3) frame, got {frame.dtype}")
        table = _pixel_table(self.mean, self.std, self.normalize_before_resize, frame.device)
        index = (frame.int() + _CHANNEL_OFFSETS.to(frame.device)).view(-1)
        x = table.index_select(0, index).view(frame.shape).permute(2, 0, 1)
        return self._resized(x, self.short_side[0])

    def crops_of_frames(self, frames: torch.Tensor, positions: Sequence[str]) -> list[torch.Tensor]:
        """Test views of frames :meth:`prepare_frame` made, stacked ``(T, 3, h, w)``: a ``(3, T, S, S)`` per crop."""
        x = uniform_temporal_subsample(frames, self.num_frames, dim=-4)
        return [to_model_layout(crop(x, self.crop_size, p)) for p in positions]

    def __call__(self, video: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        x = self.frames(video)
        if self.mode == "train" and x.dim() > 4:  # random parameters per clip
            lead = x.shape[:-4]
            out = torch.stack([self.spatial(c) for c in x.reshape(-1, *x.shape[-4:])])
            x = out.reshape(*lead, *out.shape[1:])
        else:
            x = self.spatial(x)
        packed = pack_pathways(to_model_layout(x), self.alpha)
        return packed if self.alpha is not None else packed[0]


def create_transforms(
    cfg: Any,
    mode: Literal["eval", "train"] = "eval",
    *,
    crop_position: str | None = None,
    input_layout: Layout = "THWC",
    generator: random.Random | None = None,
) -> VideoTransform:
    """The preprocessing a checkpoint was evaluated (``eval``) or trained (``train``) with, from its config.

    ``cfg`` is a ``PretrainedCfg`` (or anything carrying one as ``pretrained_cfg``, e.g. a model from
    ``slowfast_zoo.create``); model names are resolved by ``slowfast_zoo.create_transforms``. Everything (frames,
    alpha, mean/std, resize and crop sizes, interpolation, crop or full frame, flip) comes from the config.
    ``eval``: short side ``test_short_side``, a ``test_crop_size`` crop at ``crop_position`` (default: ``full`` when
    the protocol keeps the full frame, as AVA's does, else ``center``). ``train``: short side jittered in
    ``train_short_side``, a random ``train_crop_size`` crop, a random horizontal flip if ``train_flip``.
    """
    if isinstance(cfg, str):
        raise TypeError(f"expected a PretrainedCfg, got the name {cfg!r}: use slowfast_zoo.create_transforms(name)")
    cfg = getattr(cfg, "pretrained_cfg", None) or cfg
    if not hasattr(cfg, "test_short_side"):
        raise TypeError(f"expected a PretrainedCfg or a model from slowfast_zoo.create, got {type(cfg).__name__}")
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    if input_layout not in _TO_TCHW:
        raise ValueError(f"input_layout must be one of {sorted(_TO_TCHW)}, got {input_layout!r}")
    if mode == "eval":
        short = (cfg.test_short_side, cfg.test_short_side)
        size = cfg.test_crop_size
        position = crop_position or ("full" if "full" in cfg.test_crops else "center")
    else:
        short = tuple(cfg.train_short_side)
        size = cfg.train_crop_size
        position = crop_position or "center"
    if position not in CROP_POSITIONS:
        raise ValueError(f"crop_position must be one of {sorted(CROP_POSITIONS)}, got {position!r}")
    return VideoTransform(
        mode=mode,
        num_frames=cfg.num_frames,
        alpha=cfg.alpha,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        short_side=short,
        crop_size=size,
        crop_position=position,
        flip=mode == "train" and cfg.train_flip,
        interpolation=cfg.interpolation,
        input_layout=input_layout,
        generator=generator,
        normalize_before_resize=cfg.normalize_before_resize,
    )

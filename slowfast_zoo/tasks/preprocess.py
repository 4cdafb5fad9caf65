"""Preprocessing by model name: names resolved through the registry, transforms built by slowfast_zoo.video."""

from __future__ import annotations

import random
from typing import Any, Literal

from ..registry.pretrained import PretrainedCfg
from ..registry.registry import get_pretrained_cfg
from ..video.transforms import Layout, VideoTransform
from ..video.transforms import create_transforms as _video_transforms

__all__ = ["create_transforms", "pretrained_cfg_of"]


def pretrained_cfg_of(model_or_name: Any) -> PretrainedCfg:
    """The pretrained config of a model name, a model from ``slowfast_zoo.create``, or a ``PretrainedCfg``."""
    if isinstance(model_or_name, str):
        return get_pretrained_cfg(model_or_name)
    if isinstance(model_or_name, PretrainedCfg):
        return model_or_name
    cfg = getattr(model_or_name, "pretrained_cfg", None)
    if not isinstance(cfg, PretrainedCfg):
        raise TypeError("expected a model name, a model from slowfast_zoo.create or a PretrainedCfg")
    return cfg


def create_transforms(
    model_or_name: Any,
    mode: Literal["eval", "train"] = "eval",
    *,
    crop_position: str | None = None,
    input_layout: Layout = "THWC",
    generator: random.Random | None = None,
) -> VideoTransform:
    """The preprocessing a checkpoint was evaluated (``eval``) or trained (``train``) with.

    Accepts a model name, a model from ``slowfast_zoo.create`` or a ``PretrainedCfg``; see
    :func:`slowfast_zoo.video.transforms.create_transforms` for what each mode does.
    """
    return _video_transforms(
        pretrained_cfg_of(model_or_name),
        mode,
        crop_position=crop_position,
        input_layout=input_layout,
        generator=generator,
    )

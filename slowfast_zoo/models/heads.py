"""Heads of the ResNet-3D family: the clip classifier (pooled per pathway) and the AVA RoI detector head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torchvision.ops import roi_align

__all__ = ["ClassifierHead", "RoIHead", "as_rois"]

Triple = tuple[int, int, int]


class ClassifierHead(nn.Module):
    """Per-pathway average (or max) pool -> concat -> dropout -> linear.

    ``pool_type`` is timm's ``global_pool``: ``"avg"``, ``"max"``, or ``""`` for no pooling, which returns the
    per-pathway maps unchanged and needs ``num_classes=0``.

    ``pool_size=None`` pools adaptively (any input size). A per-pathway ``pool_size`` reproduces the reference's
    fixed-kernel evaluation: the kernel (set for the training crop) slides with stride 1 over larger inputs, giving
    a grid of positions whose logits :meth:`position_logits` returns; :meth:`forward` gives their mean.
    """

    def __init__(
        self,
        in_chs: tuple[int, ...],
        num_classes: int,
        dropout: float = 0.5,
        pool_size: tuple[Triple, ...] | None = None,
        pool_type: str = "avg",
    ) -> None:
        super().__init__()
        self.in_chs = tuple(in_chs)
        self.num_features = sum(in_chs)
        self.pool_size = pool_size
        self.set_pool(pool_type)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @property
    def num_classes(self) -> int:
        return self.proj.out_features if isinstance(self.proj, nn.Linear) else 0

    def set_pool(self, pool_type: str) -> None:
        """Pool with ``"avg"``, ``"max"`` or not at all (``""``); the kernel is adaptive or the fixed ``pool_size``."""
        if pool_type not in ("avg", "max", ""):
            raise ValueError(f"global_pool must be 'avg', 'max' or '' (no pooling), got {pool_type!r}")
        self.pool_type = pool_type
        fixed, adaptive = (
            (nn.AvgPool3d, nn.AdaptiveAvgPool3d) if pool_type != "max" else (nn.MaxPool3d, nn.AdaptiveMaxPool3d)
        )
        if self.pool_size is None:
            self.pools = nn.ModuleList(adaptive(1) for _ in self.in_chs)
        else:
            self.pools = nn.ModuleList(fixed(k, stride=1) for k in self.pool_size)

    def pooled_map(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Pooled features of all pathways concatenated, (N, C, t, h, w); (t, h, w) = (1, 1, 1) when adaptive."""
        for x, kernel in zip(feats, self.pool_size or ()):  # the fixed kernels of self.pools
            if any(s < k for s, k in zip(x.shape[2:], kernel)):
                raise ValueError(
                    f"fixed-kernel head: feature map {tuple(x.shape[2:])} is smaller than the pool kernel "
                    f"{tuple(kernel)}; use head_pool='adaptive' for inputs smaller than the training crop"
                )
        return torch.cat([pool(x) for x, pool in zip(feats, self.pools)], dim=1)

    def forward(self, feats: list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor | list[torch.Tensor]:
        if not self.pool_type:  # no pooling: the maps themselves (the pathways differ in length: not concatenated)
            return list(feats)
        x = self.pooled_map(feats).mean(dim=(2, 3, 4))
        return x if pre_logits else self.proj(self.drop(x))

    def position_logits(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Logits at every head position, (N, t, h, w, classes), as the reference's fully-convolutional test."""
        if not self.pool_type:
            raise ValueError("position_logits needs a pooling head (global_pool 'avg' or 'max')")
        return self.proj(self.drop(rearrange(self.pooled_map(feats), "n c t h w -> n t h w c")))


def as_rois(boxes: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...], batch: int) -> torch.Tensor:
    """Validate boxes and return them as ``(K, 5)`` rows ``[batch_index, x1, y1, x2, y2]``.

    Accepts one ``(K_i, 4)`` tensor per clip (pixel coordinates of the input frames) or the ``(K, 5)`` form.
    """
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(
                f"boxes as one tensor must be (K, 5) [batch_index, x1, y1, x2, y2]; got {tuple(boxes.shape)}"
            )
        rois = boxes
    elif isinstance(boxes, (list, tuple)):
        if len(boxes) != batch:
            raise ValueError(f"expected one (K, 4) box tensor per clip ({batch} clips); got {len(boxes)}")
        for i, b in enumerate(boxes):
            if not isinstance(b, torch.Tensor) or b.dim() != 2 or b.shape[1] != 4:
                shape = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
                raise ValueError(f"boxes[{i}] must be a (K, 4) tensor [x1, y1, x2, y2]; got {shape}")
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
    else:
        raise TypeError(f"boxes must be a list of (K, 4) tensors or a (K, 5) tensor; got {type(boxes).__name__}")
    if rois.shape[0] == 0:
        raise ValueError("no boxes given: the detector needs at least one person box")
    if rois.is_meta or torch.compiler.is_compiling():  # tracing (FLOP counting, compile, export): no values to check
        return rois
    if not rois.is_floating_point() or not torch.isfinite(rois).all():
        raise ValueError("boxes must be finite floating-point pixel coordinates")
    idx = rois[:, 0]
    if ((idx < 0) | (idx >= batch) | (idx != idx.round())).any():
        raise ValueError(f"box batch indices must be integers in [0, {batch}); got {idx.tolist()}")
    if ((rois[:, 3] < rois[:, 1]) | (rois[:, 4] < rois[:, 2])).any():
        raise ValueError("boxes must be [x1, y1, x2, y2] with x2 >= x1 and y2 >= y1")
    return rois


class RoIHead(nn.Module):
    """AVA detection head: per pathway average over time, RoIAlign 7x7, spatial max, concat, dropout, linear.

    ``aligned=False`` and ``spatial_scale=1/16`` (res5 without stride) are the reference's detector settings.
    """

    def __init__(
        self,
        in_chs: tuple[int, ...],
        num_classes: int,
        dropout: float = 0.5,
        resolution: int = 7,
        spatial_scale: float = 1 / 16,
        aligned: bool = False,
    ) -> None:
        super().__init__()
        self.in_chs = tuple(in_chs)
        self.num_features = sum(in_chs)
        self.resolution = resolution
        self.spatial_scale = spatial_scale
        self.aligned = aligned
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @property
    def num_classes(self) -> int:
        return self.proj.out_features if isinstance(self.proj, nn.Linear) else 0

    def forward(self, feats: list[torch.Tensor], rois: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = []
        for x in feats:
            frame = F.avg_pool3d(x, (x.shape[2], 1, 1)).squeeze(2)
            region = roi_align(frame, rois.to(frame.dtype), self.resolution, self.spatial_scale, 0, self.aligned)
            pooled.append(F.max_pool2d(region, self.resolution, stride=1).flatten(1))
        x = torch.cat(pooled, dim=1)
        return x if pre_logits else self.proj(self.drop(x))

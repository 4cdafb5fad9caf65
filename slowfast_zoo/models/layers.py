"""Building blocks of the ResNet-3D family: conv-BN-ReLU, stem, bottleneck, fast-to-slow fusion, non-local, head.

Only torch and einops are imported here: a block knows its shapes, never files, names or weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torchvision.ops import roi_align

from .amp_guard import GuardedConv3d

__all__ = [
    "Bottleneck",
    "ClassifierHead",
    "ConvBnAct",
    "FuseFastToSlow",
    "NonLocal",
    "Stem",
    "linspace_indices",
]

Triple = tuple[int, int, int]


def linspace_indices(num_frames: int, num_out: int, device: torch.device | None = None) -> torch.Tensor:
    """Frame indices the reference picks for the slow pathway: ``linspace(0, T-1, T_out)`` truncated to int."""
    return torch.linspace(0, num_frames - 1, num_out, device=device).long()


class ConvBnAct(nn.Module):
    """Conv3d (no bias) -> BatchNorm3d -> optional ReLU."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel: Triple,
        stride: Triple = (1, 1, 1),
        padding: Triple = (0, 0, 0),
        dilation: Triple = (1, 1, 1),
        act: bool = True,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        # GuardedConv3d: a plain Conv3d that sidesteps a oneDNN bf16 weight-gradient bug (see amp_guard.py)
        self.conv = GuardedConv3d(in_chs, out_chs, kernel, stride, padding, dilation, bias=False)
        self.bn = nn.BatchNorm3d(out_chs, eps=bn_eps, momentum=bn_momentum)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Stem(ConvBnAct):
    """Conv (kt, 7, 7) stride (1, 2, 2) -> BN -> ReLU -> max pool (1, 3, 3) stride (1, 2, 2)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_t: int, **bn: float) -> None:
        super().__init__(in_chs, out_chs, (kernel_t, 7, 7), (1, 2, 2), (kernel_t // 2, 3, 3), **bn)
        self.pool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(super().forward(x))


class NonLocal(nn.Module):
    """Non-local block (Wang et al. 2018) with the reference's softmax and dot-product instantiations."""

    def __init__(
        self, dim: int, pool: Triple = (1, 2, 2), mode: str = "softmax", bn_eps: float = 1e-5, bn_momentum: float = 0.1
    ) -> None:
        super().__init__()
        if mode not in ("softmax", "dot_product"):
            raise ValueError(f"non-local mode must be 'softmax' or 'dot_product', got {mode!r}")
        inner = dim // 2
        self.mode = mode
        self.inner = inner
        self.theta = nn.Conv3d(dim, inner, 1)
        self.phi = nn.Conv3d(dim, inner, 1)
        self.g = nn.Conv3d(dim, inner, 1)
        self.pool = nn.MaxPool3d(pool, pool) if any(k > 1 for k in pool) else nn.Identity()
        self.out = nn.Conv3d(inner, dim, 1)
        self.bn = nn.BatchNorm3d(dim, eps=bn_eps, momentum=bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, h, w = x.shape[2:]
        theta = rearrange(self.theta(x), "n c t h w -> n c (t h w)")
        pooled = self.pool(x)
        phi = rearrange(self.phi(pooled), "n c t h w -> n c (t h w)")
        g = rearrange(self.g(pooled), "n c t h w -> n c (t h w)")
        affinity = torch.einsum("nci,ncj->nij", theta, phi)
        if self.mode == "softmax":
            affinity = (affinity * self.inner**-0.5).softmax(dim=2)
        else:
            affinity = affinity / affinity.shape[2]
        y = torch.einsum("nij,ncj->nci", affinity, g)
        y = rearrange(y, "n c (t h w) -> n c t h w", t=t, h=h, w=w)
        return x + self.bn(self.out(y))


class Bottleneck(nn.Module):
    """ResNet bottleneck: a = (kt,1,1) conv, b = (1,3,3) conv carrying the spatial stride, c = 1x1x1; optional NL."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        inner_chs: int,
        kernel_t: int,
        stride: int = 1,
        dilation: int = 1,
        nonlocal_block: NonLocal | None = None,
        **bn: float,
    ) -> None:
        super().__init__()
        self.a = ConvBnAct(in_chs, inner_chs, (kernel_t, 1, 1), padding=(kernel_t // 2, 0, 0), **bn)
        self.b = ConvBnAct(
            inner_chs, inner_chs, (1, 3, 3), (1, stride, stride), (0, dilation, dilation), (1, dilation, dilation), **bn
        )
        self.c = ConvBnAct(inner_chs, out_chs, (1, 1, 1), act=False, **bn)
        needs_projection = in_chs != out_chs or stride != 1
        self.shortcut = (
            ConvBnAct(in_chs, out_chs, (1, 1, 1), (1, stride, stride), act=False, **bn) if needs_projection else None
        )
        self.relu = nn.ReLU(inplace=True)
        self.nl = nonlocal_block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(shortcut + self.c(self.b(self.a(x))))
        return out if self.nl is None else self.nl(out)


class FuseFastToSlow(ConvBnAct):
    """Lateral connection: time-strided (k, 1, 1) conv-BN-ReLU on the fast pathway, concatenated onto the slow one."""

    def __init__(self, fast_chs: int, alpha: int, kernel_t: int, channel_ratio: int = 2, **bn: float) -> None:
        super().__init__(
            fast_chs, fast_chs * channel_ratio, (kernel_t, 1, 1), (alpha, 1, 1), (kernel_t // 2, 0, 0), **bn
        )
        self.alpha = alpha

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        lateral = super().forward(fast)
        if lateral.shape[2] != slow.shape[2]:
            raise ValueError(
                f"fast-to-slow fusion: the fast pathway gives {lateral.shape[2]} frames after the stride-{self.alpha} "
                f"lateral conv but the slow pathway has {slow.shape[2]}; expected T_fast == {self.alpha} * T_slow"
            )
        return torch.cat([slow, lateral], dim=1), fast


class ClassifierHead(nn.Module):
    """Per-pathway average pool -> concat -> dropout -> linear.

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
    ) -> None:
        super().__init__()
        self.in_chs = tuple(in_chs)
        self.num_features = sum(in_chs)
        self.pool_size = pool_size
        if pool_size is None:
            self.pools = nn.ModuleList(nn.AdaptiveAvgPool3d(1) for _ in in_chs)
        else:
            self.pools = nn.ModuleList(nn.AvgPool3d(k, stride=1) for k in pool_size)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @property
    def num_classes(self) -> int:
        return self.proj.out_features if isinstance(self.proj, nn.Linear) else 0

    def pooled_map(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Pooled features of all pathways concatenated, (N, C, t, h, w); (t, h, w) = (1, 1, 1) when adaptive."""
        for x, pool in zip(feats, self.pools):
            if self.pool_size is not None and any(s < k for s, k in zip(x.shape[2:], pool.kernel_size)):
                raise ValueError(
                    f"fixed-kernel head: feature map {tuple(x.shape[2:])} is smaller than the pool kernel "
                    f"{tuple(pool.kernel_size)}; use head_pool='adaptive' for inputs smaller than the training crop"
                )
        return torch.cat([pool(x) for x, pool in zip(feats, self.pools)], dim=1)

    def forward(self, feats: list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        x = self.pooled_map(feats).mean(dim=(2, 3, 4))
        return x if pre_logits else self.proj(self.drop(x))

    def position_logits(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Logits at every head position, (N, t, h, w, classes), as the reference's fully-convolutional test."""
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

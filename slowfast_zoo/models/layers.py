"""Building blocks of the ResNet-3D family: conv-BN-ReLU, stem, bottleneck, fast-to-slow laterals, non-local.

Only torch and einops are imported here: a block knows its shapes, never files, names or weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, TypedDict

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torchvision.ops import StochasticDepth

from .amp_guard import GuardedConv3d

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+

__all__ = [
    "Bottleneck",
    "ConvBnAct",
    "FastInput",
    "NonLocal",
    "Stem",
    "TimeStridedConv",
    "TimeStridedSample",
    "TimeToChannel",
    "linspace_indices",
]

Triple = tuple[int, int, int]


class BatchNormArgs(TypedDict, total=False):
    """The BatchNorm settings every block passes down to its :class:`ConvBnAct` (``**bn``)."""

    bn_eps: float
    bn_momentum: float


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
        self.bn: nn.Module = nn.BatchNorm3d(out_chs, eps=bn_eps, momentum=bn_momentum)  # Identity once folded
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Stem(ConvBnAct):
    """Conv (kt, 7, 7) stride (1, 2, 2) -> BN -> ReLU -> max pool (1, 3, 3) stride (1, 2, 2)."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel_t: int, pre: nn.Module | None = None, **bn: Unpack[BatchNormArgs]
    ) -> None:
        super().__init__(in_chs, out_chs, (kernel_t, 7, 7), (1, 2, 2), (kernel_t // 2, 3, 3), **bn)
        self.pool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        self.pre = pre  # a parameter-free input step (FastInput): no state-dict keys

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre is not None:
            x = self.pre(x)
        return self.pool(super().forward(x))


#: ITU-R BT.601 luma weights (the paper does not give its gray-scale formula)
LUMA = (0.299, 0.587, 0.114)


class FastInput(nn.Module):
    """Parameter-free first step of the Fast pathway: gray-scale, time difference and/or spatial downsampling.

    ``mode``: ``"rgb"`` and ``"flow"`` pass through; ``"gray"`` takes the BT.601 luma of the (normalized) RGB
    channels; ``"timediff"`` the difference of consecutive gray frames, the first frame differenced with itself (0).
    ``downsample`` > 1 average-pools each frame by that factor (the half-resolution Fast pathway).
    """

    CHANNELS: ClassVar[dict[str, int]] = {"rgb": 3, "gray": 1, "timediff": 1, "flow": 2}

    def __init__(self, mode: str = "rgb", downsample: int = 1) -> None:
        super().__init__()
        if mode not in self.CHANNELS:
            raise ValueError(f"fast input must be one of {sorted(self.CHANNELS)}, got {mode!r}")
        self.mode = mode
        self.downsample = downsample

    @property
    def out_chans(self) -> int:
        return self.CHANNELS[self.mode]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode in ("gray", "timediff"):
            r, g, b = (x[:, i : i + 1] * w for i, w in enumerate(LUMA))  # python weights: nothing to materialize
            x = r + g + b
        if self.mode == "timediff":
            x = x - torch.cat([x[:, :, :1], x[:, :, :-1]], dim=2)
        if self.downsample > 1:
            x = F.avg_pool3d(x, (1, self.downsample, self.downsample))
        return x


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
        self.bn: nn.Module = nn.BatchNorm3d(dim, eps=bn_eps, momentum=bn_momentum)  # Identity once folded

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
        **bn: Unpack[BatchNormArgs],
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
        self.drop_path: nn.Module = nn.Identity()

    def set_drop_path(self, rate: float) -> None:
        """Stochastic depth: in training, drop the residual branch of each sample with probability ``rate``."""
        self.drop_path = StochasticDepth(rate, "row") if rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(shortcut + self.drop_path(self.c(self.b(self.a(x)))))
        return out if self.nl is None else self.nl(out)


def merge_lateral(
    slow: torch.Tensor, lateral: torch.Tensor, alpha: int, how: str = "concat", upsample: int = 1, kind: str = "conv"
) -> torch.Tensor:
    """Join a fast-to-slow lateral onto the slow map: nearest upsampling (half-resolution Fast), then concat or sum.

    A downsampled Fast map is resized to the slow map's (H, W) (``upsample`` x for sizes divisible by it).
    """
    if upsample > 1:
        lateral = F.interpolate(lateral, size=(lateral.shape[2], *slow.shape[3:]), mode="nearest")
    if lateral.shape[2:] != slow.shape[2:]:
        raise ValueError(
            f"fast-to-slow fusion ({kind}): the lateral is {tuple(lateral.shape[2:])} (T, H, W) but the slow map is "
            f"{tuple(slow.shape[2:])}; expected T_fast == {alpha} * T_slow and the slow pathway's spatial size"
        )
    return torch.cat([slow, lateral], dim=1) if how == "concat" else slow + lateral


class TimeStridedConv(ConvBnAct):
    """Lateral by time-strided convolution: a (k, 1, 1) conv-BN-ReLU of stride ``alpha`` on the Fast map, concatenated.

    The SlowFast paper's default lateral (section 3.4, option iii); ``forward(slow, fast)`` returns the joined slow map.
    """

    def __init__(
        self,
        fast_chs: int,
        alpha: int,
        kernel_t: int,
        channel_ratio: int = 2,
        upsample: int = 1,
        **bn: Unpack[BatchNormArgs],
    ) -> None:
        super().__init__(
            fast_chs, fast_chs * channel_ratio, (kernel_t, 1, 1), (alpha, 1, 1), (kernel_t // 2, 0, 0), **bn
        )
        self.alpha = alpha
        self.upsample = upsample
        self.out_chs = fast_chs * channel_ratio

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        lateral = super().forward(fast)
        return merge_lateral(slow, lateral, self.alpha, "concat", self.upsample, f"stride-{self.alpha} conv")


class TimeStridedSample(nn.Module):
    """Lateral by time-strided sampling: every ``alpha``-th Fast frame (0, alpha, ...), concatenated; no parameters."""

    def __init__(self, fast_chs: int, alpha: int, upsample: int = 1) -> None:
        super().__init__()
        self.alpha = alpha
        self.upsample = upsample
        self.out_chs = fast_chs

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
        lateral = fast[:, :, :: self.alpha]
        return merge_lateral(slow, lateral, self.alpha, "concat", self.upsample, "time-strided sampling")


class TimeToChannel(nn.Module):
    """Lateral by time-to-channel: {alpha T, S^2, beta C} -> {T, S^2, alpha beta C}, summed or concatenated.

    The ``alpha`` frames of each group become consecutive channel blocks (frame-major order); no parameters.
    """

    def __init__(self, fast_chs: int, alpha: int, how: str = "concat", upsample: int = 1) -> None:
        super().__init__()
        if how not in ("concat", "sum"):
            raise ValueError(f"time-to-channel fusion is 'concat' or 'sum', got {how!r}")
        self.alpha = alpha
        self.how = how
        self.upsample = upsample
        self.out_chs = fast_chs * alpha if how == "concat" else 0

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
        if fast.shape[2] % self.alpha:
            raise ValueError(
                f"time-to-channel fusion needs T_fast divisible by alpha={self.alpha}, got {fast.shape[2]}"
            )
        lateral = rearrange(fast, "n c (t a) h w -> n (a c) t h w", a=self.alpha)
        return merge_lateral(slow, lateral, self.alpha, self.how, self.upsample, f"time-to-channel {self.how}")

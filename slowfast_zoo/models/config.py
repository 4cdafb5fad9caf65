"""The architecture as data: :class:`ResNet3dConfig`, one frozen dataclass from which :class:`ResNet3d` is built."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from .layers import FastInput

__all__ = ["DEPTHS", "ResNet3dConfig", "temporal_kernels"]

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def temporal_kernels(
    bases: tuple[tuple[int, ...], ...], layers: tuple[int, ...], num_temporal: tuple[int, ...] | None = None
) -> tuple[tuple[int, ...], ...]:
    """Per-block temporal kernels of conv ``a`` for each stage, as the reference expands them.

    Each stage repeats its basis (e.g. ``(3, 1)`` -> 3, 1, 3, 1, ...) over its blocks; only the first
    ``num_temporal[stage]`` blocks keep it, the rest get kernel 1 (``NUM_BLOCK_TEMP_KERNEL``).
    """
    num_temporal = num_temporal or layers
    out = []
    for basis, n, keep in zip(bases, layers, num_temporal):
        kernels = (basis * n)[:keep]
        out.append(tuple(kernels) + (1,) * (n - len(kernels)))
    return tuple(out)


@dataclass(frozen=True)
class ResNet3dConfig:
    """Architecture arguments of a ResNet-3D; pathway 0 is the slow (or only) pathway, pathway 1 the fast one."""

    layers: tuple[int, int, int, int] = DEPTHS[50]
    #: temporal kernel of the stem conv, per pathway
    stem_kernel_t: tuple[int, ...] = (1,)
    #: temporal kernel of conv ``a`` per pathway, per stage, per block
    block_kernel_t: tuple[tuple[tuple[int, ...], ...], ...] = field(
        default_factory=lambda: (temporal_kernels(((1,), (1,), (3,), (3,)), DEPTHS[50]),)
    )
    width: int = 64
    #: speed ratio between pathways (fast frames / slow frames); ``None`` for single-pathway networks
    alpha: int | None = None
    #: channel ratio between pathways (slow width / fast width)
    beta_inv: int = 8
    fusion_kernel_t: int = 7
    fusion_channel_ratio: int = 2
    #: temporal max-pool kernel (= stride) applied after res2 (2 for I3D and C2D)
    temporal_pool: int = 1
    spatial_strides: tuple[int, int, int, int] = (1, 2, 2, 2)
    spatial_dilations: tuple[int, int, int, int] = (1, 1, 1, 1)
    #: indices of the blocks followed by a non-local block, per stage (slow pathway only)
    nonlocal_blocks: tuple[tuple[int, ...], ...] = ((), (), (), ())
    nonlocal_pool: tuple[tuple[int, int, int], ...] = ((1, 2, 2),) * 4
    nonlocal_mode: Literal["softmax", "dot_product"] = "softmax"
    num_classes: int = 400
    dropout: float = 0.5
    #: "adaptive" pools whatever size comes in; "fixed" uses the reference's kernel set by the training crop
    head_pool: Literal["adaptive", "fixed"] = "adaptive"
    #: head pooling as timm's ``global_pool``: "avg", "max", or "" (none: the model returns the res5 maps; needs
    #: ``num_classes=0``)
    global_pool: Literal["avg", "max", ""] = "avg"
    #: stochastic depth (timm's ``drop_path_rate``): residual-branch drop rate, rising linearly from 0 at the first
    #: block to this value at the last
    drop_path_rate: float = 0.0
    #: AVA detectors: a RoIAlign head scoring person boxes instead of a clip classifier
    roi_head: bool = False
    roi_aligned: bool = False
    #: frames of the fast (or only) pathway, and the training crop: together they size the fixed head kernel
    num_frames: int = 8
    crop_size: int = 224
    in_chans: int = 3
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    #: how the Fast pathway joins the Slow one after the stem and res2..res4 (SlowFast paper §3.4): "tconv" a
    #: time-strided conv (the published models), "tsample" every alpha-th frame, "ttoc_concat" / "ttoc_sum"
    #: time-to-channel, "none" no lateral (the pathways meet only in the head)
    fusion: Literal["tconv", "tsample", "ttoc_concat", "ttoc_sum", "none"] = "tconv"
    #: rounding of ``width / beta_inv`` when it is not a whole number of channels
    beta_rounding: Literal["floor", "ceil"] = "floor"
    #: what the Fast pathway sees (paper Table 5c): RGB; "gray" / "timediff" are computed from the RGB clip inside
    #: the model (BT.601 luma; differences of consecutive gray frames); "flow" takes a (N, 2, T_fast, H, W) tensor
    fast_input: Literal["rgb", "gray", "timediff", "flow"] = "rgb"
    #: spatial downsampling of the Fast input inside the model (2 = half resolution); laterals upsample back (nearest)
    fast_downsample: int = 1

    def __post_init__(self) -> None:
        n = self.num_pathways
        if len(self.stem_kernel_t) != n or len(self.block_kernel_t) != n:
            raise ValueError(f"stem_kernel_t and block_kernel_t need one entry per pathway ({n})")
        for p, per_stage in enumerate(self.block_kernel_t):
            if tuple(len(k) for k in per_stage) != tuple(self.layers):
                raise ValueError(f"block_kernel_t[{p}] has {[len(k) for k in per_stage]} blocks, layers={self.layers}")
        if self.head_pool not in ("adaptive", "fixed"):
            raise ValueError(f"head_pool must be 'adaptive' or 'fixed', got {self.head_pool!r}")
        if self.alpha is not None and self.num_frames % self.alpha:
            raise ValueError(f"num_frames ({self.num_frames}) must be a multiple of alpha ({self.alpha})")
        if self.global_pool not in ("avg", "max", ""):
            raise ValueError(f"global_pool must be 'avg', 'max' or '' (no pooling), got {self.global_pool!r}")
        if self.global_pool == "" and self.num_classes:
            raise ValueError("global_pool='' (no pooling) returns feature maps: it needs num_classes=0")
        if self.roi_head and self.global_pool != "avg":
            raise ValueError("detectors (roi_head=True) pool as the reference does: global_pool must be 'avg'")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        self._check_design()

    def _check_design(self) -> None:
        """Clear errors for design-space combinations that cannot be built."""
        choices = {
            "fusion": ("tconv", "tsample", "ttoc_concat", "ttoc_sum", "none"),
            "beta_rounding": ("floor", "ceil"),
            "fast_input": tuple(FastInput.CHANNELS),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not isinstance(self.fast_downsample, int) or self.fast_downsample < 1:
            raise ValueError(f"fast_downsample must be a positive integer, got {self.fast_downsample!r}")
        fast_fields = dict(fusion="tconv", fast_input="rgb", fast_downsample=1)
        if self.alpha is None:
            changed = [f"{k}={getattr(self, k)!r}" for k, v in fast_fields.items() if getattr(self, k) != v]
            if changed:
                raise ValueError(f"{', '.join(changed)} need a Fast pathway; set alpha for a two-pathway network")
            return
        if not isinstance(self.beta_inv, int) or self.beta_inv < 1:
            raise ValueError(f"beta_inv (slow width / fast width) must be a positive integer, got {self.beta_inv!r}")
        if self.fusion == "ttoc_sum" and self.alpha * self.pathway_width(1) != self.width:
            raise ValueError(
                f"fusion='ttoc_sum' adds alpha * beta * C channels onto the slow pathway's C: it needs "
                f"alpha * (width / beta_inv) == width, got alpha={self.alpha}, fast width {self.pathway_width(1)}, "
                f"width {self.width} (use alpha == beta_inv, or fusion='ttoc_concat')"
            )
        if self.fast_input in ("gray", "timediff") and self.in_chans != 3:
            raise ValueError(f"fast_input={self.fast_input!r} is computed from RGB clips; in_chans must be 3")
        if self.roi_head and self.fast_downsample > 1:
            raise ValueError("fast_downsample > 1 is not supported by the detection (roi_head) models")

    def pathway_width(self, pathway: int) -> int:
        """Stem channels: ``width`` for the slow pathway, ``width / beta_inv`` (rounded, at least 1) for the fast."""
        if pathway == 0:
            return self.width
        fast = -(-self.width // self.beta_inv) if self.beta_rounding == "ceil" else self.width // self.beta_inv
        return max(fast, 1)

    def input_chans(self, pathway: int) -> int:
        """Channels of a pathway's input tensor (2 for a flow Fast pathway, else ``in_chans``)."""
        return 2 if pathway == 1 and self.fast_input == "flow" else self.in_chans

    @property
    def num_pathways(self) -> int:
        return 1 if self.alpha is None else 2

    def frames(self, pathway: int) -> int:
        """Input frames of a pathway."""
        return self.num_frames // self.alpha if pathway == 0 and self.alpha else self.num_frames

    def stage_widths(self, pathway: int) -> list[tuple[int, int]]:
        """(inner, out) channels of each stage of a pathway."""
        width = self.pathway_width(pathway)
        return [(width * 2**i, width * 4 * 2**i) for i in range(4)]

    @property
    def head_pool_size(self) -> tuple[tuple[int, int, int], ...] | None:
        """The reference's fixed head kernel per pathway, or None for adaptive pooling."""
        if self.head_pool == "adaptive":
            return None
        spatial = self.crop_size // (32 if self.spatial_strides[3] == 2 else 16)
        down = (1, self.fast_downsample)
        return tuple(
            (self.frames(p) // self.temporal_pool, spatial // down[p], spatial // down[p])
            for p in range(self.num_pathways)
        )

    @property
    def classifier(self) -> str:
        """Module name of the final linear layer, as timm's ``classifier``: its state-dict keys start with it + '.'."""
        return "head.proj"

    def replace(self, **changes: Any) -> ResNet3dConfig:
        """A copy with some fields changed; an unknown field is a ``TypeError`` listing the valid ones."""
        valid = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise TypeError(f"unknown ResNet3dConfig field(s) {unknown}; valid fields: {', '.join(valid)}")
        return dataclasses.replace(self, **changes)

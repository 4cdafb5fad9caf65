"""One configurable ResNet-3D that is Slow-only, SlowFast, I3D or C2D depending on its :class:`ResNet3dConfig`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from .features import STAGES, FeatureInfo, stage_feature_info
from .heads import ClassifierHead, RoIHead, as_rois
from .inputs import as_pathways
from .layers import Bottleneck, FastInput, FuseFastToSlow, NonLocal, Stem, TimeStridedSample, TimeToChannel

__all__ = ["STAGES", "ResNet3d", "ResNet3dConfig", "ResNet3dFeatures", "temporal_kernels"]

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

    def replace(self, **changes: object) -> ResNet3dConfig:
        """A copy with some fields changed; an unknown field is a ``TypeError`` listing the valid ones."""
        valid = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise TypeError(f"unknown ResNet3dConfig field(s) {unknown}; valid fields: {', '.join(valid)}")
        return dataclasses.replace(self, **changes)


def fusion(cfg: ResNet3dConfig, fast_chs: int, bn: dict[str, float]) -> nn.Module:
    """The fast-to-slow lateral of ``cfg.fusion`` for a Fast map of ``fast_chs`` channels (``out_chs``: added)."""
    up = cfg.fast_downsample
    if cfg.fusion == "tconv":
        return FuseFastToSlow(fast_chs, cfg.alpha, cfg.fusion_kernel_t, cfg.fusion_channel_ratio, up, **bn)
    if cfg.fusion == "tsample":
        return TimeStridedSample(fast_chs, cfg.alpha, up)
    return TimeToChannel(fast_chs, cfg.alpha, cfg.fusion.removeprefix("ttoc_"), up)


class ResNet3d(nn.Module):
    """ResNet-3D video network: Slow-only, SlowFast, I3D or C2D, with optional non-local blocks.

    ``forward`` takes ``[slow, fast]`` (two-pathway) or one tensor (single pathway), each ``(N, 3, T, H, W)``,
    and returns logits ``(N, num_classes)`` in train and eval mode.
    """

    def __init__(self, cfg: ResNet3dConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.grad_checkpointing = False
        bn = dict(bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum)
        paths = range(cfg.num_pathways)
        widths = [cfg.stage_widths(p) for p in paths]
        stem_out = [cfg.pathway_width(p) for p in paths]
        pre = [None, FastInput(cfg.fast_input, cfg.fast_downsample)]  # the Fast pathway's parameter-free first step
        pre = [m if m is not None and (m.mode in ("gray", "timediff") or m.downsample > 1) else None for m in pre]
        self.stem = nn.ModuleList(
            Stem(pre[p].out_chans if pre[p] else cfg.input_chans(p), stem_out[p], cfg.stem_kernel_t[p], pre[p], **bn)
            for p in paths
        )

        # fuse[i] runs after the stem (i = 0) and after res2..res4 (i = 1..3); never after res5
        fast_out = [stem_out[1]] + [w[1] for w in widths[1][:3]] if cfg.alpha and cfg.fusion != "none" else []
        self.fuse = nn.ModuleList(fusion(cfg, c, bn) for c in fast_out)
        in_chs = list(stem_out)
        for s, name in enumerate(STAGES):
            if self.fuse:
                in_chs[0] += self.fuse[s].out_chs
            pathways = nn.ModuleList()
            for p in paths:
                inner, out = widths[p][s]
                blocks = []
                for j, kt in enumerate(cfg.block_kernel_t[p][s]):
                    nl = None
                    if p == 0 and j in cfg.nonlocal_blocks[s]:
                        nl = NonLocal(out, cfg.nonlocal_pool[s], cfg.nonlocal_mode, **bn)
                    stride = cfg.spatial_strides[s] if j == 0 else 1
                    blocks.append(
                        Bottleneck(
                            in_chs[p] if j == 0 else out, out, inner, kt, stride, cfg.spatial_dilations[s], nl, **bn
                        )
                    )
                pathways.append(nn.Sequential(*blocks))
                in_chs[p] = out
            self.add_module(name, pathways)
        pool = cfg.temporal_pool
        self.temporal_pool = nn.MaxPool3d((pool, 1, 1), (pool, 1, 1)) if pool > 1 else nn.Identity()
        self.num_features = sum(in_chs)
        self.head: ClassifierHead | RoIHead
        if cfg.roi_head:
            scale = 1 / (32 if cfg.spatial_strides[3] == 2 else 16)
            self.head = RoIHead(
                tuple(in_chs), cfg.num_classes, cfg.dropout, spatial_scale=scale, aligned=cfg.roi_aligned
            )
        else:
            self.head = ClassifierHead(
                tuple(in_chs), cfg.num_classes, cfg.dropout, cfg.head_pool_size, pool_type=cfg.global_pool
            )
        self._set_drop_path(cfg.drop_path_rate)
        if not next(self.parameters()).is_meta:  # create() builds on meta and initializes on the target device
            self.init_weights()

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def _set_drop_path(self, rate: float) -> None:
        """Stochastic depth in every bottleneck, rate ``rate * k / (blocks - 1)`` for block k of each pathway (timm)."""
        for p in range(self.cfg.num_pathways):
            blocks = [b for name in STAGES for b in getattr(self, name)[p] if isinstance(b, Bottleneck)]
            for k, block in enumerate(blocks):
                block.set_drop_path(rate * k / max(len(blocks) - 1, 1))

    @torch.no_grad()
    def init_weights(self) -> None:
        """Reference init: MSRA-filled convs, unit BN (zero gamma on each residual's last BN), N(0, 0.01) fc."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                m.reset_parameters()
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.c.bn.weight)
            elif isinstance(m, NonLocal):
                nn.init.zeros_(m.bn.weight)

    def _stage(self, name: str, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        stage = getattr(self, name)
        if self.grad_checkpointing and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint_sequential

            return [checkpoint_sequential(stage[p], len(stage[p]), x, use_reentrant=False) for p, x in enumerate(xs)]
        return [stage[p](x) for p, x in enumerate(xs)]

    def _fuse(self, i: int, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(self.fuse[i](*xs)) if self.fuse else xs

    def _run(self, x: torch.Tensor | list[torch.Tensor], indices: tuple[int, ...] = ()) -> list[list[torch.Tensor]]:
        """The backbone, keeping the output of the stages in ``indices`` (0 = stem, 1..4 = res2..res5).

        Returns the kept outputs in order, then the final (fused) maps; stops after the last stage needed.
        """
        xs = as_pathways(x, self.cfg, self.stem[0].conv.weight.dtype)
        xs = [stem(t) for stem, t in zip(self.stem, xs)]
        kept = [list(xs)] if 0 in indices else []
        last = max(indices, default=4)
        for s, name in enumerate(STAGES, start=1):
            if last < s:
                break
            xs = self._fuse(s - 1, xs)  # rebinding frees the unfused maps before the stage runs
            xs = self._stage(name, xs)
            if s in indices:
                kept.append(list(xs))
            if s == 1:
                xs = [self.temporal_pool(t) for t in xs]
        return [*kept, xs]

    def forward_features(self, x: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
        """Unpooled res5 feature maps, one ``(N, C, T, H, W)`` tensor per pathway."""
        return self._run(x)[-1]

    def forward_intermediates(
        self, x: torch.Tensor | list[torch.Tensor], indices: tuple[int, ...] = (1, 2, 3, 4)
    ) -> list[list[torch.Tensor]]:
        """Per-pathway outputs of the stages in ``indices`` (0 = stem, 1..4 = res2..res5), before fusion.

        Channels and reductions of each are in :meth:`feature_info`.
        """
        if not indices or any(i not in range(5) for i in indices) or list(indices) != sorted(set(indices)):
            raise ValueError(f"indices must be increasing stage numbers in 0..4 (stem, res2..res5), got {indices}")
        return self._run(x, tuple(indices))[:-1]

    def feature_info(self, indices: tuple[int, ...] = (0, 1, 2, 3, 4)) -> FeatureInfo:
        """Name, channels per pathway and (time, space) reduction per pathway of each stage output."""
        return stage_feature_info(self.cfg, tuple(indices))

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters to train without weight decay (timm's hook): BatchNorm affines and biases.

        The reference sets ``BN.WEIGHT_DECAY = 0``; biases follow timm's habit. :func:`param_groups` uses this set.
        """
        return {name for name, p in self.named_parameters() if p.ndim <= 1}

    def forward_head(
        self,
        feats: list[torch.Tensor],
        pre_logits: bool = False,
        boxes: torch.Tensor | list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Pool, concat and classify; ``pre_logits=True`` returns the pooled embedding ``(N, num_features)``.

        Detectors (``roi_head``) score ``boxes`` instead and return one row per box.
        """
        if isinstance(self.head, RoIHead):
            if boxes is None:
                raise ValueError("this is a detector: call it as model(x, boxes) with person boxes per clip")
            return self.head(feats, as_rois(boxes, feats[0].shape[0]).to(feats[0].device), pre_logits=pre_logits)
        if boxes is not None:
            raise ValueError("boxes are only taken by detection models (roi_head=True)")
        return self.head(feats, pre_logits=pre_logits)

    def forward(
        self, x: torch.Tensor | list[torch.Tensor], boxes: torch.Tensor | list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Logits per clip ``(N, classes)``; for detectors, per box ``(K, classes)`` given ``boxes`` in input pixels."""
        return self.forward_head(self.forward_features(x), boxes=boxes)

    def position_logits(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """Logits at every head position ``(N, t, h, w, classes)`` (one position unless the head is fixed-kernel)."""
        if not isinstance(self.head, ClassifierHead):
            raise ValueError("position_logits is defined for clip classifiers, not detectors")
        return self.head.position_logits(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` for an embedding model)."""
        return self.head.proj

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier by a freshly initialized one; ``0`` makes the model return pooled embeddings.

        ``global_pool`` (timm's): ``"avg"``, ``"max"`` or ``""`` (no pooling, with ``num_classes=0``); None keeps it.
        """
        pool = self.cfg.global_pool if global_pool is None else global_pool
        cfg = self.cfg.replace(num_classes=num_classes, global_pool=pool)  # validates the combination
        if isinstance(self.head, ClassifierHead) and pool != self.head.pool_type:
            self.head.set_pool(pool)
        ref = next(self.parameters())
        if num_classes > 0:
            proj = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            nn.init.normal_(proj.weight, std=0.01)
            nn.init.zeros_(proj.bias)
            self.head.proj = proj
        else:
            self.head.proj = nn.Identity()
        self.cfg = cfg

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage's activations in backward instead of storing them."""
        self.grad_checkpointing = enable


class ResNet3dFeatures(nn.Module):
    """Multi-scale feature extractor: the backbone up to the last requested stage, no head.

    ``forward`` returns, for each index in ``out_indices`` (0 = stem, 1..4 = res2..res5), the list of per-pathway
    maps; ``feature_info`` gives their channels and (time, space) reductions.
    """

    def __init__(self, model: ResNet3d, out_indices: tuple[int, ...] = (1, 2, 3, 4)) -> None:
        super().__init__()
        self.out_indices = tuple(out_indices)
        if not out_indices or list(out_indices) != sorted(set(out_indices)) or not set(out_indices) <= set(range(5)):
            raise ValueError(f"out_indices must be increasing stage numbers in 0..4, got {out_indices}")
        self.feature_info = model.feature_info(self.out_indices)
        # drop what no output needs, so that every parameter left gets a gradient (DDP refuses unused ones)
        last = max(self.out_indices)
        model.head = nn.Identity()  # type: ignore[assignment]
        for name in STAGES[last:]:
            setattr(model, name, nn.ModuleList())
        model.fuse = nn.ModuleList(list(model.fuse)[:last])  # fuse[i] feeds stage i + 1 (res2 = 1)
        self.model = model

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> list[list[torch.Tensor]]:
        return self.model.forward_intermediates(x, self.out_indices)

    @property
    def cfg(self) -> ResNet3dConfig:
        """The backbone's architecture config."""
        return self.model.cfg

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters to train without weight decay (timm's hook), as for :class:`ResNet3d`."""
        return {f"model.{name}" for name in self.model.no_weight_decay()}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage's activations in backward instead of storing them."""
        self.model.set_grad_checkpointing(enable)

"""One configurable ResNet-3D that is Slow-only, SlowFast, I3D or C2D depending on its :class:`ResNet3dConfig`."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from .config import DEPTHS, ResNet3dConfig, temporal_kernels
from .features import FAST, PATHWAYS, SLOW, STAGES, FeatureInfo, stage_feature_info
from .heads import ClassifierHead, RoIHead, as_rois
from .inputs import as_pathways
from .layers import (
    BatchNormArgs,
    Bottleneck,
    FastInput,
    NonLocal,
    Stem,
    TimeStridedConv,
    TimeStridedSample,
    TimeToChannel,
)

__all__ = ["DEPTHS", "PATHWAYS", "STAGES", "ResNet3d", "ResNet3dConfig", "ResNet3dFeatures", "temporal_kernels"]

#: the stages a lateral connection follows, as in the SlowFast paper (section 3.4: after pool1, res2, res3, res4)
LATERAL_AFTER = ("stem", *STAGES[:3])


def make_lateral(
    cfg: ResNet3dConfig, fast_chs: int, bn: BatchNormArgs
) -> TimeStridedConv | TimeStridedSample | TimeToChannel:
    """The fast-to-slow lateral of ``cfg.fusion`` for a Fast map of ``fast_chs`` channels (``out_chs``: added)."""
    up, alpha = cfg.fast_downsample, cfg.alpha
    if alpha is None:
        raise ValueError("a fast-to-slow lateral needs alpha (a two-pathway config)")
    if cfg.fusion == "tconv":
        return TimeStridedConv(fast_chs, alpha, cfg.fusion_kernel_t, cfg.fusion_channel_ratio, up, **bn)
    if cfg.fusion == "tsample":
        return TimeStridedSample(fast_chs, alpha, up)
    return TimeToChannel(fast_chs, alpha, cfg.fusion.removeprefix("ttoc_"), up)


class ResNet3d(nn.Module):
    """ResNet-3D video network: Slow-only, SlowFast, I3D or C2D, with optional non-local blocks.

    ``forward`` takes ``[slow, fast]`` (two-pathway) or one tensor (single pathway), each ``(N, 3, T, H, W)``,
    and returns logits ``(N, num_classes)`` in train and eval mode.

    Modules, as in the SlowFast paper's Figure 1: ``stem[pathway]``, ``res2[pathway]`` .. ``res5[pathway]`` (each a
    sequence of bottlenecks), ``lateral[stage]`` (the Fast-to-Slow connection after that stage) and ``head``; the
    pathways are ``"slow"`` and ``"fast"`` (:data:`PATHWAYS`). State-dict keys follow: ``res2.fast.0.a.conv.weight``
    is the first convolution (a) of block 0 of the Fast pathway's res2.
    """

    def __init__(self, cfg: ResNet3dConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.grad_checkpointing = False
        self.pathways = PATHWAYS[: cfg.num_pathways]
        bn = BatchNormArgs(bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum)
        index = {name: p for p, name in enumerate(self.pathways)}  # the config's per-pathway tuples are in this order
        widths = {name: cfg.stage_widths(p) for name, p in index.items()}
        in_chs = {name: cfg.pathway_width(p) for name, p in index.items()}  # what the next module takes, per pathway
        fast_input = FastInput(cfg.fast_input, cfg.fast_downsample)  # the Fast pathway's parameter-free first step
        pre = {
            SLOW: None,
            FAST: fast_input if fast_input.mode in ("gray", "timediff") or fast_input.downsample > 1 else None,
        }
        self.stem = nn.ModuleDict()
        for name, p in index.items():
            step = pre[name]
            chans = step.out_chans if step is not None else cfg.input_chans(p)
            self.stem[name] = Stem(chans, in_chs[name], cfg.stem_kernel_t[p], step, **bn)

        # lateral[stage] joins the Fast output of the stem and of res2..res4 onto the Slow one; never after res5
        self.lateral = nn.ModuleDict()
        lateral_chs: dict[str, int] = {}  # the channels each lateral adds to the slow map
        if FAST in index and cfg.alpha and cfg.fusion != "none":
            fast_out = [in_chs[FAST]] + [out for _, out in widths[FAST][:3]]
            for after, chs in zip(LATERAL_AFTER, fast_out):
                lateral = make_lateral(cfg, chs, bn)
                self.lateral[after] = lateral
                lateral_chs[after] = lateral.out_chs
        for s, name in enumerate(STAGES):
            in_chs[SLOW] += lateral_chs.get(LATERAL_AFTER[s], 0)
            stage = nn.ModuleDict()
            for pathway, p in index.items():
                inner, out = widths[pathway][s]
                blocks = []
                for j, kt in enumerate(cfg.block_kernel_t[p][s]):
                    nl = None
                    if pathway == SLOW and j in cfg.nonlocal_blocks[s]:
                        nl = NonLocal(out, cfg.nonlocal_pool[s], cfg.nonlocal_mode, **bn)
                    stride = cfg.spatial_strides[s] if j == 0 else 1
                    first = in_chs[pathway] if j == 0 else out
                    blocks.append(Bottleneck(first, out, inner, kt, stride, cfg.spatial_dilations[s], nl, **bn))
                stage[pathway] = nn.Sequential(*blocks)
                in_chs[pathway] = out
            self.add_module(name, stage)
        pool = cfg.temporal_pool
        self.temporal_pool = nn.MaxPool3d((pool, 1, 1), (pool, 1, 1)) if pool > 1 else nn.Identity()
        self.num_features = sum(in_chs.values())
        head_chs = tuple(in_chs.values())  # the head concatenates the pathways in PATHWAYS order
        self.head: ClassifierHead | RoIHead
        if cfg.roi_head:
            scale = 1 / (32 if cfg.spatial_strides[3] == 2 else 16)
            self.head = RoIHead(head_chs, cfg.num_classes, cfg.dropout, spatial_scale=scale, aligned=cfg.roi_aligned)
        else:
            self.head = ClassifierHead(
                head_chs, cfg.num_classes, cfg.dropout, cfg.head_pool_size, pool_type=cfg.global_pool
            )
        self._set_drop_path(cfg.drop_path_rate)
        if not next(self.parameters()).is_meta:  # create() builds on meta and initializes on the target device
            self.init_weights()

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def _set_drop_path(self, rate: float) -> None:
        """Stochastic depth in every bottleneck, rate ``rate * k / (blocks - 1)`` for block k of each pathway (timm)."""
        for pathway in self.pathways:
            blocks = [b for name in STAGES for b in getattr(self, name)[pathway] if isinstance(b, Bottleneck)]
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
            if isinstance(m, Bottleneck):  # at initialization the norms are BatchNorm3d (Identity only once folded)
                nn.init.zeros_(cast(nn.BatchNorm3d, m.c.bn).weight)
            elif isinstance(m, NonLocal):
                nn.init.zeros_(cast(nn.BatchNorm3d, m.bn).weight)

    def _stage(self, name: str, xs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stage = getattr(self, name)
        if self.grad_checkpointing and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint_sequential

            return {p: checkpoint_sequential(stage[p], len(stage[p]), x, use_reentrant=False) for p, x in xs.items()}
        return {p: stage[p](x) for p, x in xs.items()}

    def _lateral(self, after: str, xs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Join the Fast map onto the Slow one with the lateral connection that follows stage ``after``."""
        if after in self.lateral:
            xs[SLOW] = self.lateral[after](xs[SLOW], xs[FAST])  # rebinding frees the unjoined map before the stage
        return xs

    def _run(self, x: torch.Tensor | list[torch.Tensor], indices: tuple[int, ...] = ()) -> list[list[torch.Tensor]]:
        """The backbone, keeping the output of the stages in ``indices`` (0 = stem, 1..4 = res2..res5).

        Returns the kept outputs in order, then the final (laterally joined) maps, each a list in :data:`PATHWAYS`
        order; stops after the last stage needed.
        """
        inputs = as_pathways(x, self.cfg, cast(Stem, self.stem[SLOW]).conv.weight.dtype)  # the parameters' dtype
        xs = {p: self.stem[p](t) for p, t in zip(self.pathways, inputs)}
        kept = [list(xs.values())] if 0 in indices else []
        last = max(indices, default=4)
        for s, name in enumerate(STAGES, 1):  # start positional: dynamo of torch 2.4 rejects the keyword
            if last < s:
                break
            xs = self._lateral(LATERAL_AFTER[s - 1], xs)
            xs = self._stage(name, xs)
            if s in indices:
                kept.append(list(xs.values()))
            if name == "res2":
                xs = {p: self.temporal_pool(t) for p, t in xs.items()}
        return [*kept, list(xs.values())]

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
            setattr(model, name, nn.ModuleDict())
        for after in LATERAL_AFTER[last:]:  # lateral[LATERAL_AFTER[i]] feeds stage i + 1 (res2 = 1)
            if after in model.lateral:
                del model.lateral[after]
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

"""Fine-tuning helpers: freeze the early stages (with frozen BatchNorm) and per-stage learning-rate groups.

A model names its stages, input to output and the head last, in a ``stage_order`` attribute (ResNet3d:
``stem``, ``res2``..``res5``, ``head``, the default); a parameter belongs to the stage its name starts with
(``lateral.<stage>`` to the stage it follows).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from .resnet3d import STAGES, ResNet3dFeatures

__all__ = ["FrozenBatchNorm3d", "freeze", "param_groups", "stage_of"]

#: ResNet3d's stage order, input to output; ``lateral.<stage>`` belongs to the stage it follows
ORDER = ("stem", *STAGES, "head")


class FrozenBatchNorm3d(nn.Module):
    """BatchNorm3d with fixed statistics and affine parameters (buffers, not parameters): a per-channel affine map."""

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.num_features = num_features
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        # kept (never updated) so that state dicts keep the keys of BatchNorm3d and load into unfrozen models
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1, 1).to(x.dtype)

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm3d) -> FrozenBatchNorm3d:
        """A frozen copy of a BatchNorm3d's current statistics and affine parameters."""
        # Module.to casts floating tensors only: the batch counter stays an integer
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("a BatchNorm3d without running statistics (track_running_stats=False) cannot be frozen")
        frozen = cls(bn.num_features, bn.eps).to(device=bn.running_mean.device, dtype=bn.running_mean.dtype)
        with torch.no_grad():
            frozen.weight.copy_(bn.weight if bn.affine else torch.ones_like(frozen.weight))
            frozen.bias.copy_(bn.bias if bn.affine else torch.zeros_like(frozen.bias))
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
            if bn.num_batches_tracked is not None:
                frozen.num_batches_tracked.copy_(bn.num_batches_tracked)
        return frozen

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _freeze_bn(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm3d):
            setattr(module, name, FrozenBatchNorm3d.from_batchnorm(child))
        else:
            _freeze_bn(child)


def stage_of(param_name: str, order: tuple[str, ...] = ORDER) -> str:
    """The stage (one of ``order``: ResNet3d's ``stem``, ``res2``..``res5``, ``head``) a parameter or module name
    belongs to."""
    first = param_name.split(".", 1)[0]
    if first == "lateral":  # lateral.<stage> runs after that stage
        first = param_name.split(".")[1] if "." in param_name else ""
    if first in order:
        return first
    raise ValueError(f"{param_name!r} belongs to none of the stages {order}")


def _backbone(model: nn.Module) -> nn.Module:
    """The network inside a ``features_only`` model (which holds it as ``.model``), or the model itself."""
    if isinstance(model, ResNet3dFeatures):
        return model.model
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, nn.Module) and not hasattr(model, "stage_order") else model


def _order(model: nn.Module) -> tuple[str, ...]:
    return tuple(getattr(model, "stage_order", ORDER))


def freeze(model: nn.Module, up_to: str = "res4", bn: Literal["frozen", "train"] = "frozen") -> list[str]:
    """Stop training every stage from the first up to and including ``up_to`` (ResNet3d: ``stem``, ``res2``..``res5``;
    another family: a name of its ``stage_order`` but the head).

    Their parameters get ``requires_grad=False``; with ``bn="frozen"`` their BatchNorms also become
    :class:`FrozenBatchNorm3d` so that ``model.train()`` no longer updates their statistics (``"train"`` leaves
    them as they are). Later stages and the head stay trainable. Returns the names of the frozen stages.
    """
    model = _backbone(model)
    order = _order(model)
    if up_to not in order[:-1]:
        raise ValueError(f"up_to must be one of {order[:-1]}, got {up_to!r}")
    if bn not in ("frozen", "train"):
        raise ValueError(f"bn must be 'frozen' or 'train', got {bn!r}")
    frozen = order[: order.index(up_to) + 1]
    for name, module in list(model.named_children()):
        children = module.named_children() if name == "lateral" else [(name, module)]  # lateral.<stage>
        for stage, part in list(children):
            if stage in frozen:
                part.requires_grad_(False)
                if bn == "frozen":
                    _freeze_bn(part)
    return list(frozen)


def param_groups(
    model: nn.Module, lr: float, weight_decay: float = 1e-4, stage_decay: float = 1.0
) -> list[dict[str, Any]]:
    """Optimizer parameter groups per stage, learning rate ``lr * stage_decay ** (stages before the head)``.

    BatchNorm parameters and biases get no weight decay (the reference's ``BN.WEIGHT_DECAY = 0``); frozen
    parameters are left out. Each group carries ``name`` (e.g. ``res3`` or ``res3.no_decay``).
    """
    model = _backbone(model)
    order = _order(model)
    # the model's own list (timm's hook), else every bias and norm affine (parameters of at most one dimension)
    default = {name for name, p in model.named_parameters() if p.ndim <= 1}
    hook = getattr(model, "no_weight_decay", None)
    skip_decay = hook() if hook is not None else default
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        stage = stage_of(name, order)
        no_decay = name in skip_decay
        key = f"{stage}.no_decay" if no_decay else stage
        if key not in groups:
            depth = len(order) - 1 - order.index(stage)
            groups[key] = {
                "name": key,
                "params": [],
                "lr": lr * stage_decay**depth,
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        groups[key]["params"].append(param)
    return list(groups.values())

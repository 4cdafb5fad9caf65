"""Small networks for tests: the registered architectures at a fraction of their width, with random BatchNorm."""

from __future__ import annotations

from typing import Any

import torch

import slowfast_zoo


def tiny(name: str, *, width: int = 8, num_classes: int = 5, **overrides: Any) -> slowfast_zoo.ResNet3d:
    """``create(name)`` at ``width`` channels with ``num_classes`` outputs (random weights, train mode)."""
    return slowfast_zoo.create(name, width=width, num_classes=num_classes, **overrides)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN affine/statistics and classifier, so that a swapped, skipped or folded-away tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.05)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
    return model

"""Optical flow for a flow Fast pathway (SlowFast paper Table 5c): torchvision's RAFT between consecutive Fast frames.

The weights are never downloaded here: :func:`load_raft` reads torchvision's file from the torch hub cache (or a path
you give), checks its hash, and says what is missing otherwise. :class:`FlowPathway` turns the ``[slow, fast]`` RGB
output of :func:`slowfast_zoo.create_transforms` into ``[slow, flow]`` for ``slowfast_r50_4x16_fast_flow``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import optical_flow

__all__ = ["FlowPathway", "load_raft", "raft_flow"]

_RAFT = {
    "small": (optical_flow.raft_small, optical_flow.Raft_Small_Weights.DEFAULT),
    "large": (optical_flow.raft_large, optical_flow.Raft_Large_Weights.DEFAULT),
}


def load_raft(size: str = "small", weights_path: str | os.PathLike[str] | None = None) -> nn.Module:
    """torchvision's RAFT (``"small"`` or ``"large"``) with its published weights, in eval mode.

    ``weights_path`` defaults to torchvision's file in the torch hub cache (``$TORCH_HOME/hub/checkpoints``). The file's
    sha256 must start with the prefix torchvision puts in its name.
    """
    if size not in _RAFT:
        raise ValueError(f"RAFT size must be 'small' or 'large', got {size!r}")
    build, weights = _RAFT[size]
    filename = weights.url.rsplit("/", 1)[-1]
    path = Path(weights_path) if weights_path is not None else Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"RAFT weights not found at {path}. The flow Fast pathway needs torchvision's raft_{size} weights "
            f"{filename} ({weights.url}): fetch them once with torchvision.models.optical_flow.raft_{size}"
            f"(weights='DEFAULT') on a machine with internet access, copy the file to {path.parent}, "
            "or pass weights_path="
        )
    expected = filename.rsplit("-", 1)[-1].split(".", 1)[0]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(expected):
        raise ValueError(f"{path}: sha256 {digest[:16]}... does not start with {expected}, the hash of {filename}")
    model = build(weights=None)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


@torch.no_grad()
def raft_flow(model: nn.Module, frames: torch.Tensor, num_flow_updates: int = 12) -> torch.Tensor:
    """Flow between consecutive frames: ``(3, T, H, W)`` or ``(N, 3, T, H, W)`` RGB in [0, 1] -> ``(.., 2, T, H, W)``.

    H and W must be at least 128 (RAFT's correlation pyramid).

    Flow ``t`` goes from frame ``t`` to ``t + 1`` in pixels (x, y); the last frame repeats the flow before it (the
    paper leaves the end open). Frames are padded (replicate) to a multiple of 8, as RAFT needs, and cropped back.
    """
    single = frames.dim() == 4
    x = frames.unsqueeze(0) if single else frames
    if x.dim() != 5 or x.shape[1] != 3 or x.shape[2] < 2:
        raise ValueError(f"expected RGB frames (N, 3, T, H, W) with T >= 2, got {tuple(frames.shape)}")
    n, _, t, h, w = x.shape
    if h < 128 or w < 128:
        raise ValueError(f"RAFT needs frames of at least 128x128 (its correlation pyramid), got {h}x{w}")
    pairs = x.transpose(1, 2)  # (N, T, 3, H, W)
    first = pairs[:, :-1].reshape(-1, 3, h, w) * 2 - 1  # RAFT takes [-1, 1]
    second = pairs[:, 1:].reshape(-1, 3, h, w) * 2 - 1
    pad = (0, -w % 8, 0, -h % 8)
    param = next(model.parameters())
    first = F.pad(first, pad, mode="replicate").to(param)
    second = F.pad(second, pad, mode="replicate").to(param)
    flow = model(first, second, num_flow_updates=num_flow_updates)[-1][..., :h, :w]
    flow = flow.reshape(n, t - 1, 2, h, w).to(frames.dtype)
    flow = torch.cat([flow, flow[:, -1:]], dim=1).transpose(1, 2)  # (N, 2, T, H, W)
    return flow[0] if single else flow.to(frames.device)


class FlowPathway:
    """``[slow, fast]`` normalized RGB (from a zoo transform) -> ``[slow, flow]`` for a flow Fast pathway.

    ``mean`` / ``std`` are the transform's (``model.pretrained_cfg.mean`` / ``.std``): the Fast frames are brought
    back to [0, 1] before RAFT sees them.
    """

    def __init__(
        self, raft: nn.Module, mean: Sequence[float], std: Sequence[float], num_flow_updates: int = 12
    ) -> None:
        self.raft = raft
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1)
        self.num_flow_updates = num_flow_updates

    def __call__(self, pathways: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(pathways) != 2:
            raise ValueError(f"expected [slow, fast] RGB pathways, got {len(pathways)} tensor(s)")
        slow, fast = pathways
        rgb = (fast * self.std.to(fast) + self.mean.to(fast)).clamp(0, 1)
        return [slow, raft_flow(self.raft, rgb, self.num_flow_updates)]

"""What a ResNet-3D accepts as input: one tensor or a list with one ``(N, C, T, H, W)`` float tensor per pathway."""

from __future__ import annotations

from typing import Protocol

import torch

from .layers import linspace_indices

__all__ = ["as_pathways"]


class _Pathways(Protocol):
    @property
    def num_pathways(self) -> int: ...

    @property
    def in_chans(self) -> int: ...

    @property
    def alpha(self) -> int | None: ...

    @property
    def fast_input(self) -> str: ...

    def input_chans(self, pathway: int) -> int: ...


def _check_dtype(t: torch.Tensor, dtype: torch.dtype) -> None:
    if not t.is_floating_point():
        raise TypeError(
            f"expected a floating-point clip of dtype {dtype} (normalized pixel values); got {t.dtype}: convert "
            "uint8 frames with the model's transforms (or x.float() and normalize) first"
        )
    if t.dtype != dtype and not torch.is_autocast_enabled(t.device.type):
        raise TypeError(
            f"expected input of dtype {dtype}, the parameters' dtype; got {t.dtype}: use x.to({dtype}), "
            "or torch.autocast for mixed precision"
        )


def as_pathways(
    x: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...], cfg: _Pathways, dtype: torch.dtype
) -> list[torch.Tensor]:
    """Validate the input and return it as a new list with one tensor per pathway.

    A bare tensor given to a two-pathway network is its fast pathway; the slow frames are picked as the reference
    does. A list must have exactly one tensor per pathway.
    """
    n = cfg.num_pathways
    takes = "[slow, fast] (a list of 2 tensors) or one fast-pathway tensor" if n == 2 else "one tensor"
    if isinstance(x, torch.Tensor):
        xs = [x]
    elif isinstance(x, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in x):
        xs = list(x)
        if len(xs) != n:
            raise ValueError(f"this network has {n} pathway(s) and takes {takes}; got a list of {len(xs)} tensors")
    else:
        raise TypeError(f"expected a tensor or a list of {n} tensors (N, {cfg.in_chans}, T, H, W), got {type(x)}")
    for p, t in enumerate(xs):
        chans = cfg.input_chans(p if len(xs) == n else 0)
        if t.dim() != 5 or t.shape[1] != chans:
            raise ValueError(
                f"each pathway must be (N, {chans}, T, H, W); got shape {tuple(t.shape)}"
                + ("" if t.dim() != 4 else " (add the batch dimension with x.unsqueeze(0))")
            )
        _check_dtype(t, dtype)
    if n == 1:
        return xs
    alpha = cfg.alpha
    if alpha is None:
        raise ValueError("a two-pathway network needs alpha, the Fast pathway's frame-rate ratio")
    if len(xs) == 1 and cfg.fast_input == "flow":
        raise ValueError("a flow Fast pathway takes [slow RGB (N, 3, T, H, W), flow (N, 2, alpha*T, H, W)]")
    if len(xs) == 1:
        # one clip for a two-pathway network: it is the fast pathway; pick the slow frames as the reference
        fast = xs[0]
        if fast.shape[2] % alpha:
            raise ValueError(f"a single clip for SlowFast needs T divisible by alpha={alpha}, got T={fast.shape[2]}")
        xs = [fast.index_select(2, linspace_indices(fast.shape[2], fast.shape[2] // alpha, fast.device)), fast]
    slow, fast = xs
    if fast.shape[2] != alpha * slow.shape[2] or slow.shape[0] != fast.shape[0] or slow.shape[3:] != fast.shape[3:]:
        raise ValueError(
            f"expected slow (N, 3, T, H, W) and fast (N, 3, {alpha}*T, H, W) (alpha={alpha}); "
            f"got slow {tuple(slow.shape)} and fast {tuple(fast.shape)}"
        )
    return xs

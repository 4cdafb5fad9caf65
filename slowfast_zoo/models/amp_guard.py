"""A Conv3d that steps around a oneDNN bf16 weight-gradient bug on CPUs with AVX-512 BF16 and no AMX.

The bug: oneDNN's ``jit_bf16:avx512_core_bf16`` convolution, ``backward_weights``, returns garbage or NaN weight
gradients for temporal kernels deeper than the clip is long (no upstream report found; the repro is in
``tests/models/test_amp_guard.py``).
Measured here (AMD EPYC, AVX-512 BF16, no AMX; torch 2.14.1; ``(N, C_in, T, 4, 4)`` inputs with
``C_in`` 16-256, kernel ``(k, 1, 1)`` or ``(k, 3, 3)``, padding ``k // 2``; bad = non-finite or off by > 5 %):

- temporal stride 1: wrong in every call for ``1 < T < k`` (k = 3: T = 2; k = 5: T = 2..4; k = 7: T = 2..6);
  right for T = 1 and T >= k;
- temporal stride 2: wrong for k = 5, T = 3..4 and k = 7, T = 3..7; but for k = 7, T = 5..7 the fp32 weight
  gradient is wrong too (T = 5 crashed the process), which no cast can fix: no registered model has a stride-2
  (alpha 2) lateral;
- temporal stride 4 and 8 (the SlowFast laterals with alpha 4 or 8): right for T = 1..16;
- a 3-channel input (the stem): right; input gradients and forward outputs: right everywhere.

So under CPU autocast, whenever the weight needs a gradient and ``1 < T <= k``, the convolution runs in fp32.
Those are small-clip shapes (e.g. a 2-frame slow pathway in fine-tuning), so the cost is small; inference
(no gradient) and full-length clips keep bf16.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GuardedConv3d", "needs_fp32"]


def needs_fp32(frames: int, kernel_t: int) -> bool:
    """Whether a bf16 conv weight gradient with this clip length and temporal kernel may hit the oneDNN bug."""
    return kernel_t > 1 and 1 < frames <= kernel_t


class GuardedConv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters and state-dict keys) that runs in fp32 under CPU autocast for the bug's shapes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and torch.is_autocast_enabled("cpu")
            and torch.is_grad_enabled()
            and self.weight.requires_grad
            and needs_fp32(x.shape[2], self.kernel_size[0])
        ):
            with torch.autocast("cpu", enabled=False):
                bias = None if self.bias is None else self.bias.float()
                return self._conv_forward(x.float(), self.weight.float(), bias)
        return super().forward(x)

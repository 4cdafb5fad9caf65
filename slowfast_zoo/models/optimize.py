"""Inference fast path: BatchNorm folded into the convolutions, ReLU and residual adds fused into them (CPU),
channels-last 3-D memory format, optional bf16 weights stored once.

``optimize_for_inference(model)`` returns an eval-mode copy that computes the same logits (to float rounding) with
fewer kernels and a memory layout oneDNN (CPU) and cuDNN (GPU) run faster::

    fast = slowfast_zoo.optimize_for_inference(model, dtype=torch.bfloat16)  # model itself is left untouched
    with torch.inference_mode():
        logits = fast([t.bfloat16() for t in x])                             # inputs may stay contiguous

Neither function changes the model it is given unless ``inplace=True``; a folded model has no BatchNorm left, so it
must not be trained (its ``state_dict`` also differs: ``bn.*`` entries are gone and the convs have a ``bias``; save or
publish the weights before fusing).
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from .freeze import FrozenBatchNorm3d
from .layers import Bottleneck, ConvBnAct, NonLocal

__all__ = ["fold_conv_bn", "fuse_activations", "fuse_bn", "optimize_for_inference"]

M = TypeVar("M", bound=nn.Module)
_BN = (nn.BatchNorm3d, FrozenBatchNorm3d)


def _bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) of an eval-mode BatchNorm, in float64: ``bn(x) == x * scale + shift``."""
    # BatchNorm3d or FrozenBatchNorm3d: their tensors through Module.__getattr__, typed here
    stats: list[torch.Tensor | None] = [getattr(bn, k, None) for k in ("running_mean", "running_var", "weight", "bias")]
    mean_t, var_t, weight_t, bias_t = stats
    if mean_t is None or var_t is None:
        raise ValueError("cannot fold a BatchNorm3d without running statistics (track_running_stats=False)")
    mean, var = mean_t.double(), var_t.double()
    weight = weight_t.double() if weight_t is not None else torch.ones_like(mean)
    bias = bias_t.double() if bias_t is not None else torch.zeros_like(mean)
    scale = weight * (var + float(cast(float, bn.eps))).rsqrt()
    return scale, bias - mean * scale


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv3d, bn: nn.Module) -> None:
    """Fold an eval-mode ``bn`` that follows ``conv`` into ``conv``'s weight and bias, in place (float64 math).

    Afterwards ``conv(x)`` equals the old ``bn(conv(x))``; replace ``bn`` by ``nn.Identity`` yourself.
    """
    if not isinstance(conv, nn.Conv3d) or not isinstance(bn, _BN):
        raise TypeError(f"expected Conv3d and BatchNorm3d / FrozenBatchNorm3d, got {type(conv)} and {type(bn)}")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"BatchNorm has {bn.num_features} channels but the conv gives {conv.out_channels}")
    scale, shift = _bn_affine(bn)
    w = conv.weight
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(shift)
    new_w = (w.double() * scale.view(-1, 1, 1, 1, 1)).to(w.dtype)
    new_b = (bias * scale + shift).to(dtype=w.dtype, device=w.device)
    # keep the weight's memory format (a channels-last model stays channels-last)
    fmt = torch.channels_last_3d if w.is_contiguous(memory_format=torch.channels_last_3d) else torch.contiguous_format
    w.copy_(new_w.contiguous(memory_format=fmt))
    if conv.bias is None:
        conv.bias = nn.Parameter(new_b, requires_grad=w.requires_grad)
    else:
        conv.bias.copy_(new_b)


def _copy(model: M) -> M:
    """Deep copy of the parameters and buffers; the immutable records a zoo model carries are shared, not copied."""
    shared = ("pretrained_cfg", "load_report", "cfg", "feature_info")
    memo = {id(v): v for m in model.modules() for k, v in vars(m).items() if k in shared}
    return copy.deepcopy(model, memo)


def _check_eval(model: nn.Module, what: str) -> None:
    training = [name or "<model>" for name, m in model.named_modules() if isinstance(m, nn.BatchNorm3d) and m.training]
    if training:
        raise ValueError(
            f"{what} folds BatchNorm running statistics, but {len(training)} BatchNorm3d module(s) are in training "
            f"mode (e.g. {training[0]}): call model.eval() first, or use optimize_for_inference(model), which works "
            "on an eval-mode copy"
        )


def fuse_bn(model: M, *, inplace: bool = False) -> M:
    """Fold every BatchNorm that follows a Conv3d (conv-BN-act units, stems, fusion laterals, non-local outputs).

    The model (and every BatchNorm3d in it) must be in eval mode: in training mode BatchNorm normalizes with batch
    statistics, which cannot be folded, so a ``ValueError`` is raised. Returns a fused deep copy, or ``model``
    itself changed when ``inplace=True``. Logits are unchanged up to float rounding.
    """
    _check_eval(model, "fuse_bn")
    if not inplace:
        model = _copy(model)
    for m in model.modules():
        if isinstance(m, ConvBnAct) and isinstance(m.bn, _BN):
            fold_conv_bn(m.conv, m.bn)
            m.bn = nn.Identity()
        elif isinstance(m, NonLocal) and isinstance(m.bn, _BN):
            fold_conv_bn(m.out, m.bn)
            m.bn = nn.Identity()
    return model


class _Float32AvgPool3d(nn.AvgPool3d):
    """``AvgPool3d`` computed in float32 on a low-precision input (the CPU has no bf16 ``avg_pool3d`` kernel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


def _pool_in_float32(model: nn.Module) -> None:
    for m in model.modules():
        if type(m) is nn.AvgPool3d:
            m.__class__ = _Float32AvgPool3d  # same attributes (heads read kernel_size), float32 forward


def _onednn_fusion() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    except (AttributeError, RuntimeError):
        return False


_ONEDNN_FUSION = _onednn_fusion()


class _FusedConv3d(nn.Conv3d):
    """``Conv3d`` -> (+ residual) -> ReLU in one oneDNN kernel (post-ops) on CPU; separate ops elsewhere.

    The fused kernel adds and applies ReLU to the accumulator before it is stored: fp32 results are those of the
    separate ops; in bf16 the sum is rounded once instead of twice. It runs on CPU tensors of the weight's dtype
    without autograd; under autocast, on other devices, with gradients or under ``torch.compile`` (which fuses these
    itself) the separate ops run, with the same parameters.
    """

    relu: bool = True

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight
        if (
            _ONEDNN_FUSION
            and torch.backends.mkldnn.enabled  # a user who turned oneDNN off gets PyTorch's own kernels
            and x.device.type == "cpu"
            and x.dtype == w.dtype
            and (residual is None or residual.dtype == w.dtype)
            and not torch.is_autocast_enabled("cpu")
            and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
            and not torch.compiler.is_compiling()  # inductor has no fake kernel for it, and fuses by itself
        ):
            args = (w, self.bias, list(self.padding), list(self.stride), list(self.dilation), self.groups)
            act = "relu" if self.relu else None
            if residual is None:
                return torch.ops.mkldnn._convolution_pointwise(x, *args, act or "none", [], "")
            if x.dtype == torch.float32 or residual.is_contiguous(memory_format=torch.channels_last_3d):
                return torch.ops.mkldnn._convolution_pointwise.binary(x, residual, *args, "add", None, act, [], "")
            # a contiguous (NCDHW) model: oneDNN fuses the add only channels-last and otherwise leaves it to ATen's
            # add_relu, which has no bf16 kernel; add and ReLU here instead
            y = torch.ops.mkldnn._convolution_pointwise(x, *args, "none", [], "").add_(residual)
            return y.relu_() if self.relu else y
        y = super().forward(x)
        if residual is not None:
            y = y + residual
        return F.relu(y) if self.relu else y


class _FusedBottleneck(Bottleneck):
    """Bottleneck whose last convolution also adds the shortcut and applies the ReLU (inference: no drop path)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = self.c.conv(self.b(self.a(x)), shortcut)
        return out if self.nl is None else self.nl(out)


def _fusable(conv: nn.Module) -> bool:
    return isinstance(conv, nn.Conv3d) and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def fuse_activations(model: M) -> M:
    """In place: every conv-ReLU unit whose BatchNorm is folded computes conv + ReLU in one kernel, and every
    bottleneck its last conv + shortcut add + ReLU (CPU, oneDNN post-ops). Parameters and state-dict keys stay;
    a model fused already is left as it is.

    The folded convs without a ReLU (projection shortcuts) call oneDNN directly too: PyTorch's own dispatch sends
    thin fp32 3-D convolutions (the Fast pathway's) to ``slow_conv3d``, with a layout copy in and out.
    """
    for m in model.modules():
        folded = isinstance(m, ConvBnAct) and isinstance(m.bn, nn.Identity) and _fusable(m.conv)
        if folded and type(m.conv) is not _FusedConv3d and (type(m.act) is nn.ReLU or isinstance(m.act, nn.Identity)):
            conv: Any = m.conv  # its class is swapped in place (parameters and keys stay): beyond static types
            conv.__class__ = _FusedConv3d
            conv.relu = not isinstance(m.act, nn.Identity)
            m.act = nn.Identity()
    for m in model.modules():
        if type(m) is Bottleneck and isinstance(m.c.bn, nn.Identity) and _fusable(m.c.conv):
            last: Any = m.c.conv
            last.__class__ = _FusedConv3d
            last.relu = True  # the bottleneck's ReLU, after the add
            block: Any = m
            block.__class__ = _FusedBottleneck
    return model


def optimize_for_inference(
    model: M,
    *,
    channels_last: bool = True,
    fuse: bool = True,
    dtype: torch.dtype | None = None,
    inplace: bool = False,
) -> M:
    """An inference-only version of ``model``: eval mode, BatchNorm folded, ReLU fused, channels-last 3-D, no gradients.

    Args:
        channels_last: store conv weights as ``torch.channels_last_3d`` (NDHWC); activations follow, so inputs may
            stay contiguous. Faster on CPU (oneDNN; several times with bf16 on AMX) and on GPU (cuDNN, tensor cores).
        fuse: fold BatchNorm into the convolutions (:func:`fuse_bn`), and on CPU run each conv's ReLU, and each
            bottleneck's shortcut add + ReLU, inside the convolution kernel (:func:`fuse_activations`).
        dtype: also cast the parameters, e.g. ``torch.bfloat16`` (feed inputs of that dtype): the weights are stored
            once in that dtype, which is faster than ``torch.autocast`` (it casts every weight on every call, and the
            fused kernels step aside under it); ``None`` keeps them. Average pools then run in float32 (the CPU has
            no bf16 ``avg_pool3d``): a head's pool, over a small map, costs little.
        inplace: change ``model`` itself instead of a deep copy (saves the copy's memory). A model still in
            training mode is refused then, since it is presumably being trained.

    Numerics: fp32 logits agree with the unfused model to float rounding (~1e-5 relative); bf16 to bf16 precision.
    """
    if inplace:
        if model.training:
            raise ValueError(
                "optimize_for_inference(inplace=True) on a model in training mode: call model.eval() first, or "
                "leave inplace=False to get an optimized copy"
            )
        _check_eval(model, "optimize_for_inference")
    else:
        model = _copy(model)
    model.eval()
    model.requires_grad_(False)
    if fuse:
        fuse_activations(fuse_bn(model, inplace=True))
    if dtype is not None:
        model.to(dtype=dtype)
        if dtype != torch.float32:
            _pool_in_float32(model)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    return model

"""bf16 autocast on CPU: conv weight gradients stay right for the shapes that hit a oneDNN bug."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slowfast_zoo.models.layers import Bottleneck, ConvBnAct, TimeStridedConv


def bf16_weight_grad(conv: torch.nn.Conv3d, x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    conv.weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    y.backward(grad_out)
    return conv.weight.grad


def fp32_weight_grad(conv: torch.nn.Conv3d, x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """The expected gradient from torch's own fp32 convolution, not from the module under test."""
    w = conv.weight.detach().clone().requires_grad_()
    F.conv3d(x, w, None, conv.stride, conv.padding, conv.dilation).backward(grad_out)
    return w.grad


def test_issue_repro_through_the_bottleneck_conv(one_thread) -> None:
    """The repro: 2 frames into conv ``a`` with a 3-deep temporal kernel, as res4/res5 of a 2-frame slow path.

    On an AVX-512 BF16 CPU without AMX the unguarded bf16 weight gradient is non-finite in every call.
    """
    block = Bottleneck(80, 320, 32, kernel_t=3)
    conv = block.a.conv
    assert conv.kernel_size == (3, 1, 1) and conv.padding == (1, 0, 0)
    torch.manual_seed(0)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(32, 80, 3, 1, 1) * 0.05)
    for _ in range(20):  # the bug is not every call on every machine: try several
        x = torch.randn(2, 80, 2, 4, 4)
        grad_out = torch.randn(2, 32, 2, 4, 4)
        got = bf16_weight_grad(conv, x, grad_out)
        assert torch.isfinite(got).all()
        # bf16 inputs (8 mantissa bits) summed over 2*2*4*4 = 64 products: a few bf16 ulps of the gradient's scale
        expected = fp32_weight_grad(conv, x, grad_out)
        torch.testing.assert_close(got, expected, rtol=0, atol=0.02 * expected.abs().max().item())


@pytest.mark.parametrize(
    ("frames", "kernel_t", "stride_t"),
    [(2, 5, 1), (4, 5, 1), (6, 7, 1), (3, 5, 2), (4, 7, 2)],  # measured wrong in bf16, right in fp32 (amp_guard.py)
)
def test_measured_bad_shapes_get_right_gradients(one_thread, frames: int, kernel_t: int, stride_t: int) -> None:
    conv = ConvBnAct(64, 32, (kernel_t, 1, 1), (stride_t, 1, 1), (kernel_t // 2, 0, 0)).conv
    torch.manual_seed(1)
    x = torch.randn(2, 64, frames, 4, 4)
    out_t = (frames + 2 * (kernel_t // 2) - kernel_t) // stride_t + 1
    grad_out = torch.randn(2, 32, out_t, 4, 4)
    got = bf16_weight_grad(conv, x, grad_out)
    expected = fp32_weight_grad(conv, x, grad_out)
    torch.testing.assert_close(got, expected, rtol=0, atol=0.02 * expected.abs().max().item())


def test_full_length_clips_and_inference_stay_bf16(one_thread) -> None:
    """The guard is for the bug's shapes only: 8 frames, or no gradient, still run the convolution in bf16."""
    conv = ConvBnAct(16, 16, (3, 1, 1), padding=(1, 0, 0)).conv
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(1, 16, 8, 4, 4)).dtype == torch.bfloat16
        with torch.no_grad():
            assert conv(torch.randn(1, 16, 2, 4, 4)).dtype == torch.bfloat16
        assert conv(torch.randn(1, 16, 2, 4, 4)).dtype == torch.float32  # the guarded case
    lateral = TimeStridedConv(8, alpha=4, kernel_t=7).conv  # stride-4 laterals were right for every length
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lateral(torch.randn(1, 8, 8, 4, 4)).dtype == torch.bfloat16

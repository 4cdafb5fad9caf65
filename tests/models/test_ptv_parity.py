"""Parity with the reference implementation: PyTorchVideo 0.1.5's own hub builders (pretrained=False).

The same random weights, converted through the zoo's PyTorchVideo key scheme, must give the same logits. PyTorchVideo
and PySlowFast give bit-identical logits for the same weights (published_models.md), so this pins the zoo to both.
Bit-identical holds for ``head_pool="fixed"`` (PyTorchVideo's fixed AvgPool3d head) and the per-position logits; the
zoo's default adaptive head pools in another order and agrees to float rounding (1e-5), not bit for bit.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from tiny import randomize

import slowfast_zoo
from slowfast_zoo.weights.keys import from_zoo, to_zoo

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pytorchvideo.models import hub
    from pytorchvideo.models.resnet import create_resnet
    from pytorchvideo.models.slowfast import create_slowfast


def _slowfast_r50_4x16(pretrained: bool = False, **kw):
    # no hub entry; the PTV model zoo row uses create_slowfast with alpha 8 and fusion kernel 5
    return create_slowfast(
        slowfast_fusion_conv_kernel_size=(5, 1, 1),
        slowfast_fusion_conv_stride=(8, 1, 1),
        head_pool_kernel_sizes=((4, 7, 7), (32, 7, 7)),
        **kw,
    )


def _slow_r50_4x16(pretrained: bool = False, **kw):
    return create_resnet(head_pool_kernel_size=(4, 7, 7), stem_conv_kernel_size=(1, 7, 7), **kw)


# zoo arch -> PyTorchVideo builder
BUILDERS = {
    "slow_r50_8x8": hub.slow_r50,
    "slow_r50_4x16": _slow_r50_4x16,
    "slowfast_r50_8x8": hub.slowfast_r50,
    "slowfast_r50_4x16": _slowfast_r50_4x16,
    "slowfast_r101_8x8": hub.slowfast_r101,
    "slowfast_r101_50_50_16x8": hub.slowfast_16x8_r101_50_50,
    "i3d_r50_8x8": hub.i3d_r50,
    "c2d_r50_8x8": hub.c2d_r50,
}


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(BUILDERS))
def test_logits_equal_pytorchvideo(arch: str) -> None:
    torch.manual_seed(0)
    ptv = BUILDERS[arch](pretrained=False)
    randomize(ptv)
    ptv.eval()
    ptv_sd = ptv.state_dict()

    model = slowfast_zoo.create(arch, head_pool="fixed", dropout=0.0)
    report = slowfast_zoo.load_checkpoint(model, ptv_sd)
    assert report.key_scheme == "ptv"
    model.eval()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ptv.parameters())

    cfg = model.cfg
    x = [torch.randn(1, 3, cfg.frames(p), 224, 224) for p in range(cfg.num_pathways)]
    with torch.no_grad():
        expected = ptv(list(x) if len(x) == 2 else x[0])  # PTV rewrites the list it is given
        ours = model(x)
        positions = model.position_logits(x)
    assert expected.shape == ours.shape == (1, 400)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    # per-position logits go through the very same ops as PTV's head: bit-identical
    assert torch.equal(positions.reshape(1, 400), expected)
    # and the weights go back to PyTorchVideo's names unchanged
    back = from_zoo(model.state_dict(), "ptv", temporal_pool=cfg.temporal_pool > 1)
    assert back.keys() == ptv_sd.keys()
    assert all(torch.equal(back[k], ptv_sd[k]) for k in back)


@pytest.mark.usefixtures("one_thread")  # bit-for-bit across implementations: see the fixture
def test_tiny_slowfast_matches_pytorchvideo_bit_exactly() -> None:
    """Fast check (not marked slow): a width-8 SlowFast built by PTV's create_slowfast at 64x64 input."""
    torch.manual_seed(1)
    ptv = create_slowfast(
        model_num_class=10,
        stem_dim_outs=(8, 1),
        head_pool_kernel_sizes=((2, 2, 2), (8, 2, 2)),
        slowfast_fusion_conv_kernel_size=(7, 1, 1),
    )
    randomize(ptv, seed=1)
    ptv.eval()
    model = slowfast_zoo.create(
        "slowfast_r50_8x8", width=8, num_classes=10, num_frames=8, crop_size=64, head_pool="fixed"
    )
    model.load_state_dict(to_zoo(ptv.state_dict()))
    model.eval()
    x = [torch.randn(2, 3, 2, 64, 64), torch.randn(2, 3, 8, 64, 64)]
    with torch.no_grad():
        expected = ptv(list(x))
        assert torch.equal(model.position_logits(x).reshape(2, 10), expected)  # head_pool="fixed": bit-identical
        adaptive = slowfast_zoo.create("slowfast_r50_8x8", width=8, num_classes=10, num_frames=8, crop_size=64)
        adaptive.load_state_dict(model.state_dict())
        # the default adaptive head: the same scores to float rounding only (what the README claims)
        torch.testing.assert_close(adaptive.eval()(x), expected, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "builder"),
    [("slow_r50_4x16_det", hub.slow_r50_detection), ("slowfast_r50_8x8_det", hub.slowfast_r50_detection)],
)
def test_detector_scores_equal_pytorchvideo(arch: str, builder) -> None:
    """AVA detectors: res5 dilation, RoIAlign(7x7, 1/16, aligned=False), spatial max, sigmoid outside the model."""
    torch.manual_seed(0)
    ptv = builder(pretrained=False)
    randomize(ptv)
    ptv.eval()
    model = slowfast_zoo.create(arch)
    assert slowfast_zoo.load_checkpoint(model, ptv.state_dict()).key_scheme == "ptv_wrapper"
    model.eval()
    cfg = model.cfg
    x = [torch.randn(2, 3, cfg.frames(p), 128, 160) for p in range(cfg.num_pathways)]
    boxes = torch.tensor([[0, 10.0, 20.0, 90.0, 120.0], [1, 0.0, 0.0, 159.0, 127.0], [1, 40.5, 30.25, 80.0, 64.0]])
    with torch.no_grad():
        expected = ptv(list(x) if len(x) == 2 else x[0], boxes)  # PTV applies the sigmoid in its head
        ours = model(x, boxes)
    torch.testing.assert_close(ours.sigmoid(), expected, rtol=0, atol=1e-6)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ptv.parameters())

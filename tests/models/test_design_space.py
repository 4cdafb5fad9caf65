"""The SlowFast paper's design space (Table 5): every row builds by name, runs, costs what the paper says, exports.

Paper figures are the authors' (Feichtenhofer et al., "SlowFast Networks for Video Recognition", ICCV 2019, Table 5:
GFLOPs of one 256^2 clip, Kinetics-400 top-1, 30 views). Parameter and GFLOPs counts are checked against an
independent build of each design with PyTorchVideo 0.1.5 (its ``create_slowfast`` / ``create_resnet``, with the row's
lateral as its ``fusion_builder``), never against this package.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from einops import rearrange
from tiny import tiny
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import slowfast_zoo
from slowfast_zoo.models.layers import FastInput, TimeStridedSample, TimeToChannel

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pytorchvideo.models.resnet import create_resnet
    from pytorchvideo.models.slowfast import create_slowfast

pytestmark = pytest.mark.usefixtures("one_thread")

#: SlowFast paper Table 5 (a: fusion, b: channel ratio beta, c: Fast pathway input): (GFLOPs, top-1)
PAPER = {
    "slow_r50_4x16": (27.3, 72.6),  # Table 5a "Slow-only"
    "fast_r50_4x16": (6.4, 51.7),  # Table 5a "Fast-only"
    "slowfast_r50_4x16_nolateral": (34.2, 73.5),  # Table 5a "SlowFast, w/o lateral"
    "slowfast_r50_4x16_ttoc_sum": (34.2, 74.5),  # Table 5a "TtoC, sum"
    "slowfast_r50_4x16_ttoc_concat": (39.8, 74.3),  # Table 5a "TtoC, concat"
    "slowfast_r50_4x16_tsample": (34.9, 75.4),  # Table 5a "T-sample"
    "slowfast_r50_4x16": (36.1, 75.6),  # Table 5a "T-conv"
    "slowfast_r50_4x16_beta4": (54.5, 75.6),  # Table 5b beta = 1/4
    "slowfast_r50_4x16_beta6": (41.8, 75.8),  # Table 5b beta = 1/6
    "slowfast_r50_4x16_beta12": (32.8, 75.2),  # Table 5b beta = 1/12
    "slowfast_r50_4x16_beta16": (30.6, 75.1),  # Table 5b beta = 1/16
    "slowfast_r50_4x16_beta32": (28.6, 74.2),  # Table 5b beta = 1/32
    "slowfast_r50_4x16_fast_halfres": (34.4, 74.7),  # Table 5c "RGB, half spatial resolution, beta = 1/4"
    "slowfast_r50_4x16_fast_gray": (34.1, 75.5),  # Table 5c "gray-scale"
    "slowfast_r50_4x16_fast_timediff": (34.2, 74.5),  # Table 5c "time difference"
    "slowfast_r50_4x16_fast_flow": (35.1, 73.8),  # Table 5c "optical flow"
}
#: rows no reading of the paper reaches: our count (GMACs), stated in the row's notes and the README
UNREACHED = {"fast_r50_4x16": 6.90, "slowfast_r50_4x16_beta4": 53.60}
NAMES = sorted(PAPER)
FIGURE2 = [
    "slow_r50_2x32",
    "slow_r50_16x8",
    "slow_r101_2x32",
    "slow_r101_4x16",
    "slow_r101_8x8",
    "slow_r101_16x8",
    "slowfast_r50_2x32",
    "slowfast_r101_2x32",
    "slowfast_r101_4x16",
]
PARAMETER_FREE_INPUT = [
    "slowfast_r50_4x16_fast_gray",
    "slowfast_r50_4x16_fast_timediff",
    "slowfast_r50_4x16_fast_halfres",
]


def gmacs(model: nn.Module, inputs: list[torch.Tensor] | torch.Tensor) -> float:
    """Multiply-adds / 1e9 of convolutions, linear layers and matmuls (the README's convention)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(inputs)
    counts = counter.get_flop_counts()["Global"]
    assert {str(op) for op in counts} <= {"aten.convolution", "aten.addmm", "aten.bmm", "aten.mm"}
    return sum(counts.values()) / 2 / 1e9


def full_size_input(cfg, size: int = 256, device: str = "meta") -> list[torch.Tensor]:
    return [
        torch.empty(1, cfg.input_chans(p), cfg.frames(p), size, size, device=device) for p in range(cfg.num_pathways)
    ]


# ---- registry ------------------------------------------------------------------------------------------------------
def test_every_row_of_table5_and_figure2_is_registered() -> None:
    assert set(PAPER) | set(FIGURE2) <= set(slowfast_zoo.list_models())
    listed = slowfast_zoo.list_models("slowfast_r50_4x16*")
    assert {n for n in PAPER if n.startswith("slowfast_r50_4x16")} == set(listed)
    for name in NAMES + FIGURE2:
        cfg = slowfast_zoo.get_pretrained_cfg(name)
        if name not in ("slow_r50_4x16", "slowfast_r50_4x16"):
            assert cfg.tag is None and cfg.hub is None and cfg.origin is None, f"{name} is config-only"
            assert cfg.notes, f"{name} says what it is"


# ---- cost: the paper's number ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_cost_equals_the_paper(name: str) -> None:
    cfg = slowfast_zoo.get_pretrained_cfg(name).model
    model = slowfast_zoo.create(name, device="meta")
    count = gmacs(model, full_size_input(cfg) if cfg.num_pathways == 2 else full_size_input(cfg)[0])
    paper = PAPER[name][0]
    within = abs(count - paper) <= 0.25 or abs(count - paper) <= 0.01 * paper
    if name in UNREACHED:  # the documented gap: our count as stated, and really outside the tolerance
        assert count == pytest.approx(UNREACHED[name], abs=0.005) and not within, (name, count, paper)
    else:
        assert within, f"{name}: counted {count:.2f} GFLOPs, paper {paper}"


# ---- cost and size: an independent build (PyTorchVideo) --------------------------------------------------------------
class _Lateral(nn.Module):
    """Oracle lateral for PyTorchVideo's ``fusion_builder``, written from the paper's definitions."""

    def __init__(self, kind: str, dim: int, alpha: int, ratio: int, kernel: int, up: int) -> None:
        super().__init__()
        self.kind, self.alpha, self.up = kind, alpha, up
        if kind == "tconv":
            self.conv = nn.Conv3d(dim, dim * ratio, (kernel, 1, 1), (alpha, 1, 1), (kernel // 2, 0, 0), bias=False)
            self.bn = nn.BatchNorm3d(dim * ratio)

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        slow, fast = x
        if self.kind == "none":
            return [slow, fast]
        if self.kind == "tconv":
            lateral = torch.relu(self.bn(self.conv(fast)))
        elif self.kind == "tsample":
            lateral = fast[:, :, :: self.alpha]
        else:
            lateral = rearrange(fast, "n c (t a) h w -> n (a c) t h w", a=self.alpha)
        if self.up > 1:
            lateral = nn.functional.interpolate(lateral, scale_factor=(1, self.up, self.up))
        return [slow + lateral if self.kind == "ttoc_sum" else torch.cat([slow, lateral], 1), fast]


class _FastWidth(int):
    """PyTorchVideo divides channel counts by the reduction ratio; this one scales them by fast_width / 64 instead."""

    def __new__(cls, fast_width: int) -> _FastWidth:
        obj = int.__new__(cls, max(64 // fast_width, 1))
        obj.fast_width = fast_width
        return obj

    def __rfloordiv__(self, other: int) -> int:
        return other * self.fast_width // 64


def _ptv_slowfast(cfg) -> nn.Module:
    fast_width = _FastWidth(cfg.pathway_width(1))
    extra = {"tconv": cfg.fusion_channel_ratio, "tsample": 1, "ttoc_concat": cfg.alpha}.get(cfg.fusion, 0)
    return create_slowfast(
        slowfast_channel_reduction_ratio=(fast_width,),
        slowfast_conv_channel_fusion_ratio=extra,
        fusion_builder=lambda fusion_dim_in, stage_idx: _Lateral(
            cfg.fusion if stage_idx < 4 else "none",
            fusion_dim_in // fast_width,
            cfg.alpha,
            cfg.fusion_channel_ratio,
            cfg.fusion_kernel_t,
            cfg.fast_downsample,
        ),
        input_channels=(3, {"rgb": 3, "flow": 2}.get(cfg.fast_input, 1)),
        model_depth=101 if cfg.layers[2] == 23 else 50,
        stem_dim_outs=(64, int(fast_width.fast_width)),
        head_pool=nn.AdaptiveAvgPool3d,
    )


def _ptv_single(cfg) -> nn.Module:
    fast = cfg.width == 8  # the Fast pathway alone
    return create_resnet(
        stem_dim_out=cfg.width,
        stem_conv_kernel_size=(cfg.stem_kernel_t[0], 7, 7),
        stage_conv_a_kernel_size=((3, 1, 1),) * 4 if fast else ((1, 1, 1), (1, 1, 1), (3, 1, 1), (3, 1, 1)),
        model_depth=101 if cfg.layers[2] == 23 else 50,
        head_pool=nn.AdaptiveAvgPool3d,
        head_output_size=(1, 1, 1),
    )


@pytest.mark.parametrize("name", NAMES + FIGURE2)
def test_counts_equal_an_independent_pytorchvideo_build(name: str) -> None:
    cfg = slowfast_zoo.get_pretrained_cfg(name)
    model_cfg = cfg.model
    with torch.device("meta"):
        oracle = _ptv_slowfast(model_cfg) if model_cfg.num_pathways == 2 else _ptv_single(model_cfg)
    x = full_size_input(model_cfg)
    if model_cfg.num_pathways == 2 and model_cfg.fast_input in ("gray", "timediff"):
        x[1] = torch.empty(1, 1, *x[1].shape[2:], device="meta")  # the oracle takes the one gray channel directly
    if model_cfg.fast_downsample > 1:
        x[1] = torch.empty(*x[1].shape[:3], 128, 128, device="meta")
    ours = slowfast_zoo.create(name, device="meta")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in oracle.parameters()) == cfg.params
    expected = gmacs(oracle, x if len(x) == 2 else x[0])
    assert gmacs(ours, full_size_input(model_cfg) if len(x) == 2 else x[0]) == pytest.approx(expected, abs=1e-6)
    assert cfg.gflops == pytest.approx(expected, abs=0.006)


# ---- build, forward, backward on tiny sizes -------------------------------------------------------------------------
def small(name: str, **kw) -> slowfast_zoo.ResNet3d:
    """Width 32 (beta = 1/32 keeps one Fast channel), 5 classes."""
    return tiny(name, width=32, **kw)


def tiny_input(model, batch: int = 2, size: int = 32) -> list[torch.Tensor] | torch.Tensor:
    cfg = model.cfg
    if cfg.num_pathways == 1:
        return torch.randn(batch, 3, 8, size, size)
    return [torch.randn(batch, cfg.input_chans(p), 2 * (cfg.alpha if p else 1), size, size) for p in range(2)]


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = small(name)
    x = tiny_input(model)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.logsumexp(dim=1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing[:5]
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 5)


@pytest.mark.parametrize("name", PARAMETER_FREE_INPUT)
def test_export_equals_eager_for_the_in_model_input_steps(name: str) -> None:
    torch.manual_seed(0)
    model = small(name).eval()
    clip = torch.randn(1, 3, 16, 32, 32)  # one RGB clip, as predict() feeds it
    exported = torch.export.export(model, (clip,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(clip), model(clip), rtol=1e-5, atol=1e-5)


def test_rgb_variants_take_the_same_input_as_the_default() -> None:
    """Gray, time difference and half resolution are computed inside: an RGB clip or [slow, fast] RGB goes in."""
    for name in PARAMETER_FREE_INPUT:
        model = small(name).eval()
        slow, fast = torch.randn(1, 3, 2, 64, 64), torch.randn(1, 3, 16, 64, 64)
        with torch.no_grad():
            assert model([slow, fast]).shape == (1, 5)


# ---- the input steps and laterals do what the paper says ------------------------------------------------------------
def test_gray_is_bt601_luma_and_timediff_differences_consecutive_frames() -> None:
    x = torch.zeros(1, 3, 3, 2, 2)
    x[:, 0], x[:, 1], x[:, 2] = 1.0, 2.0, 4.0  # R, G, B
    x[:, :, 1] *= 3  # frame 1 three times as bright, frame 2 twice
    x[:, :, 2] *= 2
    luma = 0.299 * 1 + 0.587 * 2 + 0.114 * 4  # ITU-R BT.601
    gray = FastInput("gray")(x)
    assert gray.shape == (1, 1, 3, 2, 2)
    torch.testing.assert_close(gray[0, 0, :, 0, 0], torch.tensor([luma, 3 * luma, 2 * luma]))
    diff = FastInput("timediff")(x)
    torch.testing.assert_close(diff[0, 0, :, 0, 0], torch.tensor([0.0, 2 * luma, -luma]))
    half = FastInput("rgb", downsample=2)(torch.arange(16.0).view(1, 1, 1, 4, 4).expand(1, 3, 1, 4, 4))
    torch.testing.assert_close(half[0, 0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))  # 2x2 block means


def test_time_strided_sample_and_time_to_channel_layouts() -> None:
    alpha = 4
    fast = torch.arange(2 * 8, dtype=torch.float32).view(1, 2, 8, 1, 1)  # value = 8 * channel + frame
    slow = torch.zeros(1, 3, 2, 1, 1)
    out = TimeStridedSample(2, alpha)(slow, fast)
    assert out.shape == (1, 5, 2, 1, 1)
    assert out[0, 3:, :, 0, 0].tolist() == [[0, 4], [8, 12]]  # frames 0 and alpha of each channel
    out = TimeToChannel(2, alpha, "concat")(slow, fast)
    assert out.shape == (1, 3 + 8, 2, 1, 1)
    # slow step t gets frames alpha*t .. alpha*t+3; channel block a holds frame alpha*t + a of every Fast channel
    assert out[0, 3:, 1, 0, 0].tolist() == [4, 12, 5, 13, 6, 14, 7, 15]
    summed = TimeToChannel(2, alpha, "sum")(torch.ones(1, 8, 2, 1, 1), fast)
    assert summed[0, :, 0, 0, 0].tolist() == [1, 9, 2, 10, 3, 11, 4, 12]


# ---- the design is data --------------------------------------------------------------------------------------------
def test_any_combination_builds_through_create() -> None:
    model = slowfast_zoo.create(
        "slowfast_r50_8x8", width=32, num_classes=3, fusion="tsample", fast_input="timediff", beta_inv=4
    )
    assert model.cfg.alpha == 4 and model.cfg.pathway_width(1) == 8
    assert model(torch.randn(1, 3, 16, 32, 32)).shape == (1, 3)
    flow = slowfast_zoo.create("slowfast_r50_4x16_fast_flow", width=32, num_classes=3, fusion="ttoc_concat")
    assert flow([torch.randn(1, 3, 2, 32, 32), torch.randn(1, 2, 16, 32, 32)]).shape == (1, 3)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("slowfast_r50_8x8", dict(fusion="ttoc_sum"), r"alpha \* \(width / beta_inv\) == width.*alpha=4"),
        ("slow_r50_8x8", dict(fusion="tsample"), r"fusion='tsample' need a Fast pathway"),
        ("slow_r50_8x8", dict(fast_input="gray"), r"need a Fast pathway"),
        ("slowfast_r50_8x8", dict(fusion="lstm"), r"fusion must be one of"),
        ("slowfast_r50_8x8", dict(fast_input="depth"), r"fast_input must be one of"),
        ("slowfast_r50_8x8", dict(beta_inv=0), r"beta_inv .* must be a positive integer"),
        ("slowfast_r50_8x8", dict(fast_downsample=0), r"fast_downsample must be a positive integer"),
        ("slowfast_r50_8x8", dict(fast_input="gray", in_chans=1), r"computed from RGB clips"),
    ],
)
def test_impossible_combinations_are_refused(name: str, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        slowfast_zoo.create(name, device="meta", **overrides)


def test_flow_variant_names_its_input() -> None:
    model = small("slowfast_r50_4x16_fast_flow")
    with pytest.raises(ValueError, match=r"flow \(N, 2, alpha\*T, H, W\)"):
        model(torch.randn(1, 3, 16, 32, 32))  # one RGB clip cannot feed a flow pathway
    with pytest.raises(ValueError, match=r"\(N, 2, T, H, W\)"):
        model([torch.randn(1, 3, 2, 32, 32), torch.randn(1, 3, 16, 32, 32)])  # RGB where flow belongs


def test_readme_table_shows_the_registry_and_the_paper() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = text.split("## Design space (paper Table 5)", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    assert set(rows) == set(PAPER)
    for name, (_, _, params, counted, paper_gflops, paper_top1) in rows.items():
        cfg = slowfast_zoo.get_pretrained_cfg(name)
        assert params == f"{cfg.params / 1e6:.2f} M" and counted == f"{cfg.gflops:.2f}", name
        assert (float(paper_gflops), float(paper_top1)) == PAPER[name], name

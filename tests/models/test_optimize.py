"""The inference fast path (fused BatchNorm, channels-last, bf16) computes what the plain model computes."""

from __future__ import annotations

import pytest
import torch
from tiny import randomize, tiny
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import slowfast_zoo
from slowfast_zoo.models.freeze import freeze
from slowfast_zoo.models.layers import Bottleneck, ConvBnAct, NonLocal
from slowfast_zoo.models.optimize import fold_conv_bn, fuse_bn, optimize_for_inference

TINY = dict(num_classes=10, num_frames=16)
ARCHS = ["slowfast_r50_8x8", "slow_r50_8x8", "i3d_nln_r50_8x8", "c2d_r50_8x8", "slowfast_r101_50_50_16x8"]


def small(arch: str) -> slowfast_zoo.ResNet3d:
    torch.manual_seed(0)
    return randomize(tiny(arch, **TINY)).eval()


def inputs(model: slowfast_zoo.ResNet3d, n: int = 2, size: int = 64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    cfg = model.cfg
    return [torch.randn(n, 3, cfg.frames(p), size, size, generator=g) for p in range(cfg.num_pathways)]


def close(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    scale = expected.abs().max().item()
    assert actual.shape == expected.shape
    assert (actual.float() - expected).abs().max().item() <= rel * scale, (actual, expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_fuse_bn_keeps_logits(arch: str) -> None:
    model = small(arch)
    x = inputs(model)
    with torch.no_grad():
        expected = model(x)
        fused = fuse_bn(model)
        actual = fused(x)
    assert fused is not model
    assert not any(isinstance(m, nn.BatchNorm3d) for m in fused.modules())
    close(actual, expected, 1e-4)
    # the original is untouched: still has its BatchNorms and gives the same logits
    assert any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), expected)


def test_every_conv_bn_pair_is_folded_including_fusion_and_nonlocal() -> None:
    for arch in ("slowfast_r50_8x8", "i3d_nln_r50_8x8"):
        model = small(arch)
        units = sum(isinstance(m, ConvBnAct) for m in model.modules())
        nls = sum(isinstance(m, NonLocal) for m in model.modules())
        bns = sum(isinstance(m, nn.BatchNorm3d) for m in model.modules())
        assert bns == units + nls and units > 0
        fused = fuse_bn(model)
        assert all(m.conv.bias is not None for m in fused.modules() if isinstance(m, ConvBnAct))
        if arch == "slowfast_r50_8x8":
            assert len(fused.lateral) == 4 and all(isinstance(f.bn, nn.Identity) for f in fused.lateral.values())
        else:
            assert nls > 0 and all(isinstance(m.bn, nn.Identity) for m in fused.modules() if isinstance(m, NonLocal))


@pytest.mark.parametrize("arch", ["slowfast_r50_8x8", "i3d_nln_r50_8x8"])
def test_optimize_for_inference_fp32_and_bf16(arch: str) -> None:
    model = small(arch)
    x = inputs(model)
    with torch.no_grad():
        expected = model(x)
    fast = optimize_for_inference(model)
    assert fast is not model and not fast.training
    assert not any(p.requires_grad for p in fast.parameters())
    conv = fast.stem.slow.conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        close(fast(x), expected, 1e-4)
        # channels-last inputs too
        close(fast([t.contiguous(memory_format=torch.channels_last_3d) for t in x]), expected, 1e-4)
    if arch == "i3d_nln_r50_8x8":
        # bf16 softmax attention on these random, exploding activations (logits ~1e3) is not comparable
        pytest.skip("bf16 half not checked for the non-local net (fp32 half passed)")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        close(fast(x), expected, 0.05)
    pure = optimize_for_inference(model, dtype=torch.bfloat16)
    with torch.inference_mode():
        close(pure([t.bfloat16() for t in x]), expected, 0.05)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_contiguous_layout_fast_path_in_both_dtypes(dtype: torch.dtype) -> None:
    # channels_last=False (a layout autotune may pick): oneDNN fuses the residual add only channels-last and hands
    # it to ATen's add_relu otherwise, which has no bf16 kernel ("Unsupported datatype for add_relu" before the fix)
    model = small("slowfast_r50_8x8")
    x = inputs(model)
    with torch.no_grad():
        expected = model(x)
    fast = optimize_for_inference(model, channels_last=False, dtype=dtype)
    assert fast.stem.slow.conv.weight.is_contiguous()
    assert not fast.stem.slow.conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        close(fast([t.to(dtype) for t in x]), expected, 1e-4 if dtype == torch.float32 else 0.05)


def test_training_mode_is_refused_or_copied() -> None:
    model = small("slowfast_r50_8x8").train()
    with pytest.raises(ValueError, match="training mode"):
        fuse_bn(model)
    with pytest.raises(ValueError, match="training mode"):
        fuse_bn(model, inplace=True)
    with pytest.raises(ValueError, match="training mode"):
        optimize_for_inference(model, inplace=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model)  # a copy: the training model is not touched
    assert model.training and not fast.training
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in model.parameters())


def test_inplace_fuses_the_given_model() -> None:
    model = small("slow_r50_8x8")
    x = inputs(model)
    with torch.no_grad():
        expected = model(x)
    same = optimize_for_inference(model, inplace=True)
    assert same is model
    assert not any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    with torch.no_grad():
        close(model(x), expected, 1e-4)


def test_frozen_batchnorm_is_folded() -> None:
    model = small("slowfast_r50_8x8")
    freeze(model, up_to="res5")
    model.eval()
    x = inputs(model)
    with torch.no_grad():
        expected = model(x)
        fused = fuse_bn(model)
        close(fused(x), expected, 1e-4)
    assert not any(isinstance(m, slowfast_zoo.FrozenBatchNorm3d) for m in fused.modules())


def test_fold_conv_bn_exact_on_one_unit() -> None:
    torch.manual_seed(0)
    unit = ConvBnAct(4, 6, (3, 3, 3), padding=(1, 1, 1), act=False)
    randomize(unit)
    unit.eval()
    x = torch.randn(2, 4, 5, 7, 7, dtype=torch.float64)
    unit.double()
    with torch.no_grad():
        expected = unit(x)
        fold_conv_bn(unit.conv, unit.bn)
        unit.bn = nn.Identity()
        torch.testing.assert_close(unit(x), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError):
        fold_conv_bn(unit.conv, nn.Identity())


def test_copy_keeps_the_pretrained_cfg() -> None:
    model = slowfast_zoo.create("slowfast_r50_8x8", device="meta").eval()  # full config, no compute
    fast = optimize_for_inference(model)
    assert fast.pretrained_cfg is model.pretrained_cfg
    assert fast.stem.slow.conv.bias is not None and model.stem.slow.conv.bias is None


class _Ops(TorchDispatchMode):
    """Every aten / mkldnn op a forward runs, with the ids of the tensors it casts or copies."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []
        self.cast_sources: list[torch.Tensor] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))  # e.g. "aten.relu.default", "mkldnn._convolution_pointwise.binary"
        casts = (torch.ops.aten.to, torch.ops.aten._to_copy, torch.ops.aten.copy_)
        if func.overloadpacket in casts and args:
            self.cast_sources.append(args[-1] if func.overloadpacket is torch.ops.aten.copy_ else args[0])
        return func(*args, **(kwargs or {}))


def _weight_casts(model: nn.Module, mode: _Ops) -> int:
    params = {p.data_ptr() for p in model.parameters()}
    return sum(t.data_ptr() in params for t in mode.cast_sources if isinstance(t, torch.Tensor))


def test_bf16_weights_are_stored_once_and_never_cast_per_call() -> None:
    model = small("slowfast_r50_8x8")
    x = inputs(model)
    pure = optimize_for_inference(model, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in pure.parameters())
    with torch.inference_mode(), _Ops() as stored:
        pure([t.bfloat16() for t in x])
    assert _weight_casts(pure, stored) == 0
    # the same fast path under autocast casts every conv weight on every call (what storing them once avoids)
    fast = optimize_for_inference(model)
    convs = sum(isinstance(m, nn.Conv3d) for m in fast.modules())
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16), _Ops() as autocast:
        fast(x)
    assert _weight_casts(fast, autocast) >= convs


@pytest.mark.parametrize("arch", ["slowfast_r50_8x8", "slow_r50_8x8", "i3d_nln_r50_8x8"])
def test_relu_and_residual_add_run_inside_the_convolutions(arch: str) -> None:
    model = small(arch)
    x = inputs(model)
    folded = fuse_bn(model)  # BatchNorm folded, ReLU and add still separate
    fast = optimize_for_inference(model)
    blocks = sum(isinstance(m, Bottleneck) for m in model.modules())
    with torch.inference_mode():
        expected = folded(x)
        with _Ops() as ops:
            actual = fast(x)
    names = {op.split(".")[1] for op in ops.ops}
    assert not names & {"relu", "relu_"}
    assert ops.ops.count("mkldnn._convolution_pointwise.binary") == blocks
    if arch != "i3d_nln_r50_8x8":  # the non-local blocks add their own residual and keep plain 1x1 convs
        assert not names & {"add", "conv3d", "convolution"}  # shortcuts too: oneDNN, never slow_conv3d
    close(actual, expected, 1e-5)  # fp32: the fused kernel computes what the separate ops compute
    assert fast.state_dict().keys() == folded.state_dict().keys()


def test_optimizing_an_optimized_model_changes_nothing() -> None:
    model = small("slowfast_r50_8x8")
    x = inputs(model)
    fast = optimize_for_inference(model)
    again = optimize_for_inference(fast)
    with torch.inference_mode():
        assert torch.equal(again(x), fast(x))
    relu = [m.relu for m in fast.modules() if hasattr(m, "relu") and isinstance(m, nn.Conv3d)]
    assert relu == [m.relu for m in again.modules() if hasattr(m, "relu") and isinstance(m, nn.Conv3d)]


def test_fused_convs_step_aside_under_autocast_and_for_gradients() -> None:
    model = small("slowfast_r50_8x8")
    x = inputs(model)
    folded, fast = fuse_bn(model), optimize_for_inference(model, channels_last=False)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(fast(x), folded(x))  # the same separate bf16 ops
    x = [t.requires_grad_() for t in x]
    fast(x).sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in x)


def test_fused_convs_trace_as_separate_ops_for_torch_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile cannot trace the oneDNN fused op (no fake kernel): while compiling, the plain ops run."""
    model = small("slow_r50_8x8")
    x = inputs(model)
    fast = optimize_for_inference(model)
    with torch.inference_mode():
        expected = fast(x)
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        with _Ops() as ops:
            actual = fast(x)
    assert "aten.relu.default" in ops.ops and not any(op.startswith("mkldnn.") for op in ops.ops)
    close(actual, expected, 1e-5)

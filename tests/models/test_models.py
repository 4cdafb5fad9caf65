"""Every registered architecture: builds, runs forward and backward, counts its parameters like the reference."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import slowfast_zoo
from slowfast_zoo import ResNet3d

ARCHS = slowfast_zoo.list_models()
PRETRAINED = slowfast_zoo.list_pretrained()


def boxes_for(model: ResNet3d, batch: int = 2, size: int = 64) -> list[torch.Tensor] | None:
    """Two person boxes per clip for detectors (pixel coordinates), None for classifiers."""
    if not model.cfg.roi_head:
        return None
    return [torch.tensor([[4.0, 8.0, 40.0, 60.0], [0.0, 0.0, size - 1.0, size - 1.0]]) for _ in range(batch)]


def small_input(model: ResNet3d, batch: int = 2, size: int = 64) -> list[torch.Tensor]:
    """Short clips that keep the pathway ratio: T_fast = 2 * alpha, T_slow = 2 (single pathway: 4 frames)."""
    cfg = model.cfg
    if cfg.alpha is None:
        return [torch.randn(batch, 3, 4, size, size)]
    return [torch.randn(batch, 3, 2, size, size), torch.randn(batch, cfg.input_chans(1), 2 * cfg.alpha, size, size)]


@pytest.mark.parametrize("name", ARCHS)
def test_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    model = slowfast_zoo.create(name, num_classes=7)
    x, boxes = small_input(model), boxes_for(model)
    rows = 4 if boxes else 2  # a detector scores each box
    out = model(x, boxes)  # train mode
    assert out.shape == (rows, 7) and torch.isfinite(out).all()
    out.logsumexp(dim=1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without a gradient: {no_grad[:5]}"
    model.eval()
    with torch.no_grad():
        out = model(x, boxes)
    assert out.shape == (rows, 7) and torch.isfinite(out).all()
    # logits, not probabilities, in eval mode too
    assert not torch.allclose(out.sum(dim=1), torch.ones(rows)) and (out < 0).any()


@pytest.mark.parametrize("name", ARCHS + PRETRAINED)
def test_param_count_equals_reference(name: str) -> None:
    """Reference counts come from PyTorchVideo's builders and PySlowFast's configs, never from this package."""
    cfg = slowfast_zoo.get_pretrained_cfg(name)
    assert cfg.params is not None, f"{name}: no reference parameter count in weights_manifest.json"
    model = slowfast_zoo.create(name, device="meta")
    assert sum(p.numel() for p in model.parameters()) == cfg.params


@pytest.mark.parametrize("name", ARCHS + PRETRAINED)
def test_flops_equal_reference(name: str) -> None:
    """Multiply-adds of convolutions, linear layers and non-local matmuls at one 256x256 view, as counted on the
    reference builds (fvcore's convention: one multiply-add = one FLOP)."""
    cfg = slowfast_zoo.get_pretrained_cfg(name)
    assert cfg.gflops is not None, f"{name}: no reference GFLOPs"
    model = slowfast_zoo.create(name, device="meta").eval()
    x = [
        torch.empty(1, cfg.model.input_chans(p), cfg.model.frames(p), 256, 256, device="meta")
        for p in range(cfg.model.num_pathways)
    ]
    boxes = [torch.tensor([[0.0, 0.0, 255.0, 255.0]], device="meta")] if cfg.model.roi_head else None  # one box
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x, boxes)
    counts = counter.get_flop_counts()["Global"]
    assert {str(op) for op in counts} <= {"aten.convolution", "aten.addmm", "aten.bmm"}
    assert sum(counts.values()) / 2 / 1e9 == pytest.approx(cfg.gflops, abs=0.011)


def test_embedding_sizes() -> None:
    assert slowfast_zoo.create("slowfast_r50_8x8", device="meta").num_features == 2304
    assert slowfast_zoo.create("slowfast_r101_16x8", device="meta").num_features == 2304
    assert slowfast_zoo.create("slow_r50_8x8", device="meta").num_features == 2048


@pytest.mark.parametrize("name", ["slowfast_r50_8x8", "slow_r50_8x8"])
def test_forward_never_mutates_its_input(name: str) -> None:
    model = slowfast_zoo.create(name, width=8, num_classes=5).eval()
    x = small_input(model, batch=1)
    copies = [t.clone() for t in x]
    ids = [id(t) for t in x]
    with torch.no_grad():
        model(x)
        model(tuple(x))
    assert [id(t) for t in x] == ids and len(x) == len(copies)
    assert all(torch.equal(a, b) for a, b in zip(x, copies))


def test_single_tensor_for_slowfast_is_packed_as_the_reference() -> None:
    model = slowfast_zoo.create("slowfast_r50_8x8", width=8, num_classes=5).eval()
    fast = torch.randn(1, 3, 32, 64, 64)
    idx = [0, 4, 8, 13, 17, 22, 26, 31]  # SF:slowfast/datasets/utils.py pack_pathway_output: 32 frames, alpha 4
    with torch.no_grad():
        assert torch.equal(model(fast), model([fast[:, :, idx], fast]))


@pytest.mark.parametrize(
    ("name", "x", "message"),
    [
        ("slowfast_r50_8x8", [torch.zeros(1, 3, 4, 64, 64)] * 3, r"2 pathway\(s\).*\[slow, fast\].*3 tensors"),
        ("slowfast_r50_8x8", [torch.zeros(1, 3, 4, 64, 64), torch.zeros(1, 3, 8, 64, 64)], r"fast \(N, 3, 4\*T"),
        ("slowfast_r50_8x8", [torch.zeros(1, 1, 4, 64, 64), torch.zeros(1, 1, 16, 64, 64)], r"\(N, 3, T, H, W\)"),
        ("slowfast_r50_8x8", torch.zeros(1, 3, 6, 64, 64), r"divisible by alpha=4"),
        ("slow_r50_8x8", [torch.zeros(1, 3, 4, 64, 64)] * 2, r"1 pathway\(s\) and takes one tensor"),
        ("slow_r50_8x8", torch.zeros(3, 8, 64, 64), r"add the batch dimension"),
        ("slow_r50_8x8", "clip.mp4", r"expected a tensor or a list"),
    ],
)
def test_bad_input_names_the_expected_shapes(name: str, x: object, message: str) -> None:
    model = slowfast_zoo.create(name, width=8, num_classes=5)
    with pytest.raises((ValueError, TypeError), match=message):
        model(x)


def test_fixed_head_refuses_inputs_smaller_than_its_kernel() -> None:
    model = slowfast_zoo.create("slow_r50_8x8", width=8, num_classes=5, head_pool="fixed")  # 224 crop -> 7x7 kernel
    with pytest.raises(ValueError, match="smaller than the pool kernel"):
        model(torch.zeros(1, 3, 8, 64, 64))
    assert model(torch.zeros(1, 3, 8, 224, 224)).shape == (1, 5)


def test_dtype_and_device() -> None:
    model = slowfast_zoo.create("slow_r50_8x8", width=8, num_classes=5, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model(torch.zeros(1, 3, 4, 64, 64, dtype=torch.float64)).dtype == torch.float64
    meta = slowfast_zoo.create("slowfast_r101_16x8", device="meta")
    assert all(p.is_meta for p in meta.parameters())


def test_cpu_build_never_touches_cuda() -> None:
    import subprocess
    import sys

    code = (
        "import torch, slowfast_zoo as z; m = z.create('slowfast_r50_8x8', width=8, device='cpu'); "
        "m(torch.zeros(1, 3, 8, 64, 64)); assert not torch.cuda.is_initialized(); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_init_matches_the_reference_scheme() -> None:
    model = slowfast_zoo.create("slowfast_r50_8x8", width=8)
    for name, module in model.named_modules():
        if name.endswith(".c.bn") or name.endswith(".nl.bn"):
            assert torch.count_nonzero(module.weight) == 0, name  # zero-init last BN of each residual branch
        elif isinstance(module, torch.nn.BatchNorm3d):
            assert torch.equal(module.weight, torch.ones_like(module.weight)), name
            assert torch.equal(module.running_var, torch.ones_like(module.running_var)), name
    assert model.head.proj.weight.std().item() == pytest.approx(0.01, rel=0.1)


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        (torch.tensor([[2.0, 1.0, 1.0, 9.0, 9.0]]), r"batch indices must be integers in \[0, 2\)"),
        (torch.tensor([[0.5, 1.0, 1.0, 9.0, 9.0]]), r"batch indices must be integers"),
        (torch.tensor([[1.0, 1.0, 9.0, 9.0]]), r"must be \(K, 5\)"),
        ([torch.tensor([[1.0, 1.0, 9.0, 9.0]])], r"one \(K, 4\) box tensor per clip \(2 clips\); got 1"),
        ([torch.zeros(0, 4), torch.zeros(0, 4)], "no boxes given"),
        ([torch.tensor([[1.0, 1.0, 9.0]])] * 2, r"boxes\[0\] must be a \(K, 4\) tensor"),
        ([torch.tensor([[1.0, 1.0, float("nan"), 9.0]])] * 2, "finite floating-point"),
        ([torch.tensor([[9.0, 1.0, 1.0, 9.0]])] * 2, "x2 >= x1"),
        ("boxes.json", "boxes must be a list"),
    ],
)
def test_detector_refuses_bad_boxes(boxes: object, message: str) -> None:
    model = slowfast_zoo.create("slow_r50_4x16_det", width=8)
    with pytest.raises((ValueError, TypeError), match=message):
        model(torch.zeros(2, 3, 4, 64, 64), boxes)
    with pytest.raises(ValueError, match="this is a detector"):
        model(torch.zeros(2, 3, 4, 64, 64))

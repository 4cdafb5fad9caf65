"""examples/train.py: the paper's from-scratch recipe as a preset; every design-space variant trains; DDP == 1."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from ddp import torchrun
from safetensors.torch import load_file
from video_factory import write_video

import slowfast_zoo

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("train_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


train = _load_script()
finetune = train.finetune
VARIANTS = ["slow_r50_4x16", "fast_r50_4x16", *slowfast_zoo.list_models("slowfast_r50_4x16*")]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Two class folders of four 64x48, 2 s index-pattern videos (content does not matter for these checks)."""
    root = tmp_path_factory.mktemp("train-data") / "train"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            write_video(root / c / f"{c}{i}.mp4", num_frames=60)
    return root


def test_preset_is_the_papers_recipe(videos, tmp_path) -> None:
    user = [
        "--model",
        "slowfast_r50_4x16_tsample",
        "--train",
        str(videos),
        "--output",
        str(tmp_path),
        "--batch-size",
        "2",
    ]
    args = finetune.build_parser().parse_args(train.preset_argv("kinetics_scratch", user, world_size=4))
    # SF:configs/Kinetics/SLOWFAST_4x16_R50.yaml SOLVER: OPTIMIZING_METHOD sgd, MOMENTUM 0.9, WEIGHT_DECAY 1e-4,
    # LR_POLICY cosine, MAX_EPOCH 196, WARMUP_EPOCHS 34.0, BASE_LR 0.1 at TRAIN.BATCH_SIZE 64; MODEL.DROPOUT_RATE 0.5;
    # DATA: TRAIN_JITTER_SCALES [256, 320], TRAIN_CROP_SIZE 224
    assert (args.opt, args.momentum, args.weight_decay, args.sched, args.epochs) == ("sgd", 0.9, 1e-4, "cosine", 196)
    assert args.pretrained is False
    assert args.lr == pytest.approx(0.1 * 8 / 64)  # global batch 2 x 4 processes
    steps_per_epoch = 8 // 8  # 8 videos, global batch 8
    assert args.warmup_steps == round(196 * steps_per_epoch * 34 / 196)
    assert "dropout=0.5" in args.model_kwargs
    assert {"train_short_side=256,320", "train_crop_size=224"} <= set(args.data_cfg)
    transform = slowfast_zoo.create_transforms(
        slowfast_zoo.get_pretrained_cfg("slowfast_r50_4x16_tsample").replace(train_crop_size=224), "train"
    )
    assert transform.flip and transform.short_side == (256, 320) and transform.crop_size == 224


def test_user_arguments_win_and_list_options_merge(videos, tmp_path) -> None:
    user = ["--model", "m", "--train", str(videos), "--output", str(tmp_path), "--lr", "0.5", "--epochs", "3"]
    user += ["--model-kwargs", "width=8", "--data-cfg", "train_crop_size=32"]
    args = finetune.build_parser().parse_args(train.preset_argv("kinetics_scratch", user, world_size=1))
    assert args.lr == 0.5 and args.epochs == 3
    assert finetune._key_values(args.model_kwargs) == {"dropout": 0.5, "width": 8}
    assert finetune._key_values(args.data_cfg) == {"train_short_side": (256, 320), "train_crop_size": 32}
    assert args.warmup_steps == round(3 * 1 * 34 / 196)  # 8 videos / global batch 8 = 1 step per epoch


def synthesized_batch(model, n: int = 4) -> tuple[list[torch.Tensor] | torch.Tensor, torch.Tensor]:
    """Class 1 clips are brighter than class 0 ones, under noise."""
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1] * (n // 2))
    cfg = model.cfg
    shift = (labels.float() * 2 - 1).view(n, 1, 1, 1, 1)
    if cfg.num_pathways == 1:
        return torch.randn(n, 3, 8, 32, 32, generator=g) + shift, labels
    x = [torch.randn(n, cfg.input_chans(p), 2 * (cfg.alpha if p else 1), 32, 32, generator=g) + shift for p in (0, 1)]
    return x, labels


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_trains_from_scratch_with_the_preset_optimizer(name: str, videos, tmp_path) -> None:
    user = ["--model", name, "--train", str(videos), "--output", str(tmp_path), "--batch-size", "4", "--lr", "0.05"]
    args = finetune.build_parser().parse_args(train.preset_argv("kinetics_scratch", user, world_size=1))
    torch.manual_seed(0)
    model = slowfast_zoo.create(name, width=16, num_classes=2, dropout=0.5)
    optimizer = finetune.build_optimizer(args, model)
    x, y = synthesized_batch(model)

    def loss_without_dropout() -> float:
        model.head.drop.eval()  # BatchNorm keeps normalizing with the batch, as in training
        with torch.no_grad():
            loss = torch.nn.functional.cross_entropy(model(x), y).item()
        model.head.drop.train()
        return loss

    before = loss_without_dropout()
    for step in range(6):
        finetune.set_lr(optimizer, finetune.lr_factor(step, 6, 1, "cosine"))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step == 5:  # by now the zero-initialized last BN of each residual branch lets gradient through
            missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
            assert not missing, f"parameters without a gradient: {missing[:5]}"
        optimizer.step()
    after = loss_without_dropout()
    assert after < 0.7 * before, (before, after)


def test_ddp_two_gloo_processes_equal_one_process(videos, tmp_path) -> None:
    """As tests/tasks/test_finetune.py: 2 processes x batch 1 x 2 accumulation steps == 1 process x batch 4, with
    ``--bn eval`` so both compute the same function of the same samples; here from scratch with the preset."""
    common = ["--preset", "kinetics_scratch", "--model", "slowfast_r50_4x16_tsample", "--workers", "0", "--bn", "eval"]
    common += ["--model-kwargs", "width=8", "num_frames=16", "dropout=0", "--train", str(videos), "--epochs", "2"]
    common += ["--data-cfg", "train_short_side=32,40", "train_crop_size=32", "--lr", "0.1", "--no-probe"]
    one = tmp_path / "one"
    train.main([*common, "--output", str(one), "--batch-size", "4"])

    two = tmp_path / "two"
    torchrun(SCRIPT, [*common, "--output", str(two), "--batch-size", "1", "--accum-steps", "2"], timeout=300)

    a = load_file(str(one / "model" / "model.safetensors"))
    b = load_file(str(two / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    torch.manual_seed(0)
    init = slowfast_zoo.create("slowfast_r50_4x16_tsample", width=8, num_frames=16, num_classes=2).state_dict()
    assert not torch.equal(a["res2.slow.0.a.conv.weight"], init["res2.slow.0.a.conv.weight"])  # trained from scratch
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)

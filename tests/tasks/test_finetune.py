"""examples/finetune.py on a few synthesized videos: the loss goes down, DDP equals one process, resume is exact."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from ddp import torchrun
from safetensors.torch import load_file

import slowfast_zoo
from slowfast_zoo.tasks.data import VideoClipDataset, collate_clips, read_folder

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "finetune.py"
CLASSES = ("blue", "green", "red")
COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}

# a tiny SlowFast (width 8, 2 slow / 8 fast frames) on 32x32 crops, evaluated with 2 clips x 1 crop
MODEL_ARGS = ["--model", "slowfast_r50_8x8", "--no-pretrained"]
DATA_CFG = [
    "--data-cfg",
    "train_short_side=32,40",
    "train_crop_size=32",
    "test_short_side=32",
    "test_crop_size=32",
    "test_clips=2",
    "test_crops=center,",
]


def _load_script():
    spec = importlib.util.spec_from_file_location("finetune_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


finetune = _load_script()


def write_class_video(path: Path, color: tuple[int, int, int], seed: int, frames: int = 30) -> Path:
    """A 64x48, 1 s clip: a square of ``color`` moving over grey noise (the colour is the class)."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30), options={"crf": "18", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        x, y = rng.integers(0, 40), rng.integers(0, 24)
        dx, dy = rng.integers(-2, 3), rng.integers(-2, 3)
        for i in range(frames):
            img = rng.integers(90, 140, size=(48, 64, 3), dtype=np.uint8)
            cx, cy = int(x + dx * i) % 40, int(y + dy * i) % 24
            img[cy : cy + 24, cx : cx + 24] = color
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_dataset(root: Path, per_class: int) -> Path:
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            write_class_video(root / name / f"{name}_{i}.mp4", COLORS[name], seed=100 * c + i)
    return root


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("finetune-data") / "train", per_class=3)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


pytestmark = pytest.mark.usefixtures("one_thread")


def _mean_loss(model, dataset) -> float:
    """Cross-entropy over the whole dataset as one batch (centred clips), computed here, not by the script.

    BatchNorm normalizes with the batch statistics, as in training: a dozen steps do not make running statistics.
    """
    x, y = collate_clips([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model.train()(x), y).item()


def test_finetune_lowers_the_loss_and_saves_labels(videos, tmp_path):
    out = tmp_path / "run"
    args = [
        *MODEL_ARGS,
        "--model-kwargs",
        "width=8",
        "num_frames=8",
        "dropout=0",
        *DATA_CFG,
        "--train",
        str(videos),
        "--val",
        str(videos),
        "--output",
        str(out),
    ]
    args += ["--epochs", "12", "--batch-size", "3", "--lr", "0.02", "--workers", "0", "--seed", "3"]
    args += ["--freeze-up-to", "stem", "--eval-every", "6"]
    finetune.main(args)

    model = slowfast_zoo.create(f"local-dir:{out / 'model'}").eval()
    assert model.pretrained_cfg.label_names == tuple(CLASSES)  # folder names, sorted: the new head's label order
    assert model.cfg.num_classes == 3 and model.get_classifier().out_features == 3
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["num_classes"] == 3 and config["pretrained_cfg"]["test_crop_size"] == 32

    # the same starting point, rebuilt here: the script seeds with --seed before create()
    torch.manual_seed(3)
    start = slowfast_zoo.create("slowfast_r50_8x8", width=8, num_frames=8, dropout=0.0, num_classes=3)
    start.pretrained_cfg = model.pretrained_cfg
    evalset = VideoClipDataset(read_folder(videos), model, "eval")
    before, after = _mean_loss(start, evalset), _mean_loss(model, evalset)
    assert math.isfinite(before) and math.isfinite(after)  # NaN compares False both ways: never let it decide
    assert after < 0.75 * before, (before, after)

    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(12))
    assert all(math.isfinite(r["train_loss"]) for r in log)
    assert log[-1]["val_videos"] == 9 and log[-1]["val_skipped"] == 0 and 0 <= log[-1]["val_top1"] <= 1
    assert "val_top1" not in log[0]  # --eval-every 6


def test_ddp_two_gloo_processes_equal_one_process(videos, tmp_path):
    """2 processes x batch 1 x 2 accumulation steps == 1 process x batch 4: same samples, same averaged gradient.

    BatchNorm statistics are per-process batch statistics in DDP; ``--bn eval`` normalizes with the running
    statistics instead (scale and shift still train), so both runs compute the same function of the same batch.
    """
    common = [*MODEL_ARGS, "--model-kwargs", "width=8", "num_frames=8", "dropout=0", *DATA_CFG]
    common += ["--train", str(videos), "--epochs", "2", "--lr", "0.1", "--workers", "0", "--bn", "eval"]
    one = tmp_path / "one"
    finetune.main([*common, "--output", str(one), "--batch-size", "4"])

    two = tmp_path / "two"
    torchrun(SCRIPT, [*common, "--output", str(two), "--batch-size", "1", "--accum-steps", "2"], timeout=240)

    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    torch.manual_seed(0)
    init = slowfast_zoo.create("slowfast_r50_8x8", width=8, num_frames=8, num_classes=3).state_dict()
    assert not torch.equal(a["res2.slow.0.a.conv.weight"], init["res2.slow.0.a.conv.weight"])  # the backbone trained
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    logs = [[json.loads(x) for x in (d / "log.jsonl").read_text().splitlines()] for d in (one, two)]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == [2, 4]
    for r1, r2 in zip(*logs):
        assert math.isfinite(r1["train_loss"]) and math.isfinite(r2["train_loss"])
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], abs=1e-5)


def test_resume_continues_bit_exactly(videos, tmp_path):
    """Stop mid-epoch, resume from last.pt: the same weights, to the bit, as one uninterrupted run (dropout on, AMP)."""
    common = [*MODEL_ARGS, "--model-kwargs", "width=8", "num_frames=8", "dropout=0.5", *DATA_CFG]
    common += ["--train", str(videos), "--epochs", "2", "--batch-size", "2", "--lr", "0.05", "--warmup-steps", "2"]
    common += ["--workers", "1", "--save-every-steps", "1", "--amp", "--opt", "adamw"]
    straight = tmp_path / "straight"
    finetune.main([*common, "--output", str(straight)])

    resumed = tmp_path / "resumed"
    assert finetune.main([*common, "--output", str(resumed), "--stop-after-steps", "6"]) == {"stopped_at_step": 6}
    state = torch.load(resumed / "last.pt", weights_only=False)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 2, 6)  # 4 steps per epoch
    assert not list(resumed.glob(".*.tmp"))
    finetune.main([*common, "--output", str(resumed), "--resume"])

    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.isfinite(v).all() for v in a.values() if v.is_floating_point())  # NaN never equals NaN
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    logs = [json.loads(x) for x in (straight / "log.jsonl").read_text().splitlines()]
    assert logs and all(math.isfinite(r["train_loss"]) for r in logs)


def test_non_finite_loss_stops_training(videos, tmp_path):
    """A diverging run stops with a one-line error and saves no NaN weights as a result."""
    out = tmp_path / "run"
    args = [*MODEL_ARGS, "--model-kwargs", "width=8", "num_frames=8", "dropout=0", *DATA_CFG]
    args += ["--train", str(videos), "--output", str(out), "--epochs", "3", "--batch-size", "3"]
    args += ["--lr", "1e30", "--warmup-steps", "0", "--workers", "0"]
    with pytest.raises(SystemExit, match=r"training loss is (nan|inf|-inf) at epoch \d+, step \d+: stopped"):
        finetune.main(args)
    assert not (out / "model").exists()


@pytest.mark.parametrize(
    ("option", "item", "valid"),
    [("--model-kwargs", "widht=8", "width"), ("--data-cfg", "test_clip=2", "test_clips")],
)
def test_unknown_config_key_lists_the_valid_fields(videos, tmp_path, option, item, valid):
    args = [*MODEL_ARGS, option, item, "--train", str(videos), "--output", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as e:
        finetune.main(args)
    message = str(e.value)
    assert message.startswith(f"{option}: unknown field(s) {item.split('=')[0]}; valid fields:")
    assert f" {valid}," in message or message.endswith(f" {valid}")

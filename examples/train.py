"""Train any registered architecture from scratch with a named recipe (``--preset``), on finetune.py's data sources.

    python examples/train.py --preset kinetics_scratch --model slowfast_r50_4x16_tsample \\
        --train data/train --val data/val --output runs/tsample
    torchrun --nproc_per_node 8 examples/train.py --preset kinetics_scratch --model ... (DDP, as finetune.py)

A preset is a list of ``examples/finetune.py`` arguments; anything given on the command line after it wins (argparse
keeps the last value), and every other finetune.py option works unchanged (``--amp``, ``--resume``, ``--bn``, ...).

``kinetics_scratch`` is the SlowFast paper's recipe (Appendix; PySlowFast ``configs/Kinetics/SLOWFAST_4x16_R50.yaml``):
random initialization, SGD with momentum 0.9, weight decay 1e-4 (not on BatchNorm and biases, as PySlowFast's
default ``BN.WEIGHT_DECAY: 0``), half-period cosine schedule with linear warm-up (34 of 196 epochs), dropout 0.5,
scale jitter [256, 320], random 224 crop, horizontal flip. The learning rate is 0.1 per 64 clips (PySlowFast's
``BASE_LR`` at ``TRAIN.BATCH_SIZE`` 64; the paper's 1.6 at 1024 is the same ratio), scaled linearly to the global
batch. Differences from PySlowFast: the warm-up starts at 0 instead of ``WARMUP_START_LR`` = BASE_LR / 10, and its
length in optimizer steps is computed from the number of listed videos (unreadable ones are skipped later).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import finetune  # the sibling script: its training loop, checkpoints, DDP and evaluation

from slowfast_zoo.tasks.data import read_rows

#: preset -> finetune.py arguments, its model / data-config items, and what derives from the data: learning rate per
#: 64 clips, warm-up as a fraction of the run
PRESETS: dict[str, dict[str, Any]] = {
    "kinetics_scratch": {
        "argv": [
            "--no-pretrained",
            "--opt",
            "sgd",
            "--momentum",
            "0.9",
            "--weight-decay",
            "1e-4",
            "--sched",
            "cosine",
            "--epochs",
            "196",
            "--batch-size",
            "8",
        ],
        "model_kwargs": ["dropout=0.5"],
        "data_cfg": ["train_short_side=256,320", "train_crop_size=224"],
        "lr_per_64": 0.1,
        "warmup_fraction": 34 / 196,
    },
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    p.add_argument("--preset", choices=sorted(PRESETS), required=True, help="the training recipe")
    p.add_argument("--warmup-epochs", type=float, help="override the preset's warm-up length (epochs)")
    return p


def preset_argv(preset: str, user_argv: list[str], world_size: int | None = None) -> list[str]:
    """finetune.py arguments: the preset's, the warm-up steps and learning rate it derives, then the user's."""
    spec = PRESETS[preset]
    argv = [*spec["argv"], *user_argv]
    args = finetune.build_parser().parse_args(argv)
    world = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    global_batch = args.batch_size * world * args.accum_steps
    derived = []
    if "--lr" not in user_argv:
        derived += ["--lr", f"{spec['lr_per_64'] * global_batch / 64:g}"]
    if "--warmup-steps" not in user_argv:
        videos = len(read_rows(args.train).rows)
        steps = max(videos // global_batch, 1) * args.epochs
        derived += ["--warmup-steps", str(round(steps * spec["warmup_fraction"]))]
    # list options merge: the preset's items first, the user's after them (the later key wins)
    merged = ["--model-kwargs", *spec["model_kwargs"], *(args.model_kwargs or [])]
    merged += ["--data-cfg", *spec["data_cfg"], *(args.data_cfg or [])]
    return [*spec["argv"], *derived, *user_argv, *merged]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ours, rest = build_parser().parse_known_args(argv)
    if ours.warmup_epochs is not None:
        args = finetune.build_parser().parse_args([*PRESETS[ours.preset]["argv"], *rest])
        rest = [*rest, "--warmup-steps", str(_warmup_steps(args, ours.warmup_epochs))]
    return finetune.main(preset_argv(ours.preset, rest))


def _warmup_steps(args: argparse.Namespace, epochs: float) -> int:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_epoch = max(len(read_rows(args.train).rows) // (args.batch_size * world * args.accum_steps), 1)
    return round(per_epoch * epochs)


if __name__ == "__main__":
    main()

"""How far ``precision="bf16"`` and ``fast=True`` move predict's scores from the exact fp32 default.

    python benchmarks/precision_drift.py [--models slowfast_r50_8x8,slow_r50_8x8] [--views fast|reference]
        [--weights random|published] [--out drift.json]

Videos: the packaged sample clip and three synthetic 4 s clips (``pipeline.write_video`` at 340x256, 30 fps).
Per model and video: the scores of ``fp32`` (eager, the default), ``bf16`` (autocast), ``fp32 fast`` (BatchNorm
folded, channels-last) and ``bf16 fast`` (bf16 weights stored once); reported: the largest absolute score
difference from fp32 and whether the top-1 and the top-5 set agree. ``--weights published`` downloads the
checkpoints; ``random`` (offline) uses the architecture with randomized BatchNorm statistics and classifier
(``tests/tiny.py``'s ``randomize``, classifier weights x4).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

import slowfast_zoo
from slowfast_zoo.tasks.predict import load_model, predict, sample_video

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "tests")]
from pipeline import write_video  # noqa: E402
from tiny import randomize  # noqa: E402

MODES = {"bf16": ("bf16", False), "fp32_fast": ("fp32", True), "bf16_fast": ("bf16", True)}


def randomized(name: str) -> torch.nn.Module:
    """The published architecture with random BatchNorm statistics and a classifier that separates classes."""
    torch.manual_seed(0)
    cfg = slowfast_zoo.get_pretrained_cfg(f"{name}.k400_pysf")
    model = slowfast_zoo.create(f"{name}.k400_pysf", pretrained=False, head_pool=cfg.test_head_pool)
    randomize(model)
    with torch.no_grad():
        model.head.proj.weight.mul_(4)  # scores that separate classes, so that a changed top-1 would show
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="slowfast_r50_8x8,slow_r50_8x8")
    p.add_argument("--views", default="fast", choices=["fast", "reference"])
    p.add_argument("--weights", default="random", choices=["random", "published"])
    p.add_argument("--out", default="drift.json")
    args = p.parse_args(argv)
    results = {"args": vars(args), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        videos = [sample_video()] + [write_video(Path(tmp) / f"s{i}.mp4", 340, 256, i + 1, 4) for i in range(3)]
        for name in args.models.split(","):
            model = randomized(name) if args.weights == "random" else load_model(name)
            fast = {
                "fp32": slowfast_zoo.optimize_for_inference(model),
                "bf16": slowfast_zoo.optimize_for_inference(model, dtype=torch.bfloat16),
            }
            for video in videos:
                ref = predict(video, model, views=args.views).scores
                row = {"model": name, "video": Path(video).name, "top1": int(ref.argmax())}
                for mode, (precision, is_fast) in MODES.items():
                    m = fast[precision] if is_fast else model
                    got = predict(video, m, views=args.views, precision=precision).scores
                    row[mode] = {
                        "max_abs": float((got - ref).abs().max()),
                        "max_rel_top1": float(abs(got[row["top1"]] - ref[row["top1"]]) / ref[row["top1"]]),
                        "top1_same": int(got.argmax()) == row["top1"],
                        "top5_same": set(got.topk(5).indices.tolist()) == set(ref.topk(5).indices.tolist()),
                    }
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

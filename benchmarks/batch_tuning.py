"""Per-view model time at each batch size (and, for the fast path, memory format): what ``slowfast_zoo.tune`` measures
and chooses, against the fixed rule the tasks use without a measurement (6 views on a CPU, every view on a GPU).

    python benchmarks/batch_tuning.py [--models slowfast_r50_8x8,slow_r50_8x8] [--modes fp32,bf16fast]
        [--candidates 1,2,3,5,6,10] [--repeats 2] [--device cpu|cuda] [--out batch_tuning.json]

Random weights (the speed does not depend on them), the checkpoint's test input size. Modes: ``fp32`` (eager, the
exact default), ``bf16`` (eager under autocast), ``fp32fast`` / ``bf16fast`` (``optimize_for_inference``: folded,
fused, both memory formats tried). Nothing is stored in the cache (``tune(..., store=False)``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

import torch

import slowfast_zoo
from slowfast_zoo.tasks.runner import default_batch
from slowfast_zoo.tasks.tuning import device_name, setting


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="slowfast_r50_8x8,slow_r50_8x8")
    p.add_argument("--modes", default="fp32,bf16fast")
    p.add_argument("--candidates", default=None, help="comma-separated batch sizes (default: tune's for the device)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="batch_tuning.json")
    args = p.parse_args(argv)
    candidates = [int(c) for c in args.candidates.split(",")] if args.candidates else None
    device = torch.device(args.device)
    rows = []
    for name in args.models.split(","):
        model = slowfast_zoo.create(name, device=device).eval()
        for mode in args.modes.split(","):
            precision = "bf16" if mode.startswith("bf16") else "fp32"
            fast = mode.endswith("fast")
            t = slowfast_zoo.tune(
                model, precision=precision, fast=fast, candidates=candidates, repeats=args.repeats, store=False
            )
            fixed = default_batch(30, device)  # and channels-last, the fast path's default
            fixed_time = t.seconds_per_view.get(setting(fixed, True if fast else None))
            best = t.seconds_per_view[setting(t.batch_size, t.channels_last)]
            row = {
                "model": name,
                "mode": mode,
                "chosen_batch": t.batch_size,
                "chosen_channels_last": t.channels_last,
                "seconds_per_view": t.seconds_per_view,
                "fixed_batch": fixed,
                "fixed_seconds_per_view": fixed_time,
                "speedup_over_fixed": None if not fixed_time or best is None else fixed_time / best,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {
        "machine": {"device": device_name(device), "torch": torch.__version__, "python": platform.python_version()},
        "args": vars(args),
        "rows": rows,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print("\n| model | mode | per-view ms by batch | chosen | fixed rule | chosen vs fixed |", file=sys.stdout)
    print("|---|---|---|---|---|---|")
    for r in rows:
        per_view = r["seconds_per_view"].items()
        times = ", ".join(f"{k}: {v * 1e3:.0f}" if v is not None else f"{k}: OOM" for k, v in per_view)
        cl = "" if r["chosen_channels_last"] is None else (" CL" if r["chosen_channels_last"] else " contiguous")
        speed = r["speedup_over_fixed"]
        print(f"| {r['model']} | {r['mode']} | {times} | b{r['chosen_batch']}{cl} | b{r['fixed_batch']} | "
              f"{'' if speed is None else f'{speed:.2f}x'} |")  # fmt: skip


if __name__ == "__main__":
    main()

"""Peak memory of one training step with and without gradient checkpointing (each case in a fresh process).

    python benchmarks/grad_checkpointing.py [--model slowfast_r50_8x8] [--batch 2] [--size 224]

CPU: peak resident set size of the process (ru_maxrss) minus the RSS before the step; CUDA: max allocated.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def step(model_name: str, batch: int, size: int, checkpointing: bool, device: str) -> dict[str, float]:
    import torch

    import slowfast_zoo

    torch.manual_seed(0)
    model = slowfast_zoo.create(model_name, device=device).train()
    model.set_grad_checkpointing(checkpointing)
    cfg = model.cfg
    x = [torch.randn(batch, 3, cfg.frames(p), size, size, device=device) for p in range(cfg.num_pathways)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    loss = model(x).logsumexp(dim=1).sum()
    loss.backward()
    out = {"checkpointing": checkpointing, "loss": float(loss)}
    if device.startswith("cuda"):
        out["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="slowfast_r50_8x8")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(step(args.model, args.batch, args.size, args.child == "on", args.device)))
        return
    rows = []
    for mode in ("off", "on"):
        cmd = [sys.executable, __file__, "--child", mode, "--model", args.model, "--batch", str(args.batch)]
        cmd += ["--size", str(args.size), "--device", args.device]
        rows.append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))
    print(f"{args.model}, batch {args.batch}, {args.size}x{args.size}, one training step on {args.device}")
    print("| grad checkpointing | peak memory (MiB) | loss |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {'on' if r['checkpointing'] else 'off'} | {r['peak_mib']:.0f} | {r['loss']:.6f} |")
    print(f"reduction: {1 - rows[1]['peak_mib'] / rows[0]['peak_mib']:.0%}")


if __name__ == "__main__":
    main()

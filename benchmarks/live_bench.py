"""Live inference speed: a camera-paced MPEG-TS stream over local TCP, scored window after window on the fast path.

For each model (random weights, full size) a server process sends ``--seconds`` of synthetic 30 fps video in real
time; ``predict_stream`` (fast path: BN folded, channels-last, bf16 weights where the CPU has it, CUDA when present)
scores a ``--window`` s window every ``--hop`` s and skips windows when it falls behind. Reports windows scored and
skipped, the sustained hop, latency (last frame of a window in -> its prediction out) and the real-time factor.

    python benchmarks/live_bench.py --models slow_r50_8x8,slowfast_r50_8x8 --seconds 30 --out live.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from stream_server import Server

import slowfast_zoo
from slowfast_zoo.tasks.live import predict_stream


def run(name: str, seconds: float, window: float, hop: float, size: tuple[int, int]) -> dict:
    torch.manual_seed(0)
    model = slowfast_zoo.create(name).eval()  # random weights: the speed does not depend on them
    with tempfile.TemporaryDirectory() as tmp:
        frames = str(round(seconds * 30))
        server = Server(
            Path(tmp),
            "--frames",
            frames,
            "--fps",
            "30",
            "--width",
            str(size[0]),
            "--height",
            str(size[1]),
            "--realtime",
        )
        try:
            live = predict_stream(server.url, model, window, hop, read_timeout=30)
            results = list(live)
        finally:
            server.stop()
    s = live.stats
    load = os.getloadavg()
    lat = sorted(s.latencies)
    return {
        "model": name,
        "dtype": str(next(live.model.parameters()).dtype),
        "device": str(next(live.model.parameters()).device),
        "stream_s": seconds,
        "window_s": window,
        "hop_s": hop,
        "windows": s.windows,
        "skipped": s.dropped,
        "sustained_hop_s": round(s.sustained_hop, 3),
        "real_time_factor": round(s.real_time_factor, 3),
        "compute_median_s": round(statistics.median(s.computes), 3),
        "latency_median_s": round(statistics.median(lat), 3),
        "latency_max_s": round(lat[-1], 3),
        "peak_buffered_frames": s.peak_buffered,
        "buffer_capacity_frames": s.capacity,
        "peak_buffer_bytes": s.peak_buffer_bytes,
        "end": s.end,
        "load_avg_1min_after": round(load[0], 2),
        "first_top1": results[0].prediction.top[0].label if results else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="slow_r50_8x8,slowfast_r50_8x8")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--hop", type=float, default=0.5)
    parser.add_argument("--size", default="640x360", help="WxH of the streamed frames")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    rows = []
    for name in args.models.split(","):
        row = run(name, args.seconds, args.window, args.hop, size)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        args.out.write_text(
            json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()

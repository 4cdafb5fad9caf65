"""Videos/s of feature extraction in one process and on a local Ray instance with 1 and 2 CPU model actors.

    python benchmarks/ray_bench.py [--videos 12] [--width 16] [--crop 112] [--cpus 4] [--out ray_results.json]

A SlowFast R50 8x8 (random weights, ``--width`` channels in the stem, ``--crop`` px test crop) saved as a
``local-dir:`` model, and ``--videos`` synthetic 3 s 320x240 H.264 videos. Stages timed separately:

* ``decode``: :class:`DecodeClips` alone (PyAV decode + the checkpoint's eval transform), here and as Ray tasks;
* ``model``: :class:`EmbedClips` alone on already-decoded views, here and on 1 / 2 Ray actors;
* ``end_to_end``: ``features.extract`` here, ``ray_jobs.extract`` on Ray (shards written), with Ray's start-up
  (``ray.init``) reported on its own.

Ray gets ``--cpus`` logical CPUs (decode tasks take 1 each, model actors 1 each; Ray runs torch in them with one
thread). The single-process rows use ``--threads`` torch threads (default 1, as each actor: on a shared, loaded
machine more threads mostly spin). Every figure is one timed run after a warm-up run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import slowfast_zoo
from slowfast_zoo import features
from slowfast_zoo.tasks.ray_data import DecodeClips, EmbedClips


def _model(folder: Path, width: int, crop: int) -> str:
    torch.manual_seed(0)
    m = slowfast_zoo.create("slowfast_r50_8x8", width=width, num_classes=400).eval()
    m.pretrained_cfg = m.pretrained_cfg.replace(test_short_side=crop, test_crop_size=crop, test_head_pool="adaptive")
    return "local-dir:" + str(slowfast_zoo.publish.save_pretrained(m, folder))


def _videos(folder: Path, n: int) -> list[str]:
    from video_factory import write_sample_clip

    first = write_sample_clip(folder / "v0.mp4", seconds=3.0)
    out = [str(first)]
    for i in range(1, n):
        (folder / f"v{i}.mp4").write_bytes(first.read_bytes())
        out.append(str(folder / f"v{i}.mp4"))
    return out


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser()
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--crop", type=int, default=112)
    p.add_argument("--cpus", type=int, default=4, help="logical CPUs given to Ray")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the single-process rows (%(default)s)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import ray

    work = Path(tempfile.mkdtemp(prefix="sfz-ray-bench-"))
    spec = _model(work / "model", args.width, args.crop)
    videos = _videos(work, args.videos)
    n = len(videos)
    rows: list[dict[str, Any]] = []

    def record(stage: str, engine: str, seconds: float, **extra: Any) -> None:
        rows.append({"stage": stage, "engine": engine, "seconds": round(seconds, 3), "videos_s": round(n / seconds, 2)})
        rows[-1].update(extra)
        print(f"{stage:10s} {engine:22s} {seconds:7.2f} s  {n / seconds:6.2f} videos/s", flush=True)

    decode = DecodeClips(spec)
    decode({"path": videos[:1]})  # warm-up
    decoded: dict[str, list] = {}
    t = _timed(lambda: [decoded.setdefault(k, []).extend(v) for p in videos for k, v in decode({"path": [p]}).items()])
    record("decode", "local", t)
    embed = EmbedClips(spec)
    embed({k: v[:1] for k, v in decoded.items()})
    record("model", "local", _timed(lambda: embed(decoded)))
    features.extract(videos[:1], spec, work / "warm", progress=False)
    record("end_to_end", "local", _timed(lambda: features.extract(videos, spec, work / "local", progress=False)))

    local = features.load_features(work / "local")
    t_init = _timed(lambda: ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False))
    ray.data.DataContext.get_current().enable_progress_bars = False
    print(f"ray.init {t_init:.2f} s", flush=True)
    items = [{"path": v} for v in videos]
    ray.data.from_items(items[:2]).map_batches(decode, batch_size=1).materialize()  # warm-up (workers start)
    t = _timed(lambda: ray.data.from_items(items).map_batches(decode, batch_size=1).materialize())
    record("decode", "ray tasks", t)
    views = [{k: decoded[k][i] for k in ("path", "views", "error")} for i in range(n)]
    from slowfast_zoo.tasks import ray_jobs

    for actors in (1, 2):
        short = ray_jobs.resource_shortfall(ray.cluster_resources(), actors, 1.0, 0.0)
        if short:  # it would wait forever for a decode task
            print(f"ray {actors} actor(s): skipped, {short}", flush=True)
            continue
        ds = ray.data.from_items(views).map_batches(
            EmbedClips, fn_constructor_args=(spec,), batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors)
        )
        record("model", f"ray {actors} actor(s)", _timed(ds.materialize), note="includes actor start + model load")
        ray_jobs.extract(videos[:1], spec, work / f"warm{actors}", actors=actors, progress=False)
        t = _timed(lambda a=actors: ray_jobs.extract(videos, spec, work / f"ray{a}", actors=a, progress=False))
        record("end_to_end", f"ray {actors} actor(s)", t, note="includes actor start + model load")
        same = all((work / "local" / f.name).read_bytes() == f.read_bytes() for f in (work / f"ray{actors}").iterdir())
        diff = (features.load_features(work / f"ray{actors}")["embeddings"] - local["embeddings"]).abs().max()
        print(
            f"  shards equal to local byte for byte: {same}; max |embedding difference| {float(diff):.2e}", flush=True
        )
    ray.shutdown()
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "ray": ray.__version__,
        "load_average": os.getloadavg(),
        "args": vars(args),
        "ray_init_s": round(t_init, 3),
        "rows": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

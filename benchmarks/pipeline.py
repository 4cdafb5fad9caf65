"""Whole videos through the zoo, stage by stage, against the model alone and PyTorchVideo's data path (one run).

    python benchmarks/pipeline.py [--models slowfast_r50_8x8,slow_r50_8x8] [--sizes 340x256,640x360,1280x720]
        [--precisions fp32,bf16fast] [--workers 0,1,2] [--e2e-sizes all] [--videos 3] [--eval all]
        [--device cpu|cuda] [--repeat 3] [--out pipeline.json] [--video-dir DIR]
    python benchmarks/pipeline.py --compare before.json after.json      # markdown tables of two runs

Synthetic 10 s H.264 videos at 30 fps (moving gradients and noise, x264 ``veryfast``, GOP 250) are written to a
temporary folder. Per (model, size), the checkpoint's own 30-view test protocol (PySlowFast's Kinetics rule):

* ``decode_per_view``: every clip read on its own (``ClipView.read``, what the zoo did before the one-pass reader);
  ``decode_one_pass``: all views at once (``read_views``; absent on older code); ``decode_torchcodec``: the same
  with torchcodec (``TorchCodecReader``: all views' frames in one ``get_frames_at`` call; absent where torchcodec
  does not load);
* ``transform_clip``: ``VideoTransform.crops`` per clip (uint8 frames in, three crops out);
  ``transform_per_frame``: ``prepare_frame`` per decoded frame + ``crops_of_frames`` (absent on older code);
* ``decode_transform``: what ``predict`` itself does before the model (one pass with per-frame preparation, or the
  older loop), measured alone, decoded with PyAV; ``decode_transform_torchcodec``: the same decoded by torchcodec;
  ``decode_transform_ptv_views``: the same on the ``k400_ptv`` protocol's views;
* ``ptv_decode`` / ``ptv_transform``: pytorchvideo 0.1.5's ``EncodedVideo.get_clip`` per clip and its transforms
  (``UniformTemporalSubsample``, ``Div255``, ``Normalize``, ``ShortSideScale``, ``UniformCropVideo``) on the same
  clip windows (its own ``ConstantClipsPerVideoSampler``);
* decode stages also report process CPU seconds (``cpu_*``, decoder threads included) and CPU ratios: the work
  done, which waiting for a core on a loaded machine does not inflate as it does wall time;
* ``model``: the model alone on the same 30 views, batched as ``predict`` batches them (6 on a CPU, 30 on a GPU),
  per precision (``fp32``: eager; ``bf16fast``: ``optimize_for_inference(dtype=bfloat16)``, weights bf16);
* ``predict``: ``predict(video, model)`` end to end; ``ratio`` = predict / model (1.0 would be the model's speed);
* ``evaluate``: ``evaluate`` over ``--videos`` videos with 0/1/2 decoding workers: videos/s;
* ``features``: ``features.extract`` (one centred view per video): videos/s.

``--workers-stage`` (``predict_many`` over ``--videos`` videos, per precision, at the first size): the model alone on
all those videos' views (decoded beforehand, batched as ``predict`` batches them) and ``predict_many`` end to end
with each of ``--worker-modes`` (``0``: inline; ``t1``/``t2``: 1/2 decoding threads; ``p1``/``p2``: 1/2 decoding
processes, their start-up included), in a rotating order for ``--rounds`` rounds. Per mode: videos/s, the ratio
end to end / model alone within each round (median) and best against best, and end to end over the time the
inference thread spent in the model during that same call (measured together, so a load that changes between
stages does not enter it; what is left is the thread waiting for decoding, and the workers' start). A full run
ends with this stage at the first of ``--e2e-sizes``. ``--transfer``: one 30-view input of the model (each clip's
views sharing the clip's storage, as the transforms make them), built in a worker process and sent to this one as
shared-memory tensors or pickled bytes, against building it and sending nothing. ``--rounding VIDEO``: the largest
difference between VIDEO's model inputs made with torch on one thread (as a decode process makes them) and on two.

``--stages decode`` runs the decoding stages only (``--e2e-sizes none`` then skips the model too);
``--stages decode-prepare`` adds ``decode_transform`` and ``decode_transform_torchcodec`` (decoding as ``predict``
decodes, each frame prepared as it leaves the decoder), which is what ``decoder="auto"`` serves. Times are
medians of ``--repeat`` runs (model and end-to-end stages: one run each, they take seconds). Works on the
code of any checkout (``PYTHONPATH=...``): stages the code lacks are reported as absent. On a GPU everything runs on
the device, with ``torch.cuda.synchronize`` around each timed call.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torchvision

# pytorchvideo 0.1.5 imports a module torchvision renamed
sys.modules.setdefault("torchvision.transforms.functional_tensor", torchvision.transforms._functional_tensor)

import slowfast_zoo  # noqa: E402
from slowfast_zoo import features  # noqa: E402
from slowfast_zoo.models.optimize import optimize_for_inference  # noqa: E402
from slowfast_zoo.tasks.evaluate import evaluate  # noqa: E402
from slowfast_zoo.tasks.predict import predict  # noqa: E402

try:  # absent on older code
    from slowfast_zoo.tasks.predict import predict_many
    from slowfast_zoo.tasks.workers import Prefetcher
except ImportError:  # pragma: no cover
    predict_many = Prefetcher = None  # type: ignore[assignment]
from slowfast_zoo.video import transforms as T  # noqa: E402
from slowfast_zoo.video.io import VideoReader  # noqa: E402
from slowfast_zoo.video.views import plan_views  # noqa: E402

SECONDS, FPS = 10, 30


def write_video(path: Path, width: int, height: int, seed: int = 0, seconds: int = SECONDS) -> Path:
    """``seconds`` of moving gradients with noise, H.264 yuv420p, 30 fps (Kinetics-like bit rate)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS), options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = 250
        for i in range(seconds * FPS):
            base = np.stack([(x + 3 * i) % 256, (y + 2 * i) % 256, (x + y + i) % 256], -1)
            img = np.clip(base + rng.integers(-12, 12, size=base.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], repeat: int, device: torch.device) -> tuple[float, Any]:
    """Median seconds of ``repeat`` calls (after none: the first call is timed too; decoding has no warm-up)."""
    times, out = [], None
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


# ---- stages -------------------------------------------------------------------------------------------------------
def decode_per_view(path: Path, plan_of: Callable[[Any], list]) -> list[torch.Tensor]:
    with VideoReader(path) as r:
        return [v.read(r) for v in plan_of(r)]


def decode_one_pass(path: Path, plan_of: Callable[[Any], list], reader: Any = VideoReader) -> list[torch.Tensor]:
    with reader(path) as r:
        return list(r.read_views(plan_of(r)))


def torchcodec_reader() -> Any:
    """``TorchCodecReader`` where this code has it and torchcodec loads, else None."""
    try:
        from slowfast_zoo.video.codec import TorchCodecReader, torchcodec_problem
    except ImportError:
        return None
    return TorchCodecReader if torchcodec_problem() is None else None


def transform_clip(cfg: Any, clips: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    t = T.create_transforms(cfg, "eval")
    return [c for clip in clips for c in t.crops(clip.to(device), cfg.test_crops)]


def transform_per_frame(cfg: Any, clips: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    t = T.create_transforms(cfg, "eval")
    out = []
    for clip in clips:
        frames = torch.stack([t.prepare_frame(f.to(device)) for f in clip])
        out += t.crops_of_frames(frames, cfg.test_crops)
    return out


def decode_transform(path: Path, cfg: Any, device: torch.device, reader: Any = VideoReader) -> list[torch.Tensor]:
    """What predict does before the model, on this code."""
    from slowfast_zoo.tasks import predict as P

    with reader(path) as r:
        plan = plan_views(cfg, r.info, "reference")
        if hasattr(P, "iter_view_inputs"):
            return list(P.iter_view_inputs(r, cfg, plan, device))
        t = T.create_transforms(cfg, "eval")
        return [c for v in plan for c in t.crops(v.read(r).to(device), v.crops)]


def ptv_views(path: Path, cfg: Any) -> tuple[list[torch.Tensor], float, float]:
    """pytorchvideo 0.1.5's data path on the same clip windows: (crops, decode seconds, transform seconds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pytorchvideo.data.clip_sampling import ConstantClipsPerVideoSampler
        from pytorchvideo.data.encoded_video import EncodedVideo
        from pytorchvideo.transforms import (
            Div255,
            Normalize,
            ShortSideScale,
            UniformCropVideo,
            UniformTemporalSubsample,
        )
    t0 = time.perf_counter()
    video = EncodedVideo.from_path(str(path), decode_audio=False, decoder="pyav")
    sampler = ConstantClipsPerVideoSampler(cfg.num_frames * cfg.sampling_rate / cfg.target_fps, cfg.test_clips)
    clips, last = [], 0.0
    for _ in range(cfg.test_clips):
        start, end, _, _, _ = sampler(last, video.duration, {})
        clips.append(video.get_clip(start, end)["video"])
        last = end
    video.close()
    t1 = time.perf_counter()
    subsample, div = UniformTemporalSubsample(cfg.num_frames), Div255()
    norm, scale = Normalize(cfg.mean, cfg.std), ShortSideScale(cfg.test_short_side)
    crops = []
    for clip in clips:
        x = scale(norm(div(subsample(clip))))
        for i in range(len(cfg.test_crops)):
            crops.append(UniformCropVideo(cfg.test_crop_size)({"video": x, "aug_index": i})["video"])
    return crops, t1 - t0, time.perf_counter() - t1


def model_only(model: Any, views: list[torch.Tensor], batch: int, device: torch.device) -> None:
    alpha, dtype = model.pretrained_cfg.alpha, next(model.parameters()).dtype
    with torch.inference_mode():
        for i in range(0, len(views), batch):
            x = torch.stack(views[i : i + batch]).to(device, dtype)
            inputs = T.pack_pathways(x, alpha)
            model.position_logits(inputs if alpha is not None else inputs[0]).float().cpu()


def build(name: str, precision: str, device: torch.device) -> tuple[Any, Callable[[], Any]]:
    """The model and the context to run it in: ``bf16fast`` stores bf16 weights once where this code can run
    them; older code (no bf16 average pool) gets the fp32 fast copy under ``torch.autocast`` instead."""
    torch.manual_seed(0)
    cfg = slowfast_zoo.get_pretrained_cfg(f"{name}.k400_pysf")
    model = slowfast_zoo.create(f"{name}.k400_pysf", pretrained=False, head_pool=cfg.test_head_pool).to(device).eval()
    if precision != "bf16fast":
        return model, contextlib.nullcontext
    fast = optimize_for_inference(model, dtype=torch.bfloat16)
    clip = torch.zeros(1, 3, cfg.num_frames, cfg.test_crop_size, cfg.test_crop_size, device=device)
    inputs = T.pack_pathways(clip.to(torch.bfloat16), cfg.alpha)
    try:
        with torch.inference_mode():
            fast.position_logits(inputs if cfg.alpha is not None else inputs[0])
        return fast, contextlib.nullcontext
    except NotImplementedError:
        fast32 = optimize_for_inference(model)
        return fast32, lambda: torch.autocast(device.type, dtype=torch.bfloat16)


# ---- the run ------------------------------------------------------------------------------------------------------
def bench_data(
    name: str, path: Path, repeat: int, device: torch.device, only_decode: bool = False, prepare: bool = False
) -> dict[str, Any]:
    """Decode and transform stages, interleaved: each repetition runs every stage once (in a rotating order), so
    the ratios between stages (median of per-repetition ratios) hold on a loaded machine better than the times.
    ``only_decode``: the decoding stages only, and with ``prepare`` ``decode_transform`` per decoder too."""
    cfg = slowfast_zoo.get_pretrained_cfg(f"{name}.k400_pysf")
    ptv_cfg = slowfast_zoo.get_pretrained_cfg(f"{name}.k400_ptv")

    def plan_of(r: Any) -> list:
        return plan_views(cfg, r.info, "reference")

    clips = decode_per_view(path, plan_of)
    stages: dict[str, Callable[[], Any]] = {"decode_per_view": lambda: decode_per_view(path, plan_of)}
    if hasattr(VideoReader, "read_views"):
        stages["decode_one_pass"] = lambda: decode_one_pass(path, plan_of)
    tc = torchcodec_reader()
    if tc is not None:
        stages["decode_torchcodec"] = lambda: decode_one_pass(path, plan_of, tc)
    if only_decode and prepare:
        stages["decode_transform"] = lambda: decode_transform(path, cfg, device)
        if tc is not None:
            stages["decode_transform_torchcodec"] = lambda: decode_transform(path, cfg, device, tc)
    if not only_decode:
        stages["transform_clip"] = lambda: transform_clip(cfg, clips, device)
        if hasattr(T.VideoTransform, "prepare_frame"):
            stages["transform_per_frame"] = lambda: transform_per_frame(cfg, clips, device)
        stages["decode_transform"] = lambda: decode_transform(path, cfg, device)
        if tc is not None:
            stages["decode_transform_torchcodec"] = lambda: decode_transform(path, cfg, device, tc)
        stages["decode_transform_ptv_views"] = lambda: decode_transform(path, ptv_cfg, device)
    times: dict[str, list[float]] = {
        k: [] for k in [*stages, *([] if only_decode else ["ptv_decode", "ptv_transform"])]
    }
    cpu: dict[str, list[float]] = {k: [] for k in stages}  # process CPU seconds, decoder threads included
    for i in range(repeat):
        names = list(stages)
        for key in names[i % len(names) :] + names[: i % len(names)]:
            c0 = time.process_time()
            times[key].append(timed(stages[key], 1, device)[0])
            cpu[key].append(time.process_time() - c0)
        if not only_decode:
            _, decode_s, transform_s = ptv_views(path, ptv_cfg)
            times["ptv_decode"].append(decode_s)
            times["ptv_transform"].append(transform_s)
    out: dict[str, Any] = {k: statistics.median(v) for k, v in times.items()}

    def ratio(a: str, b: str) -> float | None:
        return statistics.median(x / y for x, y in zip(times[a], times[b])) if a in times and b in times else None

    out["ratio_decode_per_view_to_one_pass"] = ratio("decode_per_view", "decode_one_pass")
    out["ratio_decode_per_view_to_torchcodec"] = ratio("decode_per_view", "decode_torchcodec")
    out["ratio_decode_one_pass_to_torchcodec"] = ratio("decode_one_pass", "decode_torchcodec")
    out["ratio_decode_transform_to_torchcodec"] = ratio("decode_transform", "decode_transform_torchcodec")
    # the work itself, which a loaded machine's wait for a core does not inflate (threads add up)
    out.update({f"cpu_{k}": statistics.median(v) for k, v in cpu.items() if k.startswith("decode_")})
    for a, b in (
        ("per_view", "one_pass"),
        ("per_view", "torchcodec"),
        ("one_pass", "torchcodec"),
        ("transform", "transform_torchcodec"),
    ):
        if f"decode_{a}" in cpu and f"decode_{b}" in cpu:
            pairs = zip(cpu[f"decode_{a}"], cpu[f"decode_{b}"])
            out[f"ratio_cpu_decode_{a}_to_{b}"] = statistics.median(x / y for x, y in pairs)
    if only_decode:
        return out
    out["ratio_transform_clip_to_per_frame"] = ratio("transform_clip", "transform_per_frame")
    times["ptv_total"] = [x + y for x, y in zip(times["ptv_decode"], times["ptv_transform"])]
    out["ratio_ptv_to_zoo_same_views"] = ratio("ptv_total", "decode_transform_ptv_views")
    return out


def bench_model(name: str, precision: str, path: Path, device: torch.device) -> dict[str, Any]:
    cfg = slowfast_zoo.get_pretrained_cfg(f"{name}.k400_pysf")
    model, ctx = build(name, precision, device)
    views = decode_transform(path, cfg, device)
    batch = len(views) if device.type != "cpu" else min(len(views), 6)
    with ctx():
        model_only(model, views[:batch], batch, device)  # warm-up (oneDNN primitives, cuDNN autotuning)
    out: dict[str, Any] = {"views": len(views), "batch": batch, "autocast": ctx is not contextlib.nullcontext}
    with ctx():
        out["model"], _ = timed(lambda: model_only(model, views, batch, device), 1, device)
        out["predict"], _ = timed(lambda: predict(path, model, views="reference"), 1, device)
    out["ratio"] = out["predict"] / out["model"]
    return out


def bench_evaluate(name: str, precision: str, paths: list[Path], workers: int, device: torch.device) -> float:
    model, ctx = build(name, precision, device)
    ann = paths[0].parent / "list.txt"
    ann.write_text("".join(f"{p.name} 0\n" for p in paths))
    with tempfile.TemporaryDirectory() as tmp, ctx():
        seconds, _ = timed(
            lambda: evaluate(
                model,
                "kinetics400",
                paths[0].parent,
                ann,
                workers=workers,
                progress=False,
                out=Path(tmp) / "r.json",
                device=device,
            ),
            1,
            device,
        )
    return len(paths) / seconds


def bench_features(name: str, precision: str, paths: list[Path], device: torch.device) -> float:
    model, ctx = build(name, precision, device)
    with tempfile.TemporaryDirectory() as tmp, ctx():
        seconds, _ = timed(lambda: features.extract([str(p) for p in paths], model, tmp, progress=False), 1, device)
    return len(paths) / seconds


MODE_NAMES = {"0": (0, "thread"), "t1": (1, "thread"), "t2": (2, "thread"), "p1": (1, "process"), "p2": (2, "process")}


def load_average() -> list[float] | None:
    with contextlib.suppress(OSError, ValueError):
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return None


def bench_workers(
    name: str, precision: str, paths: list[Path], modes: list[str], rounds: int, device: torch.device
) -> dict[str, Any]:
    """``predict_many`` over ``paths`` per worker mode against the model alone on the same views, interleaved."""
    cfg = slowfast_zoo.get_pretrained_cfg(f"{name}.k400_pysf")
    model, ctx = build(name, precision, device)
    views = [decode_transform(p, cfg, device) for p in paths]
    batch = len(views[0]) if device.type != "cpu" else min(len(views[0]), 6)
    with ctx():
        model_only(model, views[0], batch, device)  # warm-up: one batch left the first timed stage up to 2.9x slower

    stages: dict[str, Callable[[], Any]] = {"model": lambda: [model_only(model, v, batch, device) for v in views]}
    inside: dict[str, list[float]] = {mode: [] for mode in modes}
    for mode in modes:
        w, k = MODE_NAMES[mode]
        stages[mode] = functools.partial(_predict_all, paths, model, w, k, inside[mode])
    times: dict[str, list[float]] = {key: [] for key in stages}
    loads = [load_average()]
    with ctx():
        for i in range(rounds):
            order = list(stages)
            for key in order[i % len(order) :] + order[: i % len(order)]:
                times[key].append(timed(stages[key], 1, device)[0])
                print(f"  {name}/{precision} {i} {key}: {times[key][-1]:.2f} s, load {load_average()}", flush=True)
            loads.append(load_average())
    out: dict[str, Any] = {"videos": len(paths), "views_per_video": len(views[0]), "batch": batch, "times_s": times}
    out["model_inside_s"] = inside
    out["load_average"] = loads
    out["model_s_per_video_best"] = min(times["model"]) / len(paths)
    for mode in modes:
        out[mode] = {
            "videos_per_s": len(paths) / statistics.median(times[mode]),
            "ratio_median": statistics.median(a / b for a, b in zip(times[mode], times["model"])),
            "ratio_best": min(times[mode]) / min(times["model"]),
            # in the same call: wall time over the inference thread's time in the model (1.0: it never waited)
            "ratio_to_model_inside": statistics.median(a / b for a, b in zip(times[mode], inside[mode])),
        }
    return out


def _predict_all(paths: list[Path], model: Any, workers: int, kind: str, inside: list[float]) -> list[Any]:
    """``predict_many`` over ``paths``; appends to ``inside`` the seconds its inference thread spent running the
    model on decoded views (the rest of the wall time it waited for decoding, or started workers)."""
    from slowfast_zoo.tasks import predict as P

    real = P._predict_inputs
    spent = 0.0

    def timed_inputs(*args: Any, **kwargs: Any) -> Any:
        nonlocal spent
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent += time.perf_counter() - t0

    P._predict_inputs = timed_inputs
    try:
        got = list(predict_many(paths, model, workers=workers, worker_type=kind))
    finally:
        P._predict_inputs = real
    inside.append(spent)
    bad = [r for _, r in got if isinstance(r, Exception)]
    if bad:
        raise bad[0]
    return got


def synthetic_views(n: int, clips: int = 10, crops: int = 3, frames: int = 32, size: tuple[int, int] = (256, 340)):
    """A 30-view SlowFast input as the transforms make it: each clip's crops are views of one resized clip."""
    if n < 0:
        return None
    out = []
    for c in range(clips):
        clip = torch.empty(frames, 3, *size).fill_(float(c))
        for k in range(crops):
            left = k * (size[1] - size[0]) // max(crops - 1, 1)
            out.append(clip[..., left : left + size[0]].permute(1, 0, 2, 3))
    return out if n else len(out)


def thread_rounding(path: Path, name: str) -> dict[str, Any]:
    """Largest difference between a video's model inputs made with torch on 1 and on 2 threads (what a decode
    process, on one thread, gives against a caller on two)."""
    from slowfast_zoo.tasks.runner import read_view_inputs

    cfg = slowfast_zoo.get_pretrained_cfg(name)
    before, made = torch.get_num_threads(), {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            made[threads] = read_view_inputs(path, cfg, "reference", torch.device("cpu"))[1]
    finally:
        torch.set_num_threads(before)
    diff = max(float((a - b).abs().max()) for a, b in zip(made[1], made[2]))
    return {"video": str(path), "model": name, "views": len(made[1]), "max_abs_difference": diff}


def bench_transfer(repeat: int, items: int = 3) -> dict[str, Any]:
    """Seconds per 30-view input crossing from a worker process: shared memory against pickled bytes, against a
    worker that builds the input and sends nothing (the difference is the transfer); one worker, interleaved."""
    times: dict[str, list[float]] = {"build_only": [], "shm": [], "pickle": []}
    pools = {
        "build_only": Prefetcher(1, "process"),
        "shm": Prefetcher(1, "process", transport="shm"),
        "pickle": Prefetcher(1, "process", transport="pickle"),
    }
    try:
        for pool in pools.values():  # start the workers before timing
            list(pool.map(synthetic_views, [0]))
        for i in range(repeat):
            order = list(pools)
            for key in order[i % 3 :] + order[: i % 3]:
                arg = 0 if key == "build_only" else 1
                t0 = time.perf_counter()
                for views in pools[key].map(synthetic_views, [arg] * items):
                    if arg:
                        assert len(views) == 30 and float(views[-1][0, 0, 0, 0]) == 9.0
                times[key].append((time.perf_counter() - t0) / items)
    finally:
        for pool in pools.values():
            pool.close()
    out: dict[str, Any] = {k: statistics.median(v) for k, v in times.items()}
    out["bytes"] = 10 * 32 * 3 * 256 * 340 * 4
    for key in ("shm", "pickle"):
        out[f"{key}_transfer_s"] = statistics.median(a - b for a, b in zip(times[key], times["build_only"]))
    out["times_s"] = times
    out["load_average"] = load_average()
    return out


def machine(device: torch.device) -> dict[str, Any]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    info["cpu"] = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["zoo"] = str(Path(slowfast_zoo.__file__).parent)
    return info


def compare(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Markdown tables of two runs (older code, this code) of this script."""

    def f(x: Any, digits: int = 2) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    lines = [
        "| model @ size | decode before | decode after | decode ratio (one run) | transforms before | transforms after "
        "| transforms ratio (one run) | decode+transforms before | after | PyTorchVideo / zoo, same views "
        "| decode torchcodec | per-clip / torchcodec (one run) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, a in after["data"].items():
        b = before["data"].get(key, {})
        lines.append(
            f"| {key} | {f(b.get('decode_per_view'))} s | {f(a.get('decode_one_pass'))} s "
            f"| {f(a.get('ratio_decode_per_view_to_one_pass'))}x | {f(b.get('transform_clip'))} s "
            f"| {f(a.get('transform_per_frame'))} s | {f(a.get('ratio_transform_clip_to_per_frame'))}x "
            f"| {f(b.get('decode_transform'))} s | {f(a.get('decode_transform'))} s "
            f"| {f(a.get('ratio_ptv_to_zoo_same_views'))}x | {f(a.get('decode_torchcodec'))} s "
            f"| {f(a.get('ratio_decode_per_view_to_torchcodec'))}x |"
        )
    lines += [
        "",
        "| model @ size / precision | model alone | predict before | predict after | predict/model before "
        "| after | evaluate videos/s before (workers) | after (workers) | features videos/s before | after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, a in after["model"].items():
        b = before["model"].get(key, {})

        def per_worker(r: dict[str, Any]) -> str:
            ev = r.get("evaluate_videos_per_s") or {}
            return ", ".join(f"{v:.3f} ({w})" for w, v in ev.items()) or "-"

        lines.append(
            f"| {key} | {f(a.get('model'))} s | {f(b.get('predict'))} s | {f(a.get('predict'))} s "
            f"| {f(b.get('ratio'))} | {f(a.get('ratio'))} | {per_worker(b)} | {per_worker(a)} "
            f"| {f(b.get('features_videos_per_s'), 3)} | {f(a.get('features_videos_per_s'), 3)} |"
        )
    return "\n".join(lines)


def workers_stage(
    args: Any, models: list[str], precisions: list[str], paths: list[Path], size: str, results: dict, device: Any
) -> None:
    """``bench_workers`` for every model and precision (modes per precision: ``fp32=0,t1;bf16fast=...``)."""
    results["workers"] = {}
    per = dict(x.split("=", 1) for x in args.worker_modes.split(";")) if "=" in args.worker_modes else {}
    for name in models:
        for precision in precisions:
            modes = per.get(precision, args.worker_modes if not per else "0").split(",")
            key = f"{name}@{size}/{precision}"
            r = bench_workers(name, precision, paths[: args.videos], modes, args.rounds, device)
            results["workers"][key] = r
            print(key, json.dumps({k: v for k, v in r.items() if k != "times_s"}), flush=True)
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    if argv is None and sys.argv[1:2] == ["--compare"]:
        before, after = (json.loads(Path(x).read_text()) for x in sys.argv[2:4])
        print(compare(before, after))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="slowfast_r50_8x8,slow_r50_8x8")
    p.add_argument("--sizes", default="340x256,640x360,1280x720")
    p.add_argument("--precisions", default="fp32,bf16fast")
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--e2e-sizes", default="all", help="sizes for the model stages (all, or a list); 'none' skips")
    p.add_argument("--videos", type=int, default=3, help="videos per evaluate / features run")
    p.add_argument("--eval", default="all", help="model/precision pairs for evaluate and features (all, or e.g. "
                   "slow_r50_8x8/bf16fast)")  # fmt: skip
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--stages",
        choices=["all", "decode", "decode-prepare"],
        default="all",
        help="decode: the decoding stages only; decode-prepare: and decode_transform with each decoder",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="pipeline.json")
    p.add_argument("--video-dir", help="write the synthetic videos here, or reuse them (default: a temporary folder)")
    p.add_argument("--workers-stage", action="store_true", help="only the predict_many stage (else it runs last)")
    p.add_argument("--worker-modes", default="0,t1,t2,p1,p2", help="per precision, e.g. fp32=0,t1,p1;bf16fast=...")
    p.add_argument("--rounds", type=int, default=1, help="rounds of the --workers-stage (rotating order)")
    p.add_argument("--transfer", action="store_true", help="only the worker-to-parent transfer of a 30-view input")
    p.add_argument("--rounding", metavar="VIDEO", help="only: inputs of VIDEO made on 1 against 2 torch threads")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    models, sizes = args.models.split(","), args.sizes.split(",")
    e2e = sizes if args.e2e_sizes == "all" else [] if args.e2e_sizes == "none" else args.e2e_sizes.split(",")
    precisions, workers = args.precisions.split(","), [int(w) for w in args.workers.split(",") if w]
    results: dict[str, Any] = {"machine": machine(device), "args": vars(args), "data": {}, "model": {}}
    if args.rounding:
        results["rounding"] = [thread_rounding(Path(args.rounding), f"{m}.k400_pysf") for m in models]
        print(json.dumps(results["rounding"]), flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        return
    if args.transfer:
        results["transfer"] = bench_transfer(args.repeat)
        print(json.dumps(results["transfer"]), flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        return
    with contextlib.ExitStack() as stack:
        tmp = args.video_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="sfz-pipeline-"))
        videos = {}
        for size in sizes:
            w, h = map(int, size.split("x"))
            folder = Path(tmp) / size
            folder.mkdir(parents=True, exist_ok=True)
            videos[size] = [folder / f"v{i}.mp4" for i in range(max(args.videos, 1))]
            for i, v in enumerate(videos[size]):
                if not v.exists():
                    write_video(v.with_suffix(".part.mp4"), w, h, seed=i).rename(v)
        if args.workers_stage:
            workers_stage(args, models, precisions, videos[sizes[0]], sizes[0], results, device)
            return
        for name in models:
            for size in sizes:
                only_decode = args.stages.startswith("decode")
                prepare = args.stages == "decode-prepare"
                r = bench_data(name, videos[size][0], args.repeat, device, only_decode, prepare)
                results["data"][f"{name}@{size}"] = r
                print(name, size, json.dumps({k: v if v is None else round(v, 4) for k, v in r.items()}), flush=True)
                Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
            for precision in precisions:
                for size in e2e:
                    key = f"{name}@{size}/{precision}"
                    r = bench_model(name, precision, videos[size][0], device)
                    if size == e2e[0] and (args.eval == "all" or f"{name}/{precision}" in args.eval.split(",")):
                        r["evaluate_videos_per_s"] = {
                            w: bench_evaluate(name, precision, videos[size][: args.videos], w, device) for w in workers
                        }
                        r["features_videos_per_s"] = bench_features(name, precision, videos[size], device)
                    results["model"][key] = r
                    print(key, json.dumps(r), flush=True)
                    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        if e2e and predict_many is not None:
            workers_stage(args, models, precisions, videos[e2e[0]], e2e[0], results, device)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

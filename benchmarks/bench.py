"""Inference side by side with PyTorchVideo 0.1.5 (same weights, same input, same process, alternating runs).

    python benchmarks/bench.py [--models slowfast_r50_8x8,slowfast_r101_16x8,slow_r50_8x8] [--batch 1,8]
                               [--repeat N] [--compile first|all|none] [--device cpu|cuda] [--out results.json]

Per (model, batch), one 256x256 view, these variants run in turn, repetition after repetition (the order rotates):

* ``ptv``          PyTorchVideo's hub builder, eager fp32, ``torch.no_grad``
* ``zoo``          ``slowfast_zoo.create``, eager fp32, ``torch.no_grad``
* ``zoo_fast32``   ``optimize_for_inference`` (BN folded, channels_last_3d), fp32, ``torch.inference_mode``
* ``zoo_fastbf16`` the same under ``torch.autocast(bfloat16)``
* ``zoo_compile``  ``torch.compile`` (inductor, freezing) of ``zoo_fastbf16``; compile time reported separately

Latency is the median over repetitions after one warm-up call. FLOPs come from ``torch.utils.flop_counter`` on the
meta device (2 per multiply-add, the same nominal count for every variant). Memory: CPU, the peak resident set size
above the level before the call (sampled every 2 ms, malloc_trim'd first), i.e. activations and workspaces, not
weights; CUDA, ``max_memory_allocated`` during the call (weights included). Also times ``create`` from a warm cache
against PyTorchVideo's builder + ``torch.load`` + ``load_state_dict``, and decode + transforms + model per clip.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import slowfast_zoo
from slowfast_zoo.models.optimize import optimize_for_inference
from slowfast_zoo.registry.registry import resolve_name
from slowfast_zoo.weights.keys import from_zoo

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pytorchvideo.models import hub as ptv_hub

PTV_BUILDERS = {
    "slowfast_r50_8x8": ptv_hub.slowfast_r50,
    "slowfast_r101_50_50_16x8": ptv_hub.slowfast_16x8_r101_50_50,
    "slowfast_r101_8x8": ptv_hub.slowfast_r101,
    "slow_r50_8x8": ptv_hub.slow_r50,
    "i3d_r50_8x8": ptv_hub.i3d_r50,
    "c2d_r50_8x8": ptv_hub.c2d_r50,
}
SIZE = 256


# ---- measuring ------------------------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident set size above the level at entry, sampled by a thread (torch kernels release the GIL)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        try:
            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except OSError:
            self._trim = None

    def __enter__(self) -> PeakRSS:
        if self._trim is not None:
            self._trim(0)
        self.base = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


class Timer:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, fn: Callable[[], Any]) -> tuple[float, float]:
        """(seconds, peak MiB) of one call."""
        if self.device.type == "cuda":
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)
            start = time.perf_counter()
            fn()
            self.sync()
            return time.perf_counter() - start, torch.cuda.max_memory_allocated(self.device) / 2**20
        with PeakRSS() as mem:
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
        return elapsed, mem.mib


def count_flops(name: str, batch: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model = slowfast_zoo.create(name, device="meta", head_pool="fixed").eval()
    x = inputs(model.cfg, batch, torch.device("meta"))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def inputs(cfg: Any, batch: int, device: torch.device) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if device.type == "meta":
        return [torch.empty(batch, 3, cfg.frames(p), SIZE, SIZE, device=device) for p in range(cfg.num_pathways)]
    return [torch.randn(batch, 3, cfg.frames(p), SIZE, SIZE, generator=g).to(device) for p in range(cfg.num_pathways)]


# ---- inference ------------------------------------------------------------------------------------------------------
def build(name: str, device: torch.device, variants: list[str]) -> tuple[dict[str, Callable[..., Any]], dict]:
    """The callables of every variant (same weights) and facts about them."""
    torch.manual_seed(0)
    zoo = slowfast_zoo.create(name, head_pool="fixed", device=device).eval()  # PTV's head: fixed kernel, then mean
    ptv = PTV_BUILDERS[name](pretrained=False)
    ptv.load_state_dict(from_zoo(zoo.state_dict(), "ptv", temporal_pool=zoo.cfg.temporal_pool > 1))
    ptv = ptv.to(device).eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    fns: dict[str, Callable[..., Any]] = {}
    info: dict[str, Any] = {}

    def ptv_fn(x: list[torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return ptv(list(x) if len(x) == 2 else x[0])  # PTV rewrites the list it is given

    def zoo_fn(x: list[torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return zoo(x)

    fns["ptv"], fns["zoo"] = ptv_fn, zoo_fn
    fast = optimize_for_inference(zoo)

    def fast32(x: list[torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return fast(x)

    def fastbf16(x: list[torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode(), autocast:
            return fast(x)

    fns["zoo_fast32"], fns["zoo_fastbf16"] = fast32, fastbf16
    if "zoo_compile" in variants:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # constant-fold weights (oneDNN prepacking on CPU); inference only
        compiled = torch.compile(fast)

        def comp(x: list[torch.Tensor]) -> torch.Tensor:
            with torch.inference_mode(), autocast:
                return compiled(x)

        fns["zoo_compile"] = comp
    return {k: v for k, v in fns.items() if k in variants}, info


def bench_case(name: str, batch: int, repeat: int, device: torch.device, variants: list[str]) -> dict[str, Any]:
    fns, _ = build(name, device, variants)
    cfg = slowfast_zoo.get_pretrained_cfg(name).model
    x = inputs(cfg, batch, device)
    timer = Timer(device)
    flops = count_flops(name, batch)
    times: dict[str, list[float]] = {k: [] for k in fns}
    mems: dict[str, list[float]] = {k: [] for k in fns}
    outs: dict[str, torch.Tensor] = {}
    warm: dict[str, float] = {}
    order = list(fns)
    for k in order:  # warm-up (oneDNN primitive creation, compilation), also the reference outputs
        start = time.perf_counter()
        outs[k] = fns[k](x).float().cpu()
        timer.sync()
        warm[k] = time.perf_counter() - start
    for r in range(repeat):
        rot = order[r % len(order) :] + order[: r % len(order)]
        for k in rot:
            t, m = timer.run(lambda k=k: fns[k](x))
            times[k].append(t)
            mems[k].append(m)
    ref = outs["ptv"] if "ptv" in outs else outs["zoo"]
    scale = ref.abs().max().item()
    rows = {}
    for k in order:
        med = statistics.median(times[k])
        rows[k] = {
            "median_s": med,
            "times_s": times[k],
            "clips_per_s": batch / med,
            "gflops_per_s": flops / med / 1e9,
            "peak_mib": max(mems[k]),
            "first_call_s": warm[k],
            "max_abs_diff_vs_ref": (outs[k] - ref).abs().max().item(),
            "ref_logit_scale": scale,
        }
    base = (rows["ptv"] if "ptv" in rows else rows["zoo"])["median_s"]
    for k in order:
        rows[k]["speedup_vs_ptv"] = base / rows[k]["median_s"]
    return {"model": name, "batch": batch, "size": SIZE, "gflops": flops / 1e9, "repeat": repeat, "variants": rows}


# ---- create from a warm cache ---------------------------------------------------------------------------------------
def bench_create(name: str, repeat: int, tmp: Path) -> dict[str, Any]:
    """``create(name, pretrained=True)`` from a warm Hugging Face cache (offline: the file at a pinned commit is
    verified and loaded) against PyTorchVideo's builder + ``torch.load`` + ``load_state_dict`` of the same tensors."""
    from safetensors.torch import save_file

    from slowfast_zoo import factory
    from slowfast_zoo.registry.pretrained import HubFile

    torch.manual_seed(0)
    model = slowfast_zoo.create(name)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    revision = "0" * 40
    cache = tmp / "hf"
    st = cache / f"models--slowfast-zoo--{name}" / "snapshots" / revision / "model.safetensors"
    st.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(st))
    pyth = tmp / f"{name}.pyth"
    torch.save({"model_state": from_zoo(sd, "ptv", temporal_pool=model.cfg.temporal_pool > 1)}, pyth)
    data = st.read_bytes()
    t0 = time.perf_counter()
    digest = hashlib.sha256(data).hexdigest()
    hash_s = time.perf_counter() - t0  # one sha256 pass over the weights, for reference
    del model, sd, data
    pinned = slowfast_zoo.get_pretrained_cfg(name).replace(
        origin=None, hub=HubFile(f"slowfast-zoo/{name}", revision, "model.safetensors", digest, st.stat().st_size)
    )
    registry_cfg = factory.get_pretrained_cfg
    factory.get_pretrained_cfg = lambda n: pinned if n == name else registry_cfg(n)  # as if the manifest pinned it
    os.environ.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    builder = PTV_BUILDERS[name]

    def zoo() -> None:
        loaded = slowfast_zoo.create(name, pretrained=True)
        assert loaded.pretrained_cfg.weights.sha256 == digest

    def ptv() -> None:
        net = builder(pretrained=False)
        net.load_state_dict(torch.load(pyth, map_location="cpu", weights_only=True)["model_state"])

    timer = Timer(torch.device("cpu"))
    fns = {"ptv": ptv, "zoo": zoo}
    times: dict[str, list[float]] = {k: [] for k in fns}
    mems: dict[str, list[float]] = {k: [] for k in fns}
    try:
        for k in fns:
            fns[k]()  # warm: page cache, imports
        for r in range(repeat):
            for k in list(fns)[r % 2 :] + list(fns)[: r % 2]:
                t, m = timer.run(fns[k])
                times[k].append(t)
                mems[k].append(m)
    finally:
        factory.get_pretrained_cfg = registry_cfg
        for var in ("HF_HUB_CACHE", "HF_HUB_OFFLINE"):
            os.environ.pop(var, None)
    out = {k: {"median_s": statistics.median(v), "times_s": v, "peak_mib": max(mems[k])} for k, v in times.items()}
    out["ratio_zoo_over_ptv"] = out["zoo"]["median_s"] / out["ptv"]["median_s"]
    out["zoo"]["sha256_pass_s"] = hash_s
    return {"model": name, "file_mib": st.stat().st_size / 2**20, **out}


# ---- video to prediction --------------------------------------------------------------------------------------------
def bench_video(name: str, repeat: int, device: torch.device) -> dict[str, Any]:
    from slowfast_zoo.tasks.predict import sample_video
    from slowfast_zoo.video.io import read_clip

    model = slowfast_zoo.create(name, device=device).eval()
    cfg = model.pretrained_cfg
    transform = slowfast_zoo.create_transforms(model)
    fast = optimize_for_inference(model)
    path = sample_video()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    stages: dict[str, list[float]] = {"decode": [], "transforms": [], "model_fp32": [], "model_fast_bf16": []}
    timer = Timer(device)
    for r in range(repeat + 1):
        t0 = time.perf_counter()
        clip = read_clip(path, 0.0, cfg.num_frames, cfg.sampling_rate, cfg.target_fps)
        t1 = time.perf_counter()
        x = transform(clip)
        x = [t.unsqueeze(0).to(device) for t in (x if isinstance(x, list) else [x])]
        timer.sync()
        t2 = time.perf_counter()
        with torch.no_grad():
            a, _ = timer.run(lambda x=x: model(x).softmax(-1).cpu())
        with torch.inference_mode(), autocast:
            b, _ = timer.run(lambda x=x: fast(x).float().softmax(-1).cpu())
        if r:  # the first pass warms decoders and kernels
            for k, v in zip(stages, (t1 - t0, t2 - t1, a, b)):
                stages[k].append(v)
    med = {k: statistics.median(v) for k, v in stages.items()}
    return {
        "model": name,
        "video": path.name,
        "clip_frames": tuple(clip.shape),
        "median_s": med,
        "per_clip_fp32_s": med["decode"] + med["transforms"] + med["model_fp32"],
        "per_clip_fast_s": med["decode"] + med["transforms"] + med["model_fast_bf16"],
    }


# ---- report ---------------------------------------------------------------------------------------------------------
def machine(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    flags = ""
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_start": os.getloadavg(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def markdown(results: dict[str, Any]) -> str:
    mem = "peak MiB (CUDA alloc)" if results["machine"]["device"].startswith("cuda") else "peak RSS +MiB"
    lines = (
        [
            f"| model | batch | GFLOPs | variant | median s | clips/s | GFLOP/s | x PTV | {mem} |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        if results["inference"]
        else []
    )
    for case in results["inference"]:
        if "compile_error" in case:
            lines.append(f"| {case['model']} | {case['batch']} | | zoo_compile | failed | | | | |")
            continue
        for k, v in case["variants"].items():
            if "note" in case and k != "zoo_compile":
                k += " (compile run)"
            lines.append(
                f"| {case['model']} | {case['batch']} | {case['gflops']:.0f} | {k} | {v['median_s']:.3f} | "
                f"{v['clips_per_s']:.2f} | {v['gflops_per_s']:.0f} | {v['speedup_vs_ptv']:.2f} | {v['peak_mib']:.0f} |"
            )
    if results.get("create"):
        lines += [
            "",
            "| create (warm cache) | file MiB | PTV build+load s | zoo create(pretrained=True) s | one sha256 pass s "
            "| zoo / PTV |",
        ]
        lines.append("|---|---|---|---|---|---|")
        for c in results["create"]:
            lines.append(
                f"| {c['model']} | {c['file_mib']:.0f} | {c['ptv']['median_s']:.3f} | {c['zoo']['median_s']:.3f} | "
                f"{c['zoo']['sha256_pass_s']:.3f} | {c['ratio_zoo_over_ptv']:.2f} |"
            )
    if results.get("video"):
        v = results["video"]
        m = v["median_s"]
        lines += [
            "",
            "| video -> prediction, 1 clip | decode s | transforms s | model fp32 s | model fast bf16 s "
            "| total fp32 s | total fast s |",
            "|---|---|---|---|---|---|---|",
            f"| {v['model']} ({v['video']}) | {m['decode']:.3f} | {m['transforms']:.3f} | {m['model_fp32']:.3f} | "
            f"{m['model_fast_bf16']:.3f} | {v['per_clip_fp32_s']:.3f} | {v['per_clip_fast_s']:.3f} |",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="slowfast_r50_8x8,slowfast_r101_16x8,slow_r50_8x8")
    parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--repeat", type=int, default=0, help="timed repetitions per case (0: 3 at batch 1, else 2)")
    parser.add_argument(
        "--compile",
        default="first",
        choices=["first", "all", "none"],
        help="torch.compile (own process): first case, all, none",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", default="ptv,zoo,zoo_fast32,zoo_fastbf16,zoo_compile")
    parser.add_argument("--skip-create", action="store_true")
    parser.add_argument("--create-only", action="store_true", help="only the warm-cache create comparison")
    parser.add_argument("--skip-video", action="store_true")
    parser.add_argument("--out", default="results.json")
    parser.add_argument("--child-compile", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    names = [resolve_name(n.strip()).split(".")[0] for n in args.models.split(",") if n.strip()]
    batches = [int(b) for b in args.batch.split(",")]
    variants = args.variants.split(",")
    if args.child_compile:  # torch.compile in its own process: inductor's OpenMP kernels slow later eager runs
        name, batch = args.child_compile.split(":")
        variants = ["ptv", "zoo_fastbf16", "zoo_compile"]
        print(json.dumps(bench_case(name, int(batch), args.repeat or 3, device, variants)))
        return
    results: dict[str, Any] = {"machine": machine(device), "command": " ".join(sys.argv), "inference": []}
    start = time.perf_counter()
    eager = [v for v in variants if v != "zoo_compile"]
    if args.create_only:
        batches, variants, args.skip_video = [], [], True
    for batch in batches:
        for name in names:
            case = bench_case(name, batch, args.repeat or (3 if batch == 1 else 2), device, eager)
            results["inference"].append(case)
            print(
                f"[{time.perf_counter() - start:6.0f}s] {name} batch {batch}: "
                + ", ".join(f"{k} {v['median_s']:.3f}s" for k, v in case["variants"].items()),
                flush=True,
            )
    if "zoo_compile" in variants and args.compile != "none":
        todo = [(n, b) for b in batches for n in names][: 1 if args.compile == "first" else None]
        for name, batch in todo:
            cmd = [sys.executable, __file__, "--child-compile", f"{name}:{batch}", "--device", args.device]
            cmd += ["--repeat", str(args.repeat or (3 if batch == 1 else 2))]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                results["inference"].append({"model": name, "batch": batch, "compile_error": proc.stderr[-2000:]})
                print(f"torch.compile failed for {name} batch {batch}:\n{proc.stderr[-2000:]}", flush=True)
                continue
            case = json.loads(proc.stdout.strip().splitlines()[-1])
            case["note"] = "separate process: ptv, zoo_fastbf16 and zoo_compile alternating"
            results["inference"].append(case)
            print(f"[{time.perf_counter() - start:6.0f}s] compiled {name} batch {batch}", flush=True)
    if not args.skip_create:
        results["create"] = []
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                results["create"].append(bench_create(name, 5, Path(tmp)))
        print(f"[{time.perf_counter() - start:6.0f}s] create done", flush=True)
    if not args.skip_video:
        results["video"] = bench_video(names[0], 3, device)
    results["machine"]["load_avg_end"] = os.getloadavg()
    results["wall_s"] = time.perf_counter() - start
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(markdown(results))
    print(f"\nmachine: {json.dumps(results['machine'])}\nwall: {results['wall_s']:.0f} s; JSON: {args.out}")


if __name__ == "__main__":
    main()

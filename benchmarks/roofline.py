"""Per-layer roofline of the inference fast path: the whole forward against the sum of its layers timed alone.

    python benchmarks/roofline.py [--model slowfast_r50_8x8] [--batch 1] [--size 224] [--repeat 7]
        [--variants fp32,bf16,bf16_autocast] [--threads 2] [--out roofline.json]

Variants (random weights, ``create(model)`` then the fast path):

* ``eager``          the plain model, BatchNorm unfolded, contiguous, fp32
* ``fp32``           ``optimize_for_inference(model)``: BatchNorm folded, channels_last_3d, fp32
* ``bf16``           ``optimize_for_inference(model, dtype=torch.bfloat16)``: bf16 weights stored once, bf16 input
* ``bf16_autocast``  the ``fp32`` copy under ``torch.autocast(bfloat16)``: weights cast to bf16 on every call
  (the fused kernels step aside under autocast: its convs, ReLUs and adds run as separate ops)
* ``fp32_nofuse``, ``bf16_nofuse``  as ``fp32`` / ``bf16`` with BatchNorm folded but ReLU and the residual add left
  as separate ops (the fast path before ``fuse_activations``)

``--alternate-only`` skips the per-leaf work and only alternates whole forwards of the variants (a quick A/B).
``--compile`` also times ``torch.compile`` (inductor, freezing) of the ``bf16`` model: the first call (compile time)
and then compiled and eager forwards alternating, and says after how many forwards the compile time is paid back.

For each variant, one real forward records every leaf module's inputs and outputs (forward hooks). Then, round after
round, the script times the whole forward, every recorded leaf call alone (same module, same input tensors, hence the
same dtype and memory format, under the same autocast / inference mode) and the "replay" forward, in which every leaf
returns its recorded output at once, so that only what lies between the leaves runs (residual adds, the lateral
concatenations, the head's mean, input checks, Python and module dispatch). Medians over rounds; the ratio
``whole / sum of leaves`` is the median of the per-round ratios (robust to load that drifts between rounds).

``torch.profiler`` then runs over one forward with every leaf wrapped in a ``record_function`` scope: each leaf's
time inside the model, the aten ops outside any leaf (by name), and the casts and copies (``aten::to``,
``aten::_to_copy``, ``aten::copy_``, ``aten::contiguous``, ``aten::clone``, ``aten::cat``) inside and outside the
leaves. FLOPs per leaf come from ``torch.utils.flop_counter`` (2 per multiply-add). A large res4-like convolution
(3x3, 256 channels, batch 8, 14x14) in the same dtype and format gives the machine's rate for one big conv.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import slowfast_zoo
from slowfast_zoo.models.optimize import fuse_bn, optimize_for_inference

VARIANTS = ("eager", "fp32", "bf16", "bf16_autocast", "fp32_nofuse", "bf16_nofuse")
COPIES = ("aten::to", "aten::_to_copy", "aten::copy_", "aten::contiguous", "aten::clone", "aten::cat")
SKIP = (nn.Identity,)


# ---- the model of each variant ------------------------------------------------------------------------------------
def build(name: str, variant: str, batch: int, size: int) -> tuple[nn.Module, list[torch.Tensor], Callable[[], Any]]:
    """(model, inputs, context factory) of one variant; same random weights and input for every variant."""
    torch.manual_seed(0)
    model = slowfast_zoo.create(name, head_pool="adaptive").eval()
    cfg = model.cfg
    g = torch.Generator().manual_seed(1)
    x = [torch.randn(batch, 3, cfg.frames(p), size, size, generator=g) for p in range(cfg.num_pathways)]
    if variant == "eager":
        return model, x, torch.no_grad
    dtype = torch.bfloat16 if variant.startswith("bf16") and variant != "bf16_autocast" else None
    if variant.endswith("_nofuse"):
        fast = fuse_bn(optimize_for_inference(model, fuse=False, dtype=dtype), inplace=True)
        return fast, [t.to(dtype or t.dtype) for t in x], torch.inference_mode
    if variant == "bf16":
        return optimize_for_inference(model, dtype=dtype), [t.bfloat16() for t in x], torch.inference_mode
    fast = optimize_for_inference(model)
    if variant == "fp32":
        return fast, x, torch.inference_mode

    @contextlib.contextmanager
    def autocast() -> Iterator[None]:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            yield

    return fast, x, autocast


# ---- recording the leaves -------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Call:
    """One call of a leaf module in the recorded forward: its inputs and output, kept for replay."""

    name: str
    module: nn.Module
    args: tuple[Any, ...]
    output: Any
    times: list[float] = field(default_factory=list)
    flops: int = 0

    @property
    def kind(self) -> str:
        return kind_of(self.name, self.module)

    def __call__(self) -> Any:
        return self.module(*self.args)


def kind_of(name: str, m: nn.Module) -> str:
    """The group a leaf belongs to: convs by where they sit (stem, slow / fast res, lateral), the rest by type."""
    if isinstance(m, nn.Conv3d):
        if name.startswith("stem."):
            return "conv stem"
        if name.startswith("lateral."):
            return "conv lateral"
        if name.startswith("res"):
            return f"conv {name.split('.')[1]} res"
        return "conv other"
    if isinstance(m, (nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d)):
        return "pool"
    return type(m).__name__.lstrip("_")


def _keep(x: Any) -> Any:
    """A copy of a tensor with the same strides (an in-place ReLU later must not change what was recorded)."""
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, (list, tuple)):
        return type(x)(_keep(t) for t in x)
    return x


def leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if not any(m.children()) and not isinstance(m, SKIP)]


def record(model: nn.Module, x: list[torch.Tensor], ctx: Callable[[], Any]) -> list[Call]:
    """Every leaf call of one forward, in order, with copies of its inputs and output."""
    calls: list[Call] = []
    pending: dict[int, list[Any]] = defaultdict(list)
    handles = []
    for name, m in leaves(model):

        def pre(mod: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            pending[id(mod)].append(_keep(args))

        def post(mod: nn.Module, args: tuple[Any, ...], out: Any, name: str = name) -> None:
            calls.append(Call(name, mod, pending[id(mod)].pop(), _keep(out)))

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        with ctx():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return calls


@contextlib.contextmanager
def replaying(calls: list[Call]) -> Iterator[None]:
    """Every leaf returns its recorded output(s), in call order, without computing: the model runs only the rest."""
    by_module: dict[int, list[Any]] = defaultdict(list)
    modules = {}
    for c in calls:
        by_module[id(c.module)].append(c.output)
        modules[id(c.module)] = c.module
    for key, m in modules.items():
        outs, state = by_module[key], {"i": 0}

        def forward(*args: Any, outs: list[Any] = outs, state: dict[str, int] = state) -> Any:
            out = outs[state["i"] % len(outs)]
            state["i"] += 1
            return out

        m.forward = forward
    try:
        yield
    finally:
        for m in modules.values():
            del m.forward


CLOCK = time.perf_counter  # --clock cpu: time.process_time, the CPU time of this process (see main)


def timed(fn: Callable[[], Any]) -> float:
    start = CLOCK()
    fn()
    return CLOCK() - start


# ---- profiling ------------------------------------------------------------------------------------------------------
def profile(model: nn.Module, x: list[torch.Tensor], ctx: Callable[[], Any]) -> dict[str, Any]:
    """One forward under torch.profiler, each leaf in a ``leaf::<name>`` scope: time per leaf in the model, aten ops
    outside every leaf, and the casts / copies inside and outside the leaves."""
    scopes: list[Any] = []
    handles = []
    for name, m in leaves(model):

        def pre(mod: nn.Module, args: Any, name: str = name) -> None:
            scopes.append(torch.profiler.record_function(f"leaf::{name}"))
            scopes[-1].__enter__()

        def post(mod: nn.Module, args: Any, out: Any) -> None:
            scopes.pop().__exit__(None, None, None)

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        with ctx():
            model(x)  # warm
            with (
                torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof,
                torch.profiler.record_function("forward"),
            ):
                model(x)
    finally:
        for h in handles:
            h.remove()
    events = prof.events()
    leaf_us: dict[str, float] = defaultdict(float)
    outside: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    copies: dict[str, dict[str, list[float]]] = {"inside leaves": {}, "outside leaves": {}}
    total_us = 0.0
    for e in events:
        if e.name == "forward":
            total_us = e.cpu_time_total
            continue
        if e.name.startswith("leaf::"):
            leaf_us[e.name[6:]] += e.cpu_time_total
            continue
        parents, p = [], e.cpu_parent
        while p is not None:
            parents.append(p.name)
            p = p.cpu_parent
        in_leaf = any(n.startswith("leaf::") for n in parents)
        if e.name in COPIES:
            row = copies["inside leaves" if in_leaf else "outside leaves"].setdefault(e.name, [0, 0.0])
            row[0] += 1
            row[1] += e.cpu_time_total / 1e3
        if not in_leaf and parents and parents[0] == "forward":  # top-level op between the leaves
            outside[e.name][0] += 1
            outside[e.name][1] += e.cpu_time_total / 1e3
    return {
        "forward_ms": total_us / 1e3,
        "leaf_ms": {k: v / 1e3 for k, v in leaf_us.items()},
        "outside_leaves_ms": {
            k: {"calls": c, "ms": t} for k, (c, t) in sorted(outside.items(), key=lambda i: -i[1][1])
        },
        "copies": {w: {k: {"calls": c, "ms": t} for k, (c, t) in d.items()} for w, d in copies.items()},
    }


# ---- one variant ----------------------------------------------------------------------------------------------------
def reference_conv(dtype: torch.dtype, autocast: bool) -> dict[str, Any]:
    """The rate of one large res4-like convolution (1x3x3, 256 -> 256, batch 8, 8x14x14) in the variant's dtype."""
    conv = nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)).eval().requires_grad_(False)
    x = torch.randn(8, 256, 8, 14, 14)
    if dtype != torch.float32 and not autocast:
        conv, x = conv.to(dtype), x.to(dtype)
    conv = conv.to(memory_format=torch.channels_last_3d)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    with torch.inference_mode(), ctx:
        with FlopCounterMode(display=False) as fc:
            conv(x)
        for _ in range(2):
            conv(x)
        t = statistics.median(timed(lambda: conv(x)) for _ in range(5))
    return {
        "shape": "1x3x3 256->256, input (8, 256, 8, 14, 14)",
        "ms": t * 1e3,
        "gflops_per_s": fc.get_total_flops() / t / 1e9,
    }


def alternate(built: dict[str, tuple[nn.Module, list[torch.Tensor], Callable[[], Any]]], repeat: int) -> dict:
    """Whole forwards of every variant, one after the other, round after round (order rotating): median ms each."""
    names = list(built)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeat):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            model, x, ctx = built[k]
            with ctx():
                times[k].append(timed(lambda model=model, x=x: model(x)))
    return {k: {"median_ms": statistics.median(v) * 1e3, "times_ms": [t * 1e3 for t in v]} for k, v in times.items()}


def run_variant(name: str, variant: str, batch: int, size: int, repeat: int, built: dict | None = None) -> dict:
    model, x, ctx = build(name, variant, batch, size)
    if built is not None:
        built[variant] = (model, x, ctx)
    calls = record(model, x, ctx)
    with ctx():
        for c in calls:  # FLOPs of each call (a fused conv counted as its plain convolution), and a warm-up of each
            with FlopCounterMode(display=False) as fc:
                nn.Conv3d.forward(c.module, c.args[0]) if isinstance(c.module, nn.Conv3d) else c()
            c.flops = fc.get_total_flops()
            c()
        for _ in range(2):
            model(x)
        whole, replay, sums = [], [], []
        for _ in range(repeat):
            whole.append(timed(lambda: model(x)))
            for c in calls:
                c.times.append(timed(c))
            sums.append(sum(c.times[-1] for c in calls))
            with replaying(calls):
                replay.append(timed(lambda: model(x)))
    prof = profile(model, x, ctx)
    shapes = {id(c): list(c.args[0].shape) for c in calls}
    for c in calls:  # keep no big tensors past this point
        c.args = c.output = ()
    med = {c: statistics.median(c.times) for c in calls}
    groups: dict[str, dict[str, float]] = {}
    for c in calls:
        g = groups.setdefault(c.kind, {"calls": 0, "ms": 0.0, "in_model_ms": 0.0, "gflops": 0.0})
        g["calls"] += 1
        g["ms"] += med[c] * 1e3
        g["gflops"] += c.flops / 1e9
    for leaf, ms in prof["leaf_ms"].items():
        kind = kind_of(leaf, model.get_submodule(leaf))
        groups[kind]["in_model_ms"] += ms
    for g in groups.values():
        g["gflops_per_s"] = g["gflops"] / g["ms"] * 1e3 if g["ms"] else 0.0
    convs = [
        {
            "name": c.name,
            "kind": c.kind,
            "kernel": list(c.module.kernel_size),
            "stride": list(c.module.stride),
            "chans": [c.module.in_channels, c.module.out_channels],
            "input": shapes[id(c)],
            "gflops": c.flops / 1e9,
            "ms": med[c] * 1e3,
            "gflops_per_s": c.flops / med[c] / 1e9,
        }
        for c in calls
        if isinstance(c.module, nn.Conv3d)
    ]
    p = next(model.parameters())
    ref = reference_conv(p.dtype if variant != "bf16_autocast" else torch.bfloat16, variant == "bf16_autocast")
    whole_ms = statistics.median(whole) * 1e3
    sum_ms = statistics.median(sums) * 1e3
    conv_ms = sum(v["ms"] for k, v in groups.items() if k.startswith("conv"))
    total_flops = sum(c.flops for c in calls)
    return {
        "variant": variant,
        "whole_ms": whole_ms,
        "whole_times_ms": [t * 1e3 for t in whole],
        "whole_min_ms": min(whole) * 1e3,
        "sum_of_leaves_ms": sum_ms,
        "sum_of_leaves_min_ms": min(sums) * 1e3,
        "sum_of_conv_leaves_ms": conv_ms,
        "replay_ms": statistics.median(replay) * 1e3,
        "ratio_whole_over_sum": statistics.median(w / s for w, s in zip(whole, sums)),
        "ratio_whole_over_convs": whole_ms / conv_ms,
        "gflops": total_flops / 1e9,
        "whole_gflops_per_s": total_flops / whole_ms / 1e6,
        "conv_gflops_per_s": sum(v["gflops"] for k, v in groups.items() if k.startswith("conv")) / conv_ms * 1e3,
        "reference_conv": ref,
        "leaf_calls": len(calls),
        "groups": dict(sorted(groups.items(), key=lambda i: -i[1]["ms"])),
        "convs": convs,
        "profile": prof,
    }


def compile_cost(name: str, batch: int, size: int, repeat: int) -> dict[str, Any]:
    """torch.compile (inductor, freezing) of the bf16 fast path: compile time, per-forward gain, break-even count."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # weights are constants: oneDNN prepacking and folding (inference only)
    model, x, ctx = build(name, "bf16", batch, size)
    compiled = torch.compile(model)
    with ctx():
        eager_first = timed(lambda: model(x))
        start = time.perf_counter()  # wall clock: inductor compiles in worker processes too
        compiled(x)
        first = time.perf_counter() - start
        eager, comp = [], []
        for _ in range(repeat):
            eager.append(timed(lambda: model(x)))
            comp.append(timed(lambda: compiled(x)))
        same = (compiled(x).float() - model(x).float()).abs().max().item()
    e, c = statistics.median(eager), statistics.median(comp)
    compile_s = first - c  # wall seconds; the forwards are timed with --clock
    return {
        "compile_s": compile_s,
        "eager_ms": e * 1e3,
        "compiled_ms": c * 1e3,
        "eager_first_call_ms": eager_first * 1e3,
        "speedup": e / c,
        "pays_after_forwards": compile_s / (e - c) if e > c else None,
        "max_abs_logit_diff": same,
    }


CONV_COLUMNS = ("name", "kind", "kernel", "stride", "chans", "input", "gflops", "ms", "gflops_per_s")


def slim(x: Any) -> Any:
    """What the JSON keeps: floats to 4 significant digits, per-leaf profiler times only summed per kind, and the
    convs as rows of :data:`CONV_COLUMNS` (shapes as ``AxBxC`` strings)."""
    if isinstance(x, float):
        return float(f"{x:.4g}")
    if isinstance(x, dict):
        if "convs" in x and x["convs"] and isinstance(x["convs"][0], dict):
            shape = ("kernel", "stride", "chans", "input")
            rows = [[("x".join(map(str, c[k])) if k in shape else c[k]) for k in CONV_COLUMNS] for c in x["convs"]]
            x = {**x, "convs": {"columns": list(CONV_COLUMNS), "rows": rows}}
        return {k: slim(v) for k, v in x.items() if k != "leaf_ms"}
    if isinstance(x, (list, tuple)):
        return [slim(v) for v in x]
    return x


def dump(results: dict[str, Any]) -> str:
    """Indented JSON of :func:`slim` results, every list of plain values on one line."""
    text = json.dumps(slim(results), indent=1)
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


# ---- report ---------------------------------------------------------------------------------------------------------
def machine(threads: int) -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), cpu)
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": threads,
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def table(r: dict[str, Any]) -> str:
    lines = [
        f"## {r['model']} batch {r['batch']} {r['size']}x{r['size']}, variant {r['variant']}",
        f"whole {r['whole_ms']:.1f} ms | sum of {r['leaf_calls']} leaves {r['sum_of_leaves_ms']:.1f} ms | "
        f"whole / sum {r['ratio_whole_over_sum']:.3f} | convs alone {r['sum_of_conv_leaves_ms']:.1f} ms "
        f"(whole / convs {r['ratio_whole_over_convs']:.3f}) | replay (no leaf computes) {r['replay_ms']:.1f} ms | "
        f"{r['whole_gflops_per_s']:.0f} GFLOP/s whole, {r['conv_gflops_per_s']:.0f} in convs alone, "
        f"{r['reference_conv']['gflops_per_s']:.0f} one large conv",
        "",
        "| kind | calls | alone ms | in model ms (profiled) | GFLOP | GFLOP/s alone |",
        "|---|---|---|---|---|---|",
    ]
    for k, g in r["groups"].items():
        lines.append(
            f"| {k} | {g['calls']} | {g['ms']:.1f} | {g['in_model_ms']:.1f} | {g['gflops']:.2f} | "
            f"{g['gflops_per_s']:.0f} |"
        )
    prof = r["profile"]
    lines += ["", f"between the leaves (profiled forward {prof['forward_ms']:.1f} ms):"]
    lines += [f"  {k}: {v['calls']} calls, {v['ms']:.2f} ms" for k, v in list(prof["outside_leaves_ms"].items())[:8]]
    for where, d in prof["copies"].items():
        lines.append(
            f"copies {where}: " + (", ".join(f"{k} x{v['calls']} {v['ms']:.2f} ms" for k, v in d.items()) or "none")
        )
    best = max(c["gflops_per_s"] for c in r["convs"])
    slow = sorted(r["convs"], key=lambda c: -(c["ms"] - c["gflops"] / best * 1e3))[:8]
    lines += [
        "",
        f"convs losing most time against the best conv rate here ({best:.0f} GFLOP/s):",
        "| conv | kernel | stride | in->out | input | GFLOP | ms | GFLOP/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in slow:
        lines.append(
            f"| {c['name']} | {'x'.join(map(str, c['kernel']))} | {'x'.join(map(str, c['stride']))} | "
            f"{c['chans'][0]}->{c['chans'][1]} | {tuple(c['input'])} | {c['gflops']:.2f} | {c['ms']:.2f} | "
            f"{c['gflops_per_s']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="slowfast_r50_8x8,slow_r50_8x8")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds (whole, every leaf, replay)")
    parser.add_argument(
        "--variants", default="fp32_nofuse,fp32,bf16_nofuse,bf16,bf16_autocast", help=f"comma-separated, of {VARIANTS}"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="wall: perf_counter; cpu: process CPU time, which leaves out the time other processes hold the cores "
        "(use with --threads 1, where no thread spins waiting for another)",
    )
    parser.add_argument(
        "--alternate-only", action="store_true", help="only the whole forwards of the variants, alternating (quick A/B)"
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the bf16 path (last)")
    parser.add_argument("--out", default="roofline.json")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}; expected some of {VARIANTS}")
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    results: dict[str, Any] = {"machine": machine(args.threads), "command": " ".join(sys.argv), "runs": []}
    results["machine"]["clock"] = args.clock
    results["alternating"] = {}
    for name in args.models.split(","):
        built: dict[str, Any] = {}
        for variant in variants if not args.alternate_only else ():
            load = os.getloadavg()
            r = run_variant(name, variant, args.batch, args.size, args.repeat, built)
            r.update(model=name, batch=args.batch, size=args.size, load_avg_before=load, load_avg_after=os.getloadavg())
            results["runs"].append(r)
            print(table(r), f"\nload average before / after: {load} / {r['load_avg_after']}\n", flush=True)
        if args.alternate_only:
            built = {v: build(name, v, args.batch, args.size) for v in variants}
        load = os.getloadavg()
        alt = alternate(built, args.repeat)
        del built
        results["alternating"][name] = {"variants": alt, "load_avg_before": load, "load_avg_after": os.getloadavg()}
        print(
            f"{name}, whole forwards alternating ({args.repeat} rounds, load {load[0]:.2f} -> "
            f"{os.getloadavg()[0]:.2f}):",
            ", ".join(f"{k} {v['median_ms']:.1f} ms" for k, v in alt.items()),
            "\n",
            flush=True,
        )
    if args.compile:
        results["compile"] = []
        for name in args.models.split(","):
            load = os.getloadavg()
            Path(args.out).write_text(
                json.dumps(slim(results), indent=1)
            )  # what is measured so far, should compile fail
            try:
                c = compile_cost(name, args.batch, args.size, args.repeat)
            except Exception as e:  # a compiler failure is a result to report
                c = {"error": f"{type(e).__name__}: {e}"[:2000]}
            c.update(model=name, batch=args.batch, load_avg_before=load, load_avg_after=os.getloadavg())
            results["compile"].append(c)
            print(f"torch.compile {name} bf16: {json.dumps(c)}", flush=True)
    Path(args.out).write_text(dump(results))
    print(f"machine: {json.dumps(results['machine'])}\nJSON: {args.out}")


if __name__ == "__main__":
    main()

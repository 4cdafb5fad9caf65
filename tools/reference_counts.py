"""Regenerate every reference parameter count and GFLOPs figure from the authors' own builds.

The figures the tests hold this package to (``weights_manifest.json`` fields ``params`` / ``gflops``, and
``_config_only(config, params, gflops)`` in ``slowfast_zoo/registry/variants.py`` for architectures released without
weights) are counted here on the reference implementations, never on this package's modules:

- PyTorchVideo 0.1.5's builders (``pytorchvideo.models.hub``, pretrained=False) for the architectures it has;
- PySlowFast's own model builder on the authors' yaml configs, from a checkout given with ``--pyslowfast PATH``.
  No PySlowFast code is part of this project: it is imported from that path at run time, with the heavy imports it
  does not need to build a network stubbed (detectron2's ROIAlign -> torchvision's RoIAlign, simplejson -> json,
  distributed helpers newer PyTorchVideo releases added -> stubs that raise if ever called).

Counting: parameters = sum of numel; GFLOPs = multiply-adds of convolutions, linear layers and non-local matmuls at
one 256x256 view (fvcore's convention: one multiply-add = one FLOP), i.e. torch.utils.flop_counter.FlopCounterMode's
count divided by 2, on networks built on the meta device (no memory, no compute). Detectors get one box covering the
frame. GFLOPs are rounded to two decimals, as written in the manifest.

    python tools/reference_counts.py                          # table (PyTorchVideo rows only)
    python tools/reference_counts.py --pyslowfast ../SlowFast --check
    python tools/reference_counts.py --pyslowfast ../SlowFast --write
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import importlib
import json
import os
import sys
import tempfile
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "weights_manifest.json"
VARIANTS = ROOT / "slowfast_zoo" / "registry" / "variants.py"
SIZE = 256  # one 256x256 view (the test crop of the Kinetics protocol)
COUNTED_OPS = {"aten.convolution", "aten.mm", "aten.addmm", "aten.bmm"}
#: what slowfast/utils/distributed.py imports from pytorchvideo.layers.distributed (some came after PTV 0.1.5)
PTV_DIST_NAMES = (
    "cat_all_gather",
    "get_local_process_group",
    "get_local_rank",
    "get_local_size",
    "get_world_size",
    "init_distributed_training",
)

#: classes per dataset tag prefix (SF:configs/*/... MODEL.NUM_CLASSES: Kinetics 400, SSv2 174, Charades 157, AVA 80)
NUM_CLASSES = {"k400": 400, "k600": 600, "ssv2": 174, "charades": 157, "ava21": 80, "ava22": 80}

#: released checkpoint -> the authors' config it was trained/tested with (PySlowFast MODEL_ZOO.md rows, configs/;
#: PySlowFast's projects/pytorchvideo/README.md for the PyTorchVideo ones)
PYSF_CONFIGS = {
    "c2d_nopool_r50_8x8.k400_pysf": "Kinetics/c2/C2D_NOPOOL_8x8_R50.yaml",
    "i3d_nln_r50_8x8.k400_pysf": "Kinetics/c2/I3D_NLN_8x8_R50.yaml",
    "i3d_r50_8x8.k400_pysf": "Kinetics/c2/I3D_8x8_R50.yaml",
    "slow_r50_4x16.k400_pysf": "Kinetics/c2/SLOW_4x16_R50.yaml",
    "slow_r50_8x8.k400_pysf": "Kinetics/c2/SLOW_8x8_R50.yaml",
    "slowfast_r50_4x16.k400_pysf": "Kinetics/c2/SLOWFAST_4x16_R50.yaml",
    "slowfast_r50_8x8.k400_pysf": "Kinetics/c2/SLOWFAST_8x8_R50.yaml",
    "slowfast_r50_8x8.k400_stepwise": "Kinetics/SLOWFAST_8x8_R50_stepwise.yaml",
    "slowfast_r50_8x8.k400_multigrid": "Kinetics/SLOWFAST_8x8_R50_stepwise_multigrid.yaml",
    "slowfast_r50_16x8.ssv2_pysf": "SSv2/SLOWFAST_16x8_R50.yaml",
    "slowfast_r50_16x8.ssv2_multigrid": "SSv2/SLOWFAST_16x8_R50_multigrid.yaml",
    "slowfast_r50_16x8.charades_pysf": "Charades/SLOWFAST_16x8_R50.yaml",
    "slowfast_r50_16x8.charades_multigrid": "Charades/SLOWFAST_16x8_R50_multigrid.yaml",
    # the AVA Slow 4x16 detector's file is C2D_8x8_R50.pkl, its config SLOW_8x8_R50 (NUM_FRAMES 4, SAMPLING_RATE 16)
    "slow_r50_4x16_det.ava22_pysf": "AVA/c2/SLOW_8x8_R50.yaml",
    "slowfast_nln_r101_50_50_8x8_det.ava22_pysf": "AVA/c2/SLOWFAST_32x2_R101_50_50.yaml",
    "slowfast_nln_r101_50_50_8x8_det.ava21_pysf": "AVA/c2/SLOWFAST_32x2_R101_50_50_v2.1.yaml",
    "slowfast_nln_r101_50_50_16x8_det.ava22_pysf": "AVA/c2/SLOWFAST_64x2_R101_50_50.yaml",
    # the AVA table's Kinetics-600 pre-training files: the R101_50_50 non-local Kinetics config, 600 classes
    # (SF:configs/AVA/c2/SLOWFAST_{32,64}x2_R101_50_50*.yaml train from them; no config of their own is published)
    "slowfast_nln_r101_50_50_16x8.k600_pysf": "Kinetics/c2/SLOWFAST_NLN_16x8_R101_50_50.yaml MODEL.NUM_CLASSES 600",
    "slowfast_nln_r101_50_50_8x8.k600_pysf": "Kinetics/c2/SLOWFAST_NLN_16x8_R101_50_50.yaml MODEL.NUM_CLASSES 600 "
    "DATA.NUM_FRAMES 32",
    "slowfast_nln_r101_50_50_8x8.k600_pysf_v21": "Kinetics/c2/SLOWFAST_NLN_16x8_R101_50_50.yaml "
    "MODEL.NUM_CLASSES 600 DATA.NUM_FRAMES 32",
    # PyTorchVideo's checkpoints were trained with PySlowFast's PTV wrappers (PTVResNet / PTVSlowFast) on these
    "c2d_r50_8x8.k400_ptv": "Kinetics/pytorchvideo/C2D_8x8_R50.yaml",
    "i3d_r50_8x8.k400_ptv": "Kinetics/pytorchvideo/I3D_8x8_R50.yaml",
    "slow_r50_4x16.k400_ptv": "Kinetics/pytorchvideo/SLOW_4x16_R50.yaml",
    "slow_r50_8x8.k400_ptv": "Kinetics/pytorchvideo/SLOW_8x8_R50.yaml",
    "slowfast_r50_4x16.k400_ptv": "Kinetics/pytorchvideo/SLOWFAST_4x16_R50.yaml",
    "slowfast_r50_8x8.k400_ptv": "Kinetics/pytorchvideo/SLOWFAST_8x8_R50.yaml",
    "slowfast_r101_8x8.k400_ptv": "Kinetics/pytorchvideo/SLOWFAST_8x8_R101.yaml",
    "slowfast_r101_50_50_16x8.k400_ptv": "Kinetics/pytorchvideo/SLOWFAST_16x8_R101_50_50.yaml",
    "slow_r50_8x8.ssv2_ptv": "SSv2/pytorchvideo/SLOW_8x8_R50.yaml",
    "slowfast_r50_8x8.ssv2_ptv": "SSv2/pytorchvideo/SLOWFAST_8x8_R50.yaml",
    "slow_r50_8x8.charades_ptv": "Charades/pytorchvideo/SLOW_8x8_R50.yaml",
    "slowfast_r50_8x8.charades_ptv": "Charades/pytorchvideo/SLOWFAST_8x8_R50.yaml",
}


@dataclass(frozen=True)
class PtvBuild:
    """A PyTorchVideo builder, its frames per pathway (slow, fast) and whether it takes boxes."""

    label: str
    build: Callable[..., torch.nn.Module]
    frames: tuple[int, ...]
    detector: bool = False


def ptv_builds() -> dict[str, PtvBuild]:
    """Zoo architecture -> PyTorchVideo 0.1.5 build (hub builders; the 4x16 rows have no hub entry)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pytorchvideo.models import hub
        from pytorchvideo.models.resnet import create_resnet
        from pytorchvideo.models.slowfast import create_slowfast

    def slow_4x16(pretrained: bool = False, **kw: Any) -> torch.nn.Module:
        # hub.slow_r50 with a 4-frame head (SF:configs/Kinetics/pytorchvideo/SLOW_4x16_R50.yaml NUM_FRAMES 4)
        return create_resnet(stem_conv_kernel_size=(1, 7, 7), head_pool_kernel_size=(4, 7, 7), model_depth=50, **kw)

    def slowfast_4x16(pretrained: bool = False, **kw: Any) -> torch.nn.Module:
        # SF:configs/Kinetics/pytorchvideo/SLOWFAST_4x16_R50.yaml: ALPHA 8, FUSION_KERNEL_SZ 5, NUM_FRAMES 32
        return create_slowfast(
            slowfast_fusion_conv_kernel_size=(5, 1, 1),
            slowfast_fusion_conv_stride=(8, 1, 1),
            head_pool_kernel_sizes=((4, 7, 7), (32, 7, 7)),
            model_depth=50,
            **kw,
        )

    return {
        "slow_r50_8x8": PtvBuild("ptv hub.slow_r50", hub.slow_r50, (8,)),
        "slow_r50_4x16": PtvBuild("ptv create_resnet (4x16)", slow_4x16, (4,)),
        "c2d_r50_8x8": PtvBuild("ptv hub.c2d_r50", hub.c2d_r50, (8,)),
        "i3d_r50_8x8": PtvBuild("ptv hub.i3d_r50", hub.i3d_r50, (8,)),
        "slowfast_r50_8x8": PtvBuild("ptv hub.slowfast_r50", hub.slowfast_r50, (8, 32)),
        "slowfast_r50_4x16": PtvBuild("ptv create_slowfast (4x16)", slowfast_4x16, (4, 32)),
        "slowfast_r101_8x8": PtvBuild("ptv hub.slowfast_r101", hub.slowfast_r101, (8, 32)),
        "slowfast_r101_50_50_16x8": PtvBuild(
            "ptv hub.slowfast_16x8_r101_50_50", hub.slowfast_16x8_r101_50_50, (16, 64)
        ),
        "slow_r50_4x16_det": PtvBuild("ptv hub.slow_r50_detection", hub.slow_r50_detection, (4,), detector=True),
        "slowfast_r50_8x8_det": PtvBuild(
            "ptv hub.slowfast_r50_detection", hub.slowfast_r50_detection, (8, 32), detector=True
        ),
    }


def count(model: torch.nn.Module, frames: tuple[int, ...], detector: bool, pack: bool) -> tuple[int, float]:
    """Parameters and GFLOPs (multiply-adds / 1e9, two decimals) of a meta-device model at one 256x256 view."""
    params = sum(p.numel() for p in model.parameters())
    x = [torch.empty(1, 3, t, SIZE, SIZE, device="meta") for t in frames]
    args: list[Any] = [x if pack or len(x) > 1 else x[0]]
    if detector:  # one box covering the frame: (batch index, x1, y1, x2, y2)
        args.append(torch.tensor([[0.0, 0.0, 0.0, SIZE - 1.0, SIZE - 1.0]], device="meta"))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(*args)
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    if not set(counts) <= COUNTED_OPS:
        raise RuntimeError(f"unexpected counted ops {sorted(set(counts) - COUNTED_OPS)}; expected {COUNTED_OPS}")
    return params, round(sum(counts.values()) / 2 / 1e9, 2)


def count_ptv(build: PtvBuild, num_classes: int) -> tuple[int, float]:
    """Count a PyTorchVideo build (a fresh list per call: its fusion rewrites the input list in place)."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build.build(pretrained=False, model_num_class=num_classes)
    return count(model, build.frames, build.detector, pack=False)


class PySlowFast:
    """PySlowFast's config system and model registry, imported from a user's checkout."""

    def __init__(self, path: Path) -> None:
        path = Path(path).resolve()
        if not (path / "slowfast" / "models" / "video_model_builder.py").is_file() or not (path / "configs").is_dir():
            raise FileNotFoundError(f"expected a PySlowFast checkout (slowfast/models/, configs/) at {path}")
        self.path = path
        install_stubs()
        sys.path.insert(0, str(path))
        importlib.import_module("slowfast")
        # skip slowfast/models/__init__.py: it imports the MViT/contrastive/masked models and their training deps
        pkg = types.ModuleType("slowfast.models")
        pkg.__path__ = [str(path / "slowfast" / "models")]
        sys.modules["slowfast.models"] = pkg
        importlib.import_module("slowfast.models.video_model_builder")  # registers ResNet and SlowFast
        importlib.import_module("slowfast.models.ptv_model_builder")  # registers PTVResNet and PTVSlowFast
        self.registry = importlib.import_module("slowfast.models.build").MODEL_REGISTRY
        self.get_cfg = importlib.import_module("slowfast.config.defaults").get_cfg

    def count(self, config: str) -> tuple[int, float]:
        """Build ``configs/<config>`` (``path [KEY VALUE ...]``: yacs overrides after the file) on the meta device and
        count it."""
        cfg = self.get_cfg()
        path, *overrides = config.split()
        cfg.merge_from_file(str(self.path / "configs" / path))
        cfg.merge_from_list(overrides)
        cfg.NUM_GPUS = 0
        # sync BN is a training choice: same parameters as BatchNorm3d, and PTV 0.1.5's one lacks num_sync_devices
        cfg.BN.NORM_TYPE = "batchnorm"
        if cfg.MODEL.MODEL_NAME == "ResNet_nopool":
            # today's yaml names an unregistered ResNet_nopool; at SF@31d2ea7 (first commit) the same config said
            # ARCH c2d_nopool: all-1 temporal kernels, _POOL1 [[1, 1, 1]], which is today's ARCH slow_c2d
            cfg.MODEL.MODEL_NAME, cfg.MODEL.ARCH = "ResNet", "slow_c2d"
        with torch.device("meta"):
            model = self.registry.get(cfg.MODEL.MODEL_NAME)(cfg)
        n = cfg.DATA.NUM_FRAMES
        frames = (n // cfg.SLOWFAST.ALPHA, n) if len(cfg.DATA.INPUT_CHANNEL_NUM) == 2 else (n,)
        return count(model, frames, cfg.DETECTION.ENABLE, pack=True)


def install_stubs() -> None:
    """Stand-ins for imports PySlowFast's model modules make but building and counting never use."""

    def unneeded(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("stubbed by reference_counts.py: not needed to build or count a model")

    import torchvision.ops

    detectron2, layers = types.ModuleType("detectron2"), types.ModuleType("detectron2.layers")
    layers.ROIAlign = torchvision.ops.RoIAlign  # same (output_size, spatial_scale, sampling_ratio, aligned)
    detectron2.layers = layers
    sys.modules.update({"detectron2": detectron2, "detectron2.layers": layers})
    try:
        import simplejson  # noqa: F401
    except ImportError:
        sys.modules["simplejson"] = json
    import pytorchvideo.layers.distributed as ptv_dist

    for name in PTV_DIST_NAMES:
        if not hasattr(ptv_dist, name):  # added to PyTorchVideo after 0.1.5
            setattr(ptv_dist, name, unneeded)


@dataclass
class Row:
    """One expected figure pair, where it is written, and the reference builds that regenerate it."""

    name: str
    where: str  # "manifest" or "variants.py"
    params: int | None
    gflops: float | None
    pysf_config: str | None
    arch: str


@dataclass
class Result:
    """One reference build's count for a row."""

    row: Row
    builder: str
    params: int | None = None
    gflops: float | None = None
    skipped: str = ""

    @property
    def match(self) -> bool:
        return not self.skipped and (self.params, self.gflops) == (self.row.params, self.row.gflops)


def config_only(variants: Path) -> dict[str, tuple[str, ast.Constant, ast.Constant]]:
    """Architectures registered with ``**_config_only(config, params, gflops)``: name -> (config, params, gflops)."""
    out = {}
    for node in ast.walk(ast.parse(variants.read_text("utf-8"))):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "register_arch"):
            continue
        for kw in node.keywords:
            call = kw.value
            if kw.arg is None and isinstance(call, ast.Call) and getattr(call.func, "id", "") == "_config_only":
                config, params, gflops = call.args
                out[node.args[0].value] = (config.value, params, gflops)
    return out


def rows(manifest: Path, variants: Path) -> list[Row]:
    """Every expected figure: each manifest entry, then each config-only architecture."""
    models = json.loads(manifest.read_text("utf-8"))["models"]
    out = [
        Row(name, "manifest", e.get("params"), e.get("gflops"), PYSF_CONFIGS.get(name), name.split(".")[0])
        for name, e in sorted(models.items())
    ]
    for name, (config, params, gflops) in sorted(config_only(variants).items()):
        out.append(Row(name, "variants.py", params.value, gflops.value, f"{config}.yaml", name))
    return out


def evaluate(rows_: list[Row], pysf: PySlowFast | None, only: str = "*") -> list[Result]:
    """Count every row on each reference build it has: its PySlowFast config, then PyTorchVideo's build of its arch."""
    ptv = ptv_builds()
    cache: dict[tuple[str, int], tuple[int, float]] = {}  # one build per (config or arch, classes)
    results = []
    for row in rows_:
        if not fnmatch.fnmatch(row.name, only):
            continue
        if row.pysf_config is None and row.arch not in ptv:
            results.append(Result(row, "-", skipped="no reference build known"))
        if row.pysf_config is not None:
            label = f"pysf {row.pysf_config}"
            if pysf is None:
                results.append(Result(row, label, skipped="needs --pyslowfast"))
            else:
                if (label, 0) not in cache:
                    cache[label, 0] = pysf.count(row.pysf_config)
                results.append(Result(row, label, *cache[label, 0]))
        if row.arch in ptv:
            build = ptv[row.arch]
            classes = NUM_CLASSES[row.name.split(".")[1].split("_")[0]] if "." in row.name else 400
            key = (build.label, classes)
            if key not in cache:
                cache[key] = count_ptv(build, classes)
            results.append(Result(row, build.label, *cache[key]))
    return results


def table(results: list[Result]) -> str:
    """The report: name, reference build, counted params and GFLOPs, the written figures and where, match."""
    head = f"{'name':44} {'reference build':58} {'params':>9} {'GFLOPs':>7} {'written':>16} {'in':11} match"
    lines = [head, "-" * len(head)]
    for r in results:
        written = f"{r.row.params}/{r.row.gflops}"
        counted = f"{'':>9} {'':>7}" if r.skipped else f"{r.params:>9} {r.gflops:>7.2f}"
        verdict = r.skipped or ("yes" if r.match else "NO")
        lines.append(f"{r.row.name:44} {r.builder:58} {counted} {written:>16} {r.row.where:11} {verdict}")
    done = [r for r in results if not r.skipped]
    lines.append(f"{sum(r.match for r in done)}/{len(done)} counted figures match; {len(results) - len(done)} skipped")
    return "\n".join(lines)


def regenerated(results: list[Result]) -> dict[str, tuple[int, float]]:
    """Per row, the figures to write: its first counted build's; a row whose builds disagree is an error."""
    out: dict[str, tuple[int, float]] = {}
    for r in results:
        if r.skipped:
            continue
        counted = (r.params, r.gflops)
        if out.setdefault(r.row.name, counted) != counted:
            raise ValueError(f"{r.row.name}: reference builds disagree ({out[r.row.name]} vs {counted} {r.builder})")
    return out


def write_manifest(manifest: Path, figures: dict[str, tuple[int, float]]) -> int:
    """Set params/gflops in place, keeping the file's ``json.dumps(indent=2)`` layout; returns entries changed."""
    text = manifest.read_text("utf-8")
    data = json.loads(text)
    if json.dumps(data, indent=2, ensure_ascii=False) + "\n" != text:
        raise ValueError(f"{manifest} is not laid out as json.dumps(indent=2) writes it; refusing to reformat it")
    changed = 0
    for name, (params, gflops) in figures.items():
        entry = data["models"].get(name)
        if entry is not None and (entry.get("params"), entry.get("gflops")) != (params, gflops):
            entry["params"], entry["gflops"] = params, gflops
            changed += 1
    if changed:
        atomic_write(manifest, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return changed


def write_variants(variants: Path, figures: dict[str, tuple[int, float]]) -> int:
    """Rewrite the literals of ``_config_only(config, params, gflops)`` calls that differ; returns calls changed."""
    lines = variants.read_text("utf-8").splitlines(keepends=True)
    edits = []  # (line, start col, end col, new text); every literal sits on one line
    for name, (_, *nodes) in config_only(variants).items():
        for node, value in zip(nodes, figures.get(name, ())):
            if node.value != value:  # params as 39_812_560, GFLOPs as 39.07, as variants.py writes them
                new = f"{value:_}" if isinstance(value, int) else repr(value)
                edits.append((node.lineno - 1, node.col_offset, node.end_col_offset, new))
    # col offsets are UTF-8 byte offsets: edit each line as bytes, right to left
    for line, start, end, new in sorted(edits, reverse=True):
        raw = lines[line].encode("utf-8")
        lines[line] = (raw[:start] + new.encode("utf-8") + raw[end:]).decode("utf-8")
    if edits:
        atomic_write(variants, "".join(lines))
    return len({line for line, *_ in edits})


def atomic_write(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, then rename (follows a symlinked path to its target)."""
    path = path.resolve()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """Print the table; ``--check`` exits 1 on a mismatch, ``--write`` writes the counted figures in place."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pyslowfast", type=Path, help="a PySlowFast checkout (its slowfast/ and configs/)")
    p.add_argument("--manifest", type=Path, default=MANIFEST)
    p.add_argument("--variants", type=Path, default=VARIANTS)
    p.add_argument("--only", default="*", help="glob on the row name (e.g. 'slowfast_r50_*')")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if any counted figure differs from the written one")
    mode.add_argument("--write", action="store_true", help="write the counted figures into the manifest / variants.py")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    pysf = PySlowFast(args.pyslowfast) if args.pyslowfast else None
    results = evaluate(rows(args.manifest, args.variants), pysf, args.only)
    print(table(results))
    unknown = [r.row.name for r in results if r.skipped == "no reference build known"]
    if args.write:
        try:
            figures = regenerated(results)
        except ValueError as e:
            print(f"error: {e}; nothing written", file=sys.stderr)
            return 2
        print(f"manifest: {write_manifest(args.manifest, figures)} entries changed")
        print(f"variants.py: {write_variants(args.variants, figures)} architectures changed")
    if args.check and (unknown or not all(r.match for r in results if not r.skipped)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

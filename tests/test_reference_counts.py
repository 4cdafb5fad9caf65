"""tools/reference_counts.py: every expected parameter / GFLOPs figure regenerates from the authors' builds.

The PyTorchVideo part always runs (pytorchvideo 0.1.5 is a test dependency; meta-device builds, no compute). The
PySlowFast part needs a checkout: set SLOWFAST_PATH to one (its ``slowfast/`` and ``configs/``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "reference_counts.py"
MANIFEST = ROOT / "weights_manifest.json"
VARIANTS = ROOT / "slowfast_zoo" / "registry" / "variants.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("reference_counts", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


rc = load_tool()


@pytest.fixture(scope="module")
def ptv_results():
    return rc.evaluate(rc.rows(MANIFEST, VARIANTS), pysf=None)  # meta device: no compute, no threads


def test_pytorchvideo_counts_equal_every_written_figure(ptv_results) -> None:
    counted = [r for r in ptv_results if not r.skipped]
    wrong = [(r.row.name, r.builder, r.params, r.gflops, r.row.params, r.row.gflops) for r in counted if not r.match]
    assert not wrong, f"counted (params, GFLOPs) differ from the written ones: {wrong}"
    # every PyTorchVideo checkpoint's figures are regenerated here, not only some
    ptv_rows = {n for n in json.loads(MANIFEST.read_text("utf-8"))["models"] if n.endswith("_ptv")}
    assert ptv_rows and ptv_rows <= {r.row.name for r in counted}
    # and every figure has a reference build (the rest wait for a PySlowFast checkout)
    assert not [r.row.name for r in ptv_results if r.skipped == "no reference build known"]
    assert {r.skipped for r in ptv_results if r.skipped} == {"needs --pyslowfast"}


def test_counting_convention_reproduces_the_pytorchvideo_model_zoo(ptv_results) -> None:
    """The counts match PTV's published table (PTV:docs/source/model_zoo.md, K400 rows: params (M), GFLOPs)."""
    by_builder = {r.builder: r for r in ptv_results if not r.skipped and r.row.name.endswith(".k400_ptv")}
    published_params_m = {
        "ptv hub.c2d_r50": 24.33,
        "ptv hub.i3d_r50": 28.04,
        "ptv create_resnet (4x16)": 32.45,
        "ptv hub.slow_r50": 32.45,
        "ptv create_slowfast (4x16)": 34.48,
        "ptv hub.slowfast_r50": 34.57,
        "ptv hub.slowfast_r101": 62.83,
        "ptv hub.slowfast_16x8_r101_50_50": 53.77,
    }
    assert {b: round(by_builder[b].params / 1e6, 2) for b in published_params_m} == published_params_m
    # the two rows whose published GFLOPs are the fvcore count at one 256x256 view (the others differ slightly)
    assert by_builder["ptv hub.slow_r50"].gflops == 54.52
    assert by_builder["ptv hub.slowfast_r50"].gflops == 65.71


def run_tool(*args: str | Path) -> int:
    return rc.main([str(a) for a in args])


@pytest.fixture
def copies(tmp_path: Path) -> tuple[Path, Path]:
    manifest, variants = tmp_path / "weights_manifest.json", tmp_path / "variants.py"
    manifest.write_bytes(MANIFEST.read_bytes())
    variants.write_bytes(VARIANTS.read_bytes())
    return manifest, variants


def test_check_fails_on_a_wrong_figure_and_write_restores_it_byte_for_byte(copies) -> None:
    manifest, variants = copies
    data = json.loads(manifest.read_text("utf-8"))
    data["models"]["c2d_r50_8x8.k400_ptv"]["gflops"] = 25.47  # counted: 25.46
    manifest.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    only = ("--manifest", manifest, "--variants", variants, "--only", "c2d_r50_8x8.*")
    assert run_tool("--check", *only) == 1
    assert run_tool("--write", *only) == 0
    assert manifest.read_bytes() == MANIFEST.read_bytes()
    assert run_tool("--check", *only) == 0
    assert run_tool("--write", *only) == 0  # nothing to change: the file stays as it is
    assert manifest.read_bytes() == MANIFEST.read_bytes()


def test_a_figure_without_reference_build_fails_the_check(copies) -> None:
    manifest, variants = copies
    data = json.loads(manifest.read_text("utf-8"))
    data["models"]["x3d_m.k400_ptv"] = {"params": 3_800_000, "gflops": 6.2}  # no reference build known to the tool
    manifest.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    assert run_tool("--check", "--manifest", manifest, "--variants", variants, "--only", "x3d_*") == 1


def test_write_refuses_to_reformat_a_manifest(copies) -> None:
    manifest, _ = copies
    manifest.write_text(json.dumps(json.loads(MANIFEST.read_text("utf-8"))), encoding="utf-8")  # one line
    with pytest.raises(ValueError, match=r"json.dumps\(indent=2\)"):
        rc.write_manifest(manifest, {"c2d_r50_8x8.k400_ptv": (1, 1.0)})


def test_write_variants_changes_only_the_config_only_literals(copies) -> None:
    _, variants = copies
    before = VARIANTS.read_text("utf-8").splitlines()
    assert rc.write_variants(variants, {"slow_nln_r50_4x16": (39_812_561, 39.08), "slow_r50_8x8": (1, 1.0)}) == 1
    after = variants.read_text("utf-8").splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(changed) == 1
    assert changed[0][1].endswith('_config_only("Kinetics/SLOW_NLN_4x16_R50", 39_812_561, 39.08),')
    assert rc.write_variants(variants, {"slow_nln_r50_4x16": (39_812_561, 39.08)}) == 0


@pytest.mark.skipif(not os.environ.get("SLOWFAST_PATH"), reason="set SLOWFAST_PATH to a PySlowFast checkout")
def test_pyslowfast_counts_equal_every_written_figure() -> None:
    # a separate process: the tool stubs detectron2 & co. in sys.modules to import PySlowFast's model modules
    out = subprocess.run(
        [sys.executable, str(TOOL), "--pyslowfast", os.environ["SLOWFAST_PATH"], "--check"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert out.stdout.rstrip().endswith("counted figures match; 0 skipped"), out.stdout[-2000:]

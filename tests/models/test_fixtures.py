"""The zoo against networks written by PySlowFast itself (tests/data; how they were made: tests/data/fixtures.json).

Each fixture is a small network (width 8, 10 classes, 64x64 training crop) saved in the authors' file formats with
the exact inputs fed and the logits PySlowFast produced. The zoo, built with the same overrides, must load every
file strictly and reproduce those logits.

Tolerance: the fixture networks have randomized BatchNorm statistics, which makes them numerically chaotic; the
reference logits were computed with another torch build, and on this one the reference implementation itself
(PyTorchVideo, identical math) lands exactly where the zoo does (see test_ptv_parity.py, bit-exact). Switching the
CPU conv backend moves the same logits by up to 1e-2 on the non-local fixture. Logits must therefore agree to
2e-5 of their scale, and output probabilities to 2e-5 absolute.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import slowfast_zoo
from slowfast_zoo.weights.checkpoint import read_state_dict

DATA = Path(__file__).resolve().parents[1] / "data"

FIXTURES = {f["name"]: f for f in json.loads((DATA / "fixtures.json").read_text())}
ARCH = {
    "slowfast_r50_8x8": "slowfast_r50_8x8",
    "slowfast_r50_8x8_at96": "slowfast_r50_8x8",
    "slow_r50_8x8": "slow_r50_8x8",
    "i3d_nln_r50_8x8": "i3d_nln_r50_8x8",
    "slowfast_r101_50_50_16x8": "slowfast_r101_50_50_16x8",
    "slowfast_r50_8x8_ptv": "slowfast_r50_8x8",
    "slow_r50_8x8_ptv": "slow_r50_8x8",
}
SCHEME = {"caffe2.pkl": "caffe2", "pyslowfast.pyth": "pysf", "ptv_wrapper.pyth": "ptv_wrapper"}
CASES = [(name, file) for name in ARCH for file in FIXTURES[name]["files"] if not file.endswith(".npz")]


def build(name: str, **kw):
    """The zoo model with the fixture's config overrides (PySlowFast config keys -> zoo config fields)."""
    overrides = {k.split(".")[1]: v for k, v in FIXTURES[name]["config_overrides"].items()}
    kw = {"head_pool": "fixed", **kw}
    return slowfast_zoo.create(
        ARCH[name],
        width=overrides["WIDTH_PER_GROUP"],
        num_classes=overrides["NUM_CLASSES"],
        crop_size=overrides["TRAIN_CROP_SIZE"],
        num_frames=overrides["NUM_FRAMES"],
        **kw,
    ).eval()


def inputs(name: str) -> tuple[list[torch.Tensor], dict[str, np.ndarray]]:
    io = dict(np.load(DATA / f"{name}.io.npz"))
    xs = [torch.from_numpy(io["input0"])]
    if "input1" in io:
        xs.append(torch.from_numpy(io["input1"]))
    return xs, io


@pytest.mark.parametrize(("name", "file"), CASES, ids=[f for _, f in CASES])
def test_fixture_loads_strictly_and_reproduces_logits(name: str, file: str) -> None:
    fx = FIXTURES[name]
    model = build(name, checkpoint=DATA / file)
    report = model.load_report
    assert report.key_scheme == SCHEME[file.split(".", 1)[1]]
    assert sum(p.numel() for p in model.parameters()) == fx["model"]["params"]
    assert len(model.state_dict()) == fx["model"]["state_dict_keys"]
    if report.key_scheme == "caffe2":
        assert report.skipped and all(k.endswith("_momentum") or k in ("lr", "model_iter") for k in report.skipped)
        assert report.filled and all(k.endswith("num_batches_tracked") for k in report.filled)
    else:
        assert not report.skipped and not report.filled

    xs, io = inputs(name)
    with torch.no_grad():
        logits = model.position_logits(xs)
    ref = torch.from_numpy(io["logits"])
    assert logits.shape == ref.shape
    assert (logits - ref).abs().max() <= 2e-5 * ref.abs().max()
    probs = logits.softmax(-1).mean(dim=(1, 2, 3))
    torch.testing.assert_close(probs, torch.from_numpy(io["output"]), rtol=0, atol=2e-5)
    # forward() returns the mean of the position logits (one number per class, train and eval alike)
    with torch.no_grad():
        torch.testing.assert_close(model(xs), logits.mean(dim=(1, 2, 3)), rtol=0, atol=1e-5)


def test_oversized_input_runs_the_fixed_head_fully_convolutionally() -> None:
    """At 96x96 the 2x2 head kernel (64 px training crop) slides over a 3x3 res5 map: 2x2 positions."""
    xs, _ = inputs("slowfast_r50_8x8_at96")
    model = build("slowfast_r50_8x8_at96", checkpoint=DATA / "slowfast_r50_8x8_at96.pyslowfast.pyth")
    with torch.no_grad():
        logits = model.position_logits(xs)
    assert logits.shape == (1, 1, 2, 2, 10)
    # the adaptive head pools the whole map instead: a different (valid) answer, so the option matters
    adaptive = build(
        "slowfast_r50_8x8_at96", checkpoint=DATA / "slowfast_r50_8x8_at96.pyslowfast.pyth", head_pool="adaptive"
    )
    with torch.no_grad():
        assert not torch.allclose(adaptive(xs), model(xs), atol=1e-4)


def test_same_weights_in_every_format_give_the_same_tensors() -> None:
    caffe2 = build("slowfast_r50_8x8", checkpoint=DATA / "slowfast_r50_8x8.caffe2.pkl").state_dict()
    pysf = build("slowfast_r50_8x8", checkpoint=DATA / "slowfast_r50_8x8.pyslowfast.pyth").state_dict()
    assert caffe2.keys() == pysf.keys()
    for key in caffe2:
        if not key.endswith("num_batches_tracked"):  # Caffe2 has none; PySlowFast counted its calibration batches
            assert torch.equal(caffe2[key], pysf[key]), key


def test_fixture_files_hold_what_their_readme_says() -> None:
    sd, fmt, skipped = read_state_dict(DATA / "slowfast_r50_8x8.caffe2.pkl")
    assert fmt == "caffe2" and "model_iter" in skipped and "conv1_w" in sd and "t_pool1_subsample_w" in sd
    sd, fmt, _ = read_state_dict(DATA / "slow_r50_8x8_ptv.ptv_wrapper.pyth")
    assert fmt == "torch" and all(k.startswith("model.blocks.") for k in sd)


def test_ava_detector_fixture_scores_boxes_like_pysf() -> None:
    """AVA R101_50_50 with dot-product non-local blocks and the RoIAlign head (Caffe2 layout, 80 sigmoid outputs)."""
    fx = FIXTURES["ava_slowfast_r101_50_50_nl"]
    model = slowfast_zoo.create(
        "slowfast_nln_r101_50_50_8x8_det",
        checkpoint=DATA / "ava_slowfast_r101_50_50_nl.caffe2.pkl",
        width=8,
        num_frames=16,
    ).eval()
    assert model.load_report.key_scheme == "caffe2"
    assert sum(p.numel() for p in model.parameters()) == fx["model"]["params"]
    assert len(model.state_dict()) == fx["model"]["state_dict_keys"]
    xs, io = inputs("ava_slowfast_r101_50_50_nl")
    rows = torch.from_numpy(io["bboxes"])
    with torch.no_grad():
        logits = model(xs, rows)
        per_clip = model(xs, [rows[:, 1:]])  # the (K, 4)-per-clip form gives the same
    ref = torch.from_numpy(io["logits"])
    assert logits.shape == ref.shape == (2, 80)
    assert (logits - ref).abs().max() <= 2e-5 * ref.abs().max()
    torch.testing.assert_close(logits.sigmoid(), torch.from_numpy(io["output"]), rtol=0, atol=2e-5)
    assert torch.equal(per_clip, logits)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_files_are_the_ones_pyslowfast_wrote(name: str) -> None:
    """The copies in tests/data have the sha256 recorded next to them when PySlowFast wrote them."""
    import hashlib

    for file, meta in FIXTURES[name]["files"].items():
        assert hashlib.sha256((DATA / file).read_bytes()).hexdigest() == meta["sha256"], file

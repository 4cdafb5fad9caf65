"""Key schemes: the names the zoo writes are the names the authors' files hold, and every mapping round-trips."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import pytest
import torch

import slowfast_zoo
from slowfast_zoo.weights.checkpoint import read_state_dict
from slowfast_zoo.weights.keys import KeyMappingError, detect_scheme, from_zoo, to_zoo

DATA = Path(__file__).resolve().parents[1] / "data"

TINY = dict(width=8, num_classes=10)
# fixture file -> (arch, frames) of the network PySlowFast wrote into it
FIXTURE_ARCH = {
    "slowfast_r50_8x8": ("slowfast_r50_8x8", 16),
    "slow_r50_8x8": ("slow_r50_8x8", 8),
    "i3d_nln_r50_8x8": ("i3d_nln_r50_8x8", 8),
    "slowfast_r101_50_50_16x8": ("slowfast_r101_50_50_16x8", 16),
    "slowfast_r50_8x8_ptv": ("slowfast_r50_8x8", 16),
    "slow_r50_8x8_ptv": ("slow_r50_8x8", 8),
    "ava_slowfast_r101_50_50_nl": ("slowfast_nln_r101_50_50_8x8_det", 16),
}
FILES = sorted(
    p.name
    for p in DATA.glob("*")
    if p.suffix in (".pkl", ".pyth") and not p.name.startswith(("ava", "slowfast_r50_8x8_at96"))
)


@pytest.mark.parametrize("file", FILES)
def test_zoo_writes_exactly_the_upstream_names(file: str) -> None:
    """Names written by from_zoo equal, one for one, the names in a file PySlowFast wrote (independent truth)."""
    stem, kind = file.split(".", 1)
    scheme = {"caffe2.pkl": "caffe2", "pyslowfast.pyth": "pysf", "ptv_wrapper.pyth": "ptv_wrapper"}[kind]
    arch, frames = FIXTURE_ARCH[stem]
    model = slowfast_zoo.create(arch, num_frames=frames, width=8, num_classes=80 if "det" in arch else 10)
    written = from_zoo(model.state_dict(), scheme, temporal_pool=model.cfg.temporal_pool > 1)
    upstream, _, _ = read_state_dict(DATA / file)
    assert set(written) == set(upstream)
    assert all(written[k].shape == upstream[k].shape for k in upstream)


@pytest.mark.parametrize("file", [*FILES, "ava_slowfast_r101_50_50_nl.caffe2.pkl"])
def test_zoo_reads_exactly_the_upstream_names(file: str) -> None:
    """The reading rules turn every name in a file the authors' code wrote into one of the model's own names."""
    stem, _ = file.split(".", 1)
    arch, frames = FIXTURE_ARCH[stem]
    model = slowfast_zoo.create(
        arch, num_frames=frames, device="meta", width=8, num_classes=80 if "det" in arch else 10
    )
    upstream, _, _ = read_state_dict(DATA / file)
    skip = "num_batches_tracked" if file.endswith(".pkl") else "(none)"  # Caffe2 files carry no batch counters
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith(skip)}
    assert {k: tuple(v.shape) for k, v in to_zoo(upstream).items()} == expected  # names, and the shape at each


def _ptv_builders() -> dict[str, object]:
    """Zoo arch -> PyTorchVideo 0.1.5 builder of the same network (pytorchvideo/models/hub/*.py, resnet.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pytorchvideo.models import hub
        from pytorchvideo.models.resnet import create_resnet
        from pytorchvideo.models.slowfast import create_slowfast

    return {
        "slow_r50_8x8": hub.slow_r50,
        "slow_r50_4x16": lambda: create_resnet(head_pool_kernel_size=(4, 7, 7), stem_conv_kernel_size=(1, 7, 7)),
        "slowfast_r50_8x8": hub.slowfast_r50,
        "slowfast_r50_4x16": lambda: create_slowfast(
            slowfast_fusion_conv_kernel_size=(5, 1, 1),
            slowfast_fusion_conv_stride=(8, 1, 1),
            head_pool_kernel_sizes=((4, 7, 7), (32, 7, 7)),
        ),
        "slowfast_r101_8x8": hub.slowfast_r101,
        "slowfast_r101_50_50_16x8": hub.slowfast_16x8_r101_50_50,
        "i3d_r50_8x8": hub.i3d_r50,
        "c2d_r50_8x8": hub.c2d_r50,
        "slow_r50_4x16_det": hub.slow_r50_detection,
        "slowfast_r50_8x8_det": hub.slowfast_r50_detection,
    }


@pytest.mark.parametrize("arch", list(_ptv_builders()))
def test_names_of_pytorchvideo_reference_builds_map_both_ways(arch: str) -> None:
    """Each direction against the names PyTorchVideo's own builders give (built on meta: no weights are made)."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ptv = _ptv_builders()[arch]()
    ptv_keys = ptv.state_dict().keys()
    model = slowfast_zoo.create(arch, device="meta")
    zoo = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in zoo.items()}
    assert {k: tuple(v.shape) for k, v in to_zoo(ptv.state_dict()).items()} == shapes
    written = from_zoo(
        zoo, detect_scheme(ptv_keys), temporal_pool=model.cfg.temporal_pool > 1, detection=model.cfg.roi_head
    )
    assert {k: tuple(v.shape) for k, v in written.items()} == {k: tuple(v.shape) for k, v in ptv.state_dict().items()}


@pytest.mark.self_consistency
@pytest.mark.parametrize("arch", slowfast_zoo.list_models())
@pytest.mark.parametrize("scheme", ["pysf", "caffe2", "ptv", "ptv_wrapper"])
def test_every_arch_round_trips_through_every_scheme(arch: str, scheme: str) -> None:
    model = slowfast_zoo.create(arch, device="meta", **TINY)
    sd = {k: torch.empty(0) for k in model.state_dict()}
    has_nonlocal = any(".nl." in k for k in sd)
    if scheme.startswith("ptv") and has_nonlocal:
        with pytest.raises(KeyMappingError, match="nl"):  # PyTorchVideo has no layout for non-local blocks
            from_zoo(sd, scheme)
        return
    detection = model.cfg.roi_head
    if detection and scheme == "ptv":  # PyTorchVideo's detectors always nest the backbone under model.
        pytest.skip("PyTorchVideo detectors have only the ptv_wrapper layout (backbone under model.)")
    upstream = from_zoo(sd, scheme, temporal_pool=model.cfg.temporal_pool > 1, detection=detection)
    assert detect_scheme(upstream) == scheme
    back = to_zoo(upstream)
    expected = {k for k in sd if not (scheme == "caffe2" and k.endswith("num_batches_tracked"))}
    assert set(back) == expected


def test_ptv_block_indices_follow_the_temporal_pool() -> None:
    """I3D/C2D put a parameter-free pool at blocks.2, shifting res3..res5 and the head
    (PTV:pytorchvideo/models/resnet.py, create_resnet)."""
    i3d = from_zoo(slowfast_zoo.create("i3d_r50_8x8", device="meta").state_dict(), "ptv", temporal_pool=True)
    slow = from_zoo(slowfast_zoo.create("slow_r50_8x8", device="meta").state_dict(), "ptv")
    assert "blocks.1.res_blocks.0.branch1_conv.weight" in i3d and "blocks.5.res_blocks.2.branch2.conv_c.weight" in i3d
    assert "blocks.6.proj.weight" in i3d and "blocks.5.proj.weight" in slow
    assert "blocks.4.res_blocks.2.branch2.conv_c.weight" in slow


def test_caffe2_fusion_blobs_are_named_after_the_last_fast_block() -> None:
    sd = slowfast_zoo.create("slowfast_r101_16x8", device="meta").state_dict()
    blobs = from_zoo(sd, "caffe2")
    assert blobs["t_res4_22_branch2c_bn_subsample_w"].shape == (256, 128, 5, 1, 1)
    assert blobs["t_pool1_subsample_w"].shape == (16, 8, 5, 1, 1)


def test_unknown_keys_are_listed_not_dropped() -> None:
    sd = slowfast_zoo.create("slow_r50_8x8", device="meta", **TINY).state_dict()
    pysf = from_zoo(sd, "pysf")
    pysf["s6.pathway0_res0.branch2.a.weight"] = torch.empty(0)
    pysf["head.extra"] = torch.empty(0)
    with pytest.raises(KeyMappingError, match=r"2 key\(s\) are not part of the 'pysf' key scheme: head\.extra, s6\."):
        to_zoo(pysf)


def test_unrecognised_layout_says_what_was_expected() -> None:
    with pytest.raises(
        KeyMappingError, match=r"unrecognised checkpoint layout.*s1.pathway0_stem.conv.weight.*fc.weight"
    ):
        detect_scheme({"fc.weight": 0, "conv1.weight": 0})


def test_pysf_nonlocal_norm_name_of_later_pyslowfast_is_accepted() -> None:
    """PySlowFast renamed the non-local BN from ``bn`` to ``norm``; both load."""
    sd = from_zoo(slowfast_zoo.create("i3d_nln_r50_8x8", device="meta", **TINY).state_dict(), "pysf")
    renamed = {
        k.replace("_nonlocal1.bn.", "_nonlocal1.norm.").replace("_nonlocal3.bn.", "_nonlocal3.norm."): v
        for k, v in sd.items()
    }
    assert renamed.keys() != sd.keys()
    assert set(to_zoo(renamed)) == set(to_zoo(sd))


@pytest.mark.self_consistency
def test_synthesized_caffe2_pickle_round_trips(tmp_path) -> None:
    """A .pkl written with the exact blob names, Python-2 protocol, solver blobs included, loads back bit-exactly."""
    torch.manual_seed(0)
    model = slowfast_zoo.create("slowfast_r50_8x8", num_frames=16, **TINY)
    for p in model.parameters():
        p.data.normal_()
    blobs = {k: v.numpy() for k, v in from_zoo(model.state_dict(), "caffe2").items()}
    blobs.update({f"{k}_momentum": v * 0 for k, v in list(blobs.items())[:5]}, lr=0.1, model_iter=1000)
    path = tmp_path / "SLOWFAST_8x8_R50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)
    loaded = slowfast_zoo.create("slowfast_r50_8x8", num_frames=16, checkpoint=path, **TINY)
    for k, v in model.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(loaded.state_dict()[k], v), k


@pytest.mark.parametrize(
    ("scheme", "first", "second"),
    [
        # PySlowFast renamed the non-local BatchNorm from bn to norm: a file holding both has two candidates
        ("pysf", "s4.pathway0_nonlocal1.bn.weight", "s4.pathway0_nonlocal1.norm.weight"),
        # PyTorchVideo's head sits at blocks.5 or blocks.6: both present is ambiguous
        ("ptv", "blocks.5.proj.weight", "blocks.6.proj.weight"),
    ],
)
def test_two_source_keys_for_one_target_are_refused_naming_both(scheme: str, first: str, second: str) -> None:
    """Conversion must never keep one of two tensors silently."""
    model = slowfast_zoo.create("i3d_nln_r50_8x8", device="meta", **TINY)
    sd = from_zoo(model.state_dict(), "pysf")
    if scheme == "ptv":
        sd = from_zoo(slowfast_zoo.create("slow_r50_8x8", device="meta", **TINY).state_dict(), "ptv")
    sd = {k: v for k, v in sd.items() if k not in (first, second)}
    sd[first], sd[second] = torch.zeros(1), torch.ones(1)
    with pytest.raises(KeyMappingError, match=rf"'{re.escape(first)}' and '{re.escape(second)}' both map to"):
        to_zoo(sd, scheme)


def test_a_file_with_two_tensors_for_one_name_is_refused(tmp_path) -> None:
    model = slowfast_zoo.create("i3d_nln_r50_8x8", **TINY)
    sd = from_zoo(model.state_dict(), "pysf")
    sd["s4.pathway0_nonlocal1.norm.bias"] = sd["s4.pathway0_nonlocal1.bn.bias"] + 1
    path = tmp_path / "I3D_NLN_8x8_R50.pyth"
    torch.save({"model_state": sd}, path)
    with pytest.raises(slowfast_zoo.CheckpointError, match=r"nonlocal1\.bn\.bias' and .*nonlocal1\.norm\.bias'"):
        slowfast_zoo.load_checkpoint(model, path)

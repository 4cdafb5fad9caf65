"""Registry facts read from the registry and compared with the authors' values, each with its source.

SF = facebookresearch/SlowFast @ 287ec00 (MODEL_ZOO.md, configs/; docs/sources.md).
"""

from __future__ import annotations

import pickle

import pytest
import torch
from hub_server import write_upstream

import slowfast_zoo
from slowfast_zoo import get_pretrained_cfg
from slowfast_zoo.registry.pretrained import load_manifest

AVA_PRETRAIN = "https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/ava/pretrain/"

# The AVA table's "Pretrain Model" column (SF:MODEL_ZOO.md, "## AVA"): the Kinetics networks behind the detectors.
PRETRAIN = {
    # SF:MODEL_ZOO.md AVA row 1 "[Kinetics 400](.../ava/pretrain/C2D_8x8_R50.pkl)"; the name is the config
    # SF:configs/Kinetics/C2D_8x8_R50.yaml (first commit 31d2ea7): ARCH c2d, NUM_FRAMES 8, SAMPLING_RATE 8, 400 classes
    "c2d_r50_8x8.k400_pysf": dict(file="C2D_8x8_R50.pkl", classes=400, labels="kinetics400", frames=8, alpha=None),
    # SF:MODEL_ZOO.md AVA rows 2-4 "[Kinetics 600](.../ava/pretrain/SLOWFAST_{32,64}x2_R101_50_50[_v2.1].pkl)";
    # trunk of SF:configs/AVA/c2/SLOWFAST_{32,64}x2_R101_50_50*.yaml: NUM_FRAMES 32/64, ALPHA 4, FUSION_KERNEL_SZ 5,
    # DEPTH 101, NUM_BLOCK_TEMP_KERNEL res4 [6, 6], NONLOCAL.LOCATION res4 slow [6, 13, 20], dot_product
    "slowfast_nln_r101_50_50_8x8.k600_pysf_v21": dict(
        file="SLOWFAST_32x2_R101_50_50_v2.1.pkl", classes=600, labels="kinetics600", frames=32, alpha=4
    ),
    "slowfast_nln_r101_50_50_8x8.k600_pysf": dict(
        file="SLOWFAST_32x2_R101_50_50.pkl", classes=600, labels="kinetics600", frames=32, alpha=4
    ),
    "slowfast_nln_r101_50_50_16x8.k600_pysf": dict(
        file="SLOWFAST_64x2_R101_50_50.pkl", classes=600, labels="kinetics600", frames=64, alpha=4
    ),
}


@pytest.mark.parametrize("name", sorted(PRETRAIN))
def test_ava_pretrain_networks(name: str) -> None:
    fact = PRETRAIN[name]
    cfg = get_pretrained_cfg(name)
    assert cfg.origin.url == AVA_PRETRAIN + fact["file"]
    # Format inferred, not read from bytes: SF:configs/AVA/c2/SLOW_8x8_R50.yaml, SLOWFAST_32x2_R101_50_50_v2.1.yaml,
    # SLOWFAST_64x2_R101_50_50.yaml load their pre-training with TRAIN.CHECKPOINT_TYPE caffe2; ACAR-Net issue #39
    # (maintainer): PySlowFast's R101 K600 SlowFast was "the original caffe checkpoint in pkl format".
    assert cfg.origin.format == "caffe2_pkl" and cfg.origin.key_scheme == "caffe2"
    assert cfg.num_classes == fact["classes"] and cfg.labels == fact["labels"]
    assert cfg.num_frames == fact["frames"] and cfg.alpha == fact["alpha"]
    assert dict(cfg.metrics) == {}  # SF:MODEL_ZOO.md gives no accuracy for the pre-training files
    assert "no accuracy published" in cfg.notes
    assert cfg.hub.repo_id == f"slowfast-zoo/{name}"


def test_ava_pretrain_r101_trunk() -> None:
    for name in ("slowfast_nln_r101_50_50_8x8.k600_pysf", "slowfast_nln_r101_50_50_16x8.k600_pysf"):
        m = get_pretrained_cfg(name).model
        assert m.layers == (3, 4, 23, 3)  # SF:configs/AVA/c2/SLOWFAST_*_R101_50_50.yaml RESNET.DEPTH 101
        assert m.fusion_kernel_t == 5  # SLOWFAST.FUSION_KERNEL_SZ 5
        # NUM_BLOCK_TEMP_KERNEL [[3, 3], [4, 4], [6, 6], [3, 3]]: 6 of 23 res4 blocks keep temporal kernel 3
        assert m.block_kernel_t[0][2] == (3,) * 6 + (1,) * 17 and m.block_kernel_t[1][2] == (3,) * 6 + (1,) * 17
        # NONLOCAL.LOCATION [[[], []], [[], []], [[6, 13, 20], []], [[], []]], INSTANTIATION dot_product
        assert m.nonlocal_blocks == ((), (), (6, 13, 20), ()) and m.nonlocal_mode == "dot_product"
        assert not m.roi_head and m.spatial_strides == (1, 2, 2, 2)  # a classifier, not the detector
    c2d = get_pretrained_cfg("c2d_r50_8x8.k400_pysf").model
    assert c2d.block_kernel_t[0] == ((1,) * 3, (1,) * 4, (1,) * 6, (1,) * 3)  # ARCH c2d: no temporal kernels
    assert c2d.temporal_pool == 2  # SF:slowfast/models/video_model_builder.py _POOL1["c2d"] = [[2, 1, 1]]


def test_hub_repo_ids_follow_the_naming_rule() -> None:
    # the rule every entry follows: slowfast-zoo/<arch>.<tag>; c2d_nopool broke it (and would collide with c2d)
    assert get_pretrained_cfg("c2d_nopool_r50_8x8.k400_pysf").hub.repo_id == "slowfast-zoo/c2d_nopool_r50_8x8.k400_pysf"
    bad = {n: r["hub"]["repo_id"] for n, r in load_manifest().items() if r["hub"]["repo_id"] != f"slowfast-zoo/{n}"}
    assert bad == {}


# Blob names and shapes seen in a load log of ava/SLOWFAST_32x2_R101_50_50_v2.1.pkl (names as in
# SF:slowfast/utils/c2_model_loading.py), at full width; the synthesized files below are width 8 (channels / 8).
AUTHOR_BLOBS = {
    "t_pool1_subsample_w": (16, 8, 5, 1, 1),
    "nonlocal_conv4_20_theta_w": (512, 1024, 1, 1, 1),
    "res4_1_branch2a_w": (256, 1024, 3, 1, 1),
    "t_res4_17_branch2a_w": (32, 128, 1, 1, 1),
    "t_res4_22_branch2c_bn_subsample_bn_riv": (256,),
}


def _narrow(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(s // 8 if i < 2 and s > 5 else s for i, s in enumerate(shape))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRETRAIN))
def test_ava_pretrain_layout_loads(name: str, tmp_path) -> None:
    """A width-8 file in each layout the file may have loads strictly; the R101 blob names are the authors'."""
    torch.manual_seed(0)
    src = slowfast_zoo.create(name, width=8)
    path = write_upstream(src.state_dict(), "caffe2_pkl", tmp_path / PRETRAIN[name]["file"])
    with open(path, "rb") as f:
        blobs = pickle.load(f)["blobs"]
    d = 2304 // 8 if PRETRAIN[name]["alpha"] else 2048 // 8
    assert blobs["pred_w"].shape == (PRETRAIN[name]["classes"], d)  # Caffe2 FC weight (classes, dim)
    if "r101" in name:
        assert {k: blobs[k].shape for k in AUTHOR_BLOBS} == {k: _narrow(s) for k, s in AUTHOR_BLOBS.items()}
    loaded = slowfast_zoo.create(name, width=8, checkpoint=path)
    assert loaded.load_report.file_format == "caffe2"
    for k, v in src.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(loaded.state_dict()[k], v), k
    # the same tensors as a PySlowFast torch.save in the legacy (non-zip) serialization also load
    legacy = tmp_path / "legacy.pkl"
    from slowfast_zoo.weights.keys import from_zoo

    state = {k: v.clone() for k, v in from_zoo(src.state_dict(), "pysf").items()}
    payload = {"epoch": 1, "model_state": state, "optimizer_state": {}, "cfg": "MODEL:\n  NUM_CLASSES: 600\n"}
    torch.save(payload, legacy, _use_new_zipfile_serialization=False)
    again = slowfast_zoo.create(name, width=8, checkpoint=legacy)
    assert torch.equal(again.state_dict()["head.proj.weight"], src.state_dict()["head.proj.weight"])

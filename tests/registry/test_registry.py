"""Names, tags, aliases and the pretrained configs attached to every model."""

from __future__ import annotations

import pytest

import slowfast_zoo
from slowfast_zoo import UnknownModelError, get_pretrained_cfg

PRETRAINED = slowfast_zoo.list_pretrained()


def test_listing_and_patterns() -> None:
    archs = slowfast_zoo.list_models()
    assert "slowfast_r50_8x8" in archs and "slowfast_r101_50_50_16x8" in archs
    assert all("." not in a for a in archs)
    assert slowfast_zoo.list_models("slow_*") == [
        "slow_nln_r50_4x16",
        "slow_nln_r50_8x8",
        "slow_r50_2x32",
        "slow_r50_4x16",
        "slow_r50_4x16_det",
        "slow_r50_8x8",
        "slow_r50_16x8",
        "slow_r101_2x32",
        "slow_r101_4x16",
        "slow_r101_8x8",
        "slow_r101_16x8",
    ]
    assert slowfast_zoo.list_models("slowfast_r101*", pretrained=True) == [
        "slowfast_r101_8x8.k400_ptv",
        "slowfast_r101_50_50_16x8.k400_ptv",
    ]
    assert slowfast_zoo.list_pretrained("*ssv2*") == [
        "slow_r50_8x8.ssv2_ptv",
        "slowfast_r50_8x8.ssv2_ptv",
        "slowfast_r50_16x8.ssv2_multigrid",
        "slowfast_r50_16x8.ssv2_pysf",
    ]


def test_every_published_checkpoint_has_a_tag() -> None:
    """SF:MODEL_ZOO.md: 7 Kinetics Caffe2 classifiers + 6 multigrid ones + the 4 Kinetics pre-training files of the
    AVA table ("pretrain" column) and 4 AVA detectors; PTV:docs/source/model_zoo.md: 12 classifiers + 2 AVA
    detectors."""
    detectors = [n for n in PRETRAINED if get_pretrained_cfg(n).model.roi_head]
    assert len(PRETRAINED) - len(detectors) == 29 and len(detectors) == 6
    assert all(get_pretrained_cfg(n).dataset == "ava" for n in detectors)
    assert len([n for n in PRETRAINED if n.endswith("_ptv")]) == 14
    # the two AVA v2.2 R101 detector files are PySlowFast torch.save checkpoints despite their .pkl name
    # (SF:configs/AVA/c2/SLOWFAST_32x2_R101_50_50.yaml CHECKPOINT_TYPE pytorch; SlowFast #85, #170)
    assert len([n for n in PRETRAINED if get_pretrained_cfg(n).origin.format == "caffe2_pkl"]) == 13


# PTV:docs/source/model_zoo.md (facebookresearch/pytorchvideo @ f3142bb), Kinetics-400 table, verbatim: arch | depth |
# pretrain | frame length x sample rate | top 1 | top 5 | Flops (G) x views | Params (M) | Model
PTV_R101_16X8_ROW = (
    r"SlowFast | R101  | \-       | 16x8                       | 78.70 | 93.61 | 215.61 x 3 x 10   | 53.77      | "
    r"[link](https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/SLOWFAST\_16x8\_R101_50_50.pyth)"
)


def test_the_paper_r101_16x8_name() -> None:
    cells = [c.strip() for c in PTV_R101_16X8_ROW.split("|")]
    cfg = get_pretrained_cfg("slowfast_r101_16x8")
    assert cfg.name == "slowfast_r101_50_50_16x8.k400_ptv"
    assert dict(cfg.metrics) == {"top1": float(cells[4]), "top5": float(cells[5])}
    assert round(cfg.params / 1e6, 2) == float(cells[7])  # the exact count: tools/reference_counts.py
    assert cfg.origin.url == cells[8].split("(")[1].rstrip(")").replace("\\_", "_")
    # SF:configs/Kinetics/pytorchvideo/SLOWFAST_16x8_R101_50_50.yaml (SlowFast @ 287ec00): NUM_FRAMES 64, ALPHA 4,
    # FUSION_KERNEL_SZ 5, DEPTH 101, NUM_BLOCK_TEMP_KERNEL [[3, 3], [4, 4], [6, 6], [3, 3]] (6 of 23 res4 blocks)
    assert cfg.num_frames == 64 and cfg.alpha == 4 and cfg.model.fusion_kernel_t == 5
    assert cfg.model.layers == (3, 4, 23, 3) and cfg.model.block_kernel_t[0][2] == (3,) * 6 + (1,) * 17
    model = slowfast_zoo.create("slowfast_r101_16x8", device="meta")
    assert model.pretrained_cfg.model == cfg.model  # randomly initialized: the architecture, no published claims
    assert model.pretrained_cfg.tag is None and dict(model.pretrained_cfg.metrics) == {}


def test_bare_arch_picks_its_default_tag_and_tags_resolve() -> None:
    assert get_pretrained_cfg("slowfast_r50_8x8").name == "slowfast_r50_8x8.k400_pysf"
    assert get_pretrained_cfg("slowfast_r50_8x8.k400_ptv").origin.key_scheme == "ptv"
    weightless = get_pretrained_cfg("slowfast_nln_r50_8x8")
    assert weightless.tag is None and not weightless.has_weights and weightless.params == 41_838_680
    assert slowfast_zoo.is_model("slowfast_r101_16x8") and not slowfast_zoo.is_model("slowfast_r50")


def test_unknown_names_suggest_close_matches() -> None:
    with pytest.raises(UnknownModelError, match="unknown model 'slowfast_r50_8x9'; did you mean slowfast_r50_8x8"):
        slowfast_zoo.create("slowfast_r50_8x9")
    with pytest.raises(UnknownModelError, match=r"did you mean.*slowfast_r50_8x8\.k400_ptv"):
        get_pretrained_cfg("slowfast_r50_8x8.k400_ptvv")
    with pytest.raises(UnknownModelError, match=r"see slowfast_zoo\.list_models"):
        get_pretrained_cfg("resnet50")


@pytest.mark.parametrize("name", PRETRAINED)
def test_pretrained_cfg_is_complete(name: str) -> None:
    cfg = get_pretrained_cfg(name)
    assert cfg.label_names is not None and len(cfg.label_names) == cfg.num_classes
    assert cfg.origin.url.startswith("https://dl.fbaipublicfiles.com/")
    assert cfg.origin.format in ("caffe2_pkl", "pysf_pyth", "ptv_pyth")
    assert cfg.origin.key_scheme in ("caffe2", "pysf", "ptv", "ptv_wrapper")
    assert all(isinstance(v, float) for v in cfg.metrics.values())
    # every checkpoint has published metrics, except the AVA pre-training files (MODEL_ZOO.md gives none)
    assert cfg.metrics or ("/ava/pretrain/" in cfg.origin.url and "no accuracy published" in cfg.notes)
    assert cfg.params and cfg.gflops
    assert cfg.mean == (0.45,) * 3 and cfg.std == (0.225,) * 3 and cfg.channel_order == "RGB"
    assert cfg.num_frames % (cfg.alpha or 1) == 0 and cfg.sampling_rate > 0
    # Charades frames are stored at 24 fps (SF:slowfast/datasets/DATASET.md, Charades_v1_rgb.tar; §G.2), else 30
    assert cfg.target_fps == (24 if cfg.dataset == "charades" else 30)
    assert cfg.test_clips >= 1 and cfg.test_crops and cfg.ensemble in ("mean", "max")
    assert (cfg.dataset in ("charades", "ava")) == (cfg.activation == "sigmoid")
    assert (cfg.dataset == "charades") == (cfg.ensemble == "max")
    assert (cfg.dataset == "ava") == cfg.model.roi_head
    assert (cfg.dataset == "ssv2") == (cfg.frame_sampling == "segment")
    with pytest.raises(AttributeError):
        cfg.num_frames = 3  # immutable


@pytest.mark.self_consistency
def test_config_round_trips_through_json() -> None:
    import json

    for name in ("slowfast_r101_16x8", "i3d_nln_r50_8x8", "slow_r50_8x8.charades_ptv"):
        cfg = get_pretrained_cfg(name)
        assert slowfast_zoo.PretrainedCfg.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_created_model_carries_a_config_that_describes_it() -> None:
    model = slowfast_zoo.create("slowfast_r50_8x8.ssv2_ptv", device="meta")
    assert model.pretrained_cfg.arch == "slowfast_r50_8x8" and model.pretrained_cfg.dataset == "ssv2"
    assert model.num_classes == 174 and model.pretrained_cfg.tag is None  # random weights: not the published ones
    tiny = slowfast_zoo.create("slowfast_r50_8x8", width=8, device="meta")
    assert tiny.pretrained_cfg.tag is None and tiny.pretrained_cfg.params is None  # no longer the published network
    assert tiny.pretrained_cfg.model.width == 8


def test_ava_detectors_mark_the_60_evaluated_actions() -> None:
    import json
    from pathlib import Path

    official = json.loads((Path(slowfast_zoo.__file__).parent / "labels" / "ava_v2.1_eval60.json").read_text())
    for name in slowfast_zoo.list_pretrained("*_det.*"):
        cfg = get_pretrained_cfg(name)
        assert len(cfg.label_names) == 80 and len(cfg.evaluated_classes) == 60
        # model output i is AVA action id i + 1 (SF:slowfast/datasets/ava_dataset.py: label_arrs[i][label - 1] = 1)
        assert [cfg.label_names[i] for i in cfg.evaluated_classes] == [row["name"] for row in official]
        assert [i + 1 for i in cfg.evaluated_classes] == [row["id"] for row in official]
    assert get_pretrained_cfg("slowfast_r50_8x8").evaluated_classes is None

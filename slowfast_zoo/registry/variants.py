"""Every registered variant: the architectures the authors published (and configured) with their weight tags.

Architecture facts: PySlowFast ``SF:configs/`` and PyTorchVideo ``PTV:pytorchvideo/models/hub`` (docs/sources.md).
Names read ``<family>_r<depth>[_<res4 temporal blocks slow>_<fast>]_<T>x<tau>``, with T x tau the slow pathway's
frames x stride. Tags say dataset and origin: ``k400_pysf`` (PySlowFast model zoo), ``k400_ptv`` (PyTorchVideo
model zoo), ``*_multigrid`` / ``*_stepwise`` (PySlowFast multigrid zoo).
"""

from __future__ import annotations

from typing import Any

from ..models.resnet3d import DEPTHS, ResNet3dConfig, temporal_kernels
from .pretrained import evaluated_classes
from .registry import register_alias, register_arch

# temporal kernel bases of conv ``a`` per stage res2..res5 (a basis repeats over the stage's blocks)
SLOW_BASES = ((1,), (1,), (3,), (3,))
FAST_BASES = ((3,), (3,), (3,), (3,))
I3D_BASES = ((3,), (3, 1), (3, 1), (1, 3))
C2D_BASES = ((1,), (1,), (1,), (1,))

#: PySlowFast Kinetics test clips: uniform starts in frame indices, frames by timestamp
#: (SF:slowfast/datasets/decoder.py)
K400: dict[str, Any] = dict(dataset="kinetics400", labels="kinetics400", test_clip_sampler="pysf_uniform")
#: PyTorchVideo Kinetics tags were tested through pytorchvideo's own data path inside PySlowFast
#: (SF:configs/Kinetics/pytorchvideo/*.yaml TEST.DATASET ptvkinetics -> SF:slowfast/datasets/ptv_datasets.py
#: Ptvkinetics: EncodedVideo with the then-default DATA.DECODING_BACKEND "pyav", "constant_clips_per_video",
#: UniformTemporalSubsample, pytorchvideo 0.1.x clip placement)
K400_PTV: dict[str, Any] = dict(K400, test_clip_sampler="ptv_constant")
#: Kinetics-600: the same protocol, 600 classes (the AVA detectors' pre-training; no accuracy published)
K600: dict[str, Any] = dict(K400, dataset="kinetics600", labels="kinetics600", model=dict(num_classes=600))
#: PyTorchVideo's Something-Something v2 protocol: segment sampling over the whole video, 1 clip x 3 crops, no flip
SSV2_PTV: dict[str, Any] = dict(
    dataset="ssv2",
    labels="ssv2",
    frame_sampling="segment",
    test_clip_sampler="segments",
    test_clips=1,
    train_flip=False,
    model=dict(num_classes=174),
)
#: PySlowFast's SSv2 protocol: segment-sampled frames, one left/top 256 crop. SF:configs/SSv2/SLOWFAST_16x8_R50.yaml
#: has no MULTIGRID.SHORT_CYCLE, so its head is a fixed AvgPool3d of the training crop: softmax per head position at
#: the 256 test crop, then the mean (SF:slowfast/models/video_model_builder.py, the head construction)
SSV2_PYSF: dict[str, Any] = dict(SSV2_PTV, test_crops=("left",), test_head_pool="fixed", train_short_side=(256, 320))
#: Charades: frames stored at 24 fps (SF:slowfast/datasets/DATASET.md uses the provider's Charades_v1_rgb.tar;
#: SF:slowfast/datasets/charades.py strides over stored frames and never reads TARGET_FPS)
CHARADES: dict[str, Any] = dict(
    dataset="charades",
    labels="charades",
    activation="sigmoid",
    ensemble="max",
    target_fps=24.0,
    test_clip_sampler="pysf_charades",
    model=dict(num_classes=157),
)
#: PyTorchVideo Charades tags: SF:configs/Charades/pytorchvideo/*.yaml TEST.DATASET ptvcharades
#: (SF:slowfast/datasets/ptv_datasets.py Ptvcharades: pytorchvideo Charades + "constant_clips_per_video")
CHARADES_PTV: dict[str, Any] = dict(CHARADES, test_clip_sampler="ptv_charades")
#: multigrid training uses an adaptive head (short cycles change the input size); tested at 224 crops on K400
MULTIGRID: dict[str, Any] = dict(test_head_pool="adaptive")


def single_pathway(
    bases: tuple[tuple[int, ...], ...], stem_t: int, depth: int = 50, frames: int = 8, **kw: Any
) -> ResNet3dConfig:
    """Slow-only, I3D or C2D."""
    layers = DEPTHS[depth]
    return ResNet3dConfig(
        layers=layers,
        stem_kernel_t=(stem_t,),
        block_kernel_t=(temporal_kernels(bases, layers),),
        num_frames=frames,
        **kw,
    )


def slowfast(
    depth: int = 50,
    frames: int = 32,
    alpha: int = 4,
    fusion_kernel_t: int = 7,
    res4_temporal: tuple[int, int] | None = None,
    **kw: Any,
) -> ResNet3dConfig:
    """SlowFast; ``res4_temporal`` = how many res4 blocks keep temporal kernels (slow, fast), default all."""
    layers = DEPTHS[depth]
    keep = [list(layers), list(layers)]
    if res4_temporal:
        keep[0][2], keep[1][2] = res4_temporal
    return ResNet3dConfig(
        layers=layers,
        stem_kernel_t=(1, 5),
        block_kernel_t=(
            temporal_kernels(SLOW_BASES, layers, tuple(keep[0])),
            temporal_kernels(FAST_BASES, layers, tuple(keep[1])),
        ),
        alpha=alpha,
        fusion_kernel_t=fusion_kernel_t,
        num_frames=frames,
        **kw,
    )


#: non-local blocks after res3 blocks 1, 3 and res4 blocks 1, 3, 5 (the *_NLN_* Kinetics configs)
NL_R50 = ((), (1, 3), (1, 3, 5), ())
CONFIG_ONLY = "configured by the authors ({}) but never released with weights"


def _config_only(config: str, params: int, gflops: float) -> dict[str, Any]:
    """Data of an architecture without weights: its reference parameter count and GMACs at one 256x256 view."""
    return dict(notes=CONFIG_ONLY.format(config), params=params, gflops=gflops)


# --- Slow-only ---------------------------------------------------------------------------------------------
register_arch(
    "slow_r50_4x16",
    single_pathway(SLOW_BASES, 1, frames=4),
    {"k400_pysf": K400, "k400_ptv": K400_PTV},
    sampling_rate=16,
)
register_arch(
    "slow_r50_8x8",
    single_pathway(SLOW_BASES, 1, frames=8),
    {
        "k400_pysf": K400,
        "k400_ptv": K400_PTV,
        "ssv2_ptv": SSV2_PTV,
        "charades_ptv": dict(CHARADES_PTV, train_short_side=(256, 340)),
    },
    sampling_rate=8,
)
register_arch(
    "slow_nln_r50_4x16",
    single_pathway(SLOW_BASES, 1, frames=4, nonlocal_blocks=NL_R50, nonlocal_mode="dot_product"),
    sampling_rate=16,
    **_config_only("Kinetics/SLOW_NLN_4x16_R50", 39_812_560, 39.07),
)
register_arch(
    "slow_nln_r50_8x8",
    single_pathway(SLOW_BASES, 1, frames=8, nonlocal_blocks=NL_R50, nonlocal_mode="dot_product"),
    sampling_rate=8,
    **_config_only("Kinetics/SLOW_NLN_8x8_R50", 39_812_560, 88.34),
)

# --- I3D / C2D (temporal max pool after res2, except the released C2D "nopool" checkpoint) ----------------------
register_arch(
    "i3d_r50_8x8",
    single_pathway(I3D_BASES, 5, frames=8, temporal_pool=2),
    {"k400_pysf": K400, "k400_ptv": K400_PTV},
    sampling_rate=8,
)
register_arch(
    "i3d_nln_r50_8x8",
    single_pathway(I3D_BASES, 5, frames=8, temporal_pool=2, nonlocal_blocks=NL_R50, nonlocal_mode="softmax"),
    {"k400_pysf": K400},
    sampling_rate=8,
)
register_arch(
    "i3d_r101_8x8",
    single_pathway(I3D_BASES, 5, depth=101, frames=8, temporal_pool=2),
    sampling_rate=8,
    **_config_only("Kinetics/I3D_8x8_R101", 51_754_192, 61.33),
)
register_arch(
    "i3d_nln_r101_8x8",
    single_pathway(I3D_BASES, 5, depth=101, frames=8, temporal_pool=2, nonlocal_blocks=NL_R50, nonlocal_mode="softmax"),
    sampling_rate=8,
    **_config_only("Kinetics/I3D_NLN_8x8_R101", 59_112_656, 73.14),
)
register_arch(
    "c2d_r50_8x8",
    single_pathway(C2D_BASES, 1, frames=8, temporal_pool=2),
    # k400_pysf: ava/pretrain/C2D_8x8_R50.pkl, the AVA Slow detector's Kinetics pre-training (see its notes)
    {"k400_ptv": K400_PTV, "k400_pysf": K400},
    sampling_rate=8,
)
#: PySlowFast's released C2D was configured without the temporal pool (first commit: ARCH c2d_nopool)
register_arch(
    "c2d_nopool_r50_8x8",
    single_pathway(C2D_BASES, 1, frames=8),
    {"k400_pysf": K400},
    sampling_rate=8,
)
register_arch(
    "c2d_nln_r50_8x8",
    single_pathway(C2D_BASES, 1, frames=8, temporal_pool=2, nonlocal_blocks=NL_R50, nonlocal_mode="softmax"),
    sampling_rate=8,
    **_config_only("Kinetics/C2D_NLN_8x8_R50", 31_686_096, 37.27),
)

# --- SlowFast R50 ----------------------------------------------------------------------------------------------
register_arch(
    "slowfast_r50_4x16",
    slowfast(50, frames=32, alpha=8, fusion_kernel_t=5),
    {"k400_pysf": K400, "k400_ptv": K400_PTV},
    sampling_rate=2,
)
register_arch(
    "slowfast_r50_8x8",
    slowfast(50, frames=32, alpha=4, fusion_kernel_t=7),
    {
        "k400_pysf": K400,
        "k400_ptv": K400_PTV,
        "k400_stepwise": K400,
        "k400_multigrid": dict(K400, **MULTIGRID, test_crop_size=224),
        "ssv2_ptv": SSV2_PTV,
        "charades_ptv": CHARADES_PTV,
    },
    sampling_rate=2,
)
register_arch(
    "slowfast_r50_16x8",
    slowfast(50, frames=64, alpha=4, fusion_kernel_t=7),
    {
        "ssv2_pysf": SSV2_PYSF,
        "ssv2_multigrid": dict(SSV2_PYSF, **MULTIGRID, test_crop_size=224),
        "charades_pysf": dict(CHARADES, train_short_side=(256, 340)),
        "charades_multigrid": dict(CHARADES, **MULTIGRID, train_short_side=(256, 340)),
    },
    sampling_rate=2,
)
register_arch(
    "slowfast_nln_r50_4x16",
    slowfast(50, frames=32, alpha=8, fusion_kernel_t=5, nonlocal_blocks=NL_R50, nonlocal_mode="dot_product"),
    sampling_rate=2,
    **_config_only("Kinetics/SLOWFAST_NLN_4x16_R50", 41_838_680, 47.91),
)
register_arch(
    "slowfast_nln_r50_8x8",
    slowfast(50, frames=32, alpha=4, fusion_kernel_t=5, nonlocal_blocks=NL_R50, nonlocal_mode="dot_product"),
    sampling_rate=2,
    **_config_only("Kinetics/SLOWFAST_NLN_8x8_R50", 41_838_680, 99.12),
)

# --- SlowFast R101 ---------------------------------------------------------------------------------------------
register_arch(
    "slowfast_r101_8x8",
    slowfast(101, frames=32, alpha=4, fusion_kernel_t=5),
    {"k400_ptv": K400_PTV},
    sampling_rate=2,
)
register_arch(
    "slowfast_r101_50_50_16x8",
    slowfast(101, frames=64, alpha=4, fusion_kernel_t=5, res4_temporal=(6, 6)),
    {"k400_ptv": dict(K400_PTV, train_short_side=(256, 360))},
    sampling_rate=2,
)
register_arch(
    "slowfast_r101_50_50_8x8",
    slowfast(101, frames=32, alpha=4, fusion_kernel_t=5, res4_temporal=(6, 6)),
    sampling_rate=2,
    **_config_only("Kinetics/c2/SLOWFAST_8x8_R101_50_50", 53_774_808, 106.51),
)
register_arch(
    "slowfast_r101_50_101_8x8",
    slowfast(101, frames=32, alpha=4, fusion_kernel_t=5, res4_temporal=(6, 23)),
    sampling_rate=2,
    **_config_only("Kinetics/c2/SLOWFAST_8x8_R101_50_101", 53_914_072, 107.65),
)
#: the AVA detectors' Kinetics-600 pre-training (ava/pretrain/SLOWFAST_{32,64}x2_R101_50_50*.pkl, PySlowFast
#: MODEL_ZOO.md AVA table): the detectors' trunk with the non-local blocks of Kinetics/c2/SLOWFAST_NLN_16x8_R101_50_50
NL_R101 = dict(nonlocal_blocks=((), (), (6, 13, 20), ()), nonlocal_mode="dot_product")
register_arch(
    "slowfast_nln_r101_50_50_8x8",
    slowfast(101, frames=32, alpha=4, fusion_kernel_t=5, res4_temporal=(6, 6), **NL_R101),
    {"k600_pysf": K600, "k600_pysf_v21": K600},
    sampling_rate=2,
)
register_arch(
    "slowfast_nln_r101_50_50_16x8",
    slowfast(101, frames=64, alpha=4, fusion_kernel_t=5, res4_temporal=(6, 6), **NL_R101),
    {"k600_pysf": K600},
    sampling_rate=2,
)

# --- AVA detectors: res5 without stride (dilation 2), RoIAlign head on person boxes -------------------------------
#: keyframe-centred clip, full frame with short side 256, one view, sigmoid per box and action
AVA: dict[str, Any] = dict(
    dataset="ava",
    labels="ava80",
    # the 60 actions AVA's mAP scores: the official v2.1 list (that v2.2 scores the same 60 is not verified)
    evaluated_classes=evaluated_classes("ava_v2.1_eval60"),
    activation="sigmoid",
    test_clip_sampler="keyframe",
    test_clips=1,
    # full frame, short side 256, resized before normalizing (SF:slowfast/datasets/ava_dataset.py)
    normalize_before_resize=False,
    test_crops=("full",),
    test_crop_size=256,
    test_head_pool="adaptive",
)
DETECTOR: dict[str, Any] = dict(
    spatial_strides=(1, 2, 2, 1), spatial_dilations=(1, 1, 1, 2), roi_head=True, num_classes=80
)
#: the R101 detectors add dot-product non-local blocks after slow res4 blocks 6, 13, 20, pooled 2x2x2
NL_AVA_R101: dict[str, Any] = dict(
    nonlocal_blocks=((), (), (6, 13, 20), ()),
    nonlocal_pool=((1, 2, 2), (1, 2, 2), (2, 2, 2), (1, 2, 2)),
    nonlocal_mode="dot_product",
)
#: person-box score thresholds: SF:configs/AVA/c2/SLOW_8x8_R50.yaml and SLOWFAST_{32,64}x2_R101_50_50*.yaml
#: DETECTION_SCORE_THRESH 0.9 (Slow) and 0.8 (SlowFast); PyTorchVideo publishes no AVA test config: its two tags
#: take the PySlowFast value of the same pathway design (an assumption, said in their manifest notes)
AVA_SLOW: dict[str, Any] = dict(AVA, person_score_threshold=0.9)
AVA_SF: dict[str, Any] = dict(AVA, person_score_threshold=0.8)
register_arch(
    "slow_r50_4x16_det",
    single_pathway(SLOW_BASES, 1, frames=4, **DETECTOR),
    {"ava22_pysf": AVA_SLOW, "ava22_ptv": AVA_SLOW},
    sampling_rate=16,
)
register_arch(
    "slowfast_r50_8x8_det",
    slowfast(50, frames=32, alpha=4, fusion_kernel_t=7, **DETECTOR),
    {"ava22_ptv": AVA_SF},
    sampling_rate=2,
)
register_arch(
    "slowfast_nln_r101_50_50_8x8_det",
    slowfast(101, frames=32, alpha=4, fusion_kernel_t=5, res4_temporal=(6, 6), **DETECTOR, **NL_AVA_R101),
    {"ava22_pysf": AVA_SF, "ava21_pysf": AVA_SF},
    sampling_rate=2,
)
register_arch(
    "slowfast_nln_r101_50_50_16x8_det",
    slowfast(101, frames=64, alpha=4, fusion_kernel_t=5, res4_temporal=(6, 6), **DETECTOR, **NL_AVA_R101),
    {"ava22_pysf": AVA_SF},
    sampling_rate=2,
)

#: the name the SlowFast paper's R101 16x8 result goes by: the released r101_50_50 design
register_alias("slowfast_r101_16x8", "slowfast_r101_50_50_16x8.k400_ptv")

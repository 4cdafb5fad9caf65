"""The SlowFast paper's design space (ICCV 2019, Table 5 and Figure 2): every ablation as a config-only architecture.

Each row is data like any variant (:mod:`.variants`): fusion kind, channel ratio beta, Fast-pathway input and which
pathways are :class:`ResNet3dConfig` fields. Where the paper leaves a detail open, the row's notes say what was chosen.
"""

from __future__ import annotations

from typing import Any

from .registry import list_models, register_arch
from .variants import FAST_BASES, SLOW_BASES, single_pathway, slowfast

_PUBLISHED = frozenset(list_models())  # registered by .variants before this module runs

# --- The paper's design space (SlowFast, ICCV 2019, Table 5 and Figure 2): config-only, trained from scratch --------
# params / gflops: counted on PyTorchVideo 0.1.5 builds of the same design (create_slowfast / create_resnet with the
# lateral of each row as its fusion_builder; tests/models/test_design_space.py rebuilds and recounts them). The paper's
# own GFLOPs and top-1 of each row are in the notes and, as the tested facts, in that test.
TABLE5 = "SlowFast paper Table 5{} (Kinetics-400, from scratch): {} GFLOPs, {} top-1. {}"
SF_4X16: dict[str, Any] = dict(depth=50, frames=32, alpha=8, fusion_kernel_t=5)


def _design(table: str, paper: tuple[float, float], params: int, gflops: float, notes: str = "") -> dict[str, Any]:
    """Data of a design-space row: reference counts (PyTorchVideo build) and the paper's figures in the notes."""
    return dict(notes=TABLE5.format(table, *paper, notes).strip(), params=params, gflops=gflops, sampling_rate=2)


register_arch(
    "fast_r50_4x16",
    single_pathway(FAST_BASES, 5, frames=32, width=8),
    **_design(
        "a",
        (6.4, 51.7),
        616_952,
        6.90,
        "The Fast pathway of slowfast_r50_4x16 alone (32 frames, stride 2, width 8) with its own pooled head. "
        "Counted 6.90 GFLOPs, not the paper's 6.4: no reading found reaches it (the same pathway costs 6.9 inside "
        "the no-lateral SlowFast, whose 34.2 the paper's count matches).",
    ),
)
DESIGN_ROWS: dict[str, tuple[dict[str, Any], str, tuple[float, float], int, float, str]] = {
    "nolateral": (dict(fusion="none"), "a", (34.2, 73.5), 33_070_648, 34.16, "No lateral connection."),
    "ttoc_sum": (
        dict(fusion="ttoc_sum"),
        "a",
        (34.2, 74.5),
        33_070_648,
        34.16,
        "Time-to-channel: the alpha Fast frames of each Slow step become channels (frame-major), summed onto the Slow "
        "map (alpha * beta = 1, so channels match); no parameters.",
    ),
    "ttoc_concat": (
        dict(fusion="ttoc_concat"),
        "a",
        (39.8, 74.3),
        37_842_488,
        39.86,
        "Time-to-channel as ttoc_sum, concatenated (alpha * beta * C channels onto the Slow map).",
    ),
    "tsample": (
        dict(fusion="tsample"),
        "a",
        (34.9, 75.4),
        33_667_128,
        34.87,
        "Time-strided sampling: Fast frames 0, alpha, 2 alpha, ... (the frames a centred stride-alpha kernel sits on), "
        "concatenated; no parameters.",
    ),
    "beta4": (
        dict(beta_inv=4),
        "b",
        (54.5, 75.6),
        37_940_960,
        53.60,
        "Counted 53.60 GFLOPs, 1.7% under the paper's 54.5: the widths are whole (16) and no reading found reaches "
        "54.5 (the beta = 1/8, 1/16 and 1/32 rows of the same design match the paper within 0.06).",
    ),
    "beta6": (
        dict(beta_inv=6, beta_rounding="ceil"),
        "b",
        (41.8, 75.8),
        35_609_875,
        41.65,
        "64/6 is not a whole width; the paper does not say how it rounds. Rounded up (11, doubled per stage), "
        "which gives 41.65 GFLOPs; rounding down (10) gives 39.66, 5% under the paper's 41.8.",
    ),
    "beta12": (
        dict(beta_inv=12, beta_rounding="ceil"),
        "b",
        (32.8, 75.2),
        33_839_190,
        33.08,
        "64/12 is not a whole width; rounded up (6, doubled per stage) as beta6: 33.08 GFLOPs, 0.9% over the "
        "paper's 32.8; rounding down (5) gives 31.77, 3% under.",
    ),
    "beta16": (dict(beta_inv=16), "b", (30.6, 75.1), 33_287_828, 30.60, ""),
    "beta32": (dict(beta_inv=32), "b", (28.6, 74.2), 32_826_130, 28.66, ""),
    "fast_halfres": (
        dict(beta_inv=4, fast_downsample=2, fusion_channel_ratio=1),
        "c",
        (34.4, 74.7),
        36_315_712,
        34.30,
        "The Fast input is average-pooled 2x2 inside the model (112^2 for a 224^2 clip), beta = 1/4; each lateral is "
        "upsampled 2x (nearest) to meet the Slow map. The paper leaves both open. The laterals keep the default's "
        "width (2 * C/8 = C/4 channels, fusion_channel_ratio=1), so the Slow pathway is the one of every other row "
        "of Table 5c: 34.30 GFLOPs; with 2 beta C laterals the count is 35.98, 4.6% over the paper's 34.4.",
    ),
    "fast_gray": (
        dict(fast_input="gray"),
        "c",
        (34.1, 75.5),
        34_476_296,
        34.04,
        "Gray = ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B) of the normalized RGB clip, inside the model; the "
        "paper does not give its formula. One input channel in the Fast stem.",
    ),
    "fast_timediff": (
        dict(fast_input="timediff"),
        "c",
        (34.2, 74.5),
        34_476_296,
        34.04,
        "Differences of consecutive gray (BT.601) Fast frames, inside the model; the first frame is differenced with "
        "itself (0). On gray frames because the paper's cost (34.2, below RGB's 36.1) needs a one-channel stem: "
        "RGB differences would cost 36.10.",
    ),
    "fast_flow": (
        dict(fast_input="flow"),
        "c",
        (35.1, 73.8),
        34_478_256,
        35.07,
        "The Fast pathway takes 2-channel optical flow (N, 2, alpha*T, H, W) instead of RGB: call it as "
        "model([slow_rgb, flow]); slowfast_zoo.video.flow computes flow with torchvision's RAFT.",
    ),
}
for _suffix, (_changes, _table, _paper, _params, _gflops, _notes) in DESIGN_ROWS.items():
    register_arch(
        f"slowfast_r50_4x16_{_suffix}",
        slowfast(**SF_4X16).replace(**_changes),
        **_design(_table, _paper, _params, _gflops, _notes),
    )

# Figure 2's other T x tau points. Slow-only: T frames at stride tau. SlowFast: the Fast pathway samples at stride 2 as
# in every released SlowFast (alpha = tau / 2, 32 Fast frames); the paper does not list these configs.
FIG2 = "SlowFast paper Figure 2 point (accuracy only plotted; the paper gives no table of its configs). {}"
for _depth, _frames, _tau, _params, _gflops in (
    (50, 2, 32, 32_454_096, 13.63),
    (50, 16, 8, 32_454_096, 109.04),
    (101, 2, 32, 60_359_120, 27.89),
    (101, 4, 16, 60_359_120, 55.78),
    (101, 8, 8, 60_359_120, 111.56),
    (101, 16, 8, 60_359_120, 223.12),
):
    register_arch(
        f"slow_r{_depth}_{_frames}x{_tau}",
        single_pathway(SLOW_BASES, 1, depth=_depth, frames=_frames),
        sampling_rate=_tau,
        notes=FIG2.format("Slow-only, temporal kernels in res4 and res5 as slow_r50_8x8."),
        params=_params,
        gflops=_gflops,
    )
for _depth, _frames, _tau, _params, _gflops in (
    (50, 2, 32, 34_480_216, 21.50),
    (101, 2, 32, 62_826_968, 39.33),
    (101, 4, 16, 62_826_968, 68.19),
):
    register_arch(
        f"slowfast_r{_depth}_{_frames}x{_tau}",
        slowfast(_depth, frames=32, alpha=_tau // 2, fusion_kernel_t=5),
        sampling_rate=2,
        notes=FIG2.format(
            f"The Fast pathway is slowfast_r50_4x16's (32 frames at stride 2, alpha = {_tau // 2}), lateral kernel 5."
        ),
        params=_params,
        gflops=_gflops,
    )

#: every architecture this module registers (the ablations of Table 5 and the other points of Figure 2)
NAMES: tuple[str, ...] = tuple(n for n in list_models() if n not in _PUBLISHED)

"""Frame selection of the published test protocols, on real encoded files, against rules written out here.

Each synthetic frame shows its own index (``video_factory``), so a decoded frame says which one it is. The expected
frames come from plain PyAV (every frame's timestamp) and the authors' rules written independently below, or from
pytorchvideo 0.1.5's own decoder and sampler (its installed copy is the oracle).
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
import torchvision

av = pytest.importorskip("av")
sys.modules.setdefault("torchvision.transforms.functional_tensor", torchvision.transforms._functional_tensor)

from video_factory import read_index, write_video  # noqa: E402

from slowfast_zoo import get_pretrained_cfg  # noqa: E402
from slowfast_zoo.video.io import VideoReader  # noqa: E402
from slowfast_zoo.video.views import plan_views  # noqa: E402

# (codec, extension, fps, frames, B-frames): non-integer clip starts everywhere; 30000/1001 fps; B-frames reorder
FILES = [
    ("libx264", "mp4", 30000 / 1001, 300, 3),
    ("libx264", "mp4", 25, 250, 2),
    ("libx264", "mp4", 30, 137, 3),
    ("libx264", "mkv", 24, 200, 3),  # Matroska declares no stream duration: the decode-everything branch
]


@pytest.fixture(scope="module", params=FILES, ids=lambda f: f"{f[1]}-{f[2]:.2f}fps-{f[3]}f-bf{f[4]}")
def video(request, tmp_path_factory):
    codec, ext, fps, n, bf = request.param
    return write_video(tmp_path_factory.mktemp("views") / f"v.{ext}", num_frames=n, fps=fps, codec=codec, bframes=bf)


def stream_facts(path):
    """Plain PyAV: every frame's pts in presentation order, and what the stream header declares."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts = sorted(f.pts for f in c.decode(s))
        return pts, s.frames, s.duration, float(s.average_rate), s.time_base, s.start_time or 0


def pysf_reference(path, num_frames, tau, clip_idx, num_clips=10, target_fps=30):
    """PySlowFast's test clip (SF:slowfast/datasets/decoder.py @7ad8378 get_start_end_idx, pyav_decode,
    pyav_decode_stream, decode + temporal_sampling), as frame indices."""
    pts, frames_length, duration, fps, _, _ = stream_facts(path)
    clip_size = tau * num_frames / target_fps * fps
    if duration is None:  # decode-all: floor(linspace(start, start + clip_size - 1, T)) over all frames
        start = max(len(pts) - clip_size, 0) * clip_idx / num_clips
        idx = torch.linspace(start, start + clip_size - 1, num_frames).clamp(0, len(pts) - 1).long()
        return idx.tolist()
    start = max(frames_length - clip_size, 0) * clip_idx / num_clips
    end = start + clip_size - 1
    timebase = duration / frames_length
    start_pts, end_pts = int(start * timebase), int(end * timebase)
    kept = []
    for j, p in enumerate(pts):  # frames at or after start_pts, up to end_pts, plus the first one after it
        if p < start_pts:
            continue
        kept.append(j)
        if p > end_pts:
            break
    rel = torch.linspace(0, clip_size - 1, num_frames).clamp(0, len(kept) - 1).long()
    return [kept[r] for r in rel.tolist()]


def decoded_indices(frames: torch.Tensor) -> list[int]:
    return [read_index(f) for f in frames.numpy()]


def test_pysf_kinetics_views_follow_the_authors_decoder(video):
    cfg = get_pretrained_cfg("slowfast_r50_8x8.k400_pysf")
    with VideoReader(video) as reader:
        plan = plan_views(cfg, reader.info, "reference")
        assert len(plan) == 10 and all(v.crops == ("left", "center", "right") for v in plan)
        for i, view in enumerate(plan):
            expected = pysf_reference(video, cfg.num_frames, cfg.sampling_rate, i)
            assert view.frame_indices(reader) == expected, f"clip {i}"
            assert decoded_indices(view.read(reader)) == expected, f"clip {i}"


def ptv_reference(path, num_frames, tau, num_clips=10, target_fps=30):
    """pytorchvideo 0.1.5's own path: EncodedVideo (PyAV), ConstantClipsPerVideoSampler, UniformTemporalSubsample
    (as SF:slowfast/datasets/ptv_datasets.py Ptvkinetics builds it for the test split)."""
    from pytorchvideo.data.clip_sampling import ConstantClipsPerVideoSampler
    from pytorchvideo.data.encoded_video import EncodedVideo
    from pytorchvideo.transforms import UniformTemporalSubsample

    video = EncodedVideo.from_path(str(path), decode_audio=False, decoder="pyav")
    sampler = ConstantClipsPerVideoSampler(num_frames * tau / target_fps, num_clips)
    out, last_end = [], 0.0
    try:
        for _ in range(num_clips):
            start, end, _, _, _ = sampler(last_end, video.duration, {})
            clip = UniformTemporalSubsample(num_frames)(video.get_clip(start, end)["video"])  # (C, T, H, W)
            out.append([read_index(f) for f in clip.permute(1, 2, 3, 0).to(torch.uint8).numpy()])
            last_end = end
    finally:
        video.close()
    return out


@pytest.mark.parametrize("name", ["slowfast_r50_8x8.k400_ptv", "slow_r50_8x8.k400_ptv"])
def test_ptv_kinetics_views_are_pytorchvideos_own(video, name):
    cfg = get_pretrained_cfg(name)
    expected = ptv_reference(video, cfg.num_frames, cfg.sampling_rate)
    with VideoReader(video) as reader:
        plan = plan_views(cfg, reader.info, "reference")
        got = [decoded_indices(view.read(reader)) for view in plan]
    assert got == expected


def test_ptv_and_pysf_tags_read_their_rule_from_the_registry():
    # SF:configs/Kinetics/pytorchvideo/*.yaml TEST.DATASET ptvkinetics; SF:configs/Kinetics/c2/*.yaml kinetics
    for name in ("slow_r50_8x8.k400_ptv", "slowfast_r50_8x8.k400_ptv", "slowfast_r101_50_50_16x8.k400_ptv"):
        assert get_pretrained_cfg(name).test_clip_sampler == "ptv_constant"
    for name in ("slow_r50_8x8.k400_pysf", "slowfast_r50_8x8.k400_pysf", "slowfast_r50_8x8.k400_multigrid"):
        assert get_pretrained_cfg(name).test_clip_sampler == "pysf_uniform"


# ---- Charades: frames stored at 24 fps ------------------------------------------------------------------------
CHARADES_TAGS = [
    "slow_r50_8x8.charades_ptv",
    "slowfast_r50_8x8.charades_ptv",
    "slowfast_r50_16x8.charades_pysf",
    "slowfast_r50_16x8.charades_multigrid",
]
#: 10 s at 30 fps: 240 frames at 24 fps
THIRTY_FPS_10S = type("Info", (), {"fps": 30.0, "num_frames": 300})()


def as_30fps_frames(stored):
    """Stored frame j (24 fps) is on screen at j / 24 s: frame floor(j * 30 / 24) of a 30 fps video."""
    return [math.floor(j * 30 / 24) for j in stored]


@pytest.mark.parametrize("name", CHARADES_TAGS)
def test_charades_frames_are_24fps(name):
    # SF:slowfast/datasets/DATASET.md: Charades_v1_rgb.tar, frames stored at 24 fps
    cfg = get_pretrained_cfg(name)
    assert cfg.target_fps == 24
    first = plan_views(cfg, THIRTY_FPS_10S, "reference")[0].positions
    t, rate = cfg.num_frames, cfg.sampling_rate
    assert float(first[-1] - first[0]) == pytest.approx((t - 1) * rate * 30 / 24)  # (T-1)*s+1 frames at 24 fps


@pytest.mark.parametrize("name", CHARADES_TAGS[2:])
def test_pysf_charades_clips(name):
    # SF:slowfast/datasets/charades.py get_seq_frames: clip_length = (T - 1) * rate + 1 stored frames,
    # start = round(i * max(len - clip_length, 0) / (views - 1)), frames start + k * rate
    cfg = get_pretrained_cfg(name)
    assert cfg.test_clip_sampler == "pysf_charades"
    t, rate = cfg.num_frames, cfg.sampling_rate
    length = (t - 1) * rate + 1
    for i, view in enumerate(plan_views(cfg, THIRTY_FPS_10S, "reference")):
        start = round(i * max(240 - length, 0) / 9)
        stored = [min(start + k * rate, 239) for k in range(t)]
        assert torch.floor(view.positions).long().tolist() == as_30fps_frames(stored)


@pytest.mark.parametrize("name", CHARADES_TAGS[:2])
def test_ptv_charades_clips_follow_pytorchvideo(name):
    # SF:slowfast/datasets/ptv_datasets.py Ptvcharades (test): pytorchvideo Charades, i.e. a FrameVideo of 30 "fps"
    # over the stored frames (duration len / 30), ConstantClipsPerVideoSampler(((T - 1) * rate + 1) / TARGET_FPS 30,
    # 10) and Charades._sample_clip_frames. pytorchvideo 0.1.5's sampler, frame-index rule and subsampling run here;
    # FrameVideo itself needs OpenCV to load images, so its get_clip index lines (frame_video.py 0.1.5, L194-200:
    # end clamped to the duration, range(ceil(30 * start), min(ceil(30 * end), len))) are written out
    from pytorchvideo.data.charades import Charades
    from pytorchvideo.data.clip_sampling import ConstantClipsPerVideoSampler
    from pytorchvideo.data.frame_video import FrameVideo

    cfg = get_pretrained_cfg(name)
    assert cfg.test_clip_sampler == "ptv_charades"
    t, rate, stored = cfg.num_frames, cfg.sampling_rate, 240
    frame_video = object.__new__(FrameVideo)  # only for its _get_frame_index_for_time (no images are read)
    frame_video._fps = 30.0
    duration = stored / 30.0
    sampler = ConstantClipsPerVideoSampler(((t - 1) * rate + 1) / 30, 10)
    last_end = 0.0
    for view in plan_views(cfg, THIRTY_FPS_10S, "reference"):
        start, end, _, _, _ = sampler(last_end, duration, {})
        first = frame_video._get_frame_index_for_time(start)
        stop = min(frame_video._get_frame_index_for_time(min(end, duration)), stored)
        picked = Charades._sample_clip_frames(list(range(first, stop)), t)
        assert torch.floor(view.positions).long().tolist() == as_30fps_frames(picked)
        last_end = end


# ---- SSv2 ---------------------------------------------------------------------------------------------------------
def test_ssv2_pysf_uses_the_fixed_head_pool_and_multigrid_does_not():
    # SF:configs/SSv2/SLOWFAST_16x8_R50.yaml has no MULTIGRID.SHORT_CYCLE: AvgPool3d head of the 224 training crop,
    # tested at TEST_CROP_SIZE 256 (SF:slowfast/models/video_model_builder.py, the head construction)
    cfg = get_pretrained_cfg("slowfast_r50_16x8.ssv2_pysf")
    assert (cfg.test_head_pool, cfg.test_crop_size, cfg.train_crop_size) == ("fixed", 256, 224)
    # SF:configs/SSv2/SLOWFAST_16x8_R50_multigrid.yaml: SHORT_CYCLE (adaptive pool), TEST_CROP_SIZE 224
    mg = get_pretrained_cfg("slowfast_r50_16x8.ssv2_multigrid")
    assert (mg.test_head_pool, mg.test_crop_size) == ("adaptive", 224)


def test_segments_rule():
    cfg = get_pretrained_cfg("slow_r50_8x8.ssv2_ptv")
    info = type("Info", (), {"fps": 12.0, "num_frames": 49})()
    (view,) = plan_views(cfg, info, "reference")
    seg = 48 / 8  # PTV:pytorchvideo/data/ssv2.py: middle frame of each of T segments of (len - 1) / T
    assert view.positions.long().tolist() == [(round(seg * i) + round(seg * (i + 1))) // 2 for i in range(8)]
    assert np.array_equal(view.positions.numpy(), np.array([3, 9, 15, 21, 27, 33, 39, 45], np.float32))


@pytest.mark.parametrize(
    "name", ["slowfast_r50_8x8.k400_pysf", "slow_r50_8x8.k400_ptv", "slowfast_r50_16x8.charades_pysf"]
)
def test_one_pass_gives_every_view_the_frames_its_own_read_gives(video, name):
    """read_views decodes the frames of all views in one ordered pass: each view's frames equal what reading that
    view alone gives, frame for frame, with no more frames decoded nor seeks made than reading them one by one."""
    from slowfast_zoo.video.views import read_views

    cfg = get_pretrained_cfg(name)
    with VideoReader(video) as reader:
        plan = plan_views(cfg, reader.info, "reference")
        alone = [decoded_indices(view.read(reader)) for view in plan]
        per_view = (reader.frames_decoded, reader.seeks)
    with VideoReader(video) as reader:
        together = [decoded_indices(frames) for frames in read_views(reader, plan)]
        one_pass = (reader.frames_decoded, reader.seeks)
    assert together == alone
    assert one_pass[0] <= per_view[0] and one_pass[1] <= per_view[1]
    with VideoReader(video) as reader:  # a frame function sees every frame once, as the decoder gives it
        seen = []
        shrunk = list(read_views(reader, plan, lambda f: seen.append(f.shape) or f[:16, :64].clone()))
    assert [decoded_indices(frames) for frames in shrunk] == alone
    assert len(seen) == len({i for view in alone for i in view})

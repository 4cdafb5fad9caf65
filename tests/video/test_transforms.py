"""Transforms against the reference formulas (PySlowFast) and pytorchvideo's own transforms, on the same frames."""

from __future__ import annotations

import math
import random
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision

sys.modules.setdefault("torchvision.transforms.functional_tensor", torchvision.transforms._functional_tensor)

import slowfast_zoo  # noqa: E402
from slowfast_zoo import create, get_pretrained_cfg  # noqa: E402
from slowfast_zoo.video import transforms as T  # noqa: E402

MEAN, STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
_TORCH = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])


def ref_resize(x, size):  # PySlowFast transform.py random_short_side_scale_jitter, x (T, C, H, W)
    h, w = x.shape[-2:]
    if w < h:
        nh, nw = math.floor(float(h) / w * size), size
    else:
        nh, nw = size, math.floor(float(w) / h * size)
    return F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)


def ref_crop(x, size, idx):  # PySlowFast transform.py uniform_crop
    h, w = x.shape[-2:]
    y = math.ceil((h - size) / 2)
    xo = math.ceil((w - size) / 2)
    if h > w:
        y = 0 if idx == 0 else (h - size if idx == 2 else y)
    else:
        xo = 0 if idx == 0 else (w - size if idx == 2 else xo)
    return x[..., y : y + size, xo : xo + size]


@pytest.fixture
def frames():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (8, 3, 75, 101), dtype=torch.uint8, generator=g)  # odd sizes on purpose


@pytest.mark.parametrize("size", [64, 80, 33])
@pytest.mark.parametrize("portrait", [False, True])
def test_short_side_resize_is_reference_interpolate(frames, size, portrait):
    x = T.to_float(frames)
    if portrait:
        x = x.transpose(-1, -2)
    assert torch.equal(T.short_side_resize(x, size), ref_resize(x, size))
    # a batch (N, T, C, H, W) gives the same as each clip
    batch = torch.stack([x, x.flip(0)])
    out = T.short_side_resize(batch, size)
    assert torch.equal(out[1], ref_resize(x.flip(0), size))


def test_normalize_matches_reference(frames):
    x = frames.permute(0, 2, 3, 1)  # reference normalizes (T, H, W, C) uint8
    ref = (x.float() / 255.0 - torch.tensor(MEAN)) / torch.tensor(STD)
    ours = T.normalize(T.to_float(frames), MEAN, STD)
    assert torch.equal(ours, ref.permute(0, 3, 1, 2))


@pytest.mark.parametrize("idx", [0, 1, 2])
@pytest.mark.parametrize("shape", [(75, 101), (101, 75), (64, 64), (70, 457)])
def test_crop_positions_match_reference(idx, shape):
    x = torch.arange(shape[0] * shape[1], dtype=torch.float32).reshape(1, 1, *shape)
    size = min(shape) - 7 if min(shape) > 64 else 64
    assert torch.equal(T.crop(x, size, ["left", "center", "right"][idx]), ref_crop(x, size, idx))


def test_crop_centre_rounds_up_like_reference_not_torchvision():
    assert T.crop_offsets(64, 457, 256 - 200 + 8, "center") == (0, math.ceil((457 - 64) / 2))


def test_pack_pathways_linspace():
    clip = torch.arange(32).float().reshape(1, 1, 32, 1, 1).expand(2, 3, 32, 4, 4)
    slow, fast = T.pack_pathways(clip, 4)
    assert fast is clip
    assert slow[0, 0, :, 0, 0].long().tolist() == [0, 4, 8, 13, 17, 22, 26, 31]  # SF:slowfast/datasets/utils.py
    slow8, _ = T.PackPathway(8)(clip[0])  # (C, T, H, W) works too
    assert slow8[0, :, 0, 0].long().tolist() == [0, 10, 20, 31]
    assert T.pack_pathways(clip, None) == [clip]


def test_segment_indices_match_pytorchvideo_ssv2():
    from pytorchvideo.data.ssv2 import SSv2

    for n in (1, 7, 33, 64, 100, 251):
        for t in (8, 32, 64):
            ref = SSv2._sample_clip_frames(list(range(n)), t, rand_sample=False)
            assert T.segment_indices(n, t).tolist() == ref


def test_uniform_clip_starts_and_positions():
    # SF:slowfast/datasets/decoder.py get_start_end_idx: start = delta * i / 10, delta = max(len - clip, 0). Frames
    # by position linspace(start, start + clip - 1, T) is the decode-everything branch only (tests/video/test_views.py
    # has the protocol's timestamp rule)
    assert [T.uniform_clip_start(300, 64, i, 10) for i in (0, 5, 9)] == [0.0, 118.0, 212.4]
    assert T.uniform_clip_start(20, 64, 3, 10) == 0.0
    assert torch.equal(T.clip_positions(10.0, 8, 8, 30, 30), torch.linspace(10, 73, 8))


def test_eval_pipeline_matches_pytorchvideo(frames):
    from pytorchvideo.transforms import Normalize, ShortSideScale, UniformTemporalSubsample
    from pytorchvideo.transforms.functional import uniform_crop

    cfg = get_pretrained_cfg("slowfast_r50_8x8").replace(test_short_side=64, test_crop_size=48)
    video = torch.randint(0, 256, (40, 75, 101, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for position, idx in (("left", 0), ("center", 1), ("right", 2)):
        slow, fast = T.create_transforms(cfg, crop_position=position)(video)
        # pytorchvideo's hub tutorial pipeline on (C, T, H, W), then the tutorial's PackPathway
        x = video.permute(3, 0, 1, 2).float()
        x = UniformTemporalSubsample(32)(x)
        x = Normalize(MEAN, STD)(x / 255.0)
        x = ShortSideScale(64)(x)
        x = uniform_crop(x, 48, idx)
        ref_slow = torch.index_select(x, 1, torch.linspace(0, x.shape[1] - 1, x.shape[1] // 4).long())
        assert fast.shape == (3, 32, 48, 48)
        # bit-identical with 2 intra-op threads; with 1 thread the two resize calls (other layouts) round one value
        # differently by one float32 step (4.8e-7 measured on torch 2.14), so the tolerance is one step at this scale;
        # torch 2.4's float32 bilinear kernels differ by more between the two layouts (8.1e-6 measured, 1 thread)
        atol = 1e-6 if _TORCH >= (2, 14) else 1e-5
        torch.testing.assert_close(fast, x, rtol=0, atol=atol)
        torch.testing.assert_close(slow, ref_slow, rtol=0, atol=atol)


def test_eval_pipeline_on_a_batch_and_layouts(frames):
    tf = T.create_transforms(create("slow_r50_8x8", width=8, num_classes=10))
    video = torch.randint(0, 256, (2, 8, 60, 80, 3), dtype=torch.uint8)
    out = tf(video)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 8, 256, 256)
    cthw = slowfast_zoo.create_transforms("slow_r50_8x8", input_layout="CTHW")(video[0].permute(3, 0, 1, 2))
    assert torch.equal(cthw, out[0])


def test_video_transforms_take_a_config_not_a_name():
    with pytest.raises(TypeError, match=r"slowfast_zoo\.create_transforms"):
        T.create_transforms("slow_r50_8x8")
    cfg = get_pretrained_cfg("slow_r50_8x8")
    assert T.create_transforms(cfg) == slowfast_zoo.create_transforms("slow_r50_8x8")


def test_ava_eval_is_the_full_frame_resized_then_normalized():
    # SF:slowfast/datasets/ava_dataset.py test split: short side scaled to 256, no crop,
    # colour normalization after the resize
    video = torch.randint(0, 256, (4, 60, 80, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    x = slowfast_zoo.create_transforms("slow_r50_4x16_det.ava22_pysf")(video)
    assert x.shape == (3, 4, 256, 341)
    ref = ref_resize(video.permute(0, 3, 1, 2).float() / 255.0, 256)
    ref = (ref - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    torch.testing.assert_close(x, ref.permute(1, 0, 2, 3), rtol=0, atol=1e-6)


def replay_train_view(clip, rng, size, flip, seen):
    """The training view written out (PySlowFast transform.py: random_short_side_scale_jitter, random_crop,
    horizontal_flip), drawing from ``rng`` in the order short side, top, left, flip; ``seen`` collects the draws."""
    x = clip[torch.linspace(0, clip.shape[0] - 1, 8).long()].permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    short = round(rng.uniform(256, 320))
    x = ref_resize(x, short)
    top, left = rng.randint(0, x.shape[-2] - size), rng.randint(0, x.shape[-1] - size)
    x = x[..., top : top + size, left : left + size]
    flipped = flip and rng.random() < 0.5
    if flipped:
        x = x.flip(-1)
    seen.add((short, left, flipped))
    return x.permute(1, 0, 2, 3)


def test_train_pipeline_jitters_and_skips_flip_for_ssv2():
    video = torch.randint(0, 256, (2, 16, 60, 80, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    seen: set = set()
    outs = []
    for seed in range(6):
        out = slowfast_zoo.create_transforms("slow_r50_8x8", mode="train", generator=random.Random(seed))(video)
        assert out.shape == (2, 3, 8, 224, 224)
        rng = random.Random(seed)
        for c in range(2):  # every clip of the batch gets its own draw: scale, crop offset and flip
            torch.testing.assert_close(out[c], replay_train_view(video[c], rng, 224, True, seen), rtol=0, atol=1e-5)
        outs.append(out)
    # the seeds above do exercise several scales, offsets and both flips
    assert len({s for s, _, _ in seen}) > 3 and len({x for _, x, _ in seen}) > 3
    assert {f for _, _, f in seen} == {True, False}
    assert not torch.equal(outs[0], outs[1])
    # SSv2 labels depend on direction: no flip (SF:configs/SSv2/SLOWFAST_16x8_R50.yaml, pytorchvideo/*.yaml
    # RANDOM_FLIP: False)
    assert get_pretrained_cfg("slow_r50_8x8.ssv2_ptv").train_flip is False
    assert slowfast_zoo.create_transforms("slow_r50_8x8.k400_ptv", mode="train").flip
    ssv2 = slowfast_zoo.create_transforms("slow_r50_8x8.ssv2_ptv", mode="train", generator=random.Random(0))(video)
    rng = random.Random(0)
    torch.testing.assert_close(ssv2[0], replay_train_view(video[0], rng, 224, False, set()), rtol=0, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    video = torch.randint(0, 256, (32, 75, 101, 3), dtype=torch.uint8)
    tf = slowfast_zoo.create_transforms("slowfast_r50_8x8")
    cpu = tf(video)
    gpu = tf(video.cuda())
    assert all(g.is_cuda for g in gpu)
    torch.testing.assert_close([g.cpu() for g in gpu], cpu, atol=1e-5, rtol=0)


@pytest.mark.parametrize("normalize_first", [True, False], ids=["normalize-then-resize", "resize-then-normalize"])
@pytest.mark.parametrize(("height", "width", "short"), [(61, 83, 48), (90, 60, 48), (48, 64, 48)])
def test_frames_prepared_one_at_a_time_equal_the_clip_pipeline_bit_for_bit(normalize_first, height, width, short):
    """The decoder's per-frame path (a 256-entry table per channel, then the resize) gives exactly the tensors the
    whole-clip pipeline gives: the table holds the reference's own float32 results for each byte value."""
    g = torch.Generator().manual_seed(0)
    clip = torch.randint(0, 256, (8, height, width, 3), dtype=torch.uint8, generator=g)
    t = T.VideoTransform("eval", 8, 4, (0.43, 0.45, 0.40), (0.23, 0.22, 0.226), (short, short), 40,
                         normalize_before_resize=normalize_first)  # fmt: skip
    positions = ["left", "center", "right"]
    whole = t.crops(clip, positions)
    frames = torch.stack([t.prepare_frame(f) for f in clip])
    for a, b in zip(whole, t.crops_of_frames(frames, positions)):
        assert torch.equal(a, b)

"""The PyAV reader skips the non-reference frames no request needs, and every frame it gives is still the one a plain
decode of the whole stream gives, bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from video_factory import PROTOCOL_CONFIGS, write_video  # noqa: E402

import slowfast_zoo  # noqa: E402
from slowfast_zoo.video.io import VideoReader  # noqa: E402
from slowfast_zoo.video.views import plan_views  # noqa: E402

# (codec, x264's B-frames, its b-pyramid): without a pyramid every B-frame is a non-reference frame; with one, some
# are references; strict with 8 B-frames gives long chains of them. x265 keeps its preset's frame types.
STREAMS = [("libx264", 3, "none"), ("libx264", 3, "normal"), ("libx264", 8, "strict"), ("libx265", 0, None)]


def plain_decode(path) -> list[np.ndarray]:
    """Every frame of the stream in presentation order, decoded by PyAV alone (no skipping)."""
    with av.open(str(path)) as c:
        frames = {f.pts: f.to_ndarray(format="rgb24") for f in c.decode(video=0)}
    return [frames[p] for p in sorted(frames)]


@pytest.fixture(scope="module", params=STREAMS, ids=lambda s: f"{s[0]}-b{s[1]}-{s[2]}")
def video(request, tmp_path_factory):
    """(path, its plain decode, whether x264 made non-reference B-frames)"""
    codec, bframes, pyramid = request.param
    path = tmp_path_factory.mktemp("skip") / "v.mp4"
    write_video(path, num_frames=150, fps=30, codec=codec, gop=250, bframes=bframes, pyramid=pyramid)
    return path, plain_decode(path), codec == "libx264"


def test_sparse_frames_are_exact_and_unwanted_ones_are_skipped(video):
    path, plain, has_nonref = video
    wanted = list(range(0, 150, 7))
    with VideoReader(path) as r:
        got = r.frames_at_indices(wanted)
        decoded = r.frames_decoded
    assert torch.equal(got, torch.from_numpy(np.stack([plain[i] for i in wanted])))
    if has_nonref:
        assert decoded < 150 - 20, f"{decoded} of 150 frames decoded for {len(wanted)} wanted"


@pytest.mark.parametrize("protocol", list(PROTOCOL_CONFIGS))
def test_every_protocols_views_are_exact(video, protocol):
    path, plain, _ = video
    cfg = slowfast_zoo.get_pretrained_cfg(PROTOCOL_CONFIGS[protocol])
    with VideoReader(path) as r:
        plan = plan_views(cfg, r.info, "reference")
        got = list(r.read_views(plan))
        # constant 30 fps from frame 0: position p shows frame floor(p) (within the time base's half tick)
        index = [
            v.frame_indices(r) if v.select is not None else np.clip(np.floor(np.asarray(v.positions) + 1e-3), 0, 149)
            for v in plan
        ]
    assert len(got) == len(plan)
    for clip, idx in zip(got, index):
        assert torch.equal(clip, torch.from_numpy(np.stack([plain[int(i)] for i in idx])))


def test_a_frame_skipped_for_one_request_is_decoded_for_a_later_one(video):
    path, plain, _ = video
    with VideoReader(path) as r:
        first = r.frames_at_indices([0, 40])  # frames 1..39 (and some past 40, already handed to FFmpeg) skippable
        by_position = r.frames_at_positions([41.0, 42.0])
        later = r.frames_at_indices([43, 44, 45])
        earlier = r.frames_at_indices([20, 21, 22])
    for got, idx in [(first, [0, 40]), (by_position, [41, 42]), (later, [43, 44, 45]), (earlier, [20, 21, 22])]:
        assert torch.equal(got, torch.from_numpy(np.stack([plain[i] for i in idx])))


def test_a_decoder_whose_timestamps_differ_from_the_table_decodes_without_skipping(video):
    path, plain, _ = video
    with VideoReader(path) as r:
        table = r.frame_table()
        # a table one tick off every frame: the packets' timestamps then match no wanted frame, so every
        # non-reference frame would be skipped; the frames decoded show it and the reader decodes again, skipping none
        r._table = dataclasses.replace(table, pts=tuple(p + 1 for p in table.pts))
        got = r.frames_at_indices(list(range(150)))
        assert r.seeks == 1  # the first frame disagreed: decoded again from the start
        again = r.frames_at_indices(list(range(150)))
        assert r.seeks == 2  # back to the start once; the reader no longer skips, so nothing disagrees
    assert torch.equal(got, torch.from_numpy(np.stack(plain)))
    assert torch.equal(again, got)

"""Rendered videos: the input's frames, size and timestamps, with the predicted labels (compared pixel for pixel)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from video_factory import write_video

from slowfast_zoo import create
from slowfast_zoo.tasks.detect import BoxPrediction
from slowfast_zoo.tasks.predict import predict_windows
from slowfast_zoo.tasks.render import draw_boxes, draw_labels, render_detections, render_predictions
from slowfast_zoo.video.io import VideoReader

av = pytest.importorskip("av")


def tiny():
    m = create("slow_r50_8x8", width=8, num_classes=10, num_frames=4, crop_size=64).eval()
    m.pretrained_cfg = m.pretrained_cfg.replace(test_short_side=64, test_crop_size=64)
    return m


def decoded(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = list(c.decode(s))
        return [float(f.time) for f in frames], [f.to_ndarray(format="rgb24") for f in frames], (s.width, s.height)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    # variable frame rate: the render must keep each frame's own time, not a constant rate
    times = [i / 25 for i in range(40)] + [1.6 + i / 10 for i in range(1, 15)]
    return write_video(tmp_path_factory.mktemp("v") / "in.mp4", len(times), 25, width=96, height=64, times=times)


@pytest.fixture(scope="module")
def windows(clip):
    torch.manual_seed(0)
    return list(predict_windows(clip, tiny(), 1.0, 0.5, top_k=3))


def test_mp4_has_the_inputs_frames_size_and_timing(clip, windows, tmp_path):
    out = render_predictions(clip, windows, tmp_path / "out.mp4")
    times_in, _, size_in = decoded(clip)
    times_out, _, size_out = decoded(out)
    assert size_out == size_in == (96, 64)
    assert len(times_out) == len(times_in) == 54
    assert times_out == pytest.approx([t - times_in[0] for t in times_in], abs=1e-3)


def test_frames_carry_the_labels_of_their_window(clip, windows, tmp_path):
    """Lossless output: each rendered frame equals the input frame drawn with the window that covers its time."""
    out = render_predictions(clip, windows, tmp_path / "out.mkv")
    times, frames, _ = decoded(out)
    starts = [w.start for w in windows]
    assert starts[:3] == [0.0, 0.5, 1.0]
    with VideoReader(clip) as reader:
        inputs = reader.frames_at_indices(range(len(times)))
    duration = times[-1] + 1 / reader.info.fps  # the timeline spans the last frame plus one of the average rate
    for i in [0, 12, 13, 30, 45, len(times) - 1]:
        want = max(j for j, s in enumerate(starts) if s <= times[i] + 1e-9)  # the newest window started by then
        expected = draw_labels(inputs[i], windows[want], windows, times[i], duration)
        assert (torch.from_numpy(frames[i]) == expected).all(), f"frame {i} at {times[i]} s"
        other = dataclasses.replace(windows[want], top=[dataclasses.replace(windows[want].top[0], label="zzz")])
        wrong = draw_labels(inputs[i], other, windows, times[i], duration)
        assert not (torch.from_numpy(frames[i]) == wrong).all()  # the label drawn is the predicted one
    assert not (torch.from_numpy(frames[13]) == inputs[13]).all()


def test_detections_are_drawn_at_keyframes_and_held(clip, tmp_path):
    boxes = [
        BoxPrediction(1.0, [10.0, 8.0, 50.0, 60.0], [("stand", 0.9), ("talk", 0.4)], torch.zeros(2)),
        BoxPrediction(2.0, [40.0, 4.0, 90.0, 40.0], [("sit", 0.7)], torch.zeros(2)),
    ]
    out = render_detections(clip, boxes, tmp_path / "boxes.mkv")
    times, frames, _ = decoded(out)
    with VideoReader(clip) as reader:
        inputs = reader.frames_at_indices(range(len(times)))
    for i, t in enumerate(times):
        shown = [
            b for b in boxes if b.keyframe == max((k.keyframe for k in boxes if k.keyframe <= t + 1e-9), default=None)
        ]
        expected = draw_boxes(inputs[i], shown) if shown else inputs[i]
        assert (torch.from_numpy(frames[i]) == expected).all(), f"frame {i} at {t} s"
    assert not (torch.from_numpy(frames[-1]) == inputs[-1]).all()


def test_a_planted_symlink_is_replaced_not_followed(clip, windows, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out.mp4"
    out.symlink_to(victim)
    render_predictions(clip, windows, out)
    assert victim.read_text() == "keep me"
    assert not out.is_symlink() and out.stat().st_size > 0
    assert not list(tmp_path.glob("*.incomplete"))


def test_unknown_container_is_refused_before_writing(clip, windows, tmp_path):
    with pytest.raises(ValueError, match=r"\.mp4 \(H\.264\) or \.mkv"):
        render_predictions(clip, windows, tmp_path / "out.gif")
    assert not list(tmp_path.iterdir())

"""AVA detection on a video file: keyframe-centred clips, box scaling, per-box actions, CLI."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
from video_factory import read_index, write_video

import slowfast_zoo
from slowfast_zoo.cli import main
from slowfast_zoo.tasks.detect import detect, keyframe_times, parse_boxes


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """4 s at 30 fps, 96x64 px."""
    return write_video(tmp_path_factory.mktemp("ava") / "clip.mp4", num_frames=120, fps=30, width=96, height=64)


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    model = slowfast_zoo.create("slowfast_r50_8x8_det", width=8, num_frames=8).eval()
    with torch.no_grad():
        model.head.proj.weight.normal_(0, 1.0)
    return model


def test_keyframe_clip_follows_the_reference_sequence() -> None:
    # PySlowFast AVA: range(center - T*rate//2, center + T*rate//2, rate), clamped at 0; 30 fps frames
    times = keyframe_times(2.0, num_frames=8, sampling_rate=4, target_fps=30.0)
    expected = [(60 + i) / 30 for i in range(-16, 16, 4)]
    torch.testing.assert_close(times, torch.tensor(expected), rtol=0, atol=1e-6)
    assert keyframe_times(0.1, 4, 16, 30.0)[0] == 0.0


def test_detect_equals_the_model_on_the_same_clip(video, detector) -> None:
    boxes = [[10.0, 5.0, 60.0, 60.0], [0.0, 0.0, 95.0, 63.0]]
    results = detect(video, detector, {2.0: boxes}, top_k=3)
    assert [r.box for r in results] == boxes and all(r.keyframe == 2.0 for r in results)
    assert all(len(r.actions) == 3 and r.actions[0][1] >= r.actions[1][1] for r in results)
    # the same computation written out, on frames decoded here with plain PyAV (not the reader under test):
    # PySlowFast AVA clip: frames center - T*rate//2 + k*rate of the 30 fps video (8 frames, rate 2 at 2.0 s),
    # short side 256 (x4 here), normalized after the resize, boxes x4
    cfg = detector.pretrained_cfg
    assert (cfg.num_frames, cfg.sampling_rate, cfg.target_fps) == (8, 2, 30)  # SF:configs/AVA/SLOWFAST_32x2_R50*
    wanted = [60 - 8 + 2 * k for k in range(8)]
    with av.open(str(video)) as container:
        every = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    frames = torch.from_numpy(np.stack([every[i] for i in wanted]))
    assert [read_index(f) for f in frames.numpy()] == wanted  # the synthetic frames show their own index
    x = frames.permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(256, 384), mode="bilinear", align_corners=False)
    x = ((x - 0.45) / 0.225).permute(1, 0, 2, 3).unsqueeze(0)
    slow = x[:, :, torch.linspace(0, 7, 2).long()]
    with torch.no_grad():
        expected = detector([slow, x], [torch.tensor(boxes) * 4]).sigmoid()
    torch.testing.assert_close(torch.stack([r.scores for r in results]), expected, rtol=1e-5, atol=1e-6)
    assert results[0].actions[0][0] in cfg.label_names


def test_normalized_boxes_are_scaled_to_pixels(video, detector) -> None:
    px = detect(video, detector, [[12.0, 8.0, 48.0, 56.0]], keyframe=1.0)
    norm = detect(video, detector, [[12 / 96, 8 / 64, 48 / 96, 56 / 64]], keyframe=1.0, normalized=True)
    torch.testing.assert_close(px[0].scores, norm[0].scores)
    assert norm[0].box == pytest.approx([12.0, 8.0, 48.0, 56.0])


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ({1.0: []}, "non-empty list"),
        ({1.0: [[1, 2, 3]]}, r"\[x1, y1, x2, y2\]"),
        ({1.0: [[50.0, 5.0, 10.0, 60.0]]}, "x2 >= x1"),
        ("boxes.json", "must be"),
    ],
)
def test_bad_boxes_are_refused(video, detector, boxes, message) -> None:
    with pytest.raises(ValueError, match=message):
        detect(video, detector, boxes)


def test_detect_refuses_a_classifier(video) -> None:
    with pytest.raises(ValueError, match="needs an AVA detector"):
        detect(video, slowfast_zoo.create("slow_r50_8x8", width=8), [[0, 0, 10, 10]], keyframe=1.0)


def test_parse_boxes_forms() -> None:
    assert parse_boxes({"1.5": [[0, 0, 4, 4]]}) == {1.5: [[0.0, 0.0, 4.0, 4.0]]}
    assert parse_boxes([[0, 0, 4, 4]], default_keyframe=2.0) == {2.0: [[0.0, 0.0, 4.0, 4.0]]}
    with pytest.raises(ValueError, match="needs the keyframe"):
        parse_boxes([[0, 0, 4, 4]])


@pytest.mark.slow  # a full-size SlowFast R50 detector, saved and run through the command line
def test_cli_detect(tmp_path, video, detector, capsys) -> None:
    from safetensors.torch import save_file

    weights = tmp_path / "det.safetensors"
    full = slowfast_zoo.create("slowfast_r50_8x8_det")
    save_file(full.state_dict(), str(weights))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"1.0": [[10, 5, 60, 60]], "3.0": [[0, 0, 95, 63], [20, 10, 40, 50]]}))
    argv = [str(video), "--boxes", str(boxes), "--model", "slowfast_r50_8x8_det", "--checkpoint", str(weights)]
    assert main(["detect", *argv, "--json", "--top-k", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["keyframe"] for r in rows] == [1.0, 3.0, 3.0] and all(len(r["actions"]) == 2 for r in rows)
    assert rows[1]["box"] == [0, 0, 95, 63]
    assert main(["detect", *argv]) == 0
    assert "keyframe" in capsys.readouterr().out
    boxes.write_text("[[1, 2, 3]]")
    assert main(["detect", *argv, "--keyframe", "1"]) == 2
    assert "x1, y1, x2, y2" in capsys.readouterr().err

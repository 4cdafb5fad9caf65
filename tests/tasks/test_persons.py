"""AVA from raw video: person boxes from a Faster R-CNN (random weights, stubbed scores) reach the action model exactly
as the same boxes given by hand."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn
from video_factory import read_index, write_video

import slowfast_zoo
from slowfast_zoo.tasks.detect import detect
from slowfast_zoo.tasks.persons import person_boxes, person_detector

# boxes the stub "scores" in the detector's resized image (min_size 128: a 96x64 frame is scaled x2 to 192x128)
STUB = torch.tensor([[20.0, 10.0, 100.0, 120.0], [100.0, 0.0, 190.0, 64.0], [0.0, 0.0, 50.0, 50.0], [4, 4, 90, 90]])
LABELS = torch.tensor([1, 1, 1, 3])  # the last is a car
SCORES = torch.tensor([0.95, 0.85, 0.5, 0.99])


class StubHeads(nn.Module):
    """Stands in for the box heads: fixed detections in resized-image pixels; the real resize and rescale run."""

    def forward(self, features, proposals, image_shapes, targets=None):
        assert image_shapes == [(128, 192)]
        return [{"boxes": STUB.clone(), "labels": LABELS.clone(), "scores": SCORES.clone()}], {}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("raw") / "clip.mp4", num_frames=120, fps=30, width=96, height=64)


@pytest.fixture
def stub_detector():
    from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

    torch.manual_seed(0)
    model = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, min_size=128, max_size=256).eval()
    model.roi_heads = StubHeads()
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0][0].clone()))
    model.seen = seen
    return model


@pytest.fixture(scope="module")
def action_model():
    torch.manual_seed(0)
    model = slowfast_zoo.create("slowfast_r50_8x8_det", width=8, num_frames=8).eval()
    with torch.no_grad():
        model.head.proj.weight.normal_(0, 1.0)
    return model


def record_inputs(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda m, args: calls.append([a.clone() for a in args[0]] + [args[1][0]]))
    return calls, handle


def test_detector_boxes_reach_the_action_model_as_given_boxes(video, stub_detector, action_model, one_thread):
    assert action_model.pretrained_cfg.person_score_threshold == 0.8  # SlowFast AVA configs: DETECTION_SCORE_THRESH
    calls, handle = record_inputs(action_model)
    try:
        found = detect(video, action_model, keyframes=[1.0, 2.0], person_detector=stub_detector, top_k=3)
        by_detector = list(calls)
        calls.clear()
        # persons scoring >= 0.8, rescaled by hand from the resized image (x1/2) to the video's pixels
        expected = [[10.0, 5.0, 50.0, 60.0], [50.0, 0.0, 95.0, 32.0]]
        given = detect(video, action_model, {1.0: expected, 2.0: expected}, top_k=3)
    finally:
        handle.remove()
    # the detector saw the frames at the keyframes (the drawn index: frame 30 and 60 of a 30 fps video)
    assert [read_index((img * 255).round().byte().permute(1, 2, 0).numpy()) for img in stub_detector.seen] == [30, 60]
    assert [(r.keyframe, r.box) for r in found] == [(t, box) for t in (1.0, 2.0) for box in expected]
    assert [(r.keyframe, r.box, r.actions) for r in found] == [(r.keyframe, r.box, r.actions) for r in given]
    assert len(by_detector) == len(calls) == 2
    for a, b in zip(by_detector, calls):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_the_checkpoints_threshold_decides(video, stub_detector, action_model):
    strict = slowfast_zoo.create("slowfast_r50_8x8_det", width=8, num_frames=8).eval()
    strict.pretrained_cfg = strict.pretrained_cfg.replace(person_score_threshold=0.9)  # Slow AVA configs
    found = detect(video, strict, keyframes=[1.0], person_detector=stub_detector)
    assert [r.box for r in found] == [[10.0, 5.0, 50.0, 60.0]]
    assert person_boxes(video, 0.99, keyframes=[1.0], detector=stub_detector) == {}
    assert detect(video, strict, keyframes=[1.0], person_detector=_none_above(stub_detector)) == []


def _none_above(model):
    model.roi_heads.forward = lambda *a, **k: ([{"boxes": STUB[:0], "labels": LABELS[:0], "scores": SCORES[:0]}], {})
    return model


def test_offline_error_names_the_file_to_place(tmp_path, monkeypatch):
    import torchvision.models._api as api

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(RuntimeError) as e:
        person_detector()
    text = str(e.value)
    assert "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth" in text
    assert str(tmp_path / "hub" / "checkpoints" / "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth") in text

"""predict / predict_windows end to end on encoded files, view counting and aggregation per protocol."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("av")

from video_factory import write_video

from slowfast_zoo import create
from slowfast_zoo.tasks.predict import (
    TensorVideo,
    format_table,
    predict,
    predict_windows,
    sample_video,
    to_json_lines,
)
from slowfast_zoo.video.io import VideoError


def tiny(name="slowfast_r50_8x8", **cfg_changes):
    """Width-8, 10 classes, fixed head for 64 crops tested at 96 (a 2x2 grid of head positions, as at 256/224)."""
    frames = 16 if name.startswith("slowfast") else 4
    m = create(name, width=8, num_classes=10, num_frames=frames, crop_size=64, head_pool="fixed").eval()
    m.pretrained_cfg = m.pretrained_cfg.replace(test_short_side=96, test_crop_size=96, **cfg_changes)
    return m


class Recorder:
    """Wrap position_logits to record every batch (inputs and logits) the protocol runs."""

    def __init__(self, model):
        self.batches, self.logits = [], []
        inner = model.position_logits

        def wrapped(x):
            out = inner(x)
            self.batches.append(x)
            self.logits.append(out.detach().clone())
            return out

        model.position_logits = wrapped


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "clip.mp4", num_frames=90, fps=30, width=80, height=60)


def test_kinetics_reference_is_30_views_mean_of_softmax_per_position(clip):
    model = tiny()
    rec = Recorder(model)
    result = predict(clip, model, views="reference", top_k=3, batch_size=7)
    views = sum(b[0].shape[0] for b in rec.batches)
    assert views == 30 == result.num_views
    assert max(b[0].shape[0] for b in rec.batches) == 7  # views are batched
    logits = torch.cat(rec.logits)  # (30, t, h, w, classes)
    assert logits.shape[1:4] == (1, 2, 2)
    expected = logits.float().softmax(-1).mean(dim=(1, 2, 3)).mean(0)
    torch.testing.assert_close(result.scores, expected)
    assert result.scores.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert len(result) == 3 and [s for _, s in result] == sorted([s for _, s in result], reverse=True)
    assert result.top[0].index == int(expected.argmax())
    assert result.top[0].label == f"class_{result.top[0].index}"  # new classifier: no dataset labels


def test_charades_reference_is_max_of_sigmoid(clip):
    model = tiny(dataset="charades", activation="sigmoid", ensemble="max")
    rec = Recorder(model)
    result = predict(clip, model, views="reference")
    logits = torch.cat(rec.logits)
    assert logits.shape[0] == 30
    expected = logits.float().sigmoid().mean(dim=(1, 2, 3)).max(0).values
    torch.testing.assert_close(result.scores, expected)


def test_ssv2_reference_is_one_segment_clip_three_crops(clip):
    model = tiny("slow_r50_8x8", dataset="ssv2", frame_sampling="segment", test_clips=1)
    rec = Recorder(model)
    result = predict(clip, model, views="reference")
    assert result.num_views == 3 and sum(b.shape[0] for b in rec.batches) == 3
    x = rec.batches[0]
    # left, centre, right crops of the same frames differ; all have the model's 4 frames
    assert x.shape == (3, 3, 4, 96, 96) and not torch.equal(x[0], x[2])


def test_fast_is_one_centred_view(clip):
    model = tiny()
    rec = Recorder(model)
    result = predict(clip, model, views="fast", top_k=20)
    assert result.num_views == 1 and len(result) == 10  # top_k capped at the number of classes
    slow, fast = rec.batches[0]
    assert fast.shape == (1, 3, 16, 96, 96) and slow.shape == (1, 3, 4, 96, 96)


def test_inference_mode_and_training_flag_restored(clip):
    model = tiny().train()
    seen = []
    inner = model.position_logits

    def spy(x):
        seen.append((torch.is_inference_mode_enabled(), model.training))
        return inner(x)

    model.position_logits = spy
    predict(clip, model, views="fast")
    assert seen == [(True, False)] and model.training


def test_predict_windows_restores_training_mode(clip):
    model = tiny("slow_r50_8x8").train()
    seen = []
    inner = model.position_logits

    def spy(x):
        seen.append((torch.is_inference_mode_enabled(), model.training))
        return inner(x)

    model.position_logits = spy
    modes = [model.training for _ in predict_windows(clip, model, window_s=1.0, stride_s=1.0)]
    assert modes == [True, True, True] and model.training  # handed back in training mode after every window
    assert seen == [(True, False)] * 3  # each window ran in eval and inference mode


def test_reference_views_reach_the_model_as_the_protocol_picks_them(tmp_path):
    """predict feeds the model the frames video/views.py picks (tests/video/test_views.py checks those against the
    authors' rules); here, with identity normalization and no resize, the fast pathway shows which frames came."""
    from video_factory import read_index

    from slowfast_zoo.video.io import VideoReader
    from slowfast_zoo.video.views import plan_views

    path = write_video(tmp_path / "b.mp4", num_frames=150, fps=30000 / 1001, width=128, height=96, bframes=3)
    for tag in ("k400_pysf", "k400_ptv"):
        kw = dict(width=8, num_classes=10, num_frames=16, crop_size=64, head_pool="fixed")
        model = create(f"slowfast_r50_8x8.{tag}", **kw)
        model.pretrained_cfg = model.pretrained_cfg.replace(
            test_short_side=96, test_crop_size=96, mean=(0.0,) * 3, std=(1.0,) * 3
        )
        rec = Recorder(model.eval())
        predict(path, model, views="reference", batch_size=3)
        fast = torch.cat([b[1] for b in rec.batches])[::3]  # the left crop of each clip: (10, 3, 16, 96, 96)
        got = [[read_index(f) for f in (c.permute(1, 2, 3, 0) * 255).round().byte().numpy()] for c in fast]
        with VideoReader(path) as reader:
            expected = [v.frame_indices(reader) for v in plan_views(model.pretrained_cfg, reader.info)]
        assert got == expected and len({tuple(e) for e in expected}) == 10


@pytest.mark.parametrize(
    ("codec", "ext", "fps", "rotation"),
    [("libvpx-vp9", "webm", 25, None), ("mpeg4", "avi", 15, None), ("libx264", "mov", 30, 90)],
)
def test_predict_on_encoded_files(tmp_path, codec, ext, fps, rotation):
    path = write_video(
        tmp_path / f"v.{ext}", num_frames=2 * fps, fps=fps, codec=codec, width=80, height=60, rotation=rotation
    )
    result = predict(path, tiny("slow_r50_8x8"), views="reference", top_k=5)
    assert result.num_views == 30 and len(result) == 5
    assert result.video == str(path) and result.scores.shape == (10,)


def test_tensor_video_equals_file(clip):
    from slowfast_zoo.video.io import VideoReader

    model = tiny("slow_r50_8x8")
    with VideoReader(clip) as r:
        frames = r.frames_at_positions(list(range(r.info.num_frames)))
    a = predict(TensorVideo(frames, fps=30), model, views="fast")
    b = predict(clip, model, views="fast")
    torch.testing.assert_close(a.scores, b.scores)


@pytest.mark.parametrize("tag", ["k400_pysf", "k400_ptv"])
def test_tensor_video_takes_the_files_reference_frames(tmp_path, tag):
    """Frames in memory are timed as a constant-rate stream: the reference views pick what they pick in the file."""
    from slowfast_zoo import get_pretrained_cfg
    from slowfast_zoo.video.io import VideoReader
    from slowfast_zoo.video.views import plan_views

    cfg = get_pretrained_cfg(f"slowfast_r50_8x8.{tag}")
    path = write_video(tmp_path / "v.mp4", num_frames=300, fps=30000 / 1001)
    with VideoReader(path) as reader:
        tensor = TensorVideo(reader.frames_at_positions(list(range(300))), fps=reader.info.fps)
        in_file = [v.frame_indices(reader) for v in plan_views(cfg, reader.info)]
    in_memory = [v.frame_indices(tensor) for v in plan_views(cfg, tensor.info)]
    assert in_memory == in_file and in_file[0][0] == 0 and in_file[-1][-1] <= 299


def test_windows_are_timestamped_and_streamed(tmp_path):
    path = write_video(tmp_path / "long.mp4", num_frames=150, fps=30, width=80, height=60)  # 5 s
    model = tiny("slow_r50_8x8")
    gen = predict_windows(path, model, window_s=2.0, stride_s=1.5, top_k=2)
    assert iter(gen) is gen  # a generator: nothing decoded until asked
    results = list(gen)
    assert [(r.start, r.end) for r in results] == [(0.0, 2.0), (1.5, 3.5), (3.0, 5.0)]
    assert all(r.num_views == 1 and len(r) == 2 for r in results)
    lines = [json.loads(s) for s in to_json_lines(results)]
    assert lines[1]["start"] == 1.5 and lines[1]["predictions"][0]["label"].startswith("class_")
    table = format_table(results)
    assert "1.50-3.50s" in table and table.splitlines()[0].split() == ["video", "window", "#", "label", "score"]


def test_window_longer_than_video(clip):
    results = list(predict_windows(clip, tiny("slow_r50_8x8"), window_s=10, stride_s=5, views="reference"))
    assert len(results) == 1 and results[0].start == 0.0 and results[0].end == pytest.approx(3.0)
    assert results[0].num_views == 30


def test_corrupt_file_raises_naming_it(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\xff" * 500)
    with pytest.raises(VideoError, match=r"broken\.mp4"):
        predict(bad, tiny("slow_r50_8x8"))


def test_sample_clip_is_small_and_predicts():
    path = sample_video()
    assert path.is_file() and path.stat().st_size < 300_000
    result = predict(path, tiny("slow_r50_8x8"), views="fast", top_k=1)
    assert len(result) == 1


@pytest.mark.parametrize("kwargs", [{"features_only": True}, {"num_classes": 0}])
def test_predict_refuses_a_model_without_classifier(kwargs):
    """Predict on a features_only model raised AttributeError; it names what it needs instead."""
    model = create("slow_r50_8x8", width=8, **kwargs)
    with pytest.raises(TypeError, match="predict needs a classifier"):
        predict(sample_video(), model, views="fast")


def test_precision_and_fast_paths_stay_near_the_exact_default(clip):
    """fp32 is the default and exact; the folded fp32 copy agrees to float rounding, bf16 (autocast, or weights
    stored in bf16 once) to bf16 precision. The model given is never changed by fast=True."""
    from tiny import randomize

    model = randomize(tiny()).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    exact = predict(clip, model, views="fast").scores
    assert torch.equal(predict(clip, model, views="fast", precision="fp32").scores, exact)
    torch.testing.assert_close(predict(clip, model, views="fast", fast=True).scores, exact, rtol=0, atol=1e-5)
    for fast in (False, True):
        got = predict(clip, model, views="fast", precision="bf16", fast=fast).scores
        torch.testing.assert_close(got, exact, rtol=0, atol=2e-2)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'"):
        predict(clip, model, precision="fp16")


def test_view_inputs_are_the_same_bits_on_any_thread_count(tmp_path):
    # frames are prepared on one torch thread (a resize's sums are split by the thread count, and more threads only
    # contend with the decoder's): the inputs do not depend on the caller's count, which is left as it was
    from slowfast_zoo import get_pretrained_cfg
    from slowfast_zoo.tasks.runner import iter_view_inputs
    from slowfast_zoo.video.io import VideoReader
    from slowfast_zoo.video.views import plan_views

    path = write_video(tmp_path / "v.mp4", num_frames=60, fps=30, width=640, height=360)
    cfg = get_pretrained_cfg("slow_r50_8x8.k400_pysf")
    threads, inputs = torch.get_num_threads(), {}
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            with VideoReader(path) as reader:
                plan = plan_views(cfg, reader.info, "reference")
                inputs[n] = torch.stack(list(iter_view_inputs(reader, cfg, plan, torch.device("cpu"))))
            assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(inputs[1], inputs[2]) and torch.equal(inputs[1], inputs[3])

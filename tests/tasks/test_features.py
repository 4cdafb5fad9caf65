"""slowfast_zoo.features: embeddings equal forward_head(pre_logits=True), shards resume and split exactly."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from video_factory import write_video

import slowfast_zoo
from slowfast_zoo import features
from slowfast_zoo.video.io import VideoReader

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    """Tiny SlowFast: 2 slow / 8 fast frames every 2 frames at 30 fps, 32x32 centre crop of the 32 short side."""
    torch.manual_seed(0)
    m = slowfast_zoo.create("slowfast_r50_8x8", width=8, num_frames=8, num_classes=5).eval()
    m.pretrained_cfg = m.pretrained_cfg.replace(test_short_side=32, test_crop_size=32, test_head_pool="adaptive")
    return m


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("feature-videos")
    return [str(write_video(d / f"v{i}.mp4", num_frames=60 + 30 * (i % 2))) for i in range(4)]


def _expected(model, path: str, positions: list[float]) -> torch.Tensor:
    """The embedding of one clip, built here from the decoder, the eval transform and the model's own methods."""
    with VideoReader(path) as r:
        frames = r.frames_at_positions(positions)
    x = slowfast_zoo.create_transforms(model, "eval")(frames[None])
    with torch.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True)[0]


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["slowfast_zoo.features"])  # noqa: SIM118


def test_video_embeddings_equal_forward_head_pre_logits(model, videos, tmp_path):
    summary = features.extract(videos[:1], model, tmp_path, progress=False)
    assert summary.shards_written == ["features-00000-of-00001.safetensors"] and summary.clips == 1
    t, meta = _read(tmp_path / summary.shards_written[0])
    assert t["embeddings"].shape == (1, model.num_features) == (1, 288)
    # 60 frames at 30 fps; the clip spans 8 x 2 = 16 frames, centred: start (60 - 16) / 2 = 22, last 22 + 15
    expected = _expected(model, videos[0], [22 + 15 * i / 7 for i in range(8)])
    torch.testing.assert_close(t["embeddings"][0], expected, rtol=0, atol=1e-6)
    assert meta["paths"] == videos[:1] and meta["per"] == "video" and meta["failed"] == {}
    assert t["start"].tolist() == [0.0] and t["end"][0].item() == pytest.approx(2.0, abs=0.05)


def test_window_embeddings(model, videos, tmp_path):
    summary = features.extract(videos[1:2], model, tmp_path, per="window", window_s=2.0, stride_s=1.0, progress=False)
    t, _ = _read(tmp_path / summary.shards_written[0])
    # a 3 s video: windows [0, 2), [1, 3)
    assert t["start"].tolist() == [0.0, 1.0] and t["end"].tolist() == pytest.approx([2.0, 3.0], abs=0.05)
    assert t["video_index"].tolist() == [0, 0]
    # window [1, 2 + 1): frames 30..89, the 16-frame clip centred in it starts at 30 + 22
    expected = _expected(model, videos[1], [52 + 15 * i / 7 for i in range(8)])
    torch.testing.assert_close(t["embeddings"][1], expected, rtol=0, atol=1e-6)


def test_resume_after_interruption_gives_identical_files(model, videos, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    features.extract(videos, model, whole, shard_size=1, progress=False)

    out = tmp_path / "interrupted"
    calls = {"n": 0}
    real = model.forward_features

    def dies_on_the_third_video(x):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(x)

    monkeypatch.setattr(model, "forward_features", dies_on_the_third_video)
    with pytest.raises(KeyboardInterrupt):
        features.extract(videos, model, out, shard_size=1, progress=False)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == [
        "features-00000-of-00004.safetensors",
        "features-00001-of-00004.safetensors",
    ]  # the shard being written when it died left nothing behind

    summary = features.extract(videos, model, out, shard_size=1, progress=False)
    assert summary.shards_skipped == [f"features-0000{k}-of-00004.safetensors" for k in (0, 1)]
    assert len(summary.shards_written) == 2
    names = sorted(p.name for p in whole.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        assert (whole / name).read_bytes() == (out / name).read_bytes(), name

    with pytest.raises(ValueError, match="other videos"):  # a different list in the same folder is not "resumed"
        features.extract(videos[::-1], model, out, shard_size=1, progress=False)


def test_rank_sharding_and_npz(model, videos, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    paths = [*videos, str(broken)]
    single = tmp_path / "single"
    features.extract(paths, model, single, shard_size=2, format="npz", progress=False)
    split = tmp_path / "split"
    s0 = features.extract(paths, model, split, shard_size=2, format="npz", rank=0, world_size=2, progress=False)
    s1 = features.extract(paths, model, split, shard_size=2, format="npz", rank=1, world_size=2, progress=False)
    assert s0.shards_written == ["features-00000-of-00003.npz", "features-00002-of-00003.npz"]
    assert s1.shards_written == ["features-00001-of-00003.npz"]
    assert list(s0.failed) == [str(broken)] and not s1.failed

    a, b = features.load_features(single), features.load_features(split)
    assert a["paths"] == b["paths"] == videos  # the broken file has no row ...
    assert list(a["failed"]) == [str(broken)]  # ... and is reported with its reason
    assert torch.equal(a["embeddings"], b["embeddings"]) and a["embeddings"].shape == (4, 288)
    with np.load(split / "features-00000-of-00003.npz") as z:
        assert z["embeddings"].dtype == np.float32 and list(z["paths"]) == videos[:2]


def test_command_line_with_a_list_file(model, videos, tmp_path, monkeypatch, capsys):
    """examples/extract_features.py (= ``slowfast-zoo features``) with a list file, on a model saved to a file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "extract_features_example", Path(__file__).resolve().parents[2] / "examples" / "extract_features.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    listing = tmp_path / "videos.txt"
    listing.write_text("# my videos\n" + "\n".join(videos[:2]) + "\n")
    captured = {}

    def fake_load_model(name, *, checkpoint=None, device=None):
        captured["name"] = name
        return model

    monkeypatch.setattr(features, "load_model", fake_load_model)
    out = tmp_path / "cli"
    rc = script.main([str(listing), "-o", str(out), "--model", "my-model", "--no-progress", "--shard-size", "1"])
    assert rc == 0 and captured["name"] == "my-model"
    assert "2 shard(s) written" in capsys.readouterr().out
    loaded = features.load_features(out)
    assert loaded["paths"] == videos[:2]
    expected = _expected(model, videos[0], [22 + 15 * i / 7 for i in range(8)])
    torch.testing.assert_close(loaded["embeddings"][0], expected, rtol=0, atol=1e-6)


def test_shards_record_the_run(model, videos, tmp_path):
    import hashlib

    from safetensors.torch import save_file

    weights = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(weights))
    loaded = slowfast_zoo.create("slowfast_r50_8x8", width=8, num_frames=8, num_classes=5, checkpoint=weights)
    loaded.pretrained_cfg = loaded.pretrained_cfg.replace(test_short_side=32, test_crop_size=32)
    summary = features.extract(videos[:1], loaded, tmp_path / "out", progress=False)
    _, meta = _read(tmp_path / "out" / summary.shards_written[0])
    assert meta["model"] == "slowfast_r50_8x8" and meta["format_version"] == "2"
    assert meta["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()  # the file the weights came from
    assert len(meta["tensors_sha256"]) == 64 and meta["architecture"]["width"] == 8
    pre = meta["preprocessing"]
    assert pre["test_crop_size"] == 32 and pre["test_short_side"] == 32 and pre["mean"] == [0.45] * 3
    assert pre["sampling_rate"] == 2 and pre["target_fps"] == 30.0 and "metrics" not in pre


def _other_weights(model):
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(iter(other.parameters())).add_(1.0)
    return other


def test_resume_refuses_shards_of_another_run(model, videos, tmp_path):
    out = tmp_path / "out"
    features.extract(videos[:2], model, out, shard_size=1, progress=False)
    cropped = copy.deepcopy(model)  # the same tensors, other preprocessing
    cropped.pretrained_cfg = model.pretrained_cfg.replace(test_crop_size=24)
    cases = [
        (dict(model=_other_weights(model)), "tensors_sha256"),
        (dict(model=model, views="reference"), "views"),
        (dict(model=model, per="window"), "per"),
        (dict(model=cropped), "preprocessing"),
    ]
    for kwargs, field in cases:
        with pytest.raises(
            ValueError, match=rf"features-00000-of-00002.safetensors was written by another run \(.*{field}"
        ):
            features.extract(videos[:2], out_dir=out, shard_size=1, progress=False, **kwargs)
    again = features.extract(videos[:2], model, out, shard_size=1, progress=False)  # the same run resumes
    assert len(again.shards_skipped) == 2 and not again.shards_written


def test_load_features_refuses_to_merge_different_runs(model, videos, tmp_path):
    out = tmp_path / "out"
    features.extract(videos[:2], model, out, shard_size=1, rank=0, world_size=2, progress=False)
    features.extract(videos[:2], _other_weights(model), out, shard_size=1, rank=1, world_size=2, progress=False)
    with pytest.raises(ValueError, match=r"different runs \(tensors_sha256 differ\)"):
        features.load_features(out)

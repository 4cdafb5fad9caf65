"""slowfast_zoo.data: folder and CSV rows with reported skips, the clips a dataset decodes, the epoch sampler."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from video_factory import read_index, write_video

import slowfast_zoo
from slowfast_zoo.tasks.data import ShardedSampler, VideoClipDataset, VideoRow, collate_clips, read_csv, read_folder


@pytest.fixture(scope="module")
def model():
    """Tiny SlowFast: 8 fast / 2 slow frames taken every 2 frames at 30 fps; 32 crops of a 32 (train 32-40) side."""
    m = slowfast_zoo.create("slowfast_r50_8x8", width=8, num_frames=8, num_classes=2)
    m.pretrained_cfg = m.pretrained_cfg.replace(
        train_short_side=(32, 40), train_crop_size=32, test_short_side=32, test_crop_size=32
    )
    return m


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    for name in ("walk", "jump"):
        (root / name).mkdir()
    write_video(root / "walk" / "a.mp4", num_frames=60)
    write_video(root / "walk" / "b.mp4", num_frames=45)
    (root / "jump" / "sub").mkdir()
    write_video(root / "jump" / "sub" / "c.mp4", num_frames=60)
    (root / "jump" / "notes.txt").write_text("not a video")
    (root / "jump" / "broken.mp4").write_bytes(b"\x00" * 100)
    (root / "stray.mp4").write_bytes(b"")
    return root


def test_read_folder(tree):
    rows = read_folder(tree)
    assert rows.class_names == ["jump", "walk"]
    assert [(Path(r.path).name, r.label) for r in rows.rows] == [
        ("broken.mp4", 0),  # found by name; the dataset's probe drops it (below)
        ("c.mp4", 0),
        ("a.mp4", 1),
        ("b.mp4", 1),
    ]
    assert len(rows.skipped) == 2
    reasons = dict((Path(w).name, r) for w, r in rows.skipped.entries)
    assert "outside a class folder" in reasons["stray.mp4"] and "extension" in reasons["notes.txt"]
    assert "2 row(s) skipped" in rows.skipped.summary()


def test_read_csv(tree, tmp_path):
    csv = tmp_path / "list.csv"
    lines = [
        "path,label",
        f"{tree}/walk/a.mp4,walk",  # absolute
        "b.mp4,walk",  # relative to root=
        "sub/c.mp4,jump",
        "missing.mp4,jump",  # no such file
        "b.mp4,swim",  # unknown label (with class_names given)
        "b.mp4",  # one field
        "",
    ]
    csv.write_text("\n".join(lines))
    rows = read_csv(csv, class_names=["jump", "walk"], root=tree / "walk")
    assert [(Path(r.path).name, r.label) for r in rows.rows] == [("a.mp4", 1), ("b.mp4", 1)]
    assert len(rows.skipped) == 4  # sub/c.mp4 is not under walk/ either
    assert sorted(w.rsplit(":", 1)[1] for w, _ in rows.skipped.entries) == ["4", "5", "6", "7"]

    ints = tmp_path / "ints.csv"
    ints.write_text(f"{tree}/walk/a.mp4,2\n{tree}/walk/b.mp4,0\n")
    r2 = read_csv(ints)
    assert r2.class_names == ["0", "1", "2"] and [r.label for r in r2.rows] == [2, 0]


def test_dataset_clips(tree, model):
    ds = VideoClipDataset(read_folder(tree), model, "eval")
    assert len(ds) == 3 and len(ds.skipped) == 3  # stray, notes, and the broken file the probe could not open
    assert any("broken.mp4" in w for w, _ in ds.skipped.entries)
    # row 1 = a.mp4, 60 frames at 30 fps: the centred 16-frame clip starts at 22, 8 frames linspace(22, 37)
    frames = ds.read_frames(1)
    assert frames.shape == (8, 48, 64, 3) and frames.dtype == torch.uint8
    assert [read_index(f.numpy()) for f in frames] == [22, 24, 26, 28, 30, 32, 34, 37]
    (slow, fast), label = ds[1]
    assert label == 1 and slow.shape == (3, 2, 32, 32) and fast.shape == (3, 8, 32, 32)
    ref_slow, ref_fast = slowfast_zoo.create_transforms(model, "eval")(frames)
    assert torch.equal(slow, ref_slow) and torch.equal(fast, ref_fast)

    train = VideoClipDataset(read_folder(tree), model, "train", seed=7)
    idx = [read_index(f.numpy()) for f in train.read_frames(1)]
    assert 0 <= idx[0] <= 60 - 16 and all(1 <= b - a <= 3 for a, b in itertools.pairwise(idx))  # a random 16-frame clip
    x1, x2 = train[1][0], train[1][0]
    assert all(torch.equal(a, b) for a, b in zip(x1, x2))  # (seed, epoch, index) fix a sample
    starts = set()
    for epoch in range(6):
        train.set_epoch(epoch)
        starts.add(read_index(train.read_frames(1)[0].numpy()))
    assert len(starts) > 1  # ... and each epoch draws another clip

    batch, labels = collate_clips([ds[0], ds[1], ds[2]])
    assert [t.shape for t in batch] == [(3, 3, 2, 32, 32), (3, 3, 8, 32, 32)] and labels.tolist() == [0, 1, 1]


def test_a_video_failing_during_training_is_reported_and_replaced(tree, model, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    rows = [VideoRow(str(bad), 0), VideoRow(str(tree / "walk" / "a.mp4"), 1)]
    ds = VideoClipDataset(rows, model, "eval", probe=False)
    assert len(ds) == 2 and len(ds.skipped) == 0
    _, label = ds[0]
    assert label == 1  # the next row stands in, so batches keep their size
    assert len(ds.skipped) == 1 and ds.skipped.entries[0][0] == str(bad)


def test_sharded_sampler_deals_one_order_to_all_ranks():
    single = ShardedSampler(10, 4, seed=3)
    single.set_epoch(2)
    order = list(single)
    assert len(order) == 8 and single.steps_per_epoch() == 2 and len(set(order)) == 8
    ranks = []
    for r in range(2):
        s = ShardedSampler(10, 2, rank=r, world_size=2, seed=3)
        s.set_epoch(2)
        ranks.append(list(s))
        assert s.steps_per_epoch() == 2
    for step in range(2):  # step k of both ranks together = step k of one process with twice the batch
        together = ranks[0][2 * step : 2 * step + 2] + ranks[1][2 * step : 2 * step + 2]
        assert sorted(together) == sorted(order[4 * step : 4 * step + 4])
    single.set_epoch(2, start_step=1)
    assert list(single) == order[4:] and len(single) == 4
    other = ShardedSampler(10, 4, seed=3)
    other.set_epoch(3)
    assert list(other) != order


@pytest.mark.parametrize(("num_samples", "world_size"), [(1, 4), (3, 8), (5, 2)])
def test_sharded_sampler_pads_like_distributed_sampler(num_samples, world_size):
    """Fewer samples than ranks: every rank still gets len() samples, as torch's DistributedSampler pads."""
    from torch.utils.data.distributed import DistributedSampler

    for rank in range(world_size):
        ours = ShardedSampler(num_samples, 1, rank=rank, world_size=world_size, shuffle=False, drop_last=False)
        ref = DistributedSampler(range(num_samples), num_replicas=world_size, rank=rank, shuffle=False)
        got = list(ours)
        assert len(got) == len(ours) == len(ref) >= 1  # no rank left with nothing while len() says 1 (DDP hang)
        assert got == list(ref)


def test_sharded_sampler_refuses_nothing_to_pad_with():
    with pytest.raises(ValueError, match="needs samples"):
        ShardedSampler(0, 2, world_size=2, rank=1, drop_last=False)
    with pytest.raises(ValueError, match="batch size"):
        ShardedSampler(4, 0)

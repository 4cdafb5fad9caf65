"""Outputs that a planted link cannot redirect, and input files whose bad rows or metadata fail clearly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from slowfast_zoo.errors import AnnotationError, FeatureShardError, SlowFastZooError, UnsafeOutputError
from slowfast_zoo.tasks.eval_datasets import read_ava, read_charades, read_kinetics, read_ssv2
from slowfast_zoo.tasks.eval_records import append_record, parts_dir, read_records, write_json_atomic
from slowfast_zoo.tasks.evaluate import merge
from slowfast_zoo.tasks.features import load_features
from slowfast_zoo.tasks.metrics import write_ava_csv
from slowfast_zoo.weights.cache import atomic_write, output_dir

SECRET = b"a file outside the output folder\nwithout a final newline"


@pytest.fixture
def outside(tmp_path) -> Path:
    """A file the zoo must never touch, in a folder next to the output folder."""
    victim = tmp_path / "elsewhere" / "precious.txt"
    victim.parent.mkdir()
    victim.write_bytes(SECRET)
    return victim


@pytest.fixture
def out(tmp_path) -> Path:
    (tmp_path / "results").mkdir()
    return tmp_path / "results" / "results.json"


def _plant(link: Path, target: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


def test_resume_does_not_truncate_through_a_planted_shard_link(out, outside):
    shard = _plant(parts_dir(out) / "shard-00000-of-00001.jsonl", outside)
    with pytest.raises(UnsafeOutputError, match="link"):
        read_records(shard, {"format": "x"})  # before: the target was cut to its last newline
    with pytest.raises(UnsafeOutputError):
        append_record(shard, {"i": 0})  # before: the record was appended to the target
    assert outside.read_bytes() == SECRET


def test_a_fifo_is_refused_as_a_shard_file(out):
    shard = parts_dir(out) / "shard-00000-of-00001.jsonl"
    shard.parent.mkdir(parents=True)
    os.mkfifo(shard)
    with pytest.raises(UnsafeOutputError, match="not a regular file"):
        read_records(shard, {})  # a FIFO with no writer: refused at once, no hang
    with pytest.raises(UnsafeOutputError):
        append_record(shard, {"i": 0})


def test_a_planted_parts_folder_link_is_refused(out, outside):
    _plant(parts_dir(out), outside.parent)
    with pytest.raises(UnsafeOutputError, match="folder"):
        output_dir(parts_dir(out))


@pytest.mark.parametrize(
    "write",
    [
        lambda p: write_json_atomic(p, {"ok": 1}),
        lambda p: write_ava_csv(p, [("v", "0902", 0.1, 0.1, 0.5, 0.5, 1, 0.9)]),
        lambda p: atomic_write(p, b"shard bytes"),  # feature shards and every cache file use this writer
    ],
    ids=["results", "ava-detections", "atomic-writer"],
)
def test_whole_file_writers_replace_a_planted_link(out, outside, write):
    link = _plant(out.with_name("target.out"), outside)
    write(link)
    assert outside.read_bytes() == SECRET
    assert not link.is_symlink() and link.is_file()


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_a_feature_shard_replaces_a_planted_link(out, outside, fmt):
    from slowfast_zoo.tasks.features import write_shard

    shard = _plant(out.parent / f"features-00000-of-00001.{fmt}", outside)
    tensors = {"embeddings": torch.zeros(1, 4), "video_index": torch.zeros(1, dtype=torch.int64)}
    write_shard(shard, tensors, {"paths": ["v.mp4"], "failed": {}}, fmt)
    assert outside.read_bytes() == SECRET and not shard.is_symlink() and shard.stat().st_size > 0


def _ava_parts(tmp_path: Path, out: Path) -> None:
    """A finished one-shard AVA evaluation, written by hand: merge scores it without running a model."""
    gt = tmp_path / "gt.csv"
    gt.write_text("vid,0902,0.1,0.1,0.5,0.5,1\nvid,0902,0.1,0.1,0.5\nvid,0903,0.1,0.1,0.5,0.5,2\n")
    header = {
        "format": "slowfast_zoo.evaluate/1",
        "model": "m",
        "dataset": "ava",
        "published": {},
        "videos": 1,
        "ids": "x",
        "notes": [],
        "rows_skipped_count": 1,
        "rows_skipped": [["proposals.csv:3", "expected 8 fields, got 2"]],
        "ava": {
            "groundtruth": str(gt),
            "excluded": None,
            "classes": {"1": "a", "2": "b"},
            "threshold": 0.8,
            "offset": 900.0,
            "protocol": "pyslowfast",
        },
    }
    rec = {"i": 0, "id": "vid", "status": "ok", "rows": [[902, 0.1, 0.1, 0.5, 0.5, [0.9, 0.2]]]}
    shard = parts_dir(out) / "shard-00000-of-00001.jsonl"
    output_dir(shard.parent)
    append_record(shard, {"header": header})
    append_record(shard, rec)


def test_ava_merge_writes_through_no_planted_link_and_counts_bad_rows(tmp_path, out, outside):
    _ava_parts(tmp_path, out)
    det = _plant(out.with_name(out.name + ".detections.csv"), outside)
    old_tmp = _plant(out.with_name(f".{out.name}.detections.csv.tmp"), outside)  # the name it used to write
    res = _plant(out, outside)
    result = merge(out)
    assert outside.read_bytes() == SECRET
    assert not det.is_symlink() and not res.is_symlink() and old_tmp.is_symlink()
    # class 1: one box, found at rank 1 (AP 1); class 2: one box at 0903, no detection there (AP 0)
    assert result.metrics[0].measured == pytest.approx(50.0)
    assert result.rows_skipped == 2  # one proposals row (from the header) and one ground-truth row
    assert [w for w, _ in result.rows_skipped_first] == ["proposals.csv:3", f"{tmp_path / 'gt.csv'}:2"]
    assert json.loads(out.read_text())["rows_skipped"] == 2


# ---- annotation files: a bad row is skipped with its reason ---------------------------------------------------------
def test_kinetics_list_skips_unusable_rows(tmp_path):
    root = tmp_path / "val"
    root.mkdir()
    (root / "a.mp4").write_bytes(b"")
    ann = tmp_path / "val.csv"
    ann.write_bytes(b"a.mp4 0\n" + b"x" * 5000 + b".mp4 1\n" + b"\xff\xfe.mp4 0\n" + b'"unclosed.mp4,0\n')
    ev = read_kinetics(ann, root, ["c0", "c1"])
    assert [it.id for it in ev.items] == ["a.mp4"]
    reasons = dict(ev.skipped)
    assert "not a usable path" in reasons[f"{ann}:2"]  # OSError (name too long), before: raised
    assert "UTF-8" in reasons[f"{ann}:3"]
    assert f"{ann}:4" in reasons  # csv error


def test_kinetics_official_and_charades_skip_short_rows(tmp_path):
    ann = tmp_path / "k.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\nc0,abc,0,10,val\nc0,abd\nc0,abe,1e999,10,val\n")
    ev = read_kinetics(ann, tmp_path, ["c0"])
    assert [it.id for it in ev.items] == ["abc_000000_000010"] and len(ev.skipped) == 2
    ch = tmp_path / "c.csv"
    ch.write_text('id,actions\nAAA,c001 0 1\nBBB\n"CCC,c002 0 1\n')
    ev = read_charades(ch, tmp_path, 157)
    assert [it.id for it in ev.items] == ["AAA"] and len(ev.skipped) == 2


def test_deep_or_huge_json_and_fifo_annotations_fail_clearly(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(AnnotationError, match=r"deep\.json"):  # before: RecursionError
        read_ssv2(deep, tmp_path, ["a"])
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    with pytest.raises(AnnotationError, match="not a regular file"):  # before: a hang
        read_ava(fifo, tmp_path, 0.5)


# ---- feature shards with malformed metadata -----------------------------------------------------------------------
def _npz(path: Path, metadata: object | None, index=(0,)) -> None:
    arrays = {
        "embeddings": np.zeros((len(index), 4), np.float32),
        "video_index": np.array(index, np.int64),
        "start": np.zeros(len(index)),
        "end": np.zeros(len(index)),
    }
    if metadata is not None:
        arrays["metadata"] = np.array(json.dumps(metadata))
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    ("metadata", "index"),
    [(None, (0,)), (["a list"], (0,)), ({"paths": ["v.mp4"], "failed": {}}, (3,)), ({"paths": "v"}, (0,))],
    ids=["missing", "a-list", "index-out-of-range", "paths-not-a-list"],
)
def test_malformed_shard_metadata_names_the_file(tmp_path, metadata, index):
    shard = tmp_path / "features-00000-of-00001.npz"
    _npz(shard, metadata, index)
    with pytest.raises(FeatureShardError, match=r"features-00000-of-00001\.npz") as e:
        load_features(tmp_path)
    assert isinstance(e.value, SlowFastZooError)


def test_shard_without_its_tensors_names_the_file(tmp_path):
    shard = tmp_path / "features-00000-of-00001.npz"
    np.savez(shard, embeddings=np.zeros((1, 4)), metadata=np.array(json.dumps({"paths": ["v"], "failed": {}})))
    with pytest.raises(FeatureShardError, match="no video_index, start, end tensor"):  # before: KeyError
        load_features(tmp_path)


def test_safetensors_shard_without_metadata_names_the_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"embeddings": torch.zeros(1, 4), "video_index": torch.zeros(1, dtype=torch.int64)}, tmp_path / "x")
    (tmp_path / "x").rename(tmp_path / "features-00000-of-00001.safetensors")
    with pytest.raises(FeatureShardError, match=r"features-00000-of-00001\.safetensors"):
        load_features(tmp_path)


def _parquet(path: Path, columns: dict, metadata: bytes | None) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns, metadata=None if metadata is None else {b"slowfast_zoo.features": metadata}), path)


@pytest.mark.parametrize(
    "case", ["not-parquet", "no-metadata", "not-json", "embedding-not-float32", "video-not-listed"]
)
def test_malformed_parquet_shard_names_the_file(tmp_path, case):
    """Parquet shards get the checks the other formats get: metadata, column types, rows pointing into the paths."""
    pa = pytest.importorskip("pyarrow")
    meta = json.dumps({"paths": ["v.mp4"], "failed": {}}).encode()
    emb = pa.FixedSizeListArray.from_arrays(pa.array([0.0] * 4, pa.float32()), 4)
    columns = {"video": pa.array(["v.mp4"]), "start": pa.array([0.0]), "end": pa.array([1.0]), "embedding": emb}
    if case == "no-metadata":
        meta = None
    elif case == "not-json":
        meta = b"\xff{"
    elif case == "embedding-not-float32":
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array([0.0] * 4, pa.float64()), 4)
    else:
        columns["video"] = pa.array(["elsewhere.mp4"])
    _parquet(tmp_path / "features-00000-of-00001.parquet", columns, meta)
    if case == "not-parquet":
        (tmp_path / "features-00000-of-00001.parquet").write_bytes(b"PAR1 but not really")
    with pytest.raises(FeatureShardError, match=r"features-00000-of-00001\.parquet"):
        load_features(tmp_path)


def test_parquet_without_pyarrow_is_refused_before_any_work(tmp_path, monkeypatch):
    import sys

    from slowfast_zoo.tasks.features import extract

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    with pytest.raises(ImportError, match="pyarrow"):
        extract(["v.mp4"], "no-such-model", tmp_path / "out", format="parquet")
    assert not (tmp_path / "out").exists()

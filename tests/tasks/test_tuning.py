"""Batch size and memory format chosen by measurement (``tune``), stored in the cache, used by the tasks; the stored
file read as hostile. Time comes from an injected clock that the model itself advances, by a cost per setting."""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch

from slowfast_zoo import create, tune
from slowfast_zoo.cli import main
from slowfast_zoo.tasks.autotune import CPU_CANDIDATES, MARGIN
from slowfast_zoo.tasks.runner import batch_for, load_model
from slowfast_zoo.tasks.tuning import (
    MAX_FILE_BYTES,
    Tuning,
    model_signature,
    store_tunings,
    stored_tuning,
    tuned_batch,
    tuning_file,
)

pytest.importorskip("av")
from video_factory import write_video

from slowfast_zoo.tasks.predict import predict


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Each test its own zoo cache (a stored result would change other tests' batches)."""
    monkeypatch.setenv("SLOWFAST_ZOO_CACHE", str(tmp_path / "zoo"))
    return tmp_path / "zoo"


def tiny(name: str = "slowfast_r50_8x8") -> torch.nn.Module:
    """Width 8, a 64-pixel test crop: quick at any batch size."""
    frames = 16 if name.startswith("slowfast") else 4
    m = create(name, width=8, num_classes=10, num_frames=frames, crop_size=64, head_pool="fixed").eval()
    m.pretrained_cfg = m.pretrained_cfg.replace(test_short_side=64, test_crop_size=64)
    return m


class Clock:
    """A clock the model advances: each forward costs ``cost(batch, channels_last)`` seconds per view."""

    def __init__(self, model: torch.nn.Module, cost) -> None:
        self.now, self.batches = 0.0, []

        def hook(conv, args):  # the first convolution: sees the batch and the weights' layout of this copy
            n = args[0].shape[0]
            cl = not conv.weight.is_contiguous()  # (C, 3, 1, 7, 7): the two layouts differ
            self.batches.append(n)
            self.now += cost(n, cl) * n

        model.stem.slow.conv.register_forward_pre_hook(hook)

    def __call__(self) -> float:
        return self.now


def test_the_fastest_batch_per_view_is_chosen_stored_and_used(cache) -> None:
    model = tiny()
    per_view = {1: 1.0, 2: 0.7, 3: 0.5, 5: 0.55, 6: 0.9, 10: 1.5}
    clock = Clock(model, lambda n, cl: per_view[n])
    t = tune(model, clock=clock, repeats=2)
    assert (t.batch_size, t.channels_last) == (3, None)
    assert t.seconds_per_view == {f"b{b}": pytest.approx(s) for b, s in per_view.items()}
    assert set(clock.batches) == set(CPU_CANDIDATES)
    assert clock.batches.count(3) == 3  # one warm-up (not timed), then two timed runs
    assert clock.batches[: len(CPU_CANDIDATES)] == list(CPU_CANDIDATES)  # rounds: each setting in turn
    assert clock.batches[len(CPU_CANDIDATES) :] == list(CPU_CANDIDATES) * 2
    assert stored_tuning(model_signature(model)) == t
    assert json.loads(tuning_file().read_text())["entries"][t.signature]["batch_size"] == 3
    assert batch_for(model, 30) == 3
    assert batch_for(model, 2) == 2  # never more than a video's views
    assert tuned_batch(model, "bf16") is None  # bf16 under autocast is another measurement
    assert batch_for(model, 30, "bf16") == 6  # the fixed rule where nothing was measured


def test_a_larger_batch_must_be_clearly_faster() -> None:
    model = tiny()
    almost = 1.0 - MARGIN / 2
    clock = Clock(model, lambda n, cl: {1: 1.0, 2: almost, 3: almost}[n])
    assert tune(model, clock=clock, candidates=[1, 2, 3], store=False).batch_size == 1
    assert stored_tuning(model_signature(model)) is None  # store=False


def test_out_of_memory_ends_the_larger_batches() -> None:
    model = tiny()

    def cost(n: int, cl: bool) -> float:
        if n >= 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return 1.0 / n

    clock = Clock(model, cost)
    t = tune(model, clock=clock, candidates=[1, 2, 3, 5, 6])
    assert t.batch_size == 3
    assert t.seconds_per_view["b5"] is None and t.seconds_per_view["b6"] is None
    assert 6 not in clock.batches and clock.batches.count(5) == 1  # tried once, in the warm-up
    assert stored_tuning(t.signature) == t  # None survives the file


def test_fast_measures_both_layouts_and_load_model_takes_the_faster(cache) -> None:
    model = tiny()
    clock = Clock(model, lambda n, cl: (2.0 if cl else 1.0) / min(n, 2))
    t = tune(model, precision="bf16", fast=True, clock=clock, candidates=[1, 2, 3])
    assert (t.batch_size, t.channels_last) == (2, False)
    assert {k for k in t.seconds_per_view} == {f"b{b} {f}" for b in (1, 2, 3) for f in ("channels_last", "contiguous")}
    assert "bf16-weights folded" in t.signature
    fast = load_model(model, precision="bf16", fast=True)
    assert fast.stem.slow.conv.weight.is_contiguous()  # the measured layout, not the channels-last default
    assert batch_for(fast, 30, "bf16") == 2
    assert batch_for(load_model(model, fast=True), 30) == 6  # fp32 fast: not measured
    assert not load_model(model, fast=True).stem.slow.conv.weight.is_contiguous()  # channels-last by default


def test_signatures_tell_apart_what_changes_the_speed(monkeypatch) -> None:
    model = tiny()
    fp32, bf16 = model_signature(model), model_signature(model, "bf16")
    folded = model_signature(load_model(model, fast=True))
    weights = model_signature(load_model(model, fast=True, precision="bf16"))
    wider = create("slowfast_r50_8x8", width=16, num_classes=10, num_frames=16, crop_size=64).eval()
    wider.pretrained_cfg = model.pretrained_cfg
    assert len({fp32, bf16, folded, weights, model_signature(wider)}) == 5
    assert folded.split(" weights ")[0] == fp32.split(" weights ")[0]  # folding keeps the layers' weights
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert model_signature(model) != fp32
    finally:
        torch.set_num_threads(threads)
    assert f"torch {'.'.join(torch.__version__.split('.')[:2])}" in fp32


def test_predict_uses_the_stored_batch_and_an_explicit_one_wins(tmp_path) -> None:
    model = tiny("slow_r50_8x8")
    clip = write_video(tmp_path / "clip.mp4", num_frames=90, fps=30, width=80, height=60)
    seen: list[int] = []
    model.stem.slow.conv.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    predict(clip, model, views="reference")
    assert seen == [6] * 5  # nothing measured: 6 on a CPU
    store_tunings([Tuning(model_signature(model), 4, None, {"b4": 0.1})])
    seen.clear()
    predict(clip, model, views="reference")
    assert seen == [4] * 7 + [2]
    seen.clear()
    predict(clip, model, views="reference", batch_size=10)
    assert seen == [10] * 3


HOSTILE = {
    "not json": b"\x00\xffnot json",
    "a list": b"[1, 2]",
    "another version": b'{"version": 2, "entries": {}}',
    "entries not a mapping": b'{"version": 1, "entries": [1]}',
}
BAD_ENTRIES = {
    "batch as text": {"batch_size": "6", "channels_last": None},
    "batch zero": {"batch_size": 0, "channels_last": None},
    "batch huge": {"batch_size": 10**9, "channels_last": None},
    "batch a bool": {"batch_size": True, "channels_last": None},
    "batch a float": {"batch_size": 4.0, "channels_last": None},
    "layout as text": {"batch_size": 4, "channels_last": "yes"},
    "times not a mapping": {"batch_size": 4, "channels_last": None, "seconds_per_view": [1]},
    "time negative": {"batch_size": 4, "channels_last": None, "seconds_per_view": {"b4": -1}},
    "time as text": {"batch_size": 4, "channels_last": None, "seconds_per_view": {"b4": "fast"}},
    "not an object": 4,
}


@pytest.mark.parametrize("content", list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_file_that_is_not_a_tuning_file_is_ignored_then_replaced(content, caplog) -> None:
    model = tiny()
    path = tuning_file()
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, "slowfast_zoo"):
        assert batch_for(model, 30) == 6
    assert str(path) in caplog.text and "ignored" in caplog.text
    store_tunings([Tuning(model_signature(model), 3, None, {})])
    assert batch_for(model, 30) == 3  # replaced whole by a valid file


@pytest.mark.parametrize("entry", list(BAD_ENTRIES.values()), ids=list(BAD_ENTRIES))
def test_a_bad_entry_is_ignored_and_the_good_ones_kept(entry, caplog) -> None:
    model = tiny()
    good = Tuning("another model | cpu x1 | torch 2.0", 5, True, {"b5 channels_last": 0.25})
    sig = model_signature(model)
    path = tuning_file()
    path.parent.mkdir(parents=True)
    entries = {good.signature: {"batch_size": 5, "channels_last": True, "seconds_per_view": good.seconds_per_view}}
    path.write_text(json.dumps({"version": 1, "entries": {**entries, sig: entry}}))
    with caplog.at_level(logging.WARNING, "slowfast_zoo"):
        assert batch_for(model, 30) == 6
    assert "ignored" in caplog.text and sig[:40] in caplog.text
    assert stored_tuning(good.signature) == good
    store_tunings([Tuning(sig, 2, None, {})])
    assert stored_tuning(good.signature) == good and batch_for(model, 30) == 2


def test_nan_times_are_refused() -> None:
    model = tiny()
    path = tuning_file()
    path.parent.mkdir(parents=True)
    entry = '{"batch_size": 4, "channels_last": null, "seconds_per_view": {"b4": NaN}}'  # Python's json reads NaN
    path.write_text(f'{{"version": 1, "entries": {{{json.dumps(model_signature(model))}: {entry}}}}}')
    assert batch_for(model, 30) == 6


def test_oversized_fifo_and_folder_are_never_read(caplog) -> None:
    model = tiny()
    path = tuning_file()
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: larger than allowed, refused before a byte is read
    with caplog.at_level(logging.WARNING, "slowfast_zoo"):
        assert batch_for(model, 30) == 6
    assert f"{MAX_FILE_BYTES} bytes" in caplog.text
    path.unlink()
    os.mkfifo(path)  # a reader would block forever on a FIFO with no writer
    assert batch_for(model, 30) == 6
    path.unlink()
    path.mkdir()
    assert batch_for(model, 30) == 6


def test_a_planted_link_is_replaced_never_written_through(tmp_path) -> None:
    model = tiny()
    outside = tmp_path / "outside.json"
    outside.write_text("precious")
    path = tuning_file()
    path.parent.mkdir(parents=True)
    path.symlink_to(outside)
    store_tunings([Tuning(model_signature(model), 2, None, {})])
    assert outside.read_text() == "precious"
    assert not path.is_symlink() and batch_for(model, 30) == 2
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".incomplete")] == []


def test_bad_arguments_are_clear_errors() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        tune(model, repeats=0)
    with pytest.raises(ValueError, match=r"candidate batch sizes must be in 1\.\.1024"):
        tune(model, candidates=[0, 2])


def test_cli_tune_stores_what_predict_then_uses(tiny_dir, capsys) -> None:
    assert main(["tune", f"local-dir:{tiny_dir}", "--candidates", "1,2", "--repeats", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["batch_size"] in (1, 2) and out["file"] == str(tuning_file())
    model = load_model(f"local-dir:{tiny_dir}")
    assert tuned_batch(model) == out["batch_size"] and out["signature"] == model_signature(model)
    assert main(["tune", f"local-dir:{tiny_dir}", "--candidates", "1", "--repeats", "1"]) == 0
    text = capsys.readouterr().out
    assert "b1" in text and "<- chosen" in text and "stored in" in text
    with pytest.raises(SystemExit):  # argparse: "must be at least 1"
        main(["tune", f"local-dir:{tiny_dir}", "--candidates", "1,0"])
    assert "must be at least 1, got 0" in capsys.readouterr().err


def test_the_stored_file_is_plain_json_with_no_half_written_state() -> None:
    model = tiny()
    store_tunings([Tuning(model_signature(model), 3, None, {"b3": 0.5, "b5": None})])
    data = json.loads(tuning_file().read_text())
    assert data == {
        "version": 1,
        "entries": {model_signature(model): {"batch_size": 3, "channels_last": None, "seconds_per_view": {
            "b3": 0.5, "b5": None}}},
    }  # fmt: skip
    assert list(tuning_file().parent.glob("*.incomplete")) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (benchmarks/gpu.sh runs this on one)")
def test_tune_on_cuda_keeps_a_result_for_the_card() -> None:
    model = tiny().cuda()
    t = tune(model, candidates=[1, 2], repeats=1)
    assert f" | cuda {torch.cuda.get_device_name()} sm" in t.signature
    assert batch_for(model, 30) == t.batch_size and batch_for(model.cpu(), 30) == 6

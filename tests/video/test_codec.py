"""The torchcodec decoder: chosen by ``auto`` where it loads, a clear error where it is asked for and cannot load,
the same frames as PyAV for every protocol's views, and PyAV's guards for hostile files."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from video_factory import PROTOCOL_CONFIGS as PROTOCOLS  # noqa: E402
from video_factory import VFR_TIMES, read_index, write_corrupt_copy, write_decoder_clips, write_video  # noqa: E402

import slowfast_zoo  # noqa: E402
from slowfast_zoo.errors import SlowFastZooError  # noqa: E402
from slowfast_zoo.video import codec  # noqa: E402
from slowfast_zoo.video.codec import (  # noqa: E402
    DecoderUnavailableError,
    TorchCodecReader,
    open_reader,
    resolve_decoder,
    torchcodec_problem,
)
from slowfast_zoo.video.io import VideoError, VideoReader  # noqa: E402
from slowfast_zoo.video.views import plan_views  # noqa: E402

PROBLEM = torchcodec_problem()
needs_torchcodec = pytest.mark.skipif(
    PROBLEM is not None,
    reason=f'{PROBLEM}: pip install "slowfast-zoo[torchcodec]" and apt-get install {codec.FFMPEG_DEBIAN_PACKAGES}',
)


@pytest.fixture
def without_torchcodec(monkeypatch):
    """An environment where ``import torchcodec`` fails (as when it is not installed)."""
    monkeypatch.setitem(sys.modules, "torchcodec", None)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    torchcodec_problem.cache_clear()
    yield
    torchcodec_problem.cache_clear()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Index-drawn clips in the containers, codecs and timings the PyAV tests use, and the packaged sample clip."""
    return {"sample": slowfast_zoo.sample_video(), **write_decoder_clips(tmp_path_factory.mktemp("codec"))}


# ---- choosing the decoder -----------------------------------------------------------------------------------------
def test_auto_is_pyav_where_torchcodec_does_not_import(without_torchcodec, tmp_path):
    assert "torchcodec does not import" in torchcodec_problem()
    assert resolve_decoder("auto") == "pyav" and resolve_decoder("pyav") == "pyav"
    path = write_video(tmp_path / "v.mp4", num_frames=5)
    with open_reader(path, "auto") as r:
        assert type(r) is VideoReader and r.decoder == "pyav"


def test_an_explicit_torchcodec_that_cannot_load_says_what_to_install(without_torchcodec, tmp_path):
    path = write_video(tmp_path / "v.mp4", num_frames=5)
    for make in (lambda: open_reader(path, "torchcodec"), lambda: TorchCodecReader(path)):
        with pytest.raises(DecoderUnavailableError) as e:
            make()
        assert isinstance(e.value, SlowFastZooError) and isinstance(e.value, ImportError)
        message = str(e.value)
        assert 'pip install "slowfast-zoo[torchcodec]"' in message and "torchcodec does not import" in message
        assert all(pkg in message for pkg in codec.FFMPEG_DEBIAN_PACKAGES.split()), message


def test_the_tasks_refuse_an_unloadable_decoder_before_loading_the_model(without_torchcodec, tmp_path):
    path = write_video(tmp_path / "v.mp4", num_frames=5)
    with pytest.raises(DecoderUnavailableError):
        slowfast_zoo.predict(path, "no_such_model_is_looked_up", decoder="torchcodec")
    with pytest.raises(DecoderUnavailableError):
        slowfast_zoo.features.extract([path], "no_such_model_is_looked_up", tmp_path / "out", decoder="torchcodec")


def test_an_unknown_decoder_is_refused():
    with pytest.raises(ValueError, match="decoder must be one of auto, pyav, torchcodec; got 'ffmpeg'"):
        resolve_decoder("ffmpeg")


def test_the_cli_reports_the_missing_decoder_in_one_line(without_torchcodec, tmp_path, capsys):
    from slowfast_zoo.cli import main

    path = write_video(tmp_path / "v.mp4", num_frames=5)
    assert main(["predict", str(path), "--decoder", "torchcodec"]) != 0
    err = capsys.readouterr().err
    assert "slowfast-zoo[torchcodec]" in err and "libavcodec59" in err


@needs_torchcodec
def test_auto_is_torchcodec_where_it_loads(tmp_path):
    path = write_video(tmp_path / "v.mp4", num_frames=5)
    assert resolve_decoder("auto") == "torchcodec"
    with open_reader(path, "auto") as r:
        assert isinstance(r, TorchCodecReader) and r.decoder == "torchcodec"
    with open_reader(path, "pyav") as r:
        assert type(r) is VideoReader


@needs_torchcodec
def test_torchcodec_without_ffmpeg_is_not_chosen(monkeypatch):
    import torchcodec

    monkeypatch.setattr(torchcodec, "ffmpeg_major_version", None, raising=False)  # what it says without FFmpeg
    torchcodec_problem.cache_clear()
    try:
        assert torchcodec_problem() == "torchcodec found no FFmpeg shared libraries it can load"
        assert resolve_decoder("auto") == "pyav"
        with pytest.raises(DecoderUnavailableError, match="no FFmpeg shared libraries"):
            resolve_decoder("torchcodec")
    finally:
        torchcodec_problem.cache_clear()


# ---- the same frames ----------------------------------------------------------------------------------------------
@needs_torchcodec
@pytest.mark.parametrize("protocol", [*PROTOCOLS, "fast", "windows"])
@pytest.mark.parametrize(
    "video",
    ["sample", "h264.mp4", "h264-bframes.mkv", "vp9.webm", "mpeg4.avi", "mjpeg.mov", "vfr.mkv", "rotated90.mp4",
     "rotated180.mp4", "odd-size.mp4"],
)  # fmt: skip
def test_every_protocol_gets_pyavs_frames_bit_for_bit(videos, video, protocol):
    cfg = slowfast_zoo.get_pretrained_cfg(PROTOCOLS.get(protocol, "slowfast_r50_8x8.k400_pysf"))
    views = "reference" if protocol in PROTOCOLS else "fast"
    window = (0.2, 1.1) if protocol == "windows" else None
    with VideoReader(videos[video]) as a, TorchCodecReader(videos[video]) as b:
        plan_a = plan_views(cfg, a.info, views, window=window)
        plan_b = plan_views(cfg, b.info, views, window=window)
        want = list(a.read_views(plan_a))
        got = list(b.read_views(plan_b))
        assert b.decoder == "torchcodec"  # decoded by torchcodec, not by the fallback
    assert len(got) == len(want) == len(plan_a)
    for x, y in zip(got, want):
        assert x.dtype == torch.uint8 and x.shape == y.shape and torch.equal(x, y)


@needs_torchcodec
def test_frames_by_index_position_and_time_are_the_drawn_ones(videos):
    with TorchCodecReader(videos["vfr.mkv"]) as r:
        times = [0.0, 0.05, 0.11, 0.2, 0.305, 0.6, 0.97, 1.42, 5.0, -1.0]
        expected = [max([i for i, s in enumerate(VFR_TIMES) if s <= q], default=0) for q in times]
        assert [read_index(f) for f in r.frames_at(times).numpy()] == expected
    with TorchCodecReader(videos["h264-bframes.mkv"]) as r:
        assert [read_index(f) for f in r.frames_at_indices([74, 3, 3, 0, 40]).numpy()] == [74, 3, 3, 0, 40]
        assert [read_index(f) for f in r.frames_at_positions([0.5, 10, 200]).numpy()] == [0, 10, 74]
    with TorchCodecReader(videos["rotated90.mp4"]) as r:  # upright, as PyAV's reader turns it
        frames = r.frames_at_indices([0, 7]).numpy()
        assert frames.shape[1:3] == (64, 48) and [read_index(np.rot90(f, -1)) for f in frames] == [0, 7]


@needs_torchcodec
def test_predict_scores_are_the_same_with_either_decoder(videos, monkeypatch, one_thread):
    opened = []
    monkeypatch.setattr(codec, "TorchCodecReader", lambda *a, **kw: opened.append(1) or TorchCodecReader(*a, **kw))
    torch.manual_seed(0)
    model = slowfast_zoo.create(
        "slowfast_r50_8x8", width=8, num_classes=10, num_frames=16, crop_size=64, head_pool="fixed"
    )
    model.eval().pretrained_cfg = model.pretrained_cfg.replace(test_short_side=96, test_crop_size=96)
    a = slowfast_zoo.predict(videos["h264.mp4"], model, decoder="pyav")
    assert not opened
    b = slowfast_zoo.predict(videos["h264.mp4"], model, decoder="torchcodec")
    assert opened == [1]
    assert a.num_views == b.num_views == 30 and torch.equal(a.scores, b.scores)


@needs_torchcodec
def test_one_call_per_video_and_bounded_batches(videos, monkeypatch):
    cfg = slowfast_zoo.get_pretrained_cfg("slowfast_r50_8x8.k400_pysf")
    calls = []

    def counting(reader):
        inner = reader._tc.get_frames_at

        def get_frames_at(indices):
            calls.append(list(indices))
            return inner(indices=indices)

        reader._tc.get_frames_at = get_frames_at

    with TorchCodecReader(videos["h264.mp4"]) as r:
        counting(r)
        plan = plan_views(cfg, r.info, "reference")
        wanted = sorted({i for v in plan for i in v.frame_indices(r)})
        list(r.read_views(plan))
    assert calls == [wanted]  # all views' frames, sorted, in one call
    calls.clear()
    monkeypatch.setattr(codec, "MAX_BATCH_BYTES", 7 * 80 * 60 * 3)  # 7 frames of 80x60 per call
    with VideoReader(videos["h264.mp4"]) as a, TorchCodecReader(videos["h264.mp4"]) as b:
        counting(b)
        want, got = list(a.read_views(plan)), list(b.read_views(plan))
    assert [i for c in calls for i in c] == wanted and max(len(c) for c in calls) == 7
    assert all(torch.equal(x, y) for x, y in zip(got, want))


@needs_torchcodec
def test_a_disagreeing_torchcodec_hands_over_to_pyav(videos, caplog):
    cfg = slowfast_zoo.get_pretrained_cfg("slow_r50_8x8.k400_ptv")
    with VideoReader(videos["h264.mp4"]) as a:
        want = list(a.read_views(plan_views(cfg, a.info)))
    with TorchCodecReader(videos["h264.mp4"]) as r:
        inner = r._tc.get_frames_at
        r._tc.get_frames_at = lambda indices: inner(indices=[i + 1 for i in indices])  # the wrong frames
        with caplog.at_level(logging.WARNING, logger="slowfast_zoo.video.codec"):
            got = list(r.read_views(plan_views(cfg, r.info)))
        assert r.decoder == "pyav"
    assert "decoding with PyAV instead of torchcodec" in caplog.text and "timestamp" in caplog.text
    assert all(torch.equal(x, y) for x, y in zip(got, want))


# ---- hostile files: PyAV's guards hold before torchcodec opens anything --------------------------------------------
@pytest.fixture
def no_torchcodec_open(monkeypatch):
    """torchcodec's VideoDecoder made to fail the test if it is ever constructed."""
    from torchcodec import decoders

    def refuse(*args, **kwargs):
        raise AssertionError(f"torchcodec opened {args[:1]}")

    monkeypatch.setattr(decoders, "VideoDecoder", refuse)


@needs_torchcodec
def test_a_name_is_never_a_protocol(tmp_path, monkeypatch):
    """``concat:a.mp4`` is the file of that name; torchcodec given the bare name would open a.mp4 through FFmpeg's
    concat protocol (shown first)."""
    from torchcodec.decoders import VideoDecoder

    write_video(tmp_path / "a.mp4", num_frames=30, width=64, height=48)
    monkeypatch.chdir(tmp_path)
    write_video(tmp_path / "concat:a.mp4", num_frames=12, width=128, height=96)
    assert VideoDecoder("concat:a.mp4").metadata.width == 64  # the hazard is real
    with TorchCodecReader("concat:a.mp4") as r:
        frames = r.frames_at_indices([0, 11])
        assert r.decoder == "torchcodec" and frames.shape == (2, 96, 128, 3)
        assert [read_index(f) for f in frames.numpy()] == [0, 11]


@needs_torchcodec
def test_frames_over_the_limit_are_refused_before_torchcodec_opens(tmp_path, no_torchcodec_open):
    path = write_video(tmp_path / "v.mp4", num_frames=5, width=128, height=96)
    with pytest.raises(VideoError, match=r"frames of 128x96 exceed the limit of 10000 pixels"):
        TorchCodecReader(path, max_pixels=10_000)


@needs_torchcodec
def test_too_many_frames_are_refused_before_torchcodec_indexes_them(tmp_path, monkeypatch, no_torchcodec_open):
    from slowfast_zoo.video import io

    path = write_video(tmp_path / "v.mp4", num_frames=30)
    monkeypatch.setattr(io, "MAX_FRAMES", 20)
    with pytest.raises(VideoError, match=r"more than 20 frames \(MAX_FRAMES\)"):
        TorchCodecReader(path)


@needs_torchcodec
def test_not_regular_files_are_refused_before_torchcodec_opens(tmp_path, no_torchcodec_open):
    with pytest.raises(VideoError, match="/dev/zero: is not a regular file"):
        TorchCodecReader("/dev/zero")
    with pytest.raises(VideoError, match="is a directory"):
        TorchCodecReader(tmp_path)


@needs_torchcodec
def test_a_fifo_is_refused_not_read(tmp_path):
    fifo = tmp_path / "live.mp4"
    os.mkfifo(fifo)
    root = str(Path(slowfast_zoo.__file__).resolve().parents[1])
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {root!r})
        from slowfast_zoo.video.codec import TorchCodecReader
        try:
            TorchCodecReader({str(fifo)!r})
        except Exception as e:
            print(type(e).__name__, e)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.stdout.startswith("VideoError") and "is not a regular file" in done.stdout, done.stderr[-2000:]


@needs_torchcodec
def test_a_lying_header_gets_the_duration_the_packets_hold(tmp_path):
    path = write_video(tmp_path / "v.mkv", num_frames=30, fps=30)
    data = path.read_bytes()
    old = b"00:00:01.000000000"
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, b"99:00:00.000000000"))
    with TorchCodecReader(path) as r:
        assert r.declared_duration == pytest.approx(99 * 3600) and r.info.duration == pytest.approx(1.0, abs=0.05)
        assert [read_index(f) for f in r.frames_at([0.5, 0.99]).numpy()] == [15, 29]


@needs_torchcodec
@pytest.mark.parametrize("keep", [0.4, 0.6])
def test_a_truncated_file_fails_as_with_pyav(tmp_path, keep):
    data = write_video(tmp_path / "v.mkv", num_frames=60, fps=30).read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * keep)])
    with TorchCodecReader(cut) as r, pytest.raises(VideoError, match=r"cut\.mkv: truncated or corrupt video stream"):
        r.read_clip(1.0, 8, 4, 30.0)


@needs_torchcodec
def test_a_corrupt_stream_fails_as_with_pyav(tmp_path):
    bad = write_corrupt_copy(write_video(tmp_path / "v.mp4", num_frames=60, fps=30), tmp_path / "bad.mp4")
    with TorchCodecReader(bad) as r, pytest.raises(VideoError, match=r"bad\.mp4: corrupt video stream"):
        r.read_clip(0.0, 8, 8, 30.0)


# ---- the decoder through the tasks and the commands ---------------------------------------------------------------
@needs_torchcodec
def test_the_feature_commands_embeddings_are_the_same_with_either_decoder(
    videos, tiny_dir, tmp_path, monkeypatch, one_thread
):
    from slowfast_zoo.cli import main

    calls = []
    decode = TorchCodecReader._decode_indices
    monkeypatch.setattr(TorchCodecReader, "_decode_indices", lambda self, *a: calls.append(1) or decode(self, *a))
    paths = [str(videos["h264.mp4"]), str(videos["vfr.mkv"])]
    got, used = {}, {}
    for decoder in ("pyav", "torchcodec"):
        out = tmp_path / decoder
        argv = ["features", *paths, "-o", str(out), "--model", f"local-dir:{tiny_dir}", "--views", "reference"]
        assert main([*argv, "--no-progress", "--workers", "0", "--decoder", decoder]) == 0
        got[decoder] = slowfast_zoo.features.load_features(out)["embeddings"]
        used[decoder], calls[:] = len(calls), []
    assert used == {"pyav": 0, "torchcodec": 2}  # one torchcodec call per video, none when PyAV is asked for
    assert got["pyav"].shape[0] == 2 and torch.equal(got["pyav"], got["torchcodec"])


def test_evaluate_takes_the_decoder_from_the_command_line(tmp_path, monkeypatch):
    from slowfast_zoo.cli import main

    seen = {}
    monkeypatch.setattr(slowfast_zoo, "evaluate", lambda *a, **kw: seen.update(kw))  # returns None: "shard done"
    argv = ["evaluate", "m", "--dataset", "kinetics400", "--root", str(tmp_path), "--annotations", "a.csv"]
    assert main([*argv, "--out", str(tmp_path / "r.json"), "--decoder", "pyav"]) == 0
    assert seen["decoder"] == "pyav"
    assert main(argv) == 0 and seen["decoder"] == "auto"

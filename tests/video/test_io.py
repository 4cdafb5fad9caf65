"""Decoding: frames by position and time, several codecs/containers, VFR, rotation, padding, seeking, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from video_factory import (  # noqa: E402
    read_index,
    write_audio_only,
    write_corrupt_copy,
    write_video,
    write_zero_frame_video,
)

from slowfast_zoo.video.io import VideoError, VideoNotFoundError, VideoReader, probe, read_clip  # noqa: E402

DATA = Path(__file__).parents[1] / "data"
FORMATS = [("libx264", "mp4"), ("libx264", "mkv"), ("libvpx-vp9", "webm"), ("mpeg4", "avi"), ("mjpeg", "mov")]


def indices(frames: torch.Tensor) -> list[int]:
    return [read_index(f) for f in frames.numpy()]


@pytest.mark.parametrize(("codec", "ext"), FORMATS)
def test_every_frame_by_position(tmp_path, codec, ext):
    path = write_video(tmp_path / f"v.{ext}", num_frames=24, fps=30, codec=codec)
    with VideoReader(path) as r:
        assert (r.info.width, r.info.height) == (64, 48)
        assert r.info.fps == pytest.approx(30)
        frames = r.frames_at_positions(list(range(24)))
    assert frames.dtype == torch.uint8 and frames.shape == (24, 48, 64, 3)
    assert indices(frames) == list(range(24))


@pytest.mark.parametrize("fps", [30, 25, 30000 / 1001])
def test_read_clip_spreads_frames_by_linspace(tmp_path, fps):
    path = write_video(tmp_path / "v.mp4", num_frames=90, fps=fps)
    start_s, t, tau, target = 0.5, 8, 4, 30.0
    # read_clip's contract: a clip of T*tau/target*fps source frames, frames at positions linspace(start, end, T)
    # (PySlowFast's decode-everything branch; its test protocol picks by timestamp: tests/video/test_views.py)
    start = start_s * fps
    clip = t * tau / target * fps
    expected = np.floor(np.linspace(start, start + clip - 1, t, dtype=np.float32)).astype(int).tolist()
    assert indices(read_clip(path, start_s, t, tau, target)) == expected


def test_short_video_repeats_last_frame(tmp_path):
    path = write_video(tmp_path / "short.mp4", num_frames=10, fps=30)
    got = indices(read_clip(path, 0.0, 8, 8, 30.0))  # window of 64 frames, video has 10
    expected = np.clip(np.floor(np.linspace(0, 63, 8)), 0, 9).astype(int).tolist()
    assert got == expected and got[-1] == 9


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_variable_frame_rate_samples_by_time(tmp_path, ext):
    times = [0.0, 0.02, 0.1, 0.12, 0.3, 0.31, 0.5, 0.9, 0.95, 1.0]
    path = write_video(tmp_path / f"vfr.{ext}", num_frames=10, fps=10, times=times)
    queries = [0.0, 0.05, 0.11, 0.2, 0.305, 0.6, 0.97, 3.0]
    expected = [max(i for i, s in enumerate(times) if s <= q) for q in queries]
    with VideoReader(path) as r:
        assert indices(r.frames_at(queries)) == expected


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_applied(rotation):
    # written by write_video(num_frames=6, fps=30, rotation=...) with PyAV 18.1: older PyAV cannot write the display
    # matrix (no VideoStream.set_display_rotation), but every supported one reads it
    path = DATA / "rotated" / f"rot{rotation}.mp4"
    info = probe(path)
    assert info.rotation == rotation
    frames = read_clip(path, 0.0, 4, 1, 30.0)
    upright_hw = (64, 48) if rotation % 180 else (48, 64)
    assert frames.shape[1:3] == upright_hw == (info.height, info.width)
    # the display matrix rotates counter-clockwise: undo it with a clockwise np.rot90 to read the index
    assert [read_index(np.rot90(f, -rotation // 90)) for f in frames.numpy()] == [0, 1, 2, 3]


@pytest.mark.parametrize(("codec", "ext"), [("libx264", "mkv"), ("libvpx-vp9", "webm")])
def test_matroska_audio_longer_than_video_is_not_truncated(tmp_path, codec, ext):
    path = write_video(tmp_path / f"v.{ext}", num_frames=30, fps=30, codec=codec, audio_seconds=3.0)
    with av.open(str(path)) as c:  # the file really is so: the container lasts as long as the audio
        assert c.duration / 1e6 > 2.9 and c.streams.audio
    info = probe(path)
    assert info.duration == pytest.approx(1.0, abs=0.05) and info.num_frames == 30
    frames = read_clip(path, 0.5, 8, 8, 30.0)  # a window to 2.6 s: the video's last frame repeats, no error
    assert indices(frames) == np.clip(np.floor(np.linspace(15, 78, 8)), 0, 29).astype(int).tolist()


def test_unordered_and_repeated_requests(tmp_path):
    path = write_video(tmp_path / "v.mkv", num_frames=30, fps=30)
    with VideoReader(path) as r:
        assert indices(r.frames_at_positions([20, 3, 3, 29, 0])) == [20, 3, 3, 29, 0]


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """10 minutes at 5 fps with a keyframe every 25 frames (5 s)."""
    return write_video(tmp_path_factory.mktemp("long") / "long.mp4", num_frames=3000, fps=5, gop=25)


def test_seeking_bounds_decoded_frames(long_video):
    work = {}
    for start in (0.0, 540.0):
        with VideoReader(long_video) as r:
            frames = r.read_clip(start, 8, 8, 30.0)  # a 2.13 s window: 11 frames at 5 fps
            work[start] = r.frames_decoded
            assert read_index(frames[0].numpy()) == int(start * 5)
    # at most one keyframe interval (25) before the window, the window, and one lookahead frame
    assert work[540.0] <= 25 + 11 + 2
    assert work[540.0] <= work[0.0] + 27
    assert probe(long_video).duration == pytest.approx(600, abs=0.5)


def test_sequential_windows_do_not_reseek(long_video):
    with VideoReader(long_video) as r:
        for k in range(5):
            r.read_clip(100.0 + k * 0.5, 4, 2, 30.0)
        assert r.seeks == 1


@pytest.mark.parametrize(
    ("version", "level", "threads"),
    [
        ("15.0.0", None, True),  # PyAV 15 (av/logging.pyx): level None installs a callback that never takes the GIL
        ("17.0.0", 16, False),  # a level set (torchvision 0.19's import sets ERROR): the GIL before the level check
        ("18.0.0", 16, True),  # PyAV 18 (av/logging.py): the level is checked before taking the GIL
        ("18.0.0", None, True),
    ],
)
def test_frame_threads_only_where_ffmpeg_threads_cannot_deadlock(version, level, threads):
    from types import SimpleNamespace

    from slowfast_zoo.video.io import _threads_cannot_deadlock

    fake_av = SimpleNamespace(__version__=version, logging=SimpleNamespace(get_level=lambda: level))
    assert _threads_cannot_deadlock(fake_av) is threads


@pytest.mark.parametrize("safe", [True, False])
def test_reader_decodes_on_one_thread_where_threads_could_deadlock(tmp_path, monkeypatch, safe):
    import slowfast_zoo.video.io as io

    monkeypatch.setattr(io, "_threads_cannot_deadlock", lambda av: safe)
    path = write_video(tmp_path / "v.mp4", num_frames=30, fps=30)
    with VideoReader(path) as r:
        codec = r._stream.codec_context
        assert (codec.thread_count == 1) is not safe
        assert ("AUTO" in str(codec.thread_type)) is safe
        assert indices(r.frames_at_positions([0, 29])) == [0, 29]


# ---- bad input -----------------------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(VideoNotFoundError, match=r"nope\.mp4: no such file") as e:
        read_clip(missing)
    assert isinstance(e.value, FileNotFoundError)


def test_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are not the frames you are looking for\n" * 50)
    with pytest.raises(VideoError, match=r"notes\.mp4: not a readable video container"):
        read_clip(path)


def test_directory(tmp_path):
    with pytest.raises(VideoError, match="is a directory"):
        VideoReader(tmp_path)


def test_audio_only(tmp_path):
    path = write_audio_only(tmp_path / "sound.m4a")
    with pytest.raises(VideoError, match=r"sound\.m4a: has no video stream \(streams: audio\)"):
        probe(path)


def test_zero_frames(tmp_path):
    path = write_zero_frame_video(tmp_path / "empty.mkv")
    with pytest.raises(VideoError, match=r"empty\.mkv: video stream has zero frames"):
        probe(path)


@pytest.mark.parametrize("keep", [0.4, 0.6])
def test_truncated_matroska(tmp_path, keep):
    path = write_video(tmp_path / "v.mkv", num_frames=60, fps=30)
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(VideoError, match=r"cut\.mkv: truncated or corrupt video stream"):
        read_clip(cut, 1.0, 8, 4, 30.0)


def test_truncated_mp4_without_index(tmp_path):
    path = write_video(tmp_path / "v.mp4", num_frames=60, fps=30)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end
    with pytest.raises(VideoError, match=r"cut\.mp4: not a readable video container"):
        probe(cut)


def test_corrupt_stream(tmp_path):
    bad = write_corrupt_copy(write_video(tmp_path / "v.mp4", num_frames=60, fps=30), tmp_path / "bad.mp4")
    with pytest.raises(VideoError, match=r"bad\.mp4: corrupt video stream"):
        read_clip(bad, 0.0, 8, 8, 30.0)

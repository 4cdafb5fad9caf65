"""Hostile videos: bombs and hangs are refused or bounded. Each probe runs in a subprocess with a deadline (a hang
fails the test instead of stalling the suite) and reports its peak memory; the assertions are on behaviour and
memory, never on time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from video_factory import write_video  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("SFZ_PROBE_ROOT", TESTS.parent))  # another checkout: show a probe fails there
DEADLINE_S = 120  # a generous bound for a probe that should finish at once; only a hang reaches it
# Peak RSS of a probe: an interpreter with torch and a tiny model is ~0.8 GiB, and decoding the 4K clip adds ~0.2 GiB.
# The code before frames were resized in the decoder peaked at 4.7 GiB on the 4K clip and died on the 8192x8192 one.
PEAK_MIB = 2048


def probe(code: str, tmp_path: Path) -> dict:
    """Run ``code`` (defining ``result``) in a fresh interpreter; its result plus ``peak_mib`` (its own peak RSS)."""
    script = textwrap.dedent(
        """
        import json, sys
        sys.path[:0] = [{root!r}, {tests!r}]
        result = {{}}

        def tiny_classifier(name="slowfast_r50_8x8"):
            import slowfast_zoo
            frames = 16 if name.startswith("slowfast") else 4
            kw = dict(width=8, num_classes=10, num_frames=frames, crop_size=64, head_pool="fixed")
            m = slowfast_zoo.create(name, **kw).eval()
            m.pretrained_cfg = m.pretrained_cfg.replace(test_short_side=96, test_crop_size=96)
            return m

        try:
        {body}
        except Exception as e:
            result["error"] = f"{{type(e).__name__}}: {{e}}"
        # VmHWM: the peak of this process's own memory map. Not ru_maxrss, which on Linux carries the parent's peak
        # across fork/vfork + exec, so a probe started from a big test process reported that process's size.
        with open("/proc/self/status") as f:
            result["peak_mib"] = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
        print("RESULT " + json.dumps(result))
        """
    ).format(root=str(ROOT), tests=str(TESTS), body=textwrap.indent(textwrap.dedent(code), "    "))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=DEADLINE_S, cwd=tmp_path, env=env
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def write_huge_frames(path: Path, width: int, height: int, num_frames: int) -> Path:
    """A small H.264 file whose frames are ``width`` x ``height`` (flat grey compresses to almost nothing)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"preset": "ultrafast", "crf": "40"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in frame.planes:
            plane.update(np.full(plane.buffer_size, 128, np.uint8).tobytes())
        for i in range(num_frames):
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _decoders() -> list:
    """PyAV, and torchcodec where it loads (the same guards must hold for both)."""
    from slowfast_zoo.video.codec import torchcodec_problem

    problem = torchcodec_problem()
    return ["pyav", pytest.param("torchcodec", marks=pytest.mark.skipif(problem is not None, reason=str(problem)))]


@pytest.mark.parametrize("decoder", _decoders())
def test_frames_above_the_pixel_limit_are_refused_before_decoding(tmp_path, decoder):
    path = write_huge_frames(tmp_path / "bomb.mp4", 8192, 8192, 2)
    assert path.stat().st_size < 2_000_000
    code = f"""
    from slowfast_zoo.tasks.predict import predict
    predict({str(path)!r}, tiny_classifier(), views="reference", decoder={decoder!r})
    """
    got = probe(code, tmp_path)
    assert got["error"].startswith("VideoError") and "exceed the limit of" in got["error"], got
    assert got["peak_mib"] < PEAK_MIB, got  # no 8192x8192 frame was converted (one in RGB is 192 MiB; 32 were stacked)


@pytest.mark.parametrize("decoder", _decoders())
def test_large_frames_are_resized_as_they_are_decoded(tmp_path, decoder):
    """4K frames under the limit: each is scaled to the model's size as it comes out of the decoder, so memory holds
    small frames, not 16 full-size ones in float32 (3.2 GB before this was so). torchcodec returns its frames in
    batches of at most MAX_BATCH_BYTES (256 MiB) of RGB, each frame then scaled the same way."""
    path = write_huge_frames(tmp_path / "uhd.mp4", 3840, 2160, 20)
    code = f"""
    from slowfast_zoo.tasks.predict import predict
    from slowfast_zoo.video.codec import open_reader
    with open_reader({str(path)!r}, {decoder!r}) as r:
        out = predict(r, tiny_classifier(), views="reference")
        result["decoder"] = r.decoder
    result["views"] = out.num_views
    """
    got = probe(code, tmp_path)
    assert got.get("views") == 30 and got["decoder"] == decoder, got
    assert got["peak_mib"] < PEAK_MIB, got


def _tag_duration(path: Path, seconds: int) -> Path:
    """Rewrite the Matroska DURATION tag of the video stream to ``seconds`` (same length: the file stays valid)."""
    data = path.read_bytes()
    old = b"00:00:01.000000000"
    assert data.count(old) == 1, "expected one DURATION tag of 1 s"
    h, rest = divmod(seconds, 3600)
    new = f"{h}:{rest // 60:02d}:{rest % 60:02d}.00".encode()
    new = new + b"0" * (len(old) - len(new))
    assert len(new) == len(old)
    path.write_bytes(data.replace(old, new))
    return path


def test_a_lying_duration_tag_gives_the_windows_the_stream_holds(tmp_path):
    path = _tag_duration(write_video(tmp_path / "liar.mkv", num_frames=30, fps=30, width=128, height=96), 10**12)
    assert path.stat().st_size < 20_000
    with av.open(str(path)) as c:  # the file does claim 1e12 s
        assert c.streams.video[0].metadata["DURATION"].startswith("277777777:46:40")
    code = f"""
    from slowfast_zoo.tasks.predict import predict_windows
    from slowfast_zoo.video.io import VideoReader
    with VideoReader({str(path)!r}) as r:
        result["duration"] = r.info.duration
        result["declared"] = r.declared_duration
    model = tiny_classifier("slow_r50_8x8")
    result["windows"] = [(w.start, w.end) for w in predict_windows({str(path)!r}, model, 0.5, 0.25)]
    """
    got = probe(code, tmp_path)
    assert "error" not in got, got
    assert got["declared"] == pytest.approx(1e12) and got["duration"] == pytest.approx(1.0, abs=0.05)
    assert got["windows"] == [[0.0, 0.5], [0.25, 0.75], [0.5, 1.0]]


def _endless_ts_writer(fifo: Path, stop: threading.Event) -> None:
    """Write an MPEG-TS stream into ``fifo`` until told to stop (a live source: it never ends)."""
    try:
        with open(fifo, "wb") as f, av.open(f, "w", format="mpegts") as container:
            stream = container.add_stream("mpeg2video", rate=Fraction(30))
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            i = 0
            while not stop.is_set():
                frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i % 256, np.uint8), format="rgb24")
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
                i += 1
    except (BrokenPipeError, OSError, av.error.FFmpegError):
        pass  # the reader went away


@pytest.mark.parametrize("writer", [False, True], ids=["fifo-without-writer", "fifo-with-endless-mpegts"])
def test_a_fifo_is_refused_not_read(tmp_path, writer):
    fifo = tmp_path / "live.ts"
    os.mkfifo(fifo)
    stop = threading.Event()
    thread = None
    if writer:
        thread = threading.Thread(target=_endless_ts_writer, args=(fifo, stop), daemon=True)
        thread.start()
    try:
        code = f"""
        from slowfast_zoo.video.io import VideoReader, frame_table
        for fn in (VideoReader, frame_table):
            try:
                fn({str(fifo)!r})
            except Exception as e:
                result[fn.__name__] = f"{{type(e).__name__}}: {{e}}"
        """
        got = probe(code, tmp_path)
    finally:
        stop.set()
        if thread is not None:
            with open(fifo, "rb"):  # let a writer blocked in open() go on, see the flag and stop
                pass
            thread.join(timeout=DEADLINE_S)
    for fn in ("VideoReader", "frame_table"):
        assert got[fn].startswith("VideoError") and "is not a regular file" in got[fn], got


def test_a_device_is_refused(tmp_path):
    from slowfast_zoo.video.io import VideoError, VideoReader

    with pytest.raises(VideoError, match="/dev/zero: is not a regular file"):
        VideoReader("/dev/zero")


def test_a_name_is_never_a_protocol(tmp_path, monkeypatch):
    """A file called ``concat:...`` is that file, not FFmpeg's concat protocol over other files."""
    from slowfast_zoo.video.io import VideoError, VideoReader

    write_video(tmp_path / "a.mp4", num_frames=10)
    monkeypatch.chdir(tmp_path)
    Path("concat:a.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoError, match="not a readable video container"):
        VideoReader("concat:a.mp4")

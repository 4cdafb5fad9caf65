"""Synthetic test videos written with PyAV: every frame carries its own index, so tests can tell which was decoded.

The index is drawn as 16 bits, one 8x8 black/white block each, in the two top block rows of the frame (bit 0 at the
top-left); the rest is a mid-grey gradient. Lossy codecs keep blocks this large on the right side of 128.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

BLOCK = 8
BITS = 16


def index_frame(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """An RGB uint8 frame (height, width, 3) showing ``i``."""
    assert width >= BLOCK * BITS // 2 and height >= 2 * BLOCK
    frame = np.empty((height, width, 3), np.uint8)
    frame[...] = np.linspace(64, 192, width, dtype=np.uint8)[None, :, None]
    for b in range(BITS):
        r, c = divmod(b, BITS // 2)
        frame[r * BLOCK : (r + 1) * BLOCK, c * BLOCK : (c + 1) * BLOCK] = 255 if (i >> b) & 1 else 0
    return frame


def read_index(frame: np.ndarray) -> int:
    """The index :func:`index_frame` drew (on an upright frame)."""
    gray = np.asarray(frame, dtype=np.float64).mean(axis=-1)
    value = 0
    for b in range(BITS):
        r, c = divmod(b, BITS // 2)
        block = gray[r * BLOCK + 2 : (r + 1) * BLOCK - 2, c * BLOCK + 2 : (c + 1) * BLOCK - 2]
        value |= int(block.mean() > 128) << b
    return value


CODEC_OPTIONS = {
    "libx264": {"crf": "12", "preset": "ultrafast"},
    "libx265": {"crf": "12", "preset": "ultrafast", "x265-params": "log-level=none"},
    "libvpx-vp9": {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"},
    "libvpx": {"crf": "4", "b": "1M", "deadline": "realtime", "cpu-used": "8"},
}


def write_video(
    path: Path | str,
    num_frames: int = 60,
    fps: float = 30,
    codec: str = "libx264",
    width: int = 64,
    height: int = 48,
    *,
    times: Sequence[float] | None = None,
    rotation: int | None = None,
    gop: int | None = None,
    audio: bool = False,
    audio_seconds: float | None = None,
    bframes: int = 0,
    pyramid: str | None = None,
) -> Path:
    """Write frames ``index_frame(0..num_frames-1)``; ``times`` (seconds) makes it variable frame rate.

    ``audio`` adds a silent track as long as the video (``audio_seconds``: of that length); ``bframes`` lets x264
    use up to that many B-frames (presentation order then differs from decoding order), ``pyramid`` (x264's
    ``b-pyramid``: none, strict, normal) whether some of them are references.
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    options = dict(CODEC_OPTIONS.get(codec, {}))
    if bframes:
        options["x264-params"] = f"bframes={bframes}" + (f":b-pyramid={pyramid}" if pyramid else "")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec in ("mpeg4", "mjpeg"):
            stream.bit_rate = 4_000_000
        if gop is not None:
            stream.codec_context.gop_size = gop
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            if not hasattr(stream, "set_display_rotation"):  # PyAV < 18 reads a display matrix but cannot write one
                pytest.skip(f"writing a rotated video needs PyAV 18 (set_display_rotation), not {av.__version__}")
            stream.set_display_rotation(rotation)
        audio = audio or audio_seconds is not None
        webm = path.suffix == ".webm"  # WebM takes Opus or Vorbis, not AAC
        astream = container.add_stream("libopus" if webm else "aac", rate=48000 if webm else 16000) if audio else None
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, width, height), format="rgb24")
            if times is not None:
                frame.pts = round(times[i] * 1000)
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if astream is not None:
            _write_silence(container, astream, audio_seconds if audio_seconds is not None else num_frames / fps)
    return path


def _write_silence(container: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    rate = stream.rate or 16000
    samples = int(seconds * rate)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.float32), format="fltp", layout="mono")
    frame.sample_rate = rate
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_audio_only(path: Path | str, seconds: float = 1.0) -> Path:
    path = Path(path)
    with av.open(str(path), "w") as container:
        _write_silence(container, container.add_stream("aac", rate=16000), seconds)
    return path


def write_zero_frame_video(path: Path | str) -> Path:
    """A Matroska file with a declared video stream and no video packets (audio keeps the muxer writing)."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=30)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        _write_silence(container, container.add_stream("aac", rate=16000), 0.5)
    return path


def write_corrupt_copy(path: Path | str, out: Path | str) -> Path:
    """``path`` with a quarter of its bytes, from a third in, replaced by noise (a stream that fails to decode)."""
    data = bytearray(Path(path).read_bytes())
    n = len(data)
    data[n // 3 : n // 3 + n // 4] = np.random.default_rng(0).integers(0, 256, n // 4, dtype=np.uint8).tobytes()
    Path(out).write_bytes(bytes(data))
    return Path(out)


#: a pretrained config for every classification frame rule (``test_clip_sampler``) the zoo has
PROTOCOL_CONFIGS = {
    "pysf_uniform": "slowfast_r50_8x8.k400_pysf",
    "ptv_constant": "slow_r50_8x8.k400_ptv",
    "pysf_charades": "slowfast_r50_16x8.charades_pysf",
    "ptv_charades": "slow_r50_8x8.charades_ptv",
    "segments": "slowfast_r50_8x8.ssv2_ptv",
}

#: frame times (seconds) of the variable-frame-rate clip of :func:`write_decoder_clips`
VFR_TIMES = (0.0, 0.02, 0.1, 0.12, 0.3, 0.31, 0.5, 0.9, 0.95, 1.0, 1.4, 1.45, 2.0, 2.1, 2.5)


def write_decoder_clips(folder: Path) -> dict[str, Path]:
    """Clips in the containers, codecs and timings a decoder must handle alike, by name (index-drawn frames)."""
    return {
        "h264.mp4": write_video(folder / "a.mp4", num_frames=90, fps=30, width=80, height=60),
        "h264-bframes.mkv": write_video(folder / "b.mkv", num_frames=75, fps=25, bframes=3),
        "vp9.webm": write_video(folder / "c.webm", num_frames=40, fps=30, codec="libvpx-vp9"),
        "mpeg4.avi": write_video(folder / "d.avi", num_frames=40, fps=30, codec="mpeg4"),
        "mjpeg.mov": write_video(folder / "e.mov", num_frames=40, fps=30, codec="mjpeg"),
        "vfr.mkv": write_video(folder / "f.mkv", num_frames=len(VFR_TIMES), fps=10, times=VFR_TIMES),
        "rotated90.mp4": write_video(folder / "g.mp4", num_frames=40, fps=30, rotation=90),
        "rotated180.mp4": write_video(folder / "h.mp4", num_frames=40, fps=30, rotation=180),
        "odd-size.mp4": write_video(folder / "i.mp4", num_frames=40, fps=24, width=130, height=98),
    }


# ---- the sample clip shipped in slowfast_zoo/assets -------------------------------------------------------------
def sample_frame(t: float, width: int = 320, height: int = 240) -> np.ndarray:
    """A procedural scene at time ``t``: three balls in a juggling cascade above two hands, on a sky gradient."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = 120 + 60 * yy / height
    img[..., 1] = 160 + 50 * yy / height
    img[..., 2] = 230 - 40 * yy / height
    img[yy > height * 0.8] = (90, 140, 70)  # ground
    # body and hands
    cx, base = width / 2, height * 0.78
    img[(abs(xx - cx) < 18) & (yy > height * 0.5) & (yy < base)] = (40, 60, 150)
    img[(xx - cx) ** 2 + (yy - height * 0.43) ** 2 < 15**2] = (230, 190, 160)
    period = 1.2
    colors = ((230, 40, 40), (250, 200, 30), (40, 190, 80))
    for k in range(3):
        phase = ((t / period + k / 3) % 1.0) * 2  # each ball crosses left->right then right->left
        side = -1 if phase < 1 else 1
        u = phase % 1.0
        x = cx + side * (1 - 2 * u) * 55
        y = height * 0.6 - 4 * u * (1 - u) * height * 0.45
        img[(xx - x) ** 2 + (yy - y) ** 2 < 9**2] = colors[k]
    hand = 6 * math.sin(2 * math.pi * t / period * 1.5)
    for side in (-1, 1):
        img[(xx - (cx + side * 55)) ** 2 + (yy - (height * 0.62 + side * hand)) ** 2 < 8**2] = (230, 190, 160)
    return img.clip(0, 255).astype(np.uint8)


def write_sample_clip(path: Path | str, seconds: float = 4.0, fps: int = 30) -> Path:
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "30", "preset": "veryslow"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(sample_frame(i / fps), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


if __name__ == "__main__":  # regenerate the packaged sample: python tests/video_factory.py
    out = Path(__file__).resolve().parents[1] / "slowfast_zoo" / "assets" / "sample.mp4"
    out.parent.mkdir(exist_ok=True)
    print(write_sample_clip(out), out.stat().st_size, "bytes")

"""Which library decodes a video's frames: PyAV (always there) or torchcodec (optional), chosen per reader.

``decoder="auto"`` takes torchcodec when it imports and has loaded FFmpeg's shared libraries, else PyAV, whatever
the frame size: decoding whole videos as the tasks do (each frame prepared as it is decoded), torchcodec was the
faster of the two on the CPU from 640x360 to 1920x1080 (measured on one 2-core AMD EPYC: README, "Pipeline speed").
``"pyav"`` and ``"torchcodec"`` ask for one (the latter fails with :class:`DecoderUnavailableError`, saying what to
install, where it cannot load). Install torchcodec with ``pip install "slowfast-zoo[torchcodec]"``; unlike PyAV it
ships no FFmpeg, so the system's is needed (Debian 12: ``apt-get install`` :data:`FFMPEG_DEBIAN_PACKAGES`).

:class:`TorchCodecReader` is a :class:`~.io.VideoReader` in everything but the decoding: PyAV opens the file (the same
guards: regular files only, never a protocol, the frame-size limit from the stream header, the duration capped at
the last packet) and reads the frame timestamps from the packets, so the protocols pick the same frames whichever
library decodes them. torchcodec then decodes the sorted frames of all views by index, in one call per video
(several when the raw frames would pass :data:`MAX_BATCH_BYTES`), and each frame's timestamp is checked against the
one asked for. Where torchcodec disagrees with PyAV about the stream or fails, the reader logs a warning and decodes
with PyAV from there.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from ..errors import SlowFastZooError
from .io import MAX_PIXELS, SEEK_THRESHOLD_S, VideoReader

__all__ = [
    "DECODERS",
    "FFMPEG_DEBIAN_PACKAGES",
    "MAX_BATCH_BYTES",
    "DecoderUnavailableError",
    "TorchCodecReader",
    "open_reader",
    "resolve_decoder",
    "torchcodec_problem",
]

log = logging.getLogger(__name__)

DECODERS: tuple[str, ...] = ("auto", "pyav", "torchcodec")
#: FFmpeg 5.1's shared libraries on Debian 12 (bookworm), all of which torchcodec links; any FFmpeg 4 to 8 works
FFMPEG_DEBIAN_PACKAGES = "libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8"
#: raw RGB bytes one torchcodec call may return (frames past it go to the next call): 256 MiB is ~1,000 frames at
#: 340x256, ~97 at 1280x720
MAX_BATCH_BYTES = 256 * 2**20


class DecoderUnavailableError(SlowFastZooError, ImportError):
    """The decoder asked for cannot be loaded here; the message says what to install."""


@functools.cache
def torchcodec_problem() -> str | None:
    """Why torchcodec cannot decode videos in this environment, or None when it can (checked once)."""
    try:
        import torchcodec
        from torchcodec.decoders import VideoDecoder  # noqa: F401  (older releases load FFmpeg here)
    except Exception as e:  # ImportError, or OSError/RuntimeError from a library that does not load
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"torchcodec does not import ({type(e).__name__}: {first[:200]})"
    if getattr(torchcodec, "ffmpeg_major_version", 0) is None:  # newer releases import without FFmpeg and say so
        return "torchcodec found no FFmpeg shared libraries it can load"
    return None


def resolve_decoder(decoder: str) -> str:
    """``"pyav"`` or ``"torchcodec"``: what ``decoder`` (one of :data:`DECODERS`) means here."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}; got {decoder!r}")
    if decoder == "pyav":
        return "pyav"
    problem = torchcodec_problem()
    if problem is None:
        return "torchcodec"
    if decoder == "auto":
        return "pyav"
    raise DecoderUnavailableError(
        f'decoder="torchcodec" cannot be used: {problem}. Install it with pip install "slowfast-zoo[torchcodec]" '
        f"and FFmpeg's shared libraries (Debian 12: apt-get install {FFMPEG_DEBIAN_PACKAGES}; "
        'any FFmpeg 4 to 8), or use decoder="pyav"'
    )


def open_reader(path: str | os.PathLike[str], decoder: str = "auto", **kwargs: Any) -> VideoReader:
    """A reader for ``path`` decoding with ``decoder`` (see the module doc); ``kwargs`` go to the reader."""
    if resolve_decoder(decoder) == "torchcodec":
        return TorchCodecReader(path, **kwargs)
    return VideoReader(path, **kwargs)


class _Disagreement(SlowFastZooError):
    """torchcodec's view of the stream differs from PyAV's (the reader goes on with PyAV)."""


class TorchCodecReader(VideoReader):
    """A :class:`~.io.VideoReader` whose frames torchcodec decodes, in batches by index (see the module doc).

    ``device="cuda"`` decodes on the GPU (NVDEC; needs a CUDA build of torchcodec and an FFmpeg with NVDEC); frames
    then come back on that device. (Not tested here: the tests run on CPUs.) A rotated video is decoded on the CPU,
    where torchcodec applies the rotation.
    """

    decoder = "torchcodec"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        seek_threshold: float = SEEK_THRESHOLD_S,
        max_pixels: int = MAX_PIXELS,
        device: str | torch.device = "cpu",
    ) -> None:
        resolve_decoder("torchcodec")  # the clear error where it cannot load
        super().__init__(path, seek_threshold=seek_threshold, max_pixels=max_pixels)
        self._tc: Any = None
        try:
            self._tc = self._open_torchcodec(torch.device(device))
        except _Disagreement as e:
            self._fall_back(e)
        except BaseException:
            self.close()
            raise

    def _open_torchcodec(self, device: torch.device) -> Any:
        from torchcodec.decoders import VideoDecoder

        self.frame_table()  # first: refuses more than MAX_FRAMES frames before torchcodec indexes them all
        if self.info.rotation and device.type != "cpu":
            device = torch.device("cpu")  # torchcodec rotates frames on the CPU path
        # "file:" as for PyAV: a name like "concat:a|b" is that file, not an FFmpeg protocol
        try:
            tc = VideoDecoder(
                "file:" + str(Path(self.path).absolute()),
                stream_index=self._stream.index,
                dimension_order="NHWC",
                num_ffmpeg_threads=0,  # FFmpeg's choice, as PyAV's thread_type="AUTO"
                device=str(device),
                seek_mode="exact",  # frame indices in presentation order, from a scan of the packets (as the table's)
            )
        except (RuntimeError, ValueError) as e:
            raise _Disagreement(f"torchcodec cannot open it ({_reason(e)})") from e
        md = tc.metadata
        if (md.width, md.height) != (self.info.width, self.info.height):
            # the frame-size limit was checked on PyAV's reading of the header: torchcodec must allocate the same
            raise _Disagreement(
                f"torchcodec reads {md.width}x{md.height} frames, PyAV {self.info.width}x{self.info.height}"
            )
        if self.info.rotation and getattr(md, "rotation", None) is None:
            raise _Disagreement("this torchcodec does not apply the display rotation")
        return tc

    def _fall_back(self, why: object) -> None:
        log.warning("%s: decoding with PyAV instead of torchcodec: %s", self.path, why)
        self._tc = None
        self.decoder = "pyav"

    def close(self) -> None:
        self._tc = None
        super().close()

    # ---- decoding ----------------------------------------------------------------------------------------------
    def _decoded(self, times: list[Fraction]) -> Iterator[tuple[Fraction, Fraction, Any]]:
        if self._tc is None:
            yield from super()._decoded(times)
            return
        index = self._table_indices(times)  # the frame on screen at each time (sets the start if none declared)
        pts = self.frame_table().pts
        start = self._start_pts if self._start_pts is not None else pts[0]
        end = (pts[-1] - start) * self._tb
        for t, i in zip(times, index):
            if i == len(pts) - 1:  # past the last frame: fail as PyAV does if the header promised much more
                self._check_not_truncated(t, end)
        wanted = sorted(set(index))
        per_call = max(1, MAX_BATCH_BYTES // (self.info.width * self.info.height * 3))
        done = 0  # times given so far
        for first in range(0, len(wanted), per_call):
            chunk = wanted[first : first + per_call]
            try:
                frames = self._decode_indices(chunk, [pts[i] for i in chunk])
            except _Disagreement as e:
                self._fall_back(e)
                yield from super()._decoded(times[done:])
                return
            got = dict(zip(chunk, frames))
            while done < len(times) and index[done] in got:
                i = index[done]
                yield times[done], (pts[i] - start) * self._tb, got[i]
                done += 1

    def _decode_indices(self, indices: list[int], expected_pts: list[int]) -> torch.Tensor:
        """Frames ``indices`` (ascending) from torchcodec, checked to be the ones with ``expected_pts``."""
        try:
            batch = self._tc.get_frames_at(indices=indices)
        except (RuntimeError, IndexError, ValueError) as e:
            where = f"frames {indices[0]}..{indices[-1]}"
            raise _Disagreement(f"torchcodec failed to decode {where} ({_reason(e)})") from e
        data = batch.data
        if tuple(data.shape[1:]) != (self.info.height, self.info.width, 3):
            raise _Disagreement(f"torchcodec returned frames of shape {tuple(data.shape[1:])}")
        tick = float(self._tb)
        for i, want, have in zip(indices, expected_pts, batch.pts_seconds.tolist()):
            if abs(have - want * tick) > tick / 2:
                raise _Disagreement(f"frame {i}: torchcodec's timestamp {have:.6f}s, the packets' {want * tick:.6f}s")
        return data

    def _rgb(self, frame: Any) -> torch.Tensor:
        if isinstance(frame, torch.Tensor):
            return frame  # torchcodec's: RGB (H, W, 3), upright, already
        return super()._rgb(frame)  # PyAV's, after a hand-over


def _reason(e: Exception) -> str:
    """The last line of an error's message (torchcodec's name the source file first), at most 300 characters."""
    text = str(e).strip()
    return text.splitlines()[-1][:300] if text else type(e).__name__

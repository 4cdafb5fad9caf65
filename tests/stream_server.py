"""A live video server for the tests, run as its own process: encodes synthetic frames with PyAV as MPEG-TS and
streams them over TCP (or as an HTTP response body, ``--http``) on 127.0.0.1 (OS-assigned port, printed as the
first line of stdout).

Every byte it sends is also written to ``--copy`` so a test can decode the very same stream from a file. Modes:

- ``frames`` (default): ``--frames`` frames at ``--fps``, then the connection is closed (the stream ends);
  with ``--hold`` the connection stays open, silent, until stdin is closed (a stalled source).
- ``garbage``: random bytes, then close.
- ``huge``: a YUV4MPEG2 header declaring a ``--width`` x ``--height`` picture, then 64 KiB, then close.

Run: ``python stream_server.py --copy out.ts [--frames 120] [--fps 30] [--realtime] [--hold] [--mode ...]``.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from video_factory import index_frame


class Server:
    """``stream_server.py`` in its own process; ``url`` to connect to, ``copy`` holds every byte it sent."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.copy = tmp_path / "sent.ts"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--copy", str(self.copy), *args],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,
            text=True,
        )
        port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{port}/live.ts" if "--http" in args else f"tcp://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


class Tee:
    """A write-only file object that sends to the socket and copies to a file."""

    def __init__(self, conn: socket.socket, copy: Path) -> None:
        self.conn, self.copy = conn, copy.open("wb")

    def write(self, data: bytes) -> int:
        self.conn.sendall(data)
        self.copy.write(data)
        return len(data)

    def flush(self) -> None:
        self.copy.flush()

    def close(self) -> None:
        self.copy.close()


def frame(i: int, width: int, height: int) -> np.ndarray:
    """The index frame with a moving bright bar, so that consecutive frames differ everywhere a model looks."""
    img = index_frame(i, width, height)
    x = (i * 3) % width
    img[height // 2 :, x : x + 6] = (255, 64, 32)
    return img


def serve_frames(out: Tee, args: argparse.Namespace) -> None:
    import av

    with av.open(out, mode="w", format="mpegts") as container:
        stream = container.add_stream("mpeg2video", rate=Fraction(args.fps))
        stream.width, stream.height, stream.pix_fmt = args.width, args.height, "yuv420p"
        stream.codec_context.options = {"bf": "0", "g": "15", "qscale": "2"}
        began = time.monotonic()
        for i in range(args.frames):
            if args.realtime:  # send each frame when a camera would have
                time.sleep(max(0.0, began + i / args.fps - time.monotonic()))
            vf = av.VideoFrame.from_ndarray(frame(i, args.width, args.height), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copy", type=Path, required=True)
    parser.add_argument("--mode", choices=["frames", "garbage", "huge"], default="frames")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--http", action="store_true", help="answer an HTTP GET with the stream (else raw TCP)")
    parser.add_argument("--realtime", action="store_true", help="send frames at --fps, as a camera does")
    parser.add_argument("--hold", action="store_true", help="keep the connection open until stdin closes")
    args = parser.parse_args()
    with socket.create_server(("127.0.0.1", 0)) as server:
        print(server.getsockname()[1], flush=True)
        conn, _ = server.accept()
        with conn:
            if args.http:  # one GET, answered with a body of unknown length, as live HTTP streams are
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 65536:
                    request += conn.recv(4096) or b"\r\n\r\n"
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n")
            out = Tee(conn, args.copy)
            try:
                if args.mode == "frames":
                    serve_frames(out, args)
                elif args.mode == "garbage":
                    out.write(np.random.default_rng(0).integers(0, 256, 1 << 16, dtype=np.uint8).tobytes())
                else:
                    header = f"YUV4MPEG2 W{args.width} H{args.height} F30:1 Ip A1:1 C420jpeg\nFRAME\n"
                    out.write(header.encode() + bytes(1 << 16))
            except (BrokenPipeError, ConnectionResetError):
                return  # the client went away first
            finally:
                out.close()
            if args.hold:
                sys.stdin.read()


if __name__ == "__main__":
    main()

"""torchcodec's frames against PyAV's, and what a difference would do to a model's scores (one run, prints a table).

    python benchmarks/decoder_exactness.py [--out exactness.json]

Videos: the packaged sample clip; clips drawn by the tests' factory (H.264 mp4 and with B-frames in mkv, VP9 WebM,
MPEG-4 AVI, MJPEG MOV with full-range YUV, variable frame rate, display rotation of 90 and 180 degrees, an odd size,
H.264 with 8 B-frames in a strict pyramid, HEVC); and 2 s of the benchmark's synthetic H.264 at 340x256, 640x360 and
1280x720 (benchmarks/pipeline.py). For every classification protocol (one pretrained config per frame rule), the
views PyAV's reader decodes are compared with ``TorchCodecReader``'s, frame by frame: the largest absolute
difference of a uint8 value and the fraction of values that differ. Then ``predict`` with a small random-weight
network of each protocol's architecture, once per decoder: whether the top-1 and top-5 classes agree and the largest
difference of a logit over all views. PyAV's reader skips the non-reference frames no view needs (``pyav_decoded``:
the frames it decoded, of ``stream_frames``) and torchcodec decodes them all, so equal frames also show that
skipping changes none.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from video_factory import PROTOCOL_CONFIGS as PROTOCOLS  # noqa: E402

import slowfast_zoo  # noqa: E402
from slowfast_zoo.video.codec import TorchCodecReader, torchcodec_problem  # noqa: E402
from slowfast_zoo.video.io import VideoReader  # noqa: E402
from slowfast_zoo.video.views import plan_views  # noqa: E402


def make_videos(folder: Path) -> dict[str, Path]:
    from pipeline import write_video as write_synthetic
    from video_factory import write_decoder_clips, write_video

    videos = {"sample.mp4 (packaged)": slowfast_zoo.sample_video(), **write_decoder_clips(folder)}
    videos["h264-bpyramid.mp4"] = write_video(folder / "p.mp4", num_frames=90, fps=30, bframes=8, pyramid="strict")
    videos["hevc.mp4"] = write_video(folder / "x.mp4", num_frames=60, fps=30, codec="libx265")
    for w, h in ((340, 256), (640, 360), (1280, 720)):
        videos[f"synthetic {w}x{h}"] = write_synthetic(folder / f"s{w}.mp4", w, h, seconds=2)
    return videos


def compare_frames(path: Path, cfg: Any) -> dict[str, Any]:
    """Frame differences over all views, one view at a time (a 720p charades plan is 640 frames: 1.8 GB)."""
    frames = largest = differing = values = 0
    with VideoReader(path) as a, TorchCodecReader(path) as b:
        for want, got in zip(a.read_views(plan_views(cfg, a.info)), b.read_views(plan_views(cfg, b.info))):
            diff = (want.short() - got.short()).abs()
            frames += want.shape[0]
            largest = max(largest, int(diff.max()))
            differing += int((diff > 0).sum())
            values += diff.numel()
        decoder, decoded, stream = b.decoder, a.frames_decoded, len(a.frame_table().pts)
    return {
        "frames": frames,
        "max_abs": largest,
        "fraction_differing": differing / values,
        "decoded_by": decoder,
        "pyav_decoded": decoded,
        "stream_frames": stream,
    }


def tiny_model(cfg_name: str) -> Any:
    """A width-8 random-weight network of the config's architecture, 10 classes, tested at 96 pixels."""
    cfg = slowfast_zoo.get_pretrained_cfg(cfg_name).replace(test_short_side=96, test_crop_size=96)
    torch.manual_seed(0)
    model = slowfast_zoo.create(
        cfg.arch, width=8, num_classes=10, num_frames=cfg.num_frames, crop_size=96, head_pool="fixed"
    )
    with torch.no_grad():  # random BatchNorm statistics, so the scores depend on every input value
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model.eval().pretrained_cfg = cfg
    return model


def compare_scores(path: Path, cfg_name: str) -> dict[str, Any]:
    model = tiny_model(cfg_name)
    inner, logits = model.position_logits, []

    def recording(x: Any) -> torch.Tensor:
        out = inner(x)
        logits.append(out.detach().float().flatten())
        return out

    model.position_logits = recording
    results = {}
    for decoder in ("pyav", "torchcodec"):
        logits.clear()
        scores = slowfast_zoo.predict(path, model, decoder=decoder, top_k=5).scores
        results[decoder] = (scores, torch.cat(logits))
    (sa, la), (sb, lb) = results["pyav"], results["torchcodec"]
    return {
        "top1_same": bool(sa.argmax() == sb.argmax()),
        "top5_same": sa.topk(5).indices.tolist() == sb.topk(5).indices.tolist(),
        "max_logit_diff": float((la - lb).abs().max()),
        "max_score_diff": float((sa - sb).abs().max()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="also write the results as JSON")
    args = p.parse_args()
    problem = torchcodec_problem()
    if problem is not None:
        sys.exit(f"torchcodec cannot be used here: {problem}")
    import av
    import torchcodec

    torch.set_num_threads(1)  # the same summation order for both runs of the model
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchcodec": torchcodec.__version__,
        "torchcodec_ffmpeg_major": torchcodec.ffmpeg_major_version,
        "pyav": av.__version__,
        "pyav_ffmpeg": ".".join(map(str, av.library_versions["libavcodec"])) + " (libavcodec)",
    }
    print(json.dumps(env))
    rows = []
    with tempfile.TemporaryDirectory(prefix="sfz-exactness-") as tmp:
        for video, path in make_videos(Path(tmp)).items():
            for protocol, cfg_name in PROTOCOLS.items():
                cfg = slowfast_zoo.get_pretrained_cfg(cfg_name)
                row = {"video": video, "protocol": protocol, **compare_frames(path, cfg)}
                row.update(compare_scores(path, cfg_name))
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(
        "| video | protocol | frames | max abs diff | fraction differing | top-1 same | top-5 same | max logit diff "
        "| PyAV decoded / stream frames |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['video']} | {r['protocol']} | {r['frames']} | {r['max_abs']} | {r['fraction_differing']:.2e} "
            f"| {r['top1_same']} | {r['top5_same']} | {r['max_logit_diff']:.3g} "
            f"| {r['pyav_decoded']} / {r['stream_frames']} |"
        )
    differing = [r for r in rows if r["max_abs"] or r["max_logit_diff"] or r["decoded_by"] != "torchcodec"]
    total = sum(r["frames"] for r in rows)
    print(f"{len(rows)} video x protocol pairs, {total} frames: {len(differing)} differ from PyAV")
    if args.out:
        Path(args.out).write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

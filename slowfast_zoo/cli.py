"""``slowfast-zoo`` command line: a thin layer over the public Python API (nothing imports this module)."""

# Over ~400 lines: argparse and printing for every subcommand live here and nowhere else.

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import slowfast_zoo
from slowfast_zoo import PretrainedCfg, features, get_pretrained_cfg
from slowfast_zoo.errors import SlowFastZooError
from slowfast_zoo.tasks.evaluate import AVA_PROTOCOLS, DATASETS
from slowfast_zoo.tasks.tables import text_table
from slowfast_zoo.video.codec import DECODERS, resolve_decoder


def _metric(cfg: PretrainedCfg) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in cfg.metrics.items()) or "-"


def _sampling(cfg: PretrainedCfg) -> str:
    m = cfg.model
    if m.alpha:
        return f"{m.frames(0)}x{cfg.sampling_rate * m.alpha} (fast {m.num_frames}x{cfg.sampling_rate}, alpha {m.alpha})"
    return f"{m.num_frames}x{cfg.sampling_rate}"


def cmd_list(args: argparse.Namespace) -> int:
    names = slowfast_zoo.list_models(args.pattern, pretrained=args.pretrained)
    cfgs = [get_pretrained_cfg(n) for n in names]
    if args.json:
        for n, c in zip(names, cfgs):
            print(json.dumps({"name": n, "params": c.params, "gflops": c.gflops, "metrics": dict(c.metrics)}))
        return 0
    rows = [
        [n, f"{c.params / 1e6:.2f}M" if c.params else "-", f"{c.gflops:g}" if c.gflops else "-", c.dataset, _metric(c)]
        for n, c in zip(names, cfgs)
    ]
    print(text_table(["name", "params", "GFLOPs", "dataset", "metrics"], rows))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    cfg = get_pretrained_cfg(args.name)
    if args.json:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    m = cfg.model
    fields: list[tuple[str, Any]] = [
        ("name", cfg.name),
        ("architecture", f"{cfg.arch}: {'SlowFast' if m.alpha else 'single pathway'}, blocks {m.layers}"),
        ("dataset", f"{cfg.dataset} ({cfg.num_classes} classes, labels: {cfg.labels or '-'})"),
        ("frames x stride", f"{_sampling(cfg)} at {cfg.target_fps:g} fps, {cfg.frame_sampling} sampling"),
        ("input", f"{cfg.channel_order} in [0, 1], mean {cfg.mean}, std {cfg.std}"),
        ("train", f"short side {cfg.train_short_side}, crop {cfg.train_crop_size}"),
        (
            "test",
            f"short side {cfg.test_short_side}, crop {cfg.test_crop_size}, {cfg.test_clips} clip(s) x "
            f"{len(cfg.test_crops)} crop(s) {cfg.test_crops}, {cfg.ensemble} of {cfg.activation}, "
            f"{cfg.test_head_pool} head",
        ),
        ("metrics", _metric(cfg)),
        ("scored classes", f"{len(cfg.evaluated_classes)} of {cfg.num_classes}" if cfg.evaluated_classes else "all"),
        ("params", f"{cfg.params:,}" if cfg.params else "-"),
        ("GFLOPs", f"{cfg.gflops:g} per view at 256x256" if cfg.gflops else "-"),
        ("origin", f"{cfg.origin.url} ({cfg.origin.format}, {cfg.origin.key_scheme} keys)" if cfg.origin else "-"),
        (
            "hub",
            f"{cfg.hub.repo_id}@{cfg.hub.revision or 'unpublished'} {cfg.hub.filename}" if cfg.hub else "-",
        ),
        ("notes", cfg.notes or "-"),
    ]
    width = max(len(k) for k, _ in fields)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in fields))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    if not args.names and not args.all:
        raise ValueError("name at least one model, or pass --all")
    for weights in slowfast_zoo.download_weights(args.names, all=args.all):
        print(f"{weights.name}: {weights.source} {weights.path} sha256 {weights.sha256}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from slowfast_zoo import publish
    from slowfast_zoo.factory import expected_state_dict

    cfg = get_pretrained_cfg(args.model)
    result = publish.convert(args.upstream_file, cfg, args.output, expected=expected_state_dict(cfg))
    print(result)
    if result.source_matches_manifest is False:
        print(f"warning: {args.upstream_file} is not the file the manifest pins for {args.model}", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    if args.manifest:
        issues = slowfast_zoo.check_manifest()
        for issue in issues:
            print(f"{issue.level:5s} {issue}")
        errors = sum(i.level == "error" for i in issues)
        print(f"{len(issues)} field(s) reported: {errors} error(s), {len(issues) - errors} unknown until published")
        return 1 if errors else 0
    results = slowfast_zoo.verify_weights(args.names or None)
    for result in results:
        print(result)
    return 1 if any(r.status in ("corrupt", "partial") for r in results) else 0


def _publish_todo(args: argparse.Namespace) -> list[tuple[PretrainedCfg, str | None, str | None]]:
    """(config, repo id, local file) per model; with --all, every manifest entry with an origin and no Hub commit."""
    from slowfast_zoo.weights.manifest import HubFile, Origin, read_manifest

    if not args.all:
        if not args.name:
            raise ValueError("name a model to publish, or pass --all")
        return [(get_pretrained_cfg(args.name), args.repo_id, args.source)]
    if args.name or args.source or args.repo_id:
        raise ValueError("--all publishes the manifest's own entries: give no NAME, --source or --repo-id")
    todo = []
    for name, record in read_manifest(args.update_manifest).get("models", {}).items():
        hub = record.get("hub") or {}
        if record.get("origin") and not hub.get("revision"):  # the manifest being updated says where the files are
            origin = Origin(**record["origin"])
            cfg = get_pretrained_cfg(name).replace(origin=origin, hub=HubFile(**hub))
            local = Path(args.source_dir, origin.url.rsplit("/", 1)[-1]) if args.source_dir else None
            todo.append((cfg, hub.get("repo_id"), str(local) if local and local.is_file() else None))
    return todo


def cmd_publish(args: argparse.Namespace) -> int:
    from slowfast_zoo import publish
    from slowfast_zoo.factory import expected_state_dict
    from slowfast_zoo.weights.manifest import merge_entries

    entries = {}
    for cfg, repo_id, source in _publish_todo(args):
        expected = expected_state_dict(cfg)
        result = publish.publish(cfg, repo_id, source=source, expected=expected, private=args.private)
        print(f"{cfg.name}: {result}", flush=True)
        entries[cfg.name] = result.manifest_entry()
        if args.update_manifest:  # one entry at a time: a failure later keeps what was published
            merge_entries(args.update_manifest, {cfg.name: entries[cfg.name]})
    if args.update_manifest:
        print(f"updated {args.update_manifest}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
    else:
        print("paste into weights_manifest.json:")
        print(json.dumps(entries, indent=2))
    return 0


def _windows_arg(text: str) -> tuple[float, float]:
    try:
        window, stride = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WINDOW,STRIDE in seconds (e.g. 4,2), got {text!r}") from None
    if window <= 0 or stride <= 0:
        raise argparse.ArgumentTypeError("window and stride must be positive")
    return window, stride


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _batch_sizes(text: str) -> list[int]:
    """argparse type: comma-separated positive integers."""
    return [_positive_int(part) for part in text.split(",")]


def cmd_tune(args: argparse.Namespace) -> int:
    from slowfast_zoo.tasks.autotune import tune
    from slowfast_zoo.tasks.runner import load_model
    from slowfast_zoo.tasks.tuning import setting, tuning_file

    model = load_model(args.model, checkpoint=args.checkpoint, device=args.device)
    t = tune(model, precision=args.precision, fast=args.fast, candidates=args.candidates, repeats=args.repeats)
    if args.json:
        print(json.dumps({"signature": t.signature, "batch_size": t.batch_size, "channels_last": t.channels_last,
                          "seconds_per_view": t.seconds_per_view, "file": str(tuning_file())}))  # fmt: skip
        return 0
    print(t.signature)
    for name, seconds in t.seconds_per_view.items():
        chosen = "  <- chosen" if name == setting(t.batch_size, t.channels_last) else ""
        print(f"  {name:<20} {'out of memory' if seconds is None else f'{seconds * 1e3:9.1f} ms/view'}{chosen}")
    print(f"stored in {tuning_file()}: predict, evaluate and features use batch {t.batch_size} for this model here")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from slowfast_zoo.tasks import predict as inference

    if args.live:
        return _predict_live(args)
    videos = args.videos or [inference.sample_video()]
    if args.render and len(videos) != 1:
        raise ValueError("--render draws on one video; pass exactly one")
    resolve_decoder(args.decoder)
    model = inference.load_model(
        args.model, checkpoint=args.checkpoint, device=args.device, precision=args.precision, fast=args.fast
    )
    failed = 0
    for video, results in _predictions(inference, videos, model, args):
        if isinstance(results, Exception):  # a bad video: report it, go on with the others
            failed += 1
            print(_one_line(results, str(video)), file=sys.stderr, flush=True)
            continue
        if args.json:
            for line in inference.to_json_lines(results):
                print(line, flush=True)
        else:
            print(inference.format_table(results))
        if args.render:
            from slowfast_zoo.tasks.render import render_predictions

            print(f"slowfast-zoo: wrote {render_predictions(video, results, args.render)}", file=sys.stderr)
    if failed:
        print(f"slowfast-zoo: error: {failed} of {len(videos)} video(s) failed", file=sys.stderr)
        return 1
    return 0


def _predictions(inference: Any, videos: list[Any], model: Any, args: argparse.Namespace) -> Iterator[tuple[Any, Any]]:
    """``(video, its predictions)`` or ``(video, the error)``: whole videos by ``predict_many`` (decoded ahead by
    ``--workers``), windows one video after the other."""
    if not args.windows:
        yield from (
            (video, result if isinstance(result, Exception) else [result])
            for video, result in inference.predict_many(
                videos, model, views=args.views or "reference", top_k=args.top_k, precision=args.precision,
                workers=args.workers, worker_type=args.worker_type, decoder=args.decoder, progress=True,
            )
        )  # fmt: skip
        return
    window, stride = args.windows
    for video in videos:
        try:
            results = inference.predict_windows(
                video, model, window, stride, views=args.views or "fast", top_k=args.top_k,
                precision=args.precision, progress=True, decoder=args.decoder,
            )  # fmt: skip
            yield video, list(results)
        except (OSError, RuntimeError, ValueError) as e:
            yield video, e


def _predict_live(args: argparse.Namespace) -> int:
    from slowfast_zoo.tasks.live import predict_stream

    if len(args.videos) != 1:
        raise ValueError("--live reads one source (a URL, a device, pipe:0 or a growing file)")
    window, hop = args.windows or (2.0, 0.5)
    run = predict_stream(args.videos[0], args.model, window, hop, top_k=args.top_k, device=args.device)
    with run:
        for w in run:
            if args.json:
                print(json.dumps(w.to_dict(), ensure_ascii=False), flush=True)
            else:
                p = w.prediction
                top = ", ".join(f"{x.label} {x.score:.3f}" for x in p.top)
                skipped = f" ({w.dropped} skipped)" if w.dropped else ""
                print(f"{p.start:8.2f}-{p.end:.2f}s  {top}  [latency {w.latency:.2f}s]{skipped}", flush=True)
    print(f"slowfast-zoo: {run.stats.summary()}", file=sys.stderr)
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from slowfast_zoo.tasks.detect import detect, parse_boxes
    from slowfast_zoo.video.io import probe

    from_file = (args.boxes_from or ("file" if args.boxes else "detector")) == "file"
    if from_file != bool(args.boxes):
        raise ValueError("--boxes FILE goes with --boxes-from file (the default when given); drop it for the detector")
    boxes = None
    if from_file:
        try:
            spec = json.loads(Path(args.boxes).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{args.boxes}: not JSON ({e})") from None
        boxes = parse_boxes(spec, args.keyframe)
    duration = probe(args.video).duration
    outside = [t for t in (boxes or args.keyframes or []) if not 0 <= t <= duration]
    if outside:
        raise ValueError(
            f"{args.video}: keyframe(s) {', '.join(f'{t:g}' for t in sorted(outside))} s outside the video "
            f"(0 to {duration:g} s)"
        )
    results = detect(
        args.video,
        args.model,
        boxes,
        normalized=args.normalized,
        keyframes=args.keyframes,
        top_k=args.top_k,
        checkpoint=args.checkpoint,
        device=args.device,
    )
    if args.render:
        from slowfast_zoo.tasks.render import render_detections

        print(f"slowfast-zoo: wrote {render_detections(args.video, results, args.render)}", file=sys.stderr)
    if args.json:
        for r in results:
            print(json.dumps(r.to_dict()))
        return 0
    rows = [
        [f"{r.keyframe:g}", " ".join(f"{v:.0f}" for v in r.box), label, f"{score:.3f}"]
        for r in results
        for label, score in r.actions
    ]
    print(text_table(["keyframe (s)", "box (x1 y1 x2 y2)", "action", "score"], rows))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from slowfast_zoo.tasks.evaluate import merge

    if args.merge:
        result = merge(args.out)
    else:
        missing = [f"--{n}" for n in ("root", "annotations") if getattr(args, n) is None]
        if args.model is None or args.dataset is None or missing:
            raise ValueError("evaluate needs MODEL, --dataset, --root and --annotations (or --merge --out FILE)")
        result = slowfast_zoo.evaluate(
            args.model,
            args.dataset,
            args.root,
            args.annotations,
            label_map=args.label_map,
            proposals=args.proposals,
            excluded_timestamps=args.excluded_timestamps,
            box_threshold=args.box_threshold,
            ava_time_offset=args.ava_time_offset,
            ava_protocol=args.ava_protocol,
            limit=args.limit,
            device=args.device,
            batch_size=args.batch_size,
            workers=args.workers,
            decoder=args.decoder,
            worker_type=args.worker_type,
            precision=args.precision,
            fast=args.fast,
            out=args.out,
            shard=args.shard,
            engine=args.engine,
            ray_options={"address": args.address, "actors": args.actors, "num_gpus_per_actor": args.num_gpus_per_actor},
        )
    if result is None:
        print(f"this shard is done; when every shard is, run: slowfast-zoo evaluate --merge --out {args.out}")
        return 0
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.table())
    if args.plot:
        from slowfast_zoo.tasks import plots

        per_class = getattr(result, "per_class", None)  # {class name: value}, where the result carries one
        title = f"{result.model} on {result.dataset}"
        metric = getattr(result, "per_class_metric", "AP (%)")
        fig = plots.per_class_figure(per_class, title, metric) if per_class else plots.metrics_figure(result)
        print(f"slowfast-zoo: wrote {plots.save_png(fig, args.plot)}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from slowfast_zoo.tasks.demo import build_demo

    build_demo(args.model or None).launch(server_name=args.host, server_port=args.port)
    return 0


def _features_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", help="video files, or .txt/.csv/.lst files listing one video per line")
    parser.add_argument("-o", "--out-dir", required=True, help="folder for the shard files")
    parser.add_argument("--model", default="slowfast_r50_8x8", help="model name or hf-hub:org/repo (%(default)s)")
    parser.add_argument("--checkpoint", help="weights file to use instead of the published ones")
    parser.add_argument(
        "--per", choices=["video", "window"], default="video", help="one embedding per video, or per sliding window"
    )
    parser.add_argument("--window", default="2,1", metavar="W,S", help="window length and stride, s (%(default)s)")
    parser.add_argument("--views", choices=["fast", "reference"], default="fast")
    parser.add_argument("--format", choices=["safetensors", "npz", "parquet"], default="safetensors")
    parser.add_argument("--shard-size", type=int, default=256, help="videos per shard file (%(default)s)")
    parser.add_argument("--rank", type=int, help="this machine's share (default: $RANK or 0)")
    parser.add_argument("--world-size", type=int, help="number of machines (default: $WORLD_SIZE or 1)")
    parser.add_argument("--device", help="e.g. cuda, cuda:1, cpu")
    parser.add_argument("--batch-size", type=int, help="views per forward pass")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _speed_arguments(parser, workers=1)
    _ray_arguments(parser)


def _speed_arguments(parser: argparse.ArgumentParser, workers: int | None) -> None:
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="(default: %(default)s, exact)")
    parser.add_argument("--fast", action="store_true", help="BatchNorm folded, channels-last, bf16 weights with bf16")
    if workers is not None:
        parser.add_argument(
            "--workers", type=int, default=workers, help="threads or processes decoding ahead of the model (default: "
            "%(default)s; 0: none)",
        )  # fmt: skip
        parser.add_argument(
            "--worker-type", choices=["thread", "process"], default="thread",
            help="decode in threads or in processes (default: %(default)s; see the README's pipeline speed section)",
        )  # fmt: skip
    parser.add_argument(
        "--decoder",
        choices=DECODERS,
        default="auto",
        help="torchcodec where it loads, else PyAV (auto, the default; the same frames), or one of them",
    )


def _ray_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Ray (pip install 'slowfast-zoo[ray]')")
    g.add_argument("--engine", choices=["local", "ray"], default="local", help="run here, or on Ray Data (%(default)s)")
    g.add_argument("--address", help="Ray cluster address, e.g. auto (default: a local Ray instance)")
    g.add_argument("--actors", type=_positive_int, default=1, help="model actors, one model copy each (%(default)s)")
    g.add_argument("--num-gpus-per-actor", type=float, default=0.0, help="GPUs each model actor reserves (%(default)s)")


def cmd_features(args: argparse.Namespace) -> int:
    w, _, s = str(args.window).partition(",")
    common: dict[str, Any] = dict(
        per=args.per,
        window_s=float(w),
        stride_s=float(s or w),
        views=args.views,
        shard_size=args.shard_size,
        format=args.format,
        checkpoint=args.checkpoint,
        batch_size=args.batch_size,
        precision=args.precision,
        fast=args.fast,
        progress=not args.no_progress,
    )
    if args.engine == "ray":  # every shard, by a pool of Ray actors
        from slowfast_zoo.tasks import ray_jobs

        if args.rank is not None or args.world_size is not None:
            raise ValueError(
                "--engine ray does the whole list (Ray spreads it); --rank/--world-size are for the local engine"
            )

        extract: Any = ray_jobs.extract
        common.update(address=args.address, actors=args.actors, num_gpus_per_actor=args.num_gpus_per_actor)
    else:
        extract = features.extract
        rank = args.rank if args.rank is not None else int(os.environ.get("RANK", 0))
        world = args.world_size if args.world_size is not None else int(os.environ.get("WORLD_SIZE", 1))
        common.update(rank=rank, world_size=world, device=args.device, workers=args.workers)
        common.update(decoder=args.decoder, worker_type=args.worker_type)
    summary = extract(features.read_video_list(args.videos), args.model, args.out_dir, **common)
    print(summary)
    return 1 if summary.failed else 0


# long: one declarative table of every subcommand's arguments; splitting it per command would scatter the CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slowfast-zoo", description=slowfast_zoo.__doc__)
    parser.add_argument("--version", action="version", version=f"slowfast-zoo {slowfast_zoo.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug log (where weights come from, tracebacks)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="wildcard pattern, e.g. 'slowfast_*'")
    p.add_argument("--pretrained", action="store_true", help="list arch.tag names that have weights")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="show a model's pretrained config")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("download", help="fetch and verify pretrained weights into the cache")
    p.add_argument("names", nargs="*", help="arch.tag names, aliases or hf-hub:org/name[@revision]")
    p.add_argument("--all", action="store_true", help="every pretrained model")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("convert", help="convert an authors' checkpoint file to the zoo's safetensors")
    p.add_argument("upstream_file", help="Caffe2 .pkl, PySlowFast or PyTorchVideo .pyth")
    p.add_argument("--model", required=True, help="the model the file belongs to")
    p.add_argument("-o", "--output", required=True, help="output .safetensors file")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("verify", help="re-hash cached weights (or check the manifest with --manifest)")
    p.add_argument("names", nargs="*", help="default: every pretrained model")
    p.add_argument("--manifest", action="store_true", help="check weights_manifest.json and list unknown fields")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("publish", help="convert a model's weights and upload them to the Hugging Face Hub")
    p.add_argument("name", nargs="?", help="arch.tag")
    p.add_argument("--all", action="store_true", help="every manifest entry that has an origin and no Hub commit")
    p.add_argument("--repo-id", help="ORG/REPO on the Hub (default: the manifest's)")
    p.add_argument("--source", help="local upstream file instead of downloading the authors' one")
    p.add_argument("--update-manifest", metavar="JSON", help="write each published entry into this manifest file")
    p.add_argument("--source-dir", help="with --all: local copies of the authors' files, named as in their URLs")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("features", help="write per-video or per-window embeddings to resumable shards")
    _features_arguments(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("predict", help="classify videos with a model's own preprocessing and test protocol")
    p.add_argument("videos", nargs="*", help="video files (default: the embedded sample clip)")
    p.add_argument("--model", default="slowfast_r50_8x8", help="model name (default: %(default)s)")
    p.add_argument("--checkpoint", help="weights file to use instead of the published ones")
    p.add_argument("--views", choices=["reference", "fast"], help="published multi-view protocol or one view")
    p.add_argument("--top-k", type=_positive_int, default=5, help="classes per video (at least 1)")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p.add_argument("--device", help="e.g. cuda, cuda:1, cpu")
    p.add_argument("--windows", type=_windows_arg, metavar="W,S", help="predict every S seconds over W-second windows")
    p.add_argument("--live", action="store_true", help="VIDEO is a live source (URL, device, pipe:0); default 2,0.5")
    p.add_argument("--render", metavar="OUT", help="write the video with the labels drawn (.mp4 or lossless .mkv)")
    _speed_arguments(p, workers=0)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("tune", help="measure the fastest batch size (and --fast memory format) for a model here")
    p.add_argument("model", help="model name, hf-hub:ORG/REPO or local-dir:PATH")
    p.add_argument("--checkpoint", help="weights file to use instead of the published ones")
    p.add_argument("--device", help="e.g. cuda, cuda:1, cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="(default: %(default)s)")
    p.add_argument("--fast", action="store_true", help="the fast path (as predict --fast); both memory formats")
    p.add_argument("--candidates", type=_batch_sizes, metavar="B,B,...",
                   help="batch sizes to try (default: 1,2,3,5,6,10 on a CPU, 5,6,10,15,30 on a GPU)")  # fmt: skip
    p.add_argument("--repeats", type=_positive_int, default=2, help="timed runs per setting (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("detect", help="score the actions of person boxes at keyframes (AVA detectors)")
    p.add_argument("video")
    p.add_argument("--boxes", help='JSON: {"<keyframe seconds>": [[x1, y1, x2, y2], ...]} or a list')
    p.add_argument("--boxes-from", choices=["detector", "file"], help="default: file with --boxes, else detector")
    p.add_argument(
        "--keyframes", type=lambda v: [float(t) for t in v.split(",")], help="detector keyframes, s (every second)"
    )
    p.add_argument("--keyframe", type=float, help="keyframe (seconds) for a plain list of boxes")
    p.add_argument("--normalized", action="store_true", help="boxes are in [0, 1] (AVA csv), not pixels")
    p.add_argument("--render", metavar="OUT", help="write the video with boxes and actions drawn (.mp4 or .mkv)")
    p.add_argument("--model", default="slowfast_r50_8x8_det", help="detector name (default: %(default)s)")
    p.add_argument("--checkpoint", help="weights file to use instead of the published ones")
    p.add_argument("--top-k", type=_positive_int, default=5, help="actions per box (at least 1)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--device")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("demo", help="a local web page: upload a video, see the labels and the annotated video")
    p.add_argument("--model", action="append", help="model offered (repeat for several; default: three)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (%(default)s)")
    p.add_argument("--port", type=int, default=7860, help="port (%(default)s)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("evaluate", help="measure a checkpoint on your copy of its benchmark (published vs measured)")
    p.add_argument("model", nargs="?", help="model name, hf-hub:org/name or local-dir:PATH")
    p.add_argument("--dataset", choices=DATASETS)
    p.add_argument("--root", help="folder of the videos (or frame folders)")
    p.add_argument(
        "--annotations", help="Kinetics list or official CSV, SSv2 validation JSON, Charades CSV, AVA ground-truth CSV"
    )
    p.add_argument("--label-map", help="SSv2 labels JSON; AVA action list .pbtxt")
    p.add_argument("--proposals", help="AVA person boxes with scores (CSV)")
    p.add_argument("--excluded-timestamps", help="AVA excluded keyframes (CSV)")
    p.add_argument("--box-threshold", type=float, help="AVA proposals kept (default: the checkpoint's)")
    p.add_argument("--ava-time-offset", type=float, default=900.0, help="movie second where AVA files start")
    p.add_argument(
        "--ava-protocol",
        choices=AVA_PROTOCOLS,
        default="pyslowfast",
        help="AVA mAP equal to PySlowFast's evaluator (the published numbers', default) or the ActivityNet script's",
    )
    p.add_argument("--plot", metavar="PNG", help="write the results as a bar chart (needs slowfast-zoo[plot])")
    p.add_argument("--limit", type=int, help="only the first N videos")
    p.add_argument("--device", help="e.g. cuda, cuda:1, cpu (default: cuda:LOCAL_RANK if available)")
    p.add_argument("--batch-size", type=int, help="views per forward pass")
    _speed_arguments(p, workers=1)
    p.add_argument("--out", default="results.json", help="results file; per-video records in OUT.parts/ (resume)")
    p.add_argument("--shard", help="I/N: this process does videos k %% N == I (default: RANK/WORLD_SIZE)")
    p.add_argument("--merge", action="store_true", help="only score the finished shards of --out")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    _ray_arguments(p)
    p.set_defaults(func=cmd_evaluate)
    return parser


#: errors printed as one line: the package's own, and bad input (a value or a path the user gave)
USER_ERRORS = (SlowFastZooError, ValueError, OSError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``slowfast-zoo`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.verbose:
        logging.getLogger("slowfast_zoo").setLevel(logging.DEBUG)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("slowfast-zoo: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:  # one line; -v also logs the traceback. Anything else is a bug: its traceback shows
        logging.getLogger("slowfast_zoo").debug("traceback of the error below", exc_info=True)
        print(_one_line(e), file=sys.stderr)
        return 2


def _one_line(e: BaseException, where: str | None = None) -> str:
    """``slowfast-zoo: error: [WHERE: ]MESSAGE`` on one line."""
    text = " ".join(str(e).split()) or type(e).__name__
    if where and where not in text:
        text = f"{where}: {text}"
    return f"slowfast-zoo: error: {text}"


if __name__ == "__main__":
    sys.exit(main())

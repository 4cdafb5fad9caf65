"""evaluate end to end on tiny synthetic datasets: the numbers of a direct loop over predict or detect; resume."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from slowfast_zoo import cli, create, detect, evaluate, predict
from slowfast_zoo.tasks.evaluate import merge, parse_shard
from slowfast_zoo.tasks.metrics import ava_frame_map, write_ava_csv
from slowfast_zoo.weights.publish import save_pretrained

av = pytest.importorskip("av")

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ("blue", "green", "red")
COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def write_square_video(
    path: Path, color, seed: int, frames: int = 16, size=(64, 48), fps: int = 30, square: int = 24
) -> Path:
    """A square of ``color`` over grey noise (the colour is the class); ``square=0``: the whole frame, noisy."""
    rng = np.random.default_rng(seed)
    w, h = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps), options={"crf": "18", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        x, y = int(rng.integers(0, w - square + 1)), int(rng.integers(0, h - square + 1))
        for _ in range(frames):
            noise = rng.integers(-25, 25, size=(h, w, 3))
            if square:
                img = (115 + noise).astype(np.uint8)
                img[y : y + square, x : x + square] = color
            else:
                img = np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _pooled(model, clip: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(clip), pre_logits=True)


@pytest.fixture(scope="module")
def kinetics_like(tmp_path_factory):
    """6 videos (2 per colour), a missing one and a broken file; a tiny Slow model whose head is fitted to them."""
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("eval")
    root = base / "val"
    root.mkdir()
    rows = []
    for c, name in enumerate(CLASSES):
        for i in range(2):
            write_square_video(root / f"{name}{i}.mp4", COLORS[name], seed=10 * c + i, square=0)
            rows.append(f"{name}{i}.mp4 {c}")
    (root / "broken.mp4").write_bytes(b"\x00not a video" * 10)
    rows.insert(3, "broken.mp4 0")
    rows.insert(5, "gone.mp4 1")
    ann = base / "val_list.txt"
    ann.write_text("\n".join(rows) + "\n")

    model = create("slow_r50_8x8", width=8, num_classes=3, num_frames=4, crop_size=32, head_pool="fixed").eval()
    cfg = model.pretrained_cfg.replace(
        test_short_side=32, test_crop_size=32, test_clips=2, test_crops=("left", "center"), metrics={"top1": 50.0}
    )
    model.pretrained_cfg = cfg
    # fit the classifier in closed form on the pooled features of one centred clip per video (least squares)
    feats, targets = [], []
    for c, name in enumerate(CLASSES):
        for i in range(2):
            with av.open(str(root / f"{name}{i}.mp4")) as container:
                frames = torch.from_numpy(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))
            clip = frames[::4][:4].permute(3, 0, 1, 2).float().div(255).sub(0.45).div(0.225)[None, :, :, 8:40, 16:48]
            with torch.no_grad():
                feats.append(_pooled(model, clip)[0])
            targets.append(torch.nn.functional.one_hot(torch.tensor(c), 3).float() * 8 - 4)
    x, y = torch.stack(feats), torch.stack(targets)
    w = torch.linalg.lstsq(torch.cat([x, torch.ones(len(x), 1)], 1), y).solution
    with torch.no_grad():
        model.head.proj.weight.copy_(w[:-1].T)
        model.head.proj.bias.copy_(w[-1])
    folder = save_pretrained(model, base / "tiny", label_names=CLASSES)
    # a folder's own claim is not a published number: only weights the installed manifest pins keep one
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"]["metrics"] = {"top1": 50.0}
    (folder / "config.json").write_text(json.dumps(config))
    return root, ann, f"local-dir:{folder}"


def _direct_hits(root: Path, ann: Path, name: str) -> list[tuple[int, bool]]:
    """``(label, argmax == label)`` per readable video, by a plain loop over predict (unreadable videos left out)."""
    model = create(name, head_pool="fixed").eval()
    hits = []
    for line in ann.read_text().splitlines():
        path, label = line.rsplit(" ", 1)
        try:
            scores = predict(root / path, model, views="reference").scores
        except (OSError, RuntimeError):
            continue
        hits.append((int(label), int(scores.argmax()) == int(label)))
    return hits


def test_evaluate_equals_a_loop_over_predict(kinetics_like, tmp_path):
    root, ann, name = kinetics_like
    hits = _direct_hits(root, ann, name)
    expected, used = 100 * sum(hit for _, hit in hits) / len(hits), len(hits)
    by_class = {c: [hit for label, hit in hits if label == c] for c in {label for label, _ in hits}}
    mean_class_top1 = 100 * sum(sum(v) / len(v) for v in by_class.values()) / len(by_class)
    result = evaluate(name, "kinetics400", root, ann, out=tmp_path / "results.json", progress=False)
    top1 = result.metrics[0]
    assert (top1.name, top1.used, top1.skipped) == ("top1", used, 2) and used == 6
    assert top1.measured == pytest.approx(expected)
    assert expected >= 100 * 4 / 6  # the fitted head separates the colours
    # per-class top-1 (evaluate --plot), by class name: two readable videos per class (broken, gone: left out)
    assert result.per_class_metric == "top-1 (%)" and set(result.per_class) == set(CLASSES)
    assert sum(result.per_class.values()) / 3 == pytest.approx(mean_class_top1)
    assert top1.published is None and top1.difference is None  # the folder's 50.0 is its own claim
    assert result.skipped["gone.mp4"] == "not found under root" and "broken.mp4" in result.skipped
    assert [m.name for m in result.metrics] == ["top1"]  # 3 classes: no top-5
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["metrics"][0]["measured"] == pytest.approx(expected) and saved["videos"] == 8
    table = result.table()
    assert "top1" in table and "50.00" not in table and "6 of 8 videos used" in table and "not stated" in table


def test_resume_after_an_interruption_gives_the_same_file(kinetics_like, tmp_path):
    root, ann, name = kinetics_like
    out = tmp_path / "results.json"
    evaluate(name, "kinetics400", root, ann, out=out, progress=False)
    first = out.read_bytes()
    part = tmp_path / "results.json.parts" / "shard-00000-of-00001.jsonl"
    lines = part.read_bytes().splitlines(keepends=True)
    assert len(lines) == 1 + 8
    # a run killed while writing its 4th record: 3 whole records and half of one
    part.write_bytes(b"".join(lines[:4]) + lines[4][: len(lines[4]) // 2])
    out.unlink()
    evaluate(name, "kinetics400", root, ann, out=out, progress=False, workers=2)
    assert out.read_bytes() == first
    again = part.read_bytes().splitlines(keepends=True)
    assert len(again) == 9 and again[:4] == lines[:4]  # the 3 done videos were not run again
    assert sorted(json.loads(x)["i"] for x in again[1:]) == list(range(8))


def test_shards_merge_to_the_same_file(kinetics_like, tmp_path):
    root, ann, name = kinetics_like
    whole = tmp_path / "whole.json"
    evaluate(name, "kinetics400", root, ann, out=whole, progress=False, limit=5)
    out = tmp_path / "sharded.json"
    assert evaluate(name, "kinetics400", root, ann, out=out, shard="1/2", limit=5, progress=False) is None
    assert not out.exists() and merge(out) is None  # shard 0 has not run yet
    result = evaluate(name, "kinetics400", root, ann, out=out, shard=(0, 2), limit=5, progress=False)
    assert result is not None and result.videos == 5
    assert out.read_bytes() == whole.read_bytes()


def test_malformed_annotation_rows_are_skipped_and_counted(kinetics_like, tmp_path):
    root, ann, name = kinetics_like
    bad = tmp_path / "with_bad_rows.txt"  # an overlong path (OSError before) and a row that is not UTF-8
    bad.write_bytes(ann.read_bytes() + b"x" * 5000 + b".mp4 1\n" + b"\xff.mp4 2\n")
    result = evaluate(name, "kinetics400", root, bad, out=tmp_path / "r.json", limit=2, progress=False)
    assert result.rows_skipped == 2 and [w for w, _ in result.rows_skipped_first] == [f"{bad}:9", f"{bad}:10"]
    assert "annotation rows left out: 2 (see rows_skipped_first)" in result.table()


def test_a_results_file_of_another_run_is_refused(kinetics_like, tmp_path):
    root, ann, name = kinetics_like
    out = tmp_path / "r.json"
    evaluate(name, "kinetics400", root, ann, out=out, limit=2, progress=False)
    with pytest.raises(ValueError, match="another evaluation"):
        evaluate(name, "kinetics400", root, ann, out=out, limit=3, progress=False)


def test_parse_shard(monkeypatch):
    assert parse_shard("2/4") == (2, 4)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert parse_shard(None) == (3, 8)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_cli_evaluate(kinetics_like, tmp_path, capsys):
    root, ann, name = kinetics_like
    out = tmp_path / "cli.json"
    argv = ["evaluate", name, "--dataset", "kinetics400", "--root", str(root), "--annotations", str(ann)]
    assert cli.main([*argv, "--out", str(out), "--limit", "4", "--batch-size", "2", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "top1" in printed and "3 of 4 videos used" in printed
    assert json.loads(out.read_text())["videos"] == 4


# ---- AVA ----------------------------------------------------------------------------------------------------------
LABEL_MAP = 'item {\n  name: "bend/bow (at the waist)"\n  id: 1\n}\nitem {\n  name: "crawl"\n  id: 2\n}\n'


def test_ava_map_equals_the_metric_on_detect_output(tmp_path):
    torch.manual_seed(1)
    root = tmp_path / "videos_15min"
    root.mkdir()
    write_square_video(root / "movieAAAAAA.mp4", COLORS["red"], seed=1, frames=120, size=(64, 48))
    write_square_video(root / "movieBBBBBB.mp4", COLORS["blue"], seed=2, frames=120, size=(64, 48))
    person1, person2, jitter = [0.1, 0.1, 0.5, 0.9], [0.5, 0.2, 0.95, 0.95], [0.15, 0.1, 0.55, 0.9]
    gt = tmp_path / "ava_val_v2.2.csv"
    write_ava_csv(
        gt,
        [
            ("movieAAAAAA", "0901", *person1, 1, 0),
            ("movieAAAAAA", "0901", *person2, 2, 1),
            ("movieAAAAAA", "0902", *person1, 2, 0),
            ("movieBBBBBB", "0902", *person2, 1, 0),
            ("movieBBBBBB", "0903", *person2, 1, 0),
        ],
    )
    proposals = tmp_path / "ava_detection_val_boxes_and_labels.csv"
    write_ava_csv(
        proposals,
        [
            ("movieAAAAAA", "0901", *person1, "", 0.99),
            ("movieAAAAAA", "0901", *person2, "", 0.95),
            ("movieAAAAAA", "0901", *jitter, "", 0.3),  # below the threshold
            ("movieAAAAAA", "0902", *person1, "", 0.9),
            ("movieBBBBBB", "0902", *person2, "", 0.97),
            ("movieBBBBBB", "0903", *jitter, "", 0.91),
            ("movieCCCCCC", "0902", *person2, "", 0.97),  # not downloaded
        ],
    )
    excluded = tmp_path / "ava_val_excluded_timestamps_v2.2.csv"
    excluded.write_text("movieBBBBBB,0903\n")
    labels = tmp_path / "ava_action_list_v2.2_for_activitynet_2019.pbtxt"
    labels.write_text(LABEL_MAP)

    model = create("slow_r50_4x16_det", width=8).eval()
    model.pretrained_cfg = model.pretrained_cfg.replace(test_short_side=48)
    out = tmp_path / "ava.json"
    kwargs = dict(proposals=proposals, label_map=labels, excluded_timestamps=excluded, box_threshold=0.5)
    result = evaluate(model, "ava", root, gt, out=out, progress=False, **kwargs)

    # the same detections by calling detect directly, scored by the metric function
    kept = {
        "movieAAAAAA": {1.0: [person1, person2], 2.0: [person1]},
        "movieBBBBBB": {2.0: [person2], 3.0: [jitter]},
    }
    rows = []
    for video, boxes in kept.items():
        preds = detect(root / f"{video}.mp4", model, boxes, normalized=True)
        given = [(t, b) for t in sorted(boxes) for b in boxes[t]]
        for (t, box), p in zip(given, preds):
            rows += [(video, f"{900 + int(t):04d}", *box, a, float(p.scores[a - 1])) for a in (1, 2)]
    mine = tmp_path / "direct.csv"
    write_ava_csv(mine, rows)
    expected = ava_frame_map(gt, mine, labels, excluded)

    mAP = result.metrics[0]
    assert mAP.name == "mAP" and mAP.measured == pytest.approx(100 * expected.map, abs=1e-4)
    assert (mAP.used, mAP.skipped) == (2, 1) and result.skipped == {"movieCCCCCC": "not found under root"}
    assert mAP.published is None  # a freshly built detector has no published number
    assert (tmp_path / "ava.json.detections.csv").is_file()
    assert any("PySlowFast's evaluator" in n for n in result.notes)  # it says whose rules the mAP follows

    anet = evaluate(
        model, "ava", root, gt, out=tmp_path / "anet.json", progress=False, ava_protocol="activitynet", **kwargs
    )
    expected = ava_frame_map(gt, mine, labels, excluded, protocol="activitynet")
    assert anet.metrics[0].measured == pytest.approx(100 * expected.map, abs=1e-4)
    assert any("ActivityNet challenge script" in n for n in anet.notes)
    assert result.per_class == pytest.approx({k: 100 * v for k, v in expected.named().items() if v == v})  # not NaN


def test_ava_threshold_comes_from_the_checkpoint(tmp_path):
    from slowfast_zoo import get_pretrained_cfg

    # SF:configs/AVA/c2/SLOWFAST_32x2_R101_50_50.yaml, SLOWFAST_64x2_R101_50_50.yaml, SLOWFAST_32x2_R101_50_50_v2.1.yaml
    # and SLOW_8x8_R50.yaml: AVA.DETECTION_SCORE_THRESH 0.8 (SlowFast) and 0.9 (Slow)
    assert get_pretrained_cfg("slowfast_nln_r101_50_50_8x8_det.ava22_pysf").person_score_threshold == 0.8
    assert get_pretrained_cfg("slowfast_nln_r101_50_50_8x8_det.ava21_pysf").person_score_threshold == 0.8
    assert get_pretrained_cfg("slowfast_nln_r101_50_50_16x8_det.ava22_pysf").person_score_threshold == 0.8
    assert get_pretrained_cfg("slow_r50_4x16_det.ava22_pysf").person_score_threshold == 0.9
    assert get_pretrained_cfg("slowfast_r50_8x8.k400_pysf").person_score_threshold is None  # not a detector
    model = create("slow_r50_4x16_det", width=8)
    model.pretrained_cfg = model.pretrained_cfg.replace(person_score_threshold=None)  # e.g. a user's own detector
    with pytest.raises(ValueError, match="box_threshold"):
        evaluate(model, "ava", tmp_path, tmp_path / "gt.csv", proposals=tmp_path / "p.csv", label_map=tmp_path / "l")


# ---- Charades over frame folders ----------------------------------------------------------------------------------
def test_charades_frame_folders_map_equals_sklearn_on_a_predict_loop(tmp_path):
    from PIL import Image

    from slowfast_zoo.tasks.eval_datasets import FrameFolderVideo

    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    torch.manual_seed(2)
    root = tmp_path / "Charades_v1_rgb"
    targets = {"AAAAA": [0, 2], "BBBBB": [1], "CCCCC": [2], "DDDDD": [0]}
    rng = np.random.default_rng(0)
    for n, vid in enumerate(targets):
        (root / vid).mkdir(parents=True)
        for i in range(30):  # 1.25 s at 24 fps
            img = np.clip(np.array(list(COLORS.values())[n % 3]) + rng.integers(-30, 30, (40, 48, 3)), 0, 255)
            Image.fromarray(img.astype(np.uint8)).save(root / vid / f"{vid}-{i + 1:06d}.jpg")
    ann = tmp_path / "Charades_v1_test.csv"
    lines = ["id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length"]
    for vid, cls in targets.items():
        actions = ";".join(f"c{c:03d} 0.00 1.00" for c in cls)
        lines.append(f"{vid},S,Room,5,5,Yes,s,o,d,{actions},1.25")
    ann.write_text("\n".join(lines) + "\n")

    model = create("slow_r50_8x8", width=8, num_classes=3, num_frames=4, crop_size=32, head_pool="fixed").eval()
    model.pretrained_cfg = model.pretrained_cfg.replace(
        dataset="charades", activation="sigmoid", ensemble="max", test_short_side=32, test_crop_size=32, test_clips=2
    )
    result = evaluate(model, "charades", root, ann, progress=False)

    scores = np.stack([predict(FrameFolderVideo(root / v, 24), model).scores.numpy() for v in targets])
    onehot = np.zeros((4, 3), dtype=int)
    for row, cls in zip(onehot, targets.values()):
        row[cls] = 1
    per_class = 100 * sklearn_metrics.average_precision_score(onehot, scores, average=None)
    expected = per_class.mean()
    assert result.metrics[0].name == "mAP" and result.metrics[0].measured == pytest.approx(expected, abs=1e-4)
    assert result.used == 4
    names = list(model.pretrained_cfg.label_names or map(str, range(3)))  # per-class AP by class (index without names)
    assert result.per_class_metric == "AP (%)" and result.per_class == pytest.approx(
        {names[c]: ap for c, ap in enumerate(per_class)}, abs=1e-4
    )


def test_the_model_runs_in_eval_mode_in_one_thread_whatever_the_workers(kinetics_like, tmp_path):
    """A model handed over in training mode (BatchNorm then normalizes with batch statistics, so the scores depend
    on the mode) and two decoding workers: every forward runs in eval mode, all in one thread, and the scores are
    those of a plain loop over predict. The first forward waits for a second one to start, so that a second
    inference thread, if there is one, is caught; with one thread the wait gives up and the run goes on."""
    import threading

    root, ann, _ = kinetics_like
    torch.manual_seed(0)
    model = create("slow_r50_8x8", width=8, num_classes=3, num_frames=4, crop_size=32, head_pool="fixed")
    model.pretrained_cfg = model.pretrained_cfg.replace(
        test_short_side=32, test_crop_size=32, test_clips=2, test_crops=("left", "center")
    )
    expected = {}
    for line in ann.read_text().splitlines():
        path = root / line.rsplit(" ", 1)[0]
        if path.exists() and path.name != "broken.mp4":
            expected[path.name] = predict(path, model, views="reference").scores
    assert model.training  # predict gave it back in training mode

    calls = []
    second = threading.Event()
    inner = model.position_logits

    def spy(x):
        calls.append((threading.get_ident(), model.training))
        if len(calls) == 1:
            second.wait(timeout=3)  # a second inference thread, if any, gets here meanwhile
        else:
            second.set()
        return inner(x)

    model.position_logits = spy
    out = tmp_path / "r.json"
    evaluate(model, "kinetics400", root, ann, out=out, workers=2, progress=False)
    assert {training for _, training in calls} == {False}
    assert len({thread for thread, _ in calls}) == 1
    assert model.training  # handed back as it came
    lines = [line for p in sorted(Path(f"{out}.parts").glob("*.jsonl")) for line in p.read_text().splitlines()]
    records = [json.loads(line) for line in lines[1:]]
    got = {r["id"]: r["scores"] for r in records if r["status"] == "ok"}
    assert got.keys() == expected.keys()
    for name, scores in expected.items():
        assert got[name] == pytest.approx(scores.tolist(), abs=1e-6), name


def test_cli_plot_draws_the_per_class_results(kinetics_like, tmp_path, monkeypatch):
    """``evaluate --plot``: the PNG shows the per-class top-1 that the result file holds (one bar per class)."""
    pytest.importorskip("matplotlib")
    from slowfast_zoo.tasks import plots

    root, ann, name = kinetics_like
    drawn = {}
    real = plots.per_class_figure

    def spy(values, title, metric="AP (%)"):
        drawn.update(values=dict(values), metric=metric)
        return real(values, title, metric)

    monkeypatch.setattr(plots, "per_class_figure", spy)
    out, png = tmp_path / "r.json", tmp_path / "classes.png"
    argv = ["evaluate", name, "--dataset", "kinetics400", "--root", str(root), "--annotations", str(ann)]
    assert cli.main([*argv, "--out", str(out), "--plot", str(png)]) == 0
    saved = json.loads(out.read_text())
    assert drawn == {"values": saved["per_class"], "metric": "top-1 (%)"} and set(drawn["values"]) == set(CLASSES)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

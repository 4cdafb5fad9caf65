"""``slowfast-zoo predict SOURCE --live``: windows from a real stream, one line each, and how the run went."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("av")

from stream_server import Server

from slowfast_zoo.cli import main


def test_predict_live_prints_windows_and_the_summary(tiny_dir, tmp_path, capsys):
    server = Server(tmp_path, "--frames", "60", "--fps", "30")
    try:
        argv = ["predict", server.url, "--live", "--windows", "1,1", "--model", f"local-dir:{tiny_dir}"]
        assert main([*argv, "--top-k", "2", "--json"]) == 0
    finally:
        server.stop()
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.splitlines()]
    # the frames come in a burst: window [0, 1) may be skipped for the newest one, which is never skipped
    assert [(r["start"], r["end"]) for r in rows][-1] == (1.0, 2.0)
    assert all(len(r["predictions"]) == 2 and r["predictions"][0]["label"] in "abcde" for r in rows)
    assert all(r["latency"] >= r["compute"] >= 0 for r in rows)
    assert f"{len(rows)} windows scored, {2 - len(rows)} skipped" in out.err and "source ended" in out.err


def test_predict_live_garbage_is_one_line(tiny_dir, tmp_path, capsys):
    server = Server(tmp_path, "--mode", "garbage")
    try:
        assert main(["predict", server.url, "--live", "--model", f"local-dir:{tiny_dir}"]) == 2
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not a readable video stream" in err and server.url in err


def test_predict_render_writes_the_annotated_video(tiny_dir, tmp_path, capsys):
    import av

    import slowfast_zoo

    out = tmp_path / "annotated.mp4"
    argv = ["predict", "--model", f"local-dir:{tiny_dir}", "--windows", "1,0.5", "--render", str(out), "--json"]
    assert main(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().err
    with av.open(str(slowfast_zoo.sample_video())) as a, av.open(str(out)) as b:
        src, dst = list(a.decode(video=0)), list(b.decode(video=0))
    assert len(dst) == len(src) and (dst[0].width, dst[0].height) == (src[0].width, src[0].height)


def test_detect_with_the_person_detector_and_render(tmp_path, capsys, monkeypatch):
    import torch
    from torch import nn

    import slowfast_zoo
    from slowfast_zoo.tasks import persons

    class Persons(nn.Module):
        """One confident person and one below the checkpoint's 0.8, on every keyframe."""

        def __init__(self):
            super().__init__()
            self.anchor = nn.Parameter(torch.zeros(1))

        def forward(self, images):
            h, w = images[0].shape[1:]
            boxes = torch.tensor([[0.0, 0.0, w / 2, h / 2], [1.0, 1.0, w - 1.0, h - 1.0]])
            return [{"boxes": boxes, "labels": torch.tensor([1, 1]), "scores": torch.tensor([0.9, 0.5])}]

    monkeypatch.setattr(persons, "person_detector", lambda device=None: Persons())
    torch.manual_seed(0)
    det = slowfast_zoo.create("slowfast_r50_8x8_det", width=8, num_frames=8)
    folder = slowfast_zoo.publish.save_pretrained(det, tmp_path / "det")
    video = str(slowfast_zoo.sample_video())
    out = tmp_path / "boxes.mp4"
    argv = ["detect", video, "--model", f"local-dir:{folder}", "--keyframes", "1,2", "--render", str(out), "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["keyframe"] for r in rows] == [1.0, 2.0]  # only the person above 0.8, on each keyframe
    assert out.stat().st_size > 0 and f"wrote {out}" in captured.err
    assert main(["detect", video, "--boxes-from", "file"]) == 2
    assert "--boxes FILE goes with --boxes-from file" in capsys.readouterr().err

"""``slowfast-zoo predict SOURCE --live``: windows from a real stream, one line each, and how the run went."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("av")

from stream_server import Server

from slowfast_zoo.cli import main


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    import torch

    import slowfast_zoo

    torch.manual_seed(0)
    model = slowfast_zoo.create("slow_r50_4x16", width=8, num_classes=5)
    return slowfast_zoo.publish.save_pretrained(
        model, tmp_path_factory.mktemp("tiny") / "model", label_names=list("abcde")
    )


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

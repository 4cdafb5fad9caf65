"""The ``slowfast-zoo`` command line, run as a user would (console script in a subprocess where it matters)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import caches_fixture, hub_fixture, random_model, tiny_cfg  # noqa: F401  (fixtures)

from slowfast_zoo.cli import main


def test_list_and_patterns(capsys) -> None:
    assert main(["list", "slowfast_r101*", "--pretrained"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "params", "GFLOPs", "dataset", "metrics"]
    assert [line.split()[0] for line in out[2:]] == ["slowfast_r101_8x8.k400_ptv", "slowfast_r101_50_50_16x8.k400_ptv"]
    assert "53.77M" in out[3] and "213.02" in out[3] and "top1 78.7" in out[3]


def test_list_json(capsys) -> None:
    assert main(["list", "slow_r50_8x8", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row == {"name": "slow_r50_8x8", "params": 32454096, "gflops": 54.52, "metrics": {"top1": 74.8, "top5": 91.6}}


def test_info(capsys) -> None:
    assert main(["info", "slowfast_r101_16x8"]) == 0
    out = capsys.readouterr().out
    assert "slowfast_r101_50_50_16x8.k400_ptv" in out and "53,774,808" in out
    assert "16x8 (fast 64x2, alpha 4) at 30 fps" in out and "10 clip(s) x 3 crop(s)" in out
    assert main(["info", "slow_r50_8x8.charades_ptv", "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["activation"] == "sigmoid" and cfg["ensemble"] == "max" and cfg["model"]["num_classes"] == 157


def test_unknown_model_is_a_clean_error(capsys) -> None:
    assert main(["info", "slowfast_r50_8x9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slowfast-zoo: error: unknown model 'slowfast_r50_8x9'; did you mean slowfast_r50_8x8")


def test_console_script_is_installed() -> None:
    exe = shutil.which("slowfast-zoo") or str(__import__("pathlib").Path(sys.executable).parent / "slowfast-zoo")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("slowfast-zoo 0.1.0")


def test_predict_on_the_embedded_sample(tmp_path, capsys) -> None:
    """The README's predict command, offline: full-size Slow 4x16 with weights from a local file, one view."""
    import torch
    from safetensors.torch import save_file

    import slowfast_zoo

    torch.manual_seed(0)
    weights = tmp_path / "slow.safetensors"
    save_file(slowfast_zoo.create("slow_r50_4x16").state_dict(), str(weights))
    argv = ["predict", "--model", "slow_r50_4x16", "--checkpoint", str(weights), "--views", "fast", "--top-k", "3"]
    assert main([*argv, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    # a file passed by hand is not verified as the published one: the result names the architecture only
    assert row["video"].endswith("sample.mp4") and row["model"] == "slow_r50_4x16"
    labels = slowfast_zoo.get_pretrained_cfg("slow_r50_4x16").label_names
    assert len(row["predictions"]) == 3 and row["predictions"][0]["label"] in labels and row["views"] == 1
    assert main(argv) == 0
    assert "sample.mp4" in capsys.readouterr().out


def test_predict_bad_video_is_a_clean_error(tmp_path, capsys) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video at all")
    assert main(["predict", str(bad), "--model", "slow_r50_4x16", "--checkpoint", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("slowfast-zoo: error:")


def test_predict_refuses_a_detector(capsys) -> None:
    assert main(["predict", "--model", "slowfast_r50_8x8_det"]) == 2
    assert "is an AVA detector: it scores person boxes" in capsys.readouterr().err


def test_features_command_writes_embeddings(tmp_path, capsys) -> None:
    import torch
    from safetensors.torch import save_file

    import slowfast_zoo

    torch.manual_seed(0)
    weights = tmp_path / "slow.safetensors"
    save_file(slowfast_zoo.create("slow_r50_4x16").state_dict(), str(weights))
    video = str(slowfast_zoo.sample_video())
    argv = ["features", video, "-o", str(tmp_path / "feats"), "--model", "slow_r50_4x16", "--checkpoint", str(weights)]
    assert main([*argv, "--no-progress"]) == 0
    loaded = slowfast_zoo.load_features(tmp_path / "feats")
    assert tuple(loaded["embeddings"].shape) == (1, 2048) and loaded["paths"] == [video] and not loaded["failed"]


# --- errors: one line naming the file and the problem, non-zero exit, never a traceback ---------------------------


def _err_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("slowfast-zoo:")]


def test_predict_goes_on_past_a_bad_video(tiny_dir, tmp_path, capsys) -> None:
    import slowfast_zoo

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    good = str(slowfast_zoo.sample_video())
    argv = ["predict", good, str(bad), good, "--model", f"local-dir:{tiny_dir}", "--views", "fast", "--json"]
    assert main(argv) == 1
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert [r["video"] for r in rows] == [good, good] and rows[0]["predictions"][0]["label"] in "abcde"
    errors = [line for line in out.err.splitlines() if line.startswith("slowfast-zoo:")]
    assert len(errors) == 2 and str(bad) in errors[0] and errors[1].endswith("1 of 3 video(s) failed")
    assert "Traceback" not in out.err


def test_top_k_zero_is_an_error(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["predict", "--top-k", "0"])
    assert e.value.code == 2 and "--top-k: must be at least 1" in capsys.readouterr().err


def test_detect_keyframe_beyond_the_end_is_an_error(tmp_path, capsys) -> None:
    import slowfast_zoo

    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"1000": [[0, 0, 10, 10]]}))
    video = str(slowfast_zoo.sample_video())
    assert main(["detect", video, "--boxes", str(boxes)]) == 2
    [line] = _err_lines(capsys)
    assert f"{video}: keyframe(s) 1000 s outside the video (0 to " in line


def test_bad_input_is_one_line(tmp_path, capsys) -> None:
    import slowfast_zoo

    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"1": 5}))  # not a list of boxes
    assert main(["detect", str(slowfast_zoo.sample_video()), "--boxes", str(boxes)]) == 2
    [line] = _err_lines(capsys)
    assert line.startswith("slowfast-zoo: error: keyframe 1 s: expected a non-empty list of [x1, y1, x2, y2] boxes")


def test_a_bug_shows_its_traceback_and_package_errors_are_one_line(monkeypatch, capsys, caplog) -> None:
    import logging

    import slowfast_zoo
    from slowfast_zoo.errors import SlowFastZooError

    def bug(*args, **kwargs):
        raise TypeError("a bug inside the zoo")

    monkeypatch.setattr(slowfast_zoo, "list_models", bug)
    with pytest.raises(TypeError, match="a bug inside the zoo"):  # not swallowed: Python prints the traceback
        main(["list"])

    def refused(*args, **kwargs):
        raise SlowFastZooError("refused on purpose")

    monkeypatch.setattr(slowfast_zoo, "list_models", refused)
    logger = logging.getLogger("slowfast_zoo")
    monkeypatch.setattr(logger, "level", logger.level)  # restored after the test
    logger.setLevel(logging.WARNING)
    assert main(["-v", "list"]) == 2
    assert logger.getEffectiveLevel() == logging.DEBUG  # -v: the debug log, with the traceback of the error
    assert _err_lines(capsys) == ["slowfast-zoo: error: refused on purpose"]
    assert any(r.exc_info and r.levelno == logging.DEBUG for r in caplog.records)


def test_offline_message_names_the_cli_option(tmp_path) -> None:
    """In a subprocess: huggingface_hub keeps its offline mode for the life of a process."""
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf")}
    env["SLOWFAST_ZOO_CACHE"] = str(tmp_path / "zoo")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "slowfast_zoo.cli", "predict", "--model", "slow_r50_4x16"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("slowfast-zoo:")]
    assert "offline" in line and "--checkpoint FILE" in line


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_so(tiny_dir, capsys) -> None:
    assert main(["predict", "--model", f"local-dir:{tiny_dir}", "--device", "cuda", "--views", "fast"]) == 2
    [line] = _err_lines(capsys)
    assert "device='cuda' was asked for, but torch sees no CUDA GPU" in line


def test_features_and_predict_take_local_dir_names(tiny_dir, tmp_path, capsys) -> None:
    import slowfast_zoo

    video = str(slowfast_zoo.sample_video())
    argv = ["features", video, "-o", str(tmp_path / "feats"), "--model", f"local-dir:{tiny_dir}", "--no-progress"]
    assert main(argv) == 0
    assert tuple(slowfast_zoo.load_features(tmp_path / "feats")["embeddings"].shape) == (1, 256)
    assert main(["predict", video, "--model", f"local-dir:{tiny_dir}", "--views", "fast", "--top-k", "2"]) == 0
    assert "sample.mp4" in capsys.readouterr().out


def test_predict_and_detect_take_hf_hub_names(hub, caches, tmp_path, capsys) -> None:
    import slowfast_zoo
    from slowfast_zoo.weights.publish import push_to_hub

    push_to_hub(random_model(tiny_cfg("slow_r50_4x16")), "org/tiny-slow", endpoint=hub.url)
    video = str(slowfast_zoo.sample_video())
    assert main(["predict", video, "--model", "hf-hub:org/tiny-slow", "--views", "fast", "--json", "--top-k", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["video"] == video
    push_to_hub(random_model(tiny_cfg("slow_r50_4x16_det")), "org/tiny-det", endpoint=hub.url)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"1": [[0, 0, 100, 100]]}))
    assert main(["detect", video, "--boxes", str(boxes), "--model", "hf-hub:org/tiny-det", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["keyframe"] == 1

"""The ``slowfast-zoo`` command line, run as a user would (console script in a subprocess where it matters)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

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
    assert row["video"].endswith("sample.mp4") and row["model"] == "slow_r50_4x16.k400_pysf"
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

"""``slowfast-zoo download / verify / convert / publish`` against the local Hub-compatible server."""

from __future__ import annotations

import json

import pytest
import torch
from hub_server import caches_fixture, hub_fixture, random_model, tiny_cfg  # noqa: F401  (fixtures)

import slowfast_zoo
from slowfast_zoo.cli import main
from slowfast_zoo.weights.keys import from_zoo
from slowfast_zoo.weights.publish import push_to_hub


def test_download_and_verify_a_hub_repo(hub, caches, capsys) -> None:
    result = push_to_hub(random_model(tiny_cfg("slow_r50_8x8")), "org/tiny-slow", endpoint=hub.url)
    assert main(["download", f"hf-hub:org/tiny-slow@{result.revision}"]) == 0
    out = capsys.readouterr().out
    assert f"sha256 {result.sha256}" in out and " hub " in out
    assert main(["download", "hf-hub:org/tiny-slow"]) == 0  # now from the cache
    assert " hf-cache " in capsys.readouterr().out


def test_download_needs_a_name(capsys) -> None:
    assert main(["download"]) == 2
    assert "name at least one model, or pass --all" in capsys.readouterr().err


def test_verify_reports_unpublished_weights(caches, capsys) -> None:
    assert main(["verify", "slowfast_r101_16x8"]) == 0
    assert capsys.readouterr().out.strip() == "slowfast_r101_50_50_16x8.k400_ptv: missing"  # nothing cached


def test_verify_manifest_lists_unknown_fields_without_errors(tmp_path, monkeypatch, capsys) -> None:
    """Against a manifest the test writes (one entry published, one not), not the shipped one, which changes."""
    from slowfast_zoo.factory import check_manifest
    from slowfast_zoo.weights.manifest import read_manifest

    manifest = read_manifest()
    pinned, unpinned = "slowfast_r50_8x8.k400_pysf", "slowfast_r101_50_50_16x8.k400_ptv"
    manifest["models"][pinned]["hub"].update(revision="a" * 40, sha256="b" * 64, size=1234)
    manifest["models"][unpinned]["hub"].update(revision=None, sha256=None, size=None)
    path = tmp_path / "weights_manifest.json"
    path.write_text(json.dumps(manifest))
    monkeypatch.setattr(slowfast_zoo, "check_manifest", lambda: check_manifest(path))
    assert main(["verify", "--manifest"]) == 0
    out = capsys.readouterr().out
    assert "0 error(s)" in out and f"null  {unpinned}: hub.revision" in out
    assert f"{pinned}: hub.revision" not in out and f"{pinned}: hub.sha256" not in out


@pytest.mark.slow
def test_convert_and_publish_a_full_size_upstream_file(hub, caches, tmp_path, capsys) -> None:
    torch.manual_seed(0)
    model = slowfast_zoo.create("slow_r50_4x16")
    upstream = tmp_path / "SLOW_4x16_R50.pyth"
    torch.save({"model_state": from_zoo(model.state_dict(), "ptv")}, upstream)
    out = tmp_path / "slow.safetensors"
    assert main(["convert", str(upstream), "--model", "slow_r50_4x16.k400_ptv", "-o", str(out)]) == 0
    assert "from torch/ptv" in capsys.readouterr().out
    loaded = slowfast_zoo.create("slow_r50_4x16", checkpoint=out)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))

    argv = ["publish", "slow_r50_4x16.k400_ptv", "--repo-id", "org/slow", "--source", str(upstream)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    entry = json.loads(printed[printed.index("{") :])["slow_r50_4x16.k400_ptv"]
    assert len(entry["hub"]["revision"]) == 40 and entry["hub"]["repo_id"] == "org/slow"

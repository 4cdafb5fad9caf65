"""save_pretrained / push_to_hub / publish through the real HfApi upload path, and ``create("hf-hub:...")`` back."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path

import pytest
import torch
from hub_server import (  # noqa: F401  (fixtures)
    assert_same_model,
    caches_fixture,
    example_input,
    hub_fixture,
    random_model,
    tiny_cfg,
    write_upstream,
)

import slowfast_zoo
from slowfast_zoo.factory import expected_state_dict
from slowfast_zoo.registry.pretrained import HubFile, Origin, PretrainedCfg
from slowfast_zoo.weights.cache import sha256_file
from slowfast_zoo.weights.publish import convert, publish, push_to_hub, save_pretrained
from slowfast_zoo.weights.sources import (
    HashMismatchError,
    WeightsNotFoundError,
    WeightsUnavailableError,
    resolve_weights,
)

SF = "slowfast_r50_8x8.k400_pysf"


def resolve(cfg, **kwargs):
    """``resolve_weights`` as ``create`` calls it: a converted origin file is checked against the factory's."""
    return resolve_weights(cfg, expected=expected_state_dict(cfg), **kwargs)


def _same_outputs(a, b, cfg) -> bool:
    """Bit-identical weights and outputs within float tolerance (see ``hub_server.assert_same_model``)."""
    assert_same_model(a, b, cfg)
    return True


def test_save_pretrained_folder(tmp_path):
    cfg = tiny_cfg(SF)
    model = random_model(cfg)
    folder = save_pretrained(model, tmp_path / "out", repo_id="org/tiny")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    back = PretrainedCfg.from_dict(config["pretrained_cfg"])
    assert back.model == cfg.model and back.hub.sha256 == sha256_file(folder / "model.safetensors")
    assert back.hub.revision is None and back.hub.repo_id == "org/tiny"
    assert config["label_names"] == list(cfg.label_names) and config["num_classes"] == 400
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "\nlicense: apache-2.0\n" in card.split("---")[1]
    assert back.hub.sha256 in card and "hf-hub:org/tiny" in card and cfg.citation in card
    # random tensors under a published config: the card claims neither the authors' file nor their top-1
    assert f"| top1 | {cfg.metrics['top1']} |" not in card and "not the published weights" in card
    loaded = slowfast_zoo.create(SF, width=8, checkpoint=folder / "model.safetensors")
    assert _same_outputs(loaded, model, cfg)


def test_push_to_hub_and_create_back(hub, caches):
    cfg = tiny_cfg(SF)
    model = random_model(cfg, seed=5)
    result = push_to_hub(model, "org/tiny-sf", endpoint=hub.url)
    assert len(result.revision) == 40
    stored = hub.repos["org/tiny-sf"].commits[result.revision]
    assert set(stored) == {"README.md", "config.json", "model.safetensors"}

    for spec in ("hf-hub:org/tiny-sf", f"hf-hub:org/tiny-sf@{result.revision}"):
        loaded = slowfast_zoo.create(spec, pretrained=True)
        assert _same_outputs(loaded, model, cfg)
        assert loaded.pretrained_cfg.hub == HubFile(
            "org/tiny-sf", result.revision, "model.safetensors", result.sha256, result.size
        )
        assert loaded.load_report.file_format == "safetensors"

    # architecture only: config.json, no weights
    hub.requests.clear()
    bare = slowfast_zoo.create("hf-hub:org/tiny-sf", pretrained=False)
    assert bare.cfg == cfg.model and not hub.requests_for("model.safetensors")


def test_fine_tuned_with_other_labels(hub, caches):
    base = tiny_cfg(SF)
    model = slowfast_zoo.create(SF, width=8, num_classes=3)
    names = ["cat", "dog", "bird"]
    result = push_to_hub(model, "me/pets", label_names=names, endpoint=hub.url)
    config = json.loads(hub.repos["me/pets"].commits[result.revision]["config.json"])
    assert config["label_names"] == names and config["num_classes"] == 3
    loaded = slowfast_zoo.create(f"hf-hub:me/pets@{result.revision}", pretrained=True)
    assert loaded.cfg.num_classes == 3 and loaded.pretrained_cfg.label_names == ("cat", "dog", "bird")
    assert _same_outputs(loaded, model.eval(), base.replace(model=model.cfg))


def test_hf_hub_offline(hub, caches, monkeypatch):
    cfg = tiny_cfg(SF)
    result = push_to_hub(random_model(cfg), "org/offline", endpoint=hub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="slowfast-zoo download hf-hub:org/offline"):
        slowfast_zoo.create("hf-hub:org/offline", pretrained=True)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert [w.source for w in slowfast_zoo.download_weights(["hf-hub:org/offline"])] == ["hub"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.requests.clear()
    for spec in ("hf-hub:org/offline", f"hf-hub:org/offline@{result.revision}"):
        assert slowfast_zoo.create(spec, pretrained=True).pretrained_cfg.hub.revision == result.revision
    assert hub.requests == []


def test_hf_hub_errors(hub, caches):
    with pytest.raises(WeightsNotFoundError, match="nobody/nothing"):
        slowfast_zoo.create("hf-hub:nobody/nothing", pretrained=True)
    cfg = tiny_cfg(SF)
    push_to_hub(random_model(cfg), "org/tampered", endpoint=hub.url)
    hub.fault("model.safetensors", "corrupt")
    with pytest.raises(HashMismatchError, match="org/tampered"):
        slowfast_zoo.create("hf-hub:org/tampered", pretrained=True)
    with pytest.raises(ValueError, match="repo id"):
        slowfast_zoo.create("hf-hub:not a repo", pretrained=True)


def test_publish_from_origin_url(hub, caches, tmp_path):
    cfg = tiny_cfg("slow_r50_8x8.k400_ptv")
    model = random_model(cfg, seed=7)
    upstream = write_upstream(model.state_dict(), "ptv_pyth", tmp_path / "SLOW_8x8_R50.pyth")
    url = hub.serve_file("pytorchvideo/SLOW_8x8_R50.pyth", upstream.read_bytes())
    cfg = cfg.replace(origin=Origin(url, "ptv_pyth", "ptv", sha256_file(upstream), upstream.stat().st_size))
    result = publish(cfg, "slowfast-zoo/slow_r50_8x8.k400_ptv", endpoint=hub.url, expected=expected_state_dict(cfg))
    entry = result.manifest_entry()
    assert entry["hub"]["revision"] == result.revision and entry["origin"]["sha256"] == sha256_file(upstream)
    assert (
        entry["hub"]["sha256"]
        == convert(upstream, cfg, tmp_path / "again.safetensors", expected=expected_state_dict(cfg)).sha256
    )  # deterministic
    pinned = cfg.replace(hub=HubFile(result.repo_id, result.revision, "model.safetensors", result.sha256, result.size))
    loaded = slowfast_zoo.create(cfg.name, width=8, checkpoint=resolve(pinned).path)
    assert _same_outputs(loaded, model, cfg)


def test_publish_refuses_a_source_the_manifest_does_not_pin(hub, caches, tmp_path):
    cfg = tiny_cfg(SF)
    upstream = write_upstream(random_model(cfg).state_dict(), "caffe2_pkl", tmp_path / "x.pkl")
    cfg = cfg.replace(origin=Origin("https://example.invalid/x.pkl", "caffe2_pkl", "caffe2", "ef" * 32, 10))
    with pytest.raises(HashMismatchError, match="ef" * 32):
        publish(cfg, "org/x", source=upstream, endpoint=hub.url, expected=expected_state_dict(cfg))
    assert not [r for r in hub.requests if r.method == "POST"]


@pytest.mark.parametrize("fmt", ["caffe2_pkl", "pysf_pyth", "ptv_pyth", "ptv_wrapper"])
def test_convert_every_layout(tmp_path, fmt):
    cfg = tiny_cfg(SF)
    model = random_model(cfg, seed=11)
    upstream = write_upstream(model.state_dict(), fmt, tmp_path / "upstream")
    result = convert(upstream, cfg, tmp_path / "out.safetensors", expected=expected_state_dict(cfg))
    assert result.sha256 == sha256_file(result.path) and result.source_sha256 == sha256_file(upstream)
    assert result.source_matches_manifest is None
    loaded = slowfast_zoo.create(SF, width=8, checkpoint=result.path)
    assert _same_outputs(loaded, model, cfg)


@pytest.mark.slow
@pytest.mark.parametrize("fmt, name", [("caffe2_pkl", "slow_r50_8x8.k400_pysf"), ("ptv_pyth", "slow_r50_8x8.k400_ptv")])
def test_full_size_publish_round_trip(hub, caches, tmp_path, fmt, name):
    cfg = slowfast_zoo.get_pretrained_cfg(name).replace(origin=None)
    model = random_model(cfg, seed=13)
    upstream = write_upstream(model.state_dict(), fmt, tmp_path / "upstream")
    result = publish(cfg, f"slowfast-zoo/{name}", source=upstream, endpoint=hub.url, expected=expected_state_dict(cfg))
    pinned = cfg.replace(hub=HubFile(result.repo_id, result.revision, "model.safetensors", result.sha256, result.size))
    loaded = slowfast_zoo.create(name, checkpoint=resolve(pinned).path)
    assert _same_outputs(loaded, model, cfg)
    via_hub = slowfast_zoo.create(f"hf-hub:slowfast-zoo/{name}@{result.revision}", pretrained=True)
    assert _same_outputs(via_hub, model, cfg)


# --- CLI: no network means one line, quickly ---------------------------------------------------------------------
@pytest.fixture
def dead_endpoint(monkeypatch):
    """A port with nothing listening (connection refused) and one that accepts but never answers."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}"
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
    yield refused, f"http://127.0.0.1:{silent.getsockname()[1]}"
    silent.close()


def test_download_hf_hub_offline_fails_fast_in_one_line(caches, dead_endpoint, monkeypatch, capsys):
    from slowfast_zoo.cli import main

    monkeypatch.setenv("SLOWFAST_ZOO_TIMEOUT", "1")
    for endpoint in dead_endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        t = time.monotonic()
        assert main(["download", "hf-hub:org/tiny"]) == 2
        assert time.monotonic() - t < 5, endpoint  # the zoo's timeout, no 30 s of retries
        err = capsys.readouterr().err
        assert err.startswith("slowfast-zoo: error: hf-hub:org/tiny@main:") and err.count("\n") == 1, err


def test_publish_offline_is_one_clear_error(caches, dead_endpoint, tmp_path):
    cfg = tiny_cfg(SF)
    upstream = write_upstream(random_model(cfg).state_dict(), "caffe2_pkl", tmp_path / "SLOWFAST_8x8_R50.pkl")
    refused, _ = dead_endpoint
    with pytest.raises(WeightsUnavailableError, match=f"cannot upload org/x to {refused}"):  # the CLI prints one line
        publish(cfg, "org/x", source=upstream, endpoint=refused, expected=expected_state_dict(cfg))
    dead_origin = cfg.replace(origin=Origin(refused + "/SLOWFAST_8x8_R50.pkl", "caffe2_pkl", "caffe2"))
    with pytest.raises(WeightsUnavailableError, match="cannot download the authors' file"):
        publish(dead_origin, "org/x", endpoint=refused, expected=expected_state_dict(dead_origin))


# --- the maintainers' workflow: its commands are the README's, run here against the local Hub ---------------------
WORKFLOW = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "publish-weights.yml"
README = Path(__file__).resolve().parents[2] / "README.md"


def _workflow_commands() -> list[str]:
    import yaml

    flow = yaml.safe_load(WORKFLOW.read_text())
    assert "workflow_dispatch" in flow[True]  # YAML 1.1 reads the key "on" as True; manual dispatch only
    assert list(flow[True]) == ["workflow_dispatch"]
    job = flow["jobs"]["publish"]
    assert job["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}"
    steps = job["steps"]
    assert any(s.get("uses", "").startswith("peter-evans/create-pull-request@") for s in steps)
    return [s["run"] for s in steps if s.get("run", "").startswith("slowfast-zoo ")]


def test_workflow_commands_are_the_readme_commands():
    commands = _workflow_commands()
    assert commands == [
        "slowfast-zoo publish --all --update-manifest weights_manifest.json",
        "slowfast-zoo verify --manifest",
    ]
    readme = README.read_text()
    for command in commands:
        assert f"\n{command}\n" in readme


@pytest.mark.slow
def test_workflow_publishes_and_updates_the_manifest(hub, caches, tmp_path, monkeypatch, capsys):
    import shlex

    from slowfast_zoo.cli import main
    from slowfast_zoo.weights.keys import from_zoo
    from slowfast_zoo.weights.manifest import read_manifest

    name, repo = "c2d_r50_8x8.k400_ptv", "slowfast-zoo/c2d_r50_8x8.k400_ptv"
    data = read_manifest()
    for other, rec in data["models"].items():  # everything else is already published
        if other != name:
            rec["hub"].update(revision="a" * 40, sha256="b" * 64, size=1)
    (tmp_path / "weights_manifest.json").write_text(json.dumps(data, indent=2) + "\n")
    torch.manual_seed(0)
    model = slowfast_zoo.create("c2d_r50_8x8")
    sources = tmp_path / "authors"
    sources.mkdir()
    upstream = sources / data["models"][name]["origin"]["url"].rsplit("/", 1)[-1]
    torch.save({"model_state": from_zoo(model.state_dict(), "ptv")}, upstream)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    publish_cmd, verify_cmd = _workflow_commands()
    assert main([*shlex.split(publish_cmd)[1:], "--source-dir", str(sources)]) == 0
    assert main(shlex.split(verify_cmd)[1:]) == 0
    out = capsys.readouterr().out
    assert "updated weights_manifest.json: 1 entry" in out and "0 error(s)" in out
    rec = json.loads((tmp_path / "weights_manifest.json").read_text())["models"][name]
    commit = hub.repos[repo].refs["main"]
    uploaded = hub.repos[repo].commits[commit]["model.safetensors"]
    assert rec["hub"] == {
        "repo_id": repo,
        "revision": commit,
        "filename": "model.safetensors",
        "sha256": hashlib.sha256(uploaded).hexdigest(),
        "size": len(uploaded),
    }
    assert rec["origin"]["sha256"] == sha256_file(upstream) and rec["origin"]["size"] == upstream.stat().st_size
    assert [i for i in slowfast_zoo.check_manifest(tmp_path / "weights_manifest.json") if i.level == "error"] == []

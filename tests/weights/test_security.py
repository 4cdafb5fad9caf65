"""A malicious pickle given as a checkpoint, in every pickle format the zoo accepts, is refused unexecuted."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_server import caches_fixture, hub_fixture, tiny_cfg  # noqa: F401  (fixtures)

import slowfast_zoo
from slowfast_zoo import CheckpointError
from slowfast_zoo.factory import expected_state_dict
from slowfast_zoo.registry.pretrained import Origin
from slowfast_zoo.weights.checkpoint import read_state_dict
from slowfast_zoo.weights.publish import convert, publish
from slowfast_zoo.weights.sources import resolve_weights

NAME = "slow_r50_8x8.k400_pysf"


def resolve(cfg, **kwargs):
    """``resolve_weights`` as ``create`` calls it: a converted origin file is checked against the factory's."""
    return resolve_weights(cfg, expected=expected_state_dict(cfg), **kwargs)


class Evil:
    """Unpickling this calls ``os.mkdir(marker)``: any code execution leaves the marker directory behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _payloads(marker: Path) -> dict[str, bytes]:
    """One malicious file per accepted pickle-based format (and the older pickle protocols)."""
    evil = Evil(marker)
    weight = np.zeros((2, 3, 1, 1, 1), dtype=np.float32)
    out = {}
    # Caffe2 .pkl: a protocol-2 pickle {'blobs': {...}}, the payload as a blob and at the top level
    out["caffe2_blob"] = pickle.dumps({"blobs": {"conv1_w": weight, "pred_w": evil}}, protocol=2)
    out["caffe2_top"] = pickle.dumps(evil, protocol=2)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        out[f"pickle_protocol{protocol}"] = pickle.dumps({"blobs": {"conv1_w": evil}}, protocol=protocol)
    # PyTorch: zip (the default since 1.6) and legacy torch.save (PySlowFast .pyth, multigrid .pkl), PTV layout
    for zip_format in (True, False):
        for label, obj in (
            ("pysf", {"epoch": 1, "model_state": {"s1.pathway0_stem.conv.weight": torch.zeros(1), "x": evil}}),
            ("ptv", {"model_state": evil}),
        ):
            buf = io.BytesIO()
            torch.save(obj, buf, _use_new_zipfile_serialization=zip_format)
            out[f"torch_{'zip' if zip_format else 'legacy'}_{label}"] = buf.getvalue()
    return out


def test_the_payload_is_live(tmp_path):
    """Plain pickle.loads would run it: the refusal below is not vacuous."""
    marker = tmp_path / "ran"
    pickle.loads(_payloads(marker)["caffe2_blob"])
    assert marker.is_dir()


@pytest.mark.parametrize("fmt", sorted(_payloads(Path("unused"))))
def test_malicious_checkpoint_refused(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil-{fmt}.pkl"
    path.write_bytes(_payloads(marker)[fmt])
    with pytest.raises(CheckpointError) as e:
        read_state_dict(path)
    # refused by the loader's own guard, not by a later step that happened to fail (every protocol reaches it)
    guard = "refused by torch.load(weights_only=True)" if fmt.startswith("torch") else "refusing to load global"
    assert guard in str(e.value) and "mkdir" in str(e.value), str(e.value)
    with pytest.raises(CheckpointError):
        slowfast_zoo.create(NAME, width=8, checkpoint=path)
    with pytest.raises(CheckpointError):
        convert(path, tiny_cfg(NAME), tmp_path / "out.safetensors", expected=expected_state_dict(tiny_cfg(NAME)))
    assert not marker.exists(), "the pickle's code ran"
    assert not (tmp_path / "out.safetensors").exists()


def test_malicious_origin_download_refused(hub, caches, tmp_path):
    marker = tmp_path / "pwned"
    data = _payloads(marker)["caffe2_blob"]
    cfg = tiny_cfg(NAME, origin=Origin(hub.serve_file("evil/SLOW_8x8_R50.pkl", data), "caffe2_pkl", "caffe2"))
    with pytest.raises(CheckpointError):
        resolve(cfg)
    assert not marker.exists()
    assert not [p for p in caches.zoo.rglob("*") if p.is_file() and ".locks" not in p.parts]


def test_malicious_publish_source_refused(hub, caches, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pyth"
    path.write_bytes(_payloads(marker)["torch_legacy_pysf"])
    with pytest.raises(CheckpointError):
        publish(tiny_cfg(NAME), "org/evil", source=path, endpoint=hub.url, expected=expected_state_dict(tiny_cfg(NAME)))
    assert not marker.exists()
    assert "org/evil" not in hub.repos and not [r for r in hub.requests if r.method == "POST"]


# --- a hostile server, a hostile co-user of the cache, hostile names (each attack failed before its fix) --
import hashlib  # noqa: E402
import json  # noqa: E402

from hub_server import random_model, write_upstream  # noqa: E402

from slowfast_zoo.registry.pretrained import HubFile  # noqa: E402
from slowfast_zoo.weights.publish import push_to_hub  # noqa: E402
from slowfast_zoo.weights.sources import WeightsError  # noqa: E402

SF = "slowfast_r50_8x8.k400_pysf"
SF_REPO = "slowfast-zoo/slowfast_r50_8x8.k400_pysf"  # the manifest's repo for SF


@pytest.fixture
def pushed(hub, caches):
    """A tiny SlowFast on the test Hub, its config pinned to the commit (what the manifest would pin)."""
    cfg = tiny_cfg(SF)
    result = push_to_hub(random_model(cfg), SF_REPO, cfg=cfg, endpoint=hub.url)
    hub.requests.clear()
    return cfg.replace(hub=HubFile(SF_REPO, result.revision, "model.safetensors", result.sha256, result.size))


def _blobs(caches) -> Path:
    return caches.hf / f"models--{SF_REPO.replace('/', '--')}" / "blobs"


@pytest.mark.parametrize("exists", [True, False], ids=["delete-existing", "write-new"])
def test_hostile_etag_touches_nothing_outside_the_cache(pushed, hub, caches, tmp_path, exists):
    """A mirror answering ``ETag: "../../../victim"`` deleted an existing file with zero GETs, or wrote a new one."""
    victim = tmp_path / "victim.txt"
    if exists:
        victim.write_text("precious")
    hostile = '"../../../victim.txt"'
    for headers in ({"X-Linked-Etag": hostile}, {"X-Linked-Etag": "", "ETag": hostile}):
        hub.faults.clear()
        hub.fault("model.safetensors", "headers", methods=("HEAD", "GET"), headers=headers)
        with pytest.raises(WeightsError, match="ETag"):
            resolve(pushed)
        assert victim.read_text() == "precious" if exists else not victim.exists()
        assert not [r for r in hub.requests if r.server == "cdn"]


def test_hostile_commit_header_is_refused(hub, caches, tmp_path):
    cfg = tiny_cfg(SF)
    push_to_hub(random_model(cfg), "org/tiny", endpoint=hub.url)
    hub.fault("config.json", "headers", methods=("HEAD", "GET"), headers={"X-Repo-Commit": "../../../../escaped"})
    with pytest.raises(WeightsError, match="commit"):
        slowfast_zoo.create("hf-hub:org/tiny", pretrained=True)
    assert not (tmp_path / "escaped").exists() and not (caches.hf.parent / "escaped").exists()


@pytest.mark.parametrize("revision", ["../../x", "/etc", "main/../../x", "a..b", "-x", "x.lock", "a b"])
def test_user_revisions_are_validated_before_any_request(hub, caches, revision):
    with pytest.raises(ValueError, match="invalid revision"):
        slowfast_zoo.create(f"hf-hub:org/tiny@{revision}", pretrained=True)
    assert hub.requests == []
    assert not [p for p in caches.hf.parent.rglob("x")]


@pytest.mark.parametrize("replaced", ["blob", "snapshot"])
def test_eviction_never_follows_a_link_out_of_the_cache(pushed, caches, tmp_path, replaced):
    """A co-user replaces the blob (or the snapshot link) with a link to one of your files: it must survive."""
    path = Path(resolve(pushed).path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = path.resolve() if replaced == "blob" else path
    target.unlink()
    target.symlink_to(victim)
    w = resolve(pushed)  # the bad copy is dropped and the file fetched again
    assert w.source == "hub" and w.sha256 == pushed.hub.sha256
    assert victim.read_text() == "precious"


def test_config_json_edited_in_the_cache_is_not_loaded(hub, caches, monkeypatch):
    """config.json is part of the pinned commit: an edited cached copy (another mean) must not load offline."""
    cfg = tiny_cfg(SF)
    result = push_to_hub(random_model(cfg), "org/tiny", endpoint=hub.url)
    slowfast_zoo.create(f"hf-hub:org/tiny@{result.revision}", pretrained=True)
    snapshot = caches.hf / "models--org--tiny" / "snapshots" / result.revision / "config.json"
    config = json.loads(snapshot.read_text())
    config["pretrained_cfg"]["mean"] = [0.0, 0.0, 0.0]
    snapshot.resolve().write_text(json.dumps(config))  # same file, other bytes
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError):
        slowfast_zoo.create(f"hf-hub:org/tiny@{result.revision}", pretrained=True)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    again = slowfast_zoo.create(f"hf-hub:org/tiny@{result.revision}", pretrained=True)  # online: fetched again
    assert again.pretrained_cfg.mean == cfg.mean


def test_a_pickle_under_a_safetensors_name_is_never_accepted(hub, caches, tmp_path):
    """A torch pickle in the converted cache, with a sidecar vouching for it, is dropped and converted afresh."""
    cfg = tiny_cfg(NAME)
    model = random_model(cfg)
    upstream = write_upstream(model.state_dict(), "caffe2_pkl", tmp_path / "SLOW_8x8_R50.pkl")
    cfg = cfg.replace(
        origin=Origin(hub.serve_file("c2/SLOW_8x8_R50.pkl", upstream.read_bytes()), "caffe2_pkl", "caffe2")
    )
    folder = caches.zoo / "converted" / cfg.name
    folder.mkdir(parents=True)
    torch.save(model.state_dict(), folder / "model.safetensors")
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "model.safetensors.json").write_text(json.dumps({"sha256": digest, "origin_url": "x"}))
    w = resolve(cfg)
    assert w.source == "origin" and w.sha256 != digest
    assert (folder / "model.safetensors").read_bytes()[8:9] == b"{"  # safetensors now

"""Provenance follows what the weights are: derived from the load (file, sha256), a parent record for changed
weights, no published metric on weights it was not measured on, and a model card that says what was done."""

from __future__ import annotations

import dataclasses
import json

import torch
from hub_server import pin_in_manifest, random_model, tiny_cfg

import slowfast_zoo
from slowfast_zoo.registry.pretrained import LoadedWeights, PretrainedCfg
from slowfast_zoo.weights.cache import sha256_file, tensors_sha256
from slowfast_zoo.weights.publish import save_pretrained

SF = "slowfast_r50_8x8.k400_pysf"


def _saved_cfg(folder) -> PretrainedCfg:
    return PretrainedCfg.from_dict(json.loads((folder / "config.json").read_text())["pretrained_cfg"])


def _published_folder(tmp_path):
    """A folder holding the tensors of a (tiny) published config unchanged, as publish() would write it."""
    cfg = tiny_cfg(SF, origin=slowfast_zoo.get_pretrained_cfg(SF).origin)
    model = random_model(cfg)
    fingerprint = tensors_sha256(model.state_dict())
    model.pretrained_cfg = cfg.replace(weights=LoadedWeights("x", "0" * 64, "pretrained", None, fingerprint))
    return save_pretrained(model, tmp_path / "published")


def _pin(monkeypatch, folder) -> None:
    """Make the installed manifest pin the folder's weights (as it will once they are published)."""
    pin_in_manifest(monkeypatch, SF, folder / "model.safetensors")


def test_random_initialization_claims_no_published_weights() -> None:
    cfg = slowfast_zoo.create("slowfast_r50_8x8.ssv2_ptv", device="meta").pretrained_cfg
    assert cfg.weights is None and cfg.parent is None
    assert cfg.tag is None and cfg.origin is None and cfg.hub is None and dict(cfg.metrics) == {}
    assert cfg.num_classes == 174 and len(cfg.label_names) == 174  # the architecture's label slots stay


def test_unchanged_weights_keep_the_published_record(tmp_path, monkeypatch) -> None:
    folder = _published_folder(tmp_path)
    saved = _saved_cfg(folder)
    assert saved.tag == "k400_pysf" and saved.metrics["top1"] == 77.0  # PySlowFast MODEL_ZOO.md, SLOWFAST_8x8_R50
    card = (folder / "README.md").read_text()
    assert "Converted from the authors' file" in card and "| top1 | 77.0 |" in card

    assert slowfast_zoo.create(f"local-dir:{folder}").pretrained_cfg.tag is None  # the folder's word is not enough
    _pin(monkeypatch, folder)
    model = slowfast_zoo.create(f"local-dir:{folder}")
    cfg = model.pretrained_cfg
    assert cfg.tag == "k400_pysf" and cfg.metrics["top1"] == 77.0 and cfg.parent is None
    assert cfg.weights.sha256 == sha256_file(folder / "model.safetensors")
    assert cfg.weights.file == str(folder / "model.safetensors") and cfg.weights.source == "checkpoint"


def test_new_classifier_records_the_parent_and_drops_metrics(tmp_path, monkeypatch) -> None:
    folder = _published_folder(tmp_path)
    _pin(monkeypatch, folder)
    sha = sha256_file(folder / "model.safetensors")
    model = slowfast_zoo.create(f"local-dir:{folder}", num_classes=3)
    cfg = model.pretrained_cfg
    assert cfg.tag is None and cfg.origin is None and cfg.hub is None and dict(cfg.metrics) == {}
    assert cfg.labels is None and cfg.num_classes == 3
    assert cfg.parent.name == SF and cfg.parent.sha256 == sha
    assert cfg.parent.changes == ("classifier re-initialized for 3 classes",)

    out = save_pretrained(model, tmp_path / "head", label_names=["a", "b", "c"])
    card = (out / "README.md").read_text()
    assert f"Derived from `{SF}`" in card and "classifier re-initialized for 3 classes" in card
    assert "top1" not in card and "Converted from the authors' file" not in card
    assert _saved_cfg(out).parent == cfg.parent  # saved unchanged: the same record

    with torch.no_grad():  # one "training step"
        next(iter(model.parameters())).add_(0.01)
    trained = _saved_cfg(save_pretrained(model, tmp_path / "trained", label_names=["a", "b", "c"]))
    assert trained.parent.changes == (
        "classifier re-initialized for 3 classes",
        "weights changed after loading (trained or edited)",
    )
    assert dict(trained.metrics) == {} and trained.tag is None


def test_saving_changed_or_unloaded_weights_drops_the_published_claims(tmp_path) -> None:
    cfg = tiny_cfg(SF)  # claims the published tag and metrics, but the tensors are random
    folder = save_pretrained(random_model(cfg), tmp_path / "out")
    saved = _saved_cfg(folder)
    assert saved.tag is None and dict(saved.metrics) == {} and saved.origin is None
    assert saved.parent.name == SF and saved.parent.sha256 is None
    card = (folder / "README.md").read_text()
    assert "77.0" not in card and "As published by the authors" not in card
    assert "not the published weights" in card


def test_unverified_checkpoint_speaks_only_for_itself(tmp_path) -> None:
    folder = _published_folder(tmp_path)
    # the same architecture and config, but the file is passed by hand to a name whose manifest pins no sha256
    cfg = _saved_cfg(folder)
    other = random_model(dataclasses.replace(cfg, hub=None), seed=3)
    path = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file(other.state_dict(), str(path))
    loaded = slowfast_zoo.create(f"local-dir:{folder}", checkpoint=path).pretrained_cfg
    assert loaded.weights.sha256 == sha256_file(path) and loaded.weights.source == "checkpoint"
    assert loaded.tag is None and dict(loaded.metrics) == {} and loaded.origin is None
    # the same file under a new 3-class head: its labels go, and the file it came from is the parent
    head = slowfast_zoo.create(f"local-dir:{folder}", checkpoint=path, num_classes=3).pretrained_cfg
    assert head.labels is None and head.label_names is None and dict(head.metrics) == {}
    assert head.parent.name == "slowfast_r50_8x8" and head.parent.sha256 == sha256_file(path)

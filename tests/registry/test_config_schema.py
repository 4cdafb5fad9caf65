"""Hostile config.json files get a ValueError naming the field, never an allocation (issue 12 §4)."""

from __future__ import annotations

import copy
import json
import math
import os
import time
from importlib import resources
from pathlib import Path

import pytest
from hub_server import caches_fixture, hub_fixture  # noqa: F401  (fixtures)

import slowfast_zoo
from slowfast_zoo.registry.config_schema import check_param_count, validate_config
from slowfast_zoo.registry.pretrained import label_names
from slowfast_zoo.weights.publish import save_pretrained


def _config(name: str) -> dict:
    """The config.json that save_pretrained writes for a registered tag (its own writer, read back as JSON)."""
    cfg = slowfast_zoo.get_pretrained_cfg(name)
    return {
        "library": "slowfast_zoo",
        "slowfast_zoo_version": slowfast_zoo.__version__,
        "architecture": cfg.arch,
        "name": cfg.name,
        "num_classes": cfg.num_classes,
        "label_names": list(cfg.label_names) if cfg.label_names is not None else None,
        "pretrained_cfg": json.loads(json.dumps(cfg.to_dict())),
    }


@pytest.mark.parametrize("name", slowfast_zoo.list_pretrained())
def test_every_registered_config_is_valid(name: str) -> None:
    config = _config(name)
    assert validate_config(config) == config


def test_a_config_written_by_save_pretrained_is_valid(tmp_path) -> None:
    model = slowfast_zoo.create("slowfast_r50_8x8", width=8, num_classes=3)
    folder = save_pretrained(model, tmp_path / "m", label_names=["a", "b", "c"])
    validate_config(json.loads((folder / "config.json").read_text()))


M = ("pretrained_cfg", "model")
P = ("pretrained_cfg",)
HOSTILE = [
    # (where, value, field named in the error)
    ((*M, "num_classes"), 1e9, "pretrained_cfg.model.num_classes"),
    ((*M, "num_classes"), 10**9, "pretrained_cfg.model.num_classes"),
    ((*M, "num_classes"), -1, "pretrained_cfg.model.num_classes"),
    ((*M, "num_classes"), True, "pretrained_cfg.model.num_classes"),
    ((*M, "num_classes"), "400", "pretrained_cfg.model.num_classes"),
    ((*M, "layers"), [3, 4, 100000, 3], "pretrained_cfg.model.layers[2]"),
    ((*M, "layers"), [3, 4, 6], "pretrained_cfg.model.layers"),
    ((*M, "width"), 1_000_000, "pretrained_cfg.model.width"),
    ((*M, "spatial_strides"), [1, 2, 2, 0], "pretrained_cfg.model.spatial_strides[3]"),
    ((*M, "dropout"), 1.5, "pretrained_cfg.model.dropout"),
    ((*M, "bn_eps"), 0.0, "pretrained_cfg.model.bn_eps"),
    ((*M, "head_pool"), "max", "pretrained_cfg.model.head_pool"),
    ((*M, "evil"), 1, "unknown field"),
    ((*P, "mean"), [math.nan, 0.45, 0.45], "pretrained_cfg.mean[0]"),
    ((*P, "mean"), [0.45, 0.45], "pretrained_cfg.mean"),
    ((*P, "std"), [0.225, 0.0, 0.225], "pretrained_cfg.std[1]"),
    ((*P, "std"), [0.225, 0.225, -0.225], "pretrained_cfg.std[2]"),
    ((*P, "std"), [math.inf, 0.225, 0.225], "pretrained_cfg.std[0]"),
    ((*P, "target_fps"), 0, "pretrained_cfg.target_fps"),
    ((*P, "test_clips"), 10**9, "pretrained_cfg.test_clips"),
    ((*P, "test_crops"), ["diagonal"], "pretrained_cfg.test_crops[0]"),
    ((*P, "labels"), "../../../../../../tmp/classes", "pretrained_cfg.labels"),
    ((*P, "labels"), "kinetics400/../ssv2", "pretrained_cfg.labels"),
    ((*P, "labels"), ["a", "b"], "pretrained_cfg.labels"),
    ((*P, "evaluated_classes"), [0, 400], "pretrained_cfg.evaluated_classes[1]"),
    ((*P, "hub", "filename"), "../../../home/u/.bashrc", "pretrained_cfg.hub.filename"),
    ((*P, "hub", "sha256"), "not-hex", "pretrained_cfg.hub.sha256"),
    ((*P, "origin", "url"), "file:///etc/passwd", "pretrained_cfg.origin.url"),
    ((*P, "metrics"), {"top1": math.nan}, "pretrained_cfg.metrics.top1"),
    ((*P, "evil"), 1, "unknown field"),
    (("label_names",), ["a"] * 399, "label_names"),
    (("label_names",), [1] * 400, "label_names[0]"),
    (("num_classes",), 401, "num_classes"),
    ((*P, "channel_order"), "BGR", "pretrained_cfg.channel_order"),  # was accepted and never applied
]


@pytest.mark.parametrize(("where", "value", "field"), HOSTILE, ids=[f"{'.'.join(w)}={v!r}"[:60] for w, v, _ in HOSTILE])
def test_hostile_field_is_a_value_error_naming_it(where: tuple[str, ...], value, field: str) -> None:
    config = _config("slowfast_r50_8x8.k400_pysf")
    assert config["pretrained_cfg"]["hub"] is not None and config["pretrained_cfg"]["origin"] is not None
    target = config
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = copy.deepcopy(value)
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        validate_config(config)


def test_a_label_set_name_cannot_reach_another_file(tmp_path) -> None:
    """Before: ``labels/{name}.json`` was joined into a path, so '../' read any .json on disk as class names."""
    outside = tmp_path / "stolen.json"
    outside.write_text(json.dumps(["secret"] * 3))
    labels_dir = Path(str(resources.files("slowfast_zoo").joinpath("labels")))
    relative = os.path.relpath(outside.with_suffix(""), labels_dir)
    assert relative.startswith("..")
    with pytest.raises(ValueError, match="unknown label set"):
        label_names(relative)
    assert label_names("kinetics400")[0] == "abseiling"  # SF/PTV kinetics_classnames.json, index 0


@pytest.fixture
def saved(tmp_path) -> Path:
    model = slowfast_zoo.create("slow_r50_8x8", width=8, num_classes=3)
    return save_pretrained(model, tmp_path / "saved", label_names=["a", "b", "c"])


def _edit(folder: Path, **pretrained_changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    for key, value in pretrained_changes.items():
        if key.startswith("model_"):
            config["pretrained_cfg"]["model"][key[len("model_") :]] = value
        else:
            config["pretrained_cfg"][key] = value
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(model_num_classes=10**9), "pretrained_cfg.model.num_classes"),
        (dict(model_width=100_000), "pretrained_cfg.model.width"),
        (dict(std=[0.225, 0.0, 0.225]), r"pretrained_cfg.std\[1\]"),
        (dict(labels="../../../../../../../etc/x"), "pretrained_cfg.labels"),
    ],
)
def test_local_dir_config_is_checked_before_building(saved: Path, changes: dict, field: str) -> None:
    _edit(saved, **changes)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=field):
        slowfast_zoo.create(f"local-dir:{saved}")
    assert time.perf_counter() - start < 10


def test_parameter_count_is_bounded_on_the_meta_device() -> None:
    """num_classes=1e9 would be a 2.3-trillion-parameter classifier: refused from a meta-device count, fast."""
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"parameters, above the limit of 2,000,000,000.*max_params="):
        slowfast_zoo.create("slowfast_r50_8x8", num_classes=10**9)
    assert time.perf_counter() - start < 10
    with pytest.raises(ValueError, match="above the limit of 1,000"):
        slowfast_zoo.create("slow_r50_8x8", width=8, num_classes=10, max_params=1000)
    model = slowfast_zoo.create("slow_r50_8x8", width=8, num_classes=10, max_params=None)
    assert check_param_count(model, None) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("where", "value", "field"),
    [
        (("model", "num_classes"), 10**9, "pretrained_cfg.model.num_classes"),
        (("model", "layers"), [3, 4, 100, 3], r"pretrained_cfg.model.layers\[2\]"),
        (("std",), [0.225, 0.0, 0.225], r"pretrained_cfg.std\[1\]"),
    ],
)
def test_hf_hub_config_is_checked_before_building(hub, caches, where, value, field) -> None:
    """A repo on a (local) Hub whose config.json asks for a huge or broken network: a ValueError naming the field."""
    config = _config("slow_r50_8x8.k400_pysf")
    config["pretrained_cfg"]["hub"] = {
        "repo_id": "org/evil",
        "revision": None,
        "filename": "model.safetensors",
        "sha256": "ab" * 32,
        "size": 1,
    }
    target = config["pretrained_cfg"]
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    if where == ("model", "layers"):  # keep the config self-consistent so that only the bound refuses it
        target["block_kernel_t"] = [[[1] * n for n in value]]
    hub.create_repo("org/evil")
    hub.commit("org/evil", {"config.json": json.dumps(config).encode()})
    start = time.perf_counter()
    with pytest.raises(ValueError, match=field):
        slowfast_zoo.create("hf-hub:org/evil", pretrained=False)
    assert time.perf_counter() - start < 10

"""weights_manifest.json: schema, one entry per pretrained tag, honest nulls, and the registry reading it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import slowfast_zoo
from slowfast_zoo import check_manifest
from slowfast_zoo.registry.pretrained import load_manifest
from slowfast_zoo.weights.manifest import merge_entries, validate_manifest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((ROOT / "weights_manifest.json").read_text())


def test_packaged_manifest_is_the_top_level_file(manifest):
    assert dict(load_manifest()) == manifest["models"]


def test_schema_has_no_errors(manifest):
    errors = [str(i) for i in validate_manifest(manifest) if i.level == "error"]
    assert errors == []


def test_one_entry_per_pretrained_tag(manifest):
    assert sorted(manifest["models"]) == sorted(slowfast_zoo.list_pretrained())


def test_verify_manifest_reports_nulls_not_errors():
    issues = check_manifest()
    assert [str(i) for i in issues if i.level == "error"] == []
    nulls = {(i.name, i.field) for i in issues if i.level == "null"}
    for name, rec in load_manifest().items():
        if rec["hub"]["revision"] is None:
            assert (name, "hub.revision/sha256/size") in nulls
        if rec["origin"] and rec["origin"]["sha256"] is None:
            assert (name, "origin.sha256") in nulls


@pytest.mark.self_consistency  # the registry against the package's own data file
@pytest.mark.parametrize("name", slowfast_zoo.list_pretrained())
def test_registry_reads_the_manifest(name, manifest):
    rec = manifest["models"][name]
    cfg = slowfast_zoo.get_pretrained_cfg(name)
    assert cfg.hub.repo_id == rec["hub"]["repo_id"] and cfg.hub.revision == rec["hub"]["revision"]
    assert cfg.hub.sha256 == rec["hub"]["sha256"] and cfg.hub.published == (rec["hub"]["revision"] is not None)
    assert cfg.origin.url == rec["origin"]["url"] and cfg.origin.format == rec["origin"]["format"]
    assert dict(cfg.metrics) == rec["metrics"]
    assert cfg.license == rec["license"] and cfg.citation == rec["citation"]
    assert cfg.label_names is not None and len(cfg.label_names) == cfg.num_classes


def _errors(data) -> set[tuple[str, str]]:
    return {(i.name, i.field) for i in validate_manifest(data) if i.level == "error"}


@pytest.mark.parametrize(
    "path, value, field",
    [
        (("hub", "revision"), "main", "hub.revision"),  # a branch, not a commit
        (("hub", "revision"), "abc123", "hub.revision"),
        (("hub", "sha256"), "AB" * 32, "hub.sha256"),  # not lowercase hex
        (("hub", "filename"), "pytorch_model.bin", "hub.filename"),
        (("hub", "repo_id"), "no-org", "hub.repo_id"),
        (("origin", "format"), "onnx", "origin.format"),
        (("origin", "format"), ["caffe2_pkl"], "origin.format"),  # not a string (unhashable: no crash)
        (("origin", "key_scheme"), "ptv", "origin.key_scheme"),  # a Caffe2 file has caffe2 keys
        (("origin", "sha256"), "0" * 63, "origin.sha256"),
        (("origin", "url"), "http://insecure.example/x.pkl", "origin.url"),
        (("params",), -1, "params"),
        (("license",), "", "license"),
    ],
)
def test_schema_catches(manifest, path, value, field):
    data = copy.deepcopy(manifest)
    name = "slowfast_r50_8x8.k400_pysf"
    target = data["models"][name]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert (name, field) in _errors(data)


def test_schema_catches_partial_publication_and_missing_keys(manifest):
    data = copy.deepcopy(manifest)
    name = "slow_r50_8x8.k400_pysf"
    data["models"][name]["hub"]["revision"] = "a" * 40  # a commit without its sha256 and size
    del data["models"][name]["citation"]
    errors = _errors(data)
    assert (name, "hub") in errors and (name, "citation") in errors


def test_published_entry_is_accepted(manifest):
    data = copy.deepcopy(manifest)
    data["models"]["slow_r50_8x8.k400_pysf"]["hub"].update(revision="a" * 40, sha256="b" * 64, size=1234)
    assert _errors(data) == set()
    nulls = {(i.name, i.field) for i in validate_manifest(data) if i.level == "null"}
    assert ("slow_r50_8x8.k400_pysf", "hub.revision/sha256/size") not in nulls


# SF:projects/pytorchvideo/README.md (SlowFast HEAD 287ec00): PySlowFast's re-hosted copies of the PyTorchVideo files,
# keys prefixed with ``model.``. Its Charades rows point at the SSv2 files (an upstream
# copy-paste error), so no Charades tag gets a mirror.
PYSF_REHOSTED = {
    "c2d_r50_8x8.k400_ptv": "https://dl.fbaipublicfiles.com/pytorchvideo/pysf_model_zoo/kinetics/C2D_8x8_R50.pyth",
    "i3d_r50_8x8.k400_ptv": "https://dl.fbaipublicfiles.com/pytorchvideo/pysf_model_zoo/kinetics/I3D_8x8_R50.pyth",
    "slow_r50_4x16.k400_ptv": "https://dl.fbaipublicfiles.com/pytorchvideo/pysf_model_zoo/kinetics/SLOW_4x16_R50.pyth",
    "slow_r50_8x8.k400_ptv": "https://dl.fbaipublicfiles.com/pytorchvideo/pysf_model_zoo/kinetics/SLOW_8x8_R50.pyth",
    "slowfast_r50_4x16.k400_ptv": (
        "https://dl.fbaipublicfiles.com/pytorchvideo/pysf_model_zoo/kinetics/SLOWFAST_4x16_R50.pyth"
    ),
    "slowfast_r50_8x8.k400_ptv": "https://dl.fbaipublicfiles.com/pytorchvideo/pysf_model_zoo/kinetics/SLOWFAST_8x8_R50.pyth",
    "slowfast_r101_8x8.k400_ptv": (
        "https://dl.fbaipublicfiles.com/pytorchvideo/pysf_model_zoo/kinetics/SLOWFAST_8x8_R101.pyth"
    ),
    "slowfast_r101_50_50_16x8.k400_ptv": (
        "https://dl.fbaipublicfiles.com/pytorchvideo/pysf_model_zoo/kinetics/SLOWFAST_16x8_R101_50_50.pyth"
    ),
    "slow_r50_8x8.ssv2_ptv": "https://dl.fbaipublicfiles.com/pytorchvideo/pysf_model_zoo/ssv2/SLOW_8x8_R50.pyth",
    "slowfast_r50_8x8.ssv2_ptv": "https://dl.fbaipublicfiles.com/pytorchvideo/pysf_model_zoo/ssv2/SLOWFAST_8x8_R50.pyth",
}


def test_mirror_origins_are_the_pysf_rehosted_files():
    mirrors = {
        name: [(m.url, m.key_scheme) for m in slowfast_zoo.get_pretrained_cfg(name).origin.mirrors]
        for name in slowfast_zoo.list_pretrained()
        if slowfast_zoo.get_pretrained_cfg(name).origin is not None
    }
    assert {n: m for n, m in mirrors.items() if m} == {n: [(u, "ptv_wrapper")] for n, u in PYSF_REHOSTED.items()}


@pytest.mark.parametrize(
    "mirror, field",
    [
        (
            {"url": "http://x/y.pyth", "key_scheme": "ptv_wrapper", "sha256": None, "size": None},
            "origin.mirrors[0].url",
        ),
        (
            {"url": "https://x/y.pyth", "key_scheme": "caffe2", "sha256": None, "size": None},
            "origin.mirrors[0].key_scheme",
        ),
        ({"url": "https://x/y.pyth", "key_scheme": "ptv", "sha256": "x", "size": None}, "origin.mirrors[0].sha256"),
        ({"url": "https://x/y.pyth", "key_scheme": "ptv", "other": 1}, "origin.mirrors[0].other"),
    ],
)
def test_schema_catches_bad_mirrors(manifest, mirror, field):
    data = copy.deepcopy(manifest)
    data["models"]["slow_r50_8x8.k400_ptv"]["origin"]["mirrors"] = [mirror]
    assert ("slow_r50_8x8.k400_ptv", field) in _errors(data)


def test_merge_entries_updates_fields_and_refuses_a_broken_result(manifest, tmp_path):
    path = tmp_path / "weights_manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    name = "slow_r50_8x8.k400_pysf"
    entry = {"hub": {"revision": "a" * 40, "sha256": "b" * 64, "size": 1234}, "origin": {"sha256": "c" * 64, "size": 9}}
    merge_entries(path, {name: entry})
    rec = json.loads(path.read_text())["models"][name]
    assert rec["hub"]["revision"] == "a" * 40 and rec["origin"]["sha256"] == "c" * 64
    assert rec["origin"]["url"] == manifest["models"][name]["origin"]["url"] and rec["metrics"]
    before = path.read_text()
    with pytest.raises(ValueError, match=r"hub\.revision"):
        merge_entries(path, {name: {"hub": {"revision": "main"}}})
    assert path.read_text() == before

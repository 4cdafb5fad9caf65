"""The weights loaded are the weights hashed: every path reads a file once, hashes that buffer and deserializes the
same buffer; a warm create passes over the weights once; only the installed manifest grants published provenance."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest
import torch
from hub_server import (  # noqa: F401  (fixtures)
    caches_fixture,
    hub_fixture,
    pin_in_manifest,
    random_model,
    tiny_cfg,
    write_upstream,
)
from safetensors.torch import save

import slowfast_zoo
from slowfast_zoo import CheckpointError
from slowfast_zoo.factory import expected_state_dict
from slowfast_zoo.registry.pretrained import HubFile, Origin
from slowfast_zoo.weights import cache as c
from slowfast_zoo.weights import convert as convert_module
from slowfast_zoo.weights.errors import WeightsError
from slowfast_zoo.weights.manifest import Mirror
from slowfast_zoo.weights.publish import _upload, convert, publish, push_to_hub, save_pretrained

SF = "slowfast_r50_8x8.k400_pysf"
KEY = "head.proj.weight"


def _two_files(tmp_path: Path) -> tuple[Path, bytes, bytes, torch.Tensor, torch.Tensor]:
    """A local-dir folder holding weights A (its config.json records A's sha256), and the bytes of other weights B."""
    cfg = tiny_cfg(SF)
    a, b = random_model(cfg, seed=1), random_model(cfg, seed=2)
    folder = save_pretrained(a, tmp_path / "folder", cfg=cfg.replace(tag=None, metrics={}))
    data_a = (folder / "model.safetensors").read_bytes()
    data_b = save({k: v.contiguous() for k, v in sorted(b.state_dict().items())}, metadata={"format": "pt"})
    return folder, data_a, data_b, a.state_dict()[KEY], b.state_dict()[KEY]


def _put(path: Path, data: bytes) -> None:
    """Swap ``path`` to other bytes the way a writer of the folder would: a new file renamed over it."""
    tmp = path.with_name(path.name + ".swap")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _loaded_hash_of(model: torch.nn.Module, by_tensor: dict[bytes, torch.Tensor]) -> str:
    """sha256 of the file whose tensors the model holds."""
    held = model.state_dict()[KEY]
    return next(hashlib.sha256(data).hexdigest() for data, t in by_tensor.items() if torch.equal(held, t))


# --- a swap at the worst moment, deterministically -----------------------------------------------------------------
def test_local_dir_swap_right_after_the_hash_never_loads_other_weights(tmp_path, monkeypatch) -> None:
    """The adversary swaps the file the moment its hash is taken (whichever reader takes it): what is loaded is
    what was hashed, or nothing."""
    folder, data_a, data_b, ta, tb = _two_files(tmp_path)
    weights = folder / "model.safetensors"
    hashed = threading.Event()

    def swap_after(fn):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            if Path(args[0]) == weights:
                hashed.set()
                _put(weights, data_b)
            return out

        return wrapper

    from slowfast_zoo.weights import formats

    for module, name in ((c, "sha256_file"), (c, "read_hashed"), (formats, "read_hashed")):  # whoever hashes
        if hasattr(module, name):
            monkeypatch.setattr(module, name, swap_after(getattr(module, name)))
    wrong = 0
    for _ in range(5):
        _put(weights, data_a)
        hashed.clear()
        try:
            model = slowfast_zoo.create(f"local-dir:{folder}")
        except CheckpointError:
            continue
        assert hashed.is_set()
        recorded = model.pretrained_cfg.weights.sha256
        wrong += recorded != _loaded_hash_of(model, {data_a: ta, data_b: tb})
    assert wrong == 0


def test_checkpoint_swap_right_after_the_load_never_records_another_hash(tmp_path, monkeypatch) -> None:
    """``create(checkpoint=P)``: the file is swapped to the (pinned) other file as soon as the tensors are loaded;
    the sha256 recorded is still that of the bytes the tensors came from."""
    _, data_a, data_b, ta, tb = _two_files(tmp_path)
    path = tmp_path / "ckpt.safetensors"
    import slowfast_zoo.factory as factory

    original = factory.load_checkpoint

    def load_then_swap(*args, **kwargs):
        report = original(*args, **kwargs)
        _put(path, data_b)
        return report

    monkeypatch.setattr(factory, "load_checkpoint", load_then_swap)
    wrong = 0
    for _ in range(5):
        _put(path, data_a)
        model = slowfast_zoo.create(SF, width=8, checkpoint=path)
        wrong += model.pretrained_cfg.weights.sha256 != _loaded_hash_of(model, {data_a: ta, data_b: tb})
    assert wrong == 0


# --- a free-running swapper, many tries ----------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ["local-dir", "checkpoint"])
def test_concurrent_swaps_give_zero_wrong_loads(tmp_path, entry: str) -> None:
    folder, data_a, data_b, ta, tb = _two_files(tmp_path)
    path = folder / "model.safetensors"
    stop, started = threading.Event(), threading.Event()

    def swapper() -> None:
        started.set()
        while not stop.is_set():
            for data in (data_b, data_a):
                _put(path, data)

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    started.wait()
    wrong = refused = 0
    try:
        for _ in range(40):
            try:
                if entry == "local-dir":
                    model = slowfast_zoo.create(f"local-dir:{folder}")
                else:
                    model = slowfast_zoo.create(SF, width=8, checkpoint=path)
            except (CheckpointError, FileNotFoundError):
                refused += 1  # bytes other than the recorded ones: refused, nothing loaded
                continue
            wrong += model.pretrained_cfg.weights.sha256 != _loaded_hash_of(model, {data_a: ta, data_b: tb})
    finally:
        stop.set()
        thread.join()
    assert wrong == 0, f"{wrong} wrong loads ({refused} refused)"


# --- one pass over the weights -------------------------------------------------------------------------------------
class _Counting:
    """Counts every byte fed to hashlib.sha256, whoever hashes."""

    def __init__(self, real) -> None:
        self.real, self.total = real, 0

    def __call__(self, data: bytes = b"", **kwargs):
        outer = self
        h = self.real(**kwargs)

        class Counted:
            def update(self, chunk) -> None:
                outer.total += memoryview(chunk).nbytes
                h.update(chunk)

            def hexdigest(self) -> str:
                return h.hexdigest()

            def digest(self) -> bytes:
                return h.digest()

        counted = Counted()
        if data:
            counted.update(data)
        return counted


@pytest.fixture
def count_hashing(monkeypatch) -> _Counting:
    counter = _Counting(hashlib.sha256)
    monkeypatch.setattr(hashlib, "sha256", counter)
    return counter


def test_warm_create_from_the_hub_cache_hashes_the_weights_once(hub, caches, count_hashing) -> None:
    cfg = tiny_cfg(SF)
    result = push_to_hub(random_model(cfg, seed=3), "org/once", endpoint=hub.url)
    spec = f"hf-hub:org/once@{result.revision}"
    slowfast_zoo.create(spec, pretrained=True)  # cold: downloaded and verified
    count_hashing.total = 0
    warm = slowfast_zoo.create(spec, pretrained=True)
    assert warm.pretrained_cfg.weights.sha256 == result.sha256
    # the weights once, plus the few kB of config.json checked against its blob id
    assert result.size <= count_hashing.total < result.size + 100_000, (count_hashing.total, result.size)


def test_warm_zoo_cache_of_a_converted_origin_file_is_hashed_once(hub, caches, tmp_path, count_hashing) -> None:
    from slowfast_zoo.weights.sources import pretrained_state_dict

    cfg = tiny_cfg("slow_r50_8x8.k400_ptv")
    model = random_model(cfg, seed=5)
    upstream = write_upstream(model.state_dict(), "ptv_pyth", tmp_path / "SLOW_8x8_R50.pyth")
    cfg = cfg.replace(origin=Origin(hub.serve_file("ptv/SLOW_8x8_R50.pyth", upstream.read_bytes()), "ptv_pyth", "ptv"))
    cold, _ = pretrained_state_dict(cfg, expected=expected_state_dict(cfg))
    assert cold.source == "origin"
    count_hashing.total = 0
    warm, tensors = pretrained_state_dict(cfg, expected=expected_state_dict(cfg))
    assert warm.source == "zoo-cache" and warm.sha256 == cold.sha256
    assert count_hashing.total == warm.path.stat().st_size
    assert all(torch.equal(tensors[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("entry", ["local-dir", "checkpoint"])
def test_create_from_a_file_hashes_it_once(tmp_path, count_hashing, entry: str) -> None:
    folder, data_a, *_ = _two_files(tmp_path)
    count_hashing.total = 0
    if entry == "local-dir":
        slowfast_zoo.create(f"local-dir:{folder}")
    else:
        slowfast_zoo.create(SF, width=8, checkpoint=folder / "model.safetensors")
    assert count_hashing.total == len(data_a)


def test_unchanged_weights_are_still_recognized_when_saved(tmp_path) -> None:
    """No tensor hash at load: save_pretrained compares with the file itself (read once, checked) instead."""
    folder, *_ = _two_files(tmp_path)
    model = slowfast_zoo.create(f"local-dir:{folder}")
    assert model.pretrained_cfg.weights.tensors_sha256 is None  # the file's sha256 stands for the tensors
    again = json.loads((save_pretrained(model, tmp_path / "again") / "config.json").read_text())["pretrained_cfg"]
    assert again["parent"] is None
    with torch.no_grad():
        model.state_dict()[KEY].add_(1.0)
    trained = json.loads((save_pretrained(model, tmp_path / "trained") / "config.json").read_text())["pretrained_cfg"]
    assert trained["parent"]["changes"] == ["weights changed after loading (trained or edited)"]


def test_convert_hashes_the_buffer_it_converts(tmp_path, count_hashing) -> None:
    cfg = tiny_cfg(SF)
    upstream = write_upstream(random_model(cfg).state_dict(), "pysf_pyth", tmp_path / "up.pyth")
    count_hashing.total = 0
    result = convert(upstream, cfg, tmp_path / "out.safetensors", expected=expected_state_dict(cfg))
    # the upstream file once, the output once (as it is written)
    assert count_hashing.total == upstream.stat().st_size + result.size
    assert result.source_sha256 == hashlib.new("sha256", upstream.read_bytes()).hexdigest()


# --- seams, not hooks ---------------------------------------------------------------------------------------------
def test_convert_needs_the_expected_structure_from_its_caller(tmp_path) -> None:
    cfg = tiny_cfg(SF)
    upstream = write_upstream(random_model(cfg).state_dict(), "caffe2_pkl", tmp_path / "x.pkl")
    assert not hasattr(convert_module, "set_structure_provider")
    with pytest.raises(TypeError):
        convert(upstream, cfg, tmp_path / "out.safetensors")


def test_convert_checks_dtype_kinds(tmp_path) -> None:
    """One structure check for converting and loading: an integer tensor where the model has floats is refused."""
    cfg = tiny_cfg(SF)
    sd = random_model(cfg).state_dict()
    sd[KEY] = sd[KEY].to(torch.int32)
    upstream = write_upstream(sd, "pysf_pyth", tmp_path / "int.pyth")
    with pytest.raises(CheckpointError, match=r"dtype mismatch.*head\.proj\.weight"):
        convert(upstream, cfg, tmp_path / "out.safetensors", expected=expected_state_dict(cfg))


# --- publish fetches the authors' file as create does -------------------------------------------------------------
def test_publish_downloads_through_the_mirrors(hub, caches, tmp_path) -> None:
    cfg = tiny_cfg(SF)
    upstream = write_upstream(random_model(cfg).state_dict(), "caffe2_pkl", tmp_path / "SLOWFAST_8x8_R50.pkl")
    mirror = hub.serve_file("mirror/SLOWFAST_8x8_R50.pkl", upstream.read_bytes())
    gone = mirror.replace("mirror/", "gone/")  # the authors' URL answers 404
    digest, size = c.sha256_file(upstream), upstream.stat().st_size
    cfg = cfg.replace(
        origin=Origin(gone, "caffe2_pkl", "caffe2", digest, size, mirrors=(Mirror(mirror, "caffe2", digest, size),))
    )
    result = publish(cfg, "org/mirrored", endpoint=hub.url, expected=expected_state_dict(cfg))
    assert result.origin_sha256 == digest and result.origin_size == size


def test_publish_checks_the_pinned_size_of_the_authors_file(hub, caches, tmp_path) -> None:
    cfg = tiny_cfg(SF)
    upstream = write_upstream(random_model(cfg).state_dict(), "caffe2_pkl", tmp_path / "SLOWFAST_8x8_R50.pkl")
    url = hub.serve_file("authors/SLOWFAST_8x8_R50.pkl", upstream.read_bytes())
    cfg = cfg.replace(origin=Origin(url, "caffe2_pkl", "caffe2", c.sha256_file(upstream), 12345))
    with pytest.raises(WeightsError, match="12345"):
        publish(cfg, "org/sized", endpoint=hub.url, expected=expected_state_dict(cfg))
    assert not [r for r in hub.requests if r.method == "POST"]


# --- provenance a folder cannot grant itself ----------------------------------------------------------------------
def _self_granted(folder: Path) -> Path:
    """Rewrite a saved folder's config.json to claim the published tag, origin and metrics, with its own sha256."""
    config = json.loads((folder / "config.json").read_text())
    weights = folder / "model.safetensors"
    claim = tiny_cfg(SF, origin=slowfast_zoo.get_pretrained_cfg(SF).origin)
    hub = HubFile("", None, "model.safetensors", c.sha256_file(weights), weights.stat().st_size)
    config["pretrained_cfg"] = claim.replace(hub=hub).to_dict()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_random_network_saved_as_k400_pysf_loads_back_without_the_published_claim(tmp_path) -> None:
    model = slowfast_zoo.create(SF, width=8)  # random weights: the architecture only
    folder = _self_granted(save_pretrained(model, tmp_path / "mine"))
    assert json.loads((folder / "config.json").read_text())["pretrained_cfg"]["metrics"]["top1"] == 77.0
    cfg = slowfast_zoo.create(f"local-dir:{folder}").pretrained_cfg
    assert cfg.tag is None and dict(cfg.metrics) == {} and cfg.origin is None and cfg.parent is None
    assert cfg.weights.sha256 == c.sha256_file(folder / "model.safetensors")
    card = (save_pretrained(slowfast_zoo.create(f"local-dir:{folder}"), tmp_path / "card") / "README.md").read_text()
    assert "77.0" not in card and "As published by the authors" not in card
    assert "not one the zoo's manifest knows" in card


def test_an_hf_hub_repo_cannot_grant_itself_the_published_claim(hub, caches, tmp_path) -> None:
    folder = _self_granted(save_pretrained(slowfast_zoo.create(SF, width=8), tmp_path / "repo"))
    kw = {"endpoint": hub.url, "token": None, "private": None, "branch": None, "commit_message": None}
    result = _upload(folder, "org/claims", **kw)
    cfg = slowfast_zoo.create(f"hf-hub:org/claims@{result.revision}", pretrained=True).pretrained_cfg
    assert cfg.tag is None and dict(cfg.metrics) == {} and cfg.origin is None
    assert cfg.hub.repo_id == "org/claims" and cfg.hub.revision == result.revision  # where it came from stays


def test_weights_the_installed_manifest_pins_keep_the_manifests_record(tmp_path, monkeypatch) -> None:
    folder = _self_granted(save_pretrained(slowfast_zoo.create(SF, width=8), tmp_path / "pinned"))
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"]["metrics"] = {"top1": 99.9}  # the folder's own numbers never replace the manifest's
    (folder / "config.json").write_text(json.dumps(config))
    pin_in_manifest(monkeypatch, SF, folder / "model.safetensors")
    cfg = slowfast_zoo.create(f"local-dir:{folder}").pretrained_cfg
    assert cfg.tag == "k400_pysf" and cfg.metrics["top1"] == 77.0  # PySlowFast MODEL_ZOO.md, SLOWFAST_8x8_R50

"""Verified weights over real HTTP: resolution order, the fault table, caching, locking and offline use.

The real ``huggingface_hub`` client talks to ``hub_server.HubServer`` on 127.0.0.1; nothing is monkeypatched except
environment variables (cache folders and the endpoint, which the zoo reads at call time).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from hub_server import (  # noqa: F401  (fixtures)
    assert_only_verified,
    assert_same_model,
    caches_fixture,
    example_input,
    hub_fixture,
    random_model,
    tiny_cfg,
    write_upstream,
)
from safetensors.torch import load, save

import slowfast_zoo
from slowfast_zoo.registry.pretrained import HubFile, Origin
from slowfast_zoo.weights.cache import sha256_file
from slowfast_zoo.weights.publish import publish
from slowfast_zoo.weights.sources import (
    CacheWriteError,
    CorruptCacheError,
    HashMismatchError,
    WeightsNotFoundError,
    WeightsUnavailableError,
    pretrained_file,
    pretrained_state_dict,
    resolve_weights,
    verify,
)

NAME = "slowfast_r50_8x8.k400_pysf"
REPO = "slowfast-zoo/slowfast_r50_8x8.k400_pysf"  # the manifest's repo for NAME
TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def published(hub, caches, tmp_path):
    """A tiny SlowFast published through ``publish`` from a Caffe2 file; its config pinned to the new commit."""
    cfg = tiny_cfg(NAME)
    model = random_model(cfg)
    upstream = write_upstream(model.state_dict(), "caffe2_pkl", tmp_path / "SLOWFAST_8x8_R50.pkl")
    result = publish(cfg, REPO, source=upstream, endpoint=hub.url)
    pinned = cfg.replace(hub=HubFile(REPO, result.revision, "model.safetensors", result.sha256, result.size))
    data = hub.repos[REPO].commits[result.revision]["model.safetensors"]
    hub.requests.clear()
    return pinned, model, result, data, upstream


def _blob_gets(hub):
    return [r for r in hub.requests if r.server == "cdn" and r.method == "GET"]


# --- the happy path -------------------------------------------------------------------------------------------------
def test_round_trip_bit_exact_and_cached_without_requests(published, hub, caches):
    cfg, model, result, data, _ = published
    path = pretrained_file(cfg)
    assert sha256_file(path) == result.sha256 == hashlib.sha256(data).hexdigest()
    assert len(_blob_gets(hub)) == 1
    loaded = slowfast_zoo.create(NAME, width=8, checkpoint=path).eval()
    assert_same_model(loaded, model, cfg)

    hub.requests.clear()
    w = resolve_weights(cfg)
    assert w.source == "hf-cache" and str(w.path) == path
    assert hub.requests == []  # pinned commit in the cache: zero requests
    assert resolve_weights(cfg, local_files_only=True).source == "hf-cache"
    assert_only_verified(caches.hf, {result.sha256})


def test_each_source_is_logged(published, caches, caplog):
    cfg = published[0]
    with caplog.at_level("INFO", logger="slowfast_zoo.weights"):
        pretrained_file(cfg)
        pretrained_file(cfg)
    text = caplog.text
    assert "downloaded from the Hugging Face Hub" in text and "from the Hugging Face cache" in text


def test_corrupt_cached_file_is_replaced(published, hub, caches):
    cfg, _, result, _, _ = published
    path = Path(pretrained_file(cfg))
    blob = path.resolve()
    blob.write_bytes(b"\0" * blob.stat().st_size)  # bit rot in the cache
    assert [r.status for r in verify([cfg], cache_dir=caches.hf)] == ["corrupt"]  # found and deleted
    assert not blob.exists()
    assert [r.status for r in verify([cfg], cache_dir=caches.hf)] == ["missing"]
    w = resolve_weights(cfg)
    assert w.source == "hub" and w.sha256 == result.sha256
    assert len(_blob_gets(hub)) == 2


# --- fault table ------------------------------------------------------------------------------------------------------
def test_wrong_bytes_same_length(published, hub, caches):
    cfg, _, result, data, _ = published
    hub.fault("model.safetensors", "corrupt")
    bad = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
    with pytest.raises(HashMismatchError) as e:
        pretrained_file(cfg)
    msg = str(e.value)
    for part in (REPO, cfg.hub.revision, "model.safetensors", result.sha256, hashlib.sha256(bad).hexdigest()):
        assert part in msg
    assert_only_verified(caches.hf, set())
    hub.faults.clear()
    assert sha256_file(pretrained_file(cfg)) == result.sha256  # the next attempt gets the right file


def test_announced_hash_differs_nothing_downloaded(published, hub, caches):
    cfg = published[0]
    wrong = cfg.replace(hub=HubFile(REPO, cfg.hub.revision, "model.safetensors", "ab" * 32, cfg.hub.size))
    with pytest.raises(HashMismatchError, match="nothing was downloaded"):
        pretrained_file(wrong)
    assert _blob_gets(hub) == []
    assert_only_verified(caches.hf, set())


def test_truncated_body(published, hub, caches):
    cfg = published[0]
    hub.fault("model.safetensors", "truncate")
    with pytest.raises(WeightsUnavailableError) as e:
        pretrained_file(cfg)
    assert REPO in str(e.value) and "slowfast-zoo download" in str(e.value)
    assert_only_verified(caches.hf, set())


def test_dropped_connection_once_is_recovered(published, hub, caches, caplog):
    cfg, _, result, _, _ = published
    hub.fault("model.safetensors", "drop", times=1)
    with caplog.at_level("WARNING", logger="slowfast_zoo.weights"):
        assert sha256_file(pretrained_file(cfg)) == result.sha256
    assert caplog.text.count("retry 1 of 2") == 1 and "retry 2" not in caplog.text  # each retry said once
    assert len(_blob_gets(hub)) == 2
    assert_only_verified(caches.hf, {result.sha256})


def test_dropped_connection_always(published, hub, caches):
    cfg = published[0]
    hub.fault("model.safetensors", "drop")
    with pytest.raises(WeightsUnavailableError, match=REPO):
        pretrained_file(cfg)
    assert_only_verified(caches.hf, set())


def test_404_repo(published, caches):
    cfg = published[0]
    missing = cfg.replace(hub=HubFile("nobody/missing", cfg.hub.revision, "model.safetensors", cfg.hub.sha256, 1))
    with pytest.raises(WeightsNotFoundError, match="nobody/missing"):
        pretrained_file(missing)
    assert_only_verified(caches.hf, set())


def test_404_file(published, caches):
    cfg = published[0]
    missing = cfg.replace(hub=HubFile(REPO, cfg.hub.revision, "other.safetensors", cfg.hub.sha256, 1))
    with pytest.raises(WeightsNotFoundError, match=r"other\.safetensors"):
        pretrained_file(missing)
    assert_only_verified(caches.hf, set())


def test_wrong_revision(published, caches):
    cfg = published[0]
    wrong = cfg.replace(hub=HubFile(REPO, "0" * 40, "model.safetensors", cfg.hub.sha256, cfg.hub.size))
    with pytest.raises(WeightsNotFoundError, match="0" * 40):
        pretrained_file(wrong)
    assert_only_verified(caches.hf, set())


@pytest.mark.parametrize("methods", [("HEAD",), ("GET",)])
def test_http_500(published, hub, caches, methods):
    cfg = published[0]
    hub.fault("model.safetensors", "status", status=500, methods=methods)
    t = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match=r"500|HTTP"):
        pretrained_file(cfg)
    assert time.monotonic() - t < 30
    assert_only_verified(caches.hf, set())


def test_slow_server_past_timeout(published, hub, caches):
    cfg = published[0]
    hub.fault("model.safetensors", "delay", delay=3.0, methods=("HEAD",))
    t = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match=r"could not be reached|failed"):
        pretrained_file(cfg, timeout=0.5)
    assert time.monotonic() - t < 3.0
    assert_only_verified(caches.hf, set())


def test_unreachable_hub_falls_back_to_origin(published, hub, caches):
    cfg, model, result, _, upstream = published
    url = hub.serve_file("pyslowfast/model_zoo/kinetics400/SLOWFAST_8x8_R50.pkl", upstream.read_bytes())
    origin = Origin(url, "caffe2_pkl", "caffe2", sha256_file(upstream), upstream.stat().st_size)
    hub.fault("model.safetensors", "status", status=503, methods=("HEAD",))
    w = resolve_weights(cfg.replace(origin=origin))
    assert w.source == "origin"
    assert w.sha256 == result.sha256  # conversion is deterministic: the same bytes as the published file
    loaded = slowfast_zoo.create(NAME, width=8, checkpoint=w.path).eval()
    assert_same_model(loaded, model, cfg)
    hub.requests.clear()
    again = resolve_weights(cfg.replace(origin=origin))
    assert again.source == "zoo-cache" and hub.requests == []


def test_cache_dir_not_writable(published, tmp_path):
    cfg = published[0]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(CacheWriteError, match="a-file"):
        pretrained_file(cfg, cache_dir=blocker / "hub")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores directory permissions")
def test_cache_dir_read_only(published, tmp_path):
    cfg = published[0]
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(CacheWriteError, match="ro"):
            pretrained_file(cfg, cache_dir=ro)
    finally:
        ro.chmod(0o755)


# --- subprocesses: disk full, concurrency, HF_HUB_OFFLINE ------------------------------------------------------------
def _child(code: str, env: dict[str, str], cfg) -> subprocess.Popen:
    script = textwrap.dedent(
        """
        import json, sys
        from slowfast_zoo.registry.pretrained import PretrainedCfg
        from slowfast_zoo.weights import sources as hub
        cfg = PretrainedCfg.from_dict(json.loads(sys.argv[1]))
        """
    ) + textwrap.dedent(code)
    full_env = {**os.environ, **env}
    return subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(cfg.to_dict())],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=TESTS,
    )


def test_disk_full(published, hub, caches):
    cfg = published[0]
    code = """
    import resource, signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # writes past 100 kB fail like a full disk
    try:
        hub.pretrained_file(cfg)
    except hub.CacheWriteError as e:
        print("CacheWriteError:", e)
    """
    p = _child(code, {}, cfg)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "CacheWriteError" in out and str(caches.hf) in out
    assert_only_verified(caches.hf, set())


def test_two_processes_download_at_once(published, hub, caches):
    cfg, _, result, _, _ = published
    hub.fault("model.safetensors", "delay", delay=1.0, methods=("GET",))
    code = """
    w = hub.resolve_weights(cfg)
    print(w.source, w.path, w.sha256)
    """
    procs = [_child(code, {}, cfg) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    lines = [out.split() for out, _ in outs]
    assert {line[1] for line in lines} == {lines[0][1]}
    assert {line[2] for line in lines} == {result.sha256}
    assert sorted(line[0] for line in lines) == ["hf-cache", "hub"]  # one downloaded, the other waited
    assert len(_blob_gets(hub)) == 1
    blobs = list((caches.hf / f"models--{REPO.replace('/', '--')}" / "blobs").iterdir())
    assert len(blobs) == 1
    assert_only_verified(caches.hf, {result.sha256})


def test_hf_hub_offline_env_with_and_without_cache(published, hub, caches):
    cfg, _, result, _, _ = published
    code = """
    try:
        w = hub.resolve_weights(cfg)
        print("OK", w.source, w.sha256)
    except hub.WeightsUnavailableError as e:
        print("UNAVAILABLE", e)
    """
    p = _child(code, {"HF_HUB_OFFLINE": "1"}, cfg)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out.startswith("UNAVAILABLE") and f"slowfast-zoo download {cfg.name}" in out and "checkpoint=" in out
    assert hub.requests == []

    pretrained_file(cfg)  # online: now cached
    hub.requests.clear()
    p = _child(code, {"HF_HUB_OFFLINE": "1"}, cfg)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out.split() == ["OK", "hf-cache", result.sha256]
    assert hub.requests == []


def test_local_files_only_without_cache(published, hub, caches):
    cfg = published[0]
    with pytest.raises(WeightsUnavailableError) as e:
        pretrained_file(cfg, local_files_only=True)
    assert "slowfast-zoo download" in str(e.value) and "checkpoint=" in str(e.value)
    assert hub.requests == []


def test_unpublished_without_origin_says_so(caches):
    # a Hub entry this test unpins itself (the shipped manifest may pin one any day), and no origin
    cfg = tiny_cfg(NAME, hub=HubFile("org/never-published"))
    with pytest.raises(WeightsUnavailableError, match="no published weights"):
        pretrained_file(cfg)


def test_unpublished_hub_uses_origin(hub, caches, tmp_path):
    cfg = tiny_cfg("slow_r50_8x8.k400_ptv")
    model = random_model(cfg, seed=3)
    upstream = write_upstream(model.state_dict(), "ptv_pyth", tmp_path / "SLOW_8x8_R50.pyth")
    url = hub.serve_file("pytorchvideo/model_zoo/kinetics/SLOW_8x8_R50.pyth", upstream.read_bytes())
    cfg = cfg.replace(origin=Origin(url, "ptv_pyth", "ptv"))  # sha256 unknown: checked structurally
    w = resolve_weights(cfg)
    assert w.source == "origin"
    meta = json.loads((caches.zoo / "converted" / cfg.name / "model.safetensors.json").read_text())
    assert meta["origin_sha256"] == sha256_file(upstream) and meta["origin_verified"] is False
    loaded = slowfast_zoo.create(cfg.name, width=8, checkpoint=w.path).eval()
    assert_same_model(loaded, model, cfg)
    assert [r.status for r in verify([cfg], zoo_cache=caches.zoo)] == ["ok"]


def test_origin_hash_mismatch(hub, caches, tmp_path):
    cfg = tiny_cfg("slow_r50_8x8.k400_pysf")
    upstream = write_upstream(random_model(cfg).state_dict(), "caffe2_pkl", tmp_path / "SLOW_8x8_R50.pkl")
    url = hub.serve_file("c2/SLOW_8x8_R50.pkl", upstream.read_bytes())
    cfg = cfg.replace(origin=Origin(url, "caffe2_pkl", "caffe2", "cd" * 32, upstream.stat().st_size))
    with pytest.raises(HashMismatchError) as e:
        pretrained_file(cfg)
    assert url in str(e.value) and "cd" * 32 in str(e.value) and sha256_file(upstream) in str(e.value)
    assert_only_verified(caches.zoo, set())


def test_origin_structurally_wrong_file_is_refused(hub, caches, tmp_path):
    cfg = tiny_cfg("slow_r50_8x8.k400_pysf")
    other = tiny_cfg("i3d_r50_8x8.k400_pysf")  # I3D weights where Slow weights belong: shapes differ
    upstream = write_upstream(random_model(other).state_dict(), "caffe2_pkl", tmp_path / "x.pkl")
    cfg = cfg.replace(origin=Origin(hub.serve_file("x.pkl", upstream.read_bytes()), "caffe2_pkl", "caffe2"))
    with pytest.raises(slowfast_zoo.CheckpointError, match="does not fit"):
        pretrained_file(cfg)
    assert_only_verified(caches.zoo, set())


# --- issue 11 / 12: leftovers, locks, deadlines, first-download records, mirrors, permissions ----------------------
from filelock import FileLock  # noqa: E402

from slowfast_zoo.weights.manifest import Mirror  # noqa: E402
from slowfast_zoo.weights.sources import WeightsError  # noqa: E402

PTV = "slow_r50_8x8.k400_ptv"


def _origin_cfg(hub, tmp_path, fmt="ptv_pyth", seed=3, path="pytorchvideo/model_zoo/kinetics/SLOW_8x8_R50.pyth"):
    cfg = tiny_cfg(PTV)
    model = random_model(cfg, seed=seed)
    upstream = write_upstream(model.state_dict(), fmt, tmp_path / f"upstream-{seed}.pyth")
    url = hub.serve_file(path, upstream.read_bytes())
    return cfg.replace(origin=Origin(url, "ptv_pyth", "ptv")), model, upstream


def test_stale_partial_files_are_reported_and_removed_under_the_lock(hub, caches, tmp_path):
    cfg, _, _ = _origin_cfg(hub, tmp_path)
    folder = caches.zoo / "converted" / cfg.name
    folder.mkdir(parents=True)
    stale = folder / ".model.safetensors.x1y2.incomplete"  # what kill -9 during a conversion leaves
    stale.write_bytes(b"half")
    assert [(r.status, r.path) for r in verify([cfg], zoo_cache=caches.zoo)] == [("partial", str(stale))]
    assert resolve_weights(cfg).source == "origin"
    assert not stale.exists()
    assert [r.status for r in verify([cfg], zoo_cache=caches.zoo)] == ["ok"]


def test_first_lookup_evicts_nothing_and_the_lock_wait_is_bounded(published, caches, monkeypatch):
    cfg = published[0]
    blob = Path(pretrained_file(cfg)).resolve()
    blob.write_bytes(b"\0" * blob.stat().st_size)
    monkeypatch.setenv("SLOWFAST_ZOO_LOCK_TIMEOUT", "1")
    lock = FileLock(str(caches.zoo / ".locks" / f"weights-{cfg.name}-{cfg.hub.sha256}.lock"))
    with lock:  # another process is fetching these weights
        t = time.monotonic()
        with pytest.raises(WeightsError, match=r"gave up after 1 s .*SLOWFAST_ZOO_LOCK_TIMEOUT"):
            resolve_weights(cfg)
        assert time.monotonic() - t < 10
        assert blob.exists()  # the corrupt copy is left to whoever holds the lock
    assert resolve_weights(cfg).source == "hub"


def test_a_trickling_server_hits_the_deadline(hub, caches, tmp_path, monkeypatch):
    cfg, _, _ = _origin_cfg(hub, tmp_path)
    hub.fault("SLOW_8x8_R50.pyth", "trickle", delay=0.2)  # 20 kB/s: the file would take two minutes
    monkeypatch.setenv("SLOWFAST_ZOO_DEADLINE", "1.5")
    t = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="deadline"):
        resolve_weights(cfg)
    assert time.monotonic() - t < 10
    assert_only_verified(caches.zoo, set())


def test_a_broken_origin_transfer_is_a_clear_error(hub, caches, tmp_path):
    """``http.client.IncompleteRead`` used to escape raw."""
    cfg, _, _ = _origin_cfg(hub, tmp_path)
    hub.fault("SLOW_8x8_R50.pyth", "drop_chunked")
    with pytest.raises(WeightsUnavailableError, match="broken transfer"):
        resolve_weights(cfg)
    assert_only_verified(caches.zoo, set())


def test_origin_first_download_is_recorded_and_a_changed_file_refused(hub, caches, tmp_path, caplog):
    cfg, _, upstream = _origin_cfg(hub, tmp_path)
    with caplog.at_level("WARNING", logger="slowfast_zoo.weights"):
        first = resolve_weights(cfg)
    digest, size = sha256_file(upstream), upstream.stat().st_size
    assert f'"sha256": "{digest}", "size": {size}' in caplog.text  # printed for the manifest
    shutil.rmtree(first.path.parent)
    _, _, other = _origin_cfg(hub, tmp_path, seed=4)  # the authors replace the file under the same URL
    with pytest.raises(HashMismatchError, match="first download") as e:
        resolve_weights(cfg)
    assert digest in str(e.value) and sha256_file(other) in str(e.value)
    assert_only_verified(caches.zoo, set())
    assert resolve_weights(cfg, allow_changed_origin=True).source == "origin"  # the user says so


def test_mirror_serves_when_the_origin_is_gone(hub, caches, tmp_path):
    """PySlowFast re-hosts the PyTorchVideo files with ``model.``-prefixed keys (published_models.md §G.6)."""
    cfg, model, _ = _origin_cfg(hub, tmp_path, fmt="ptv_wrapper", path="pytorchvideo/pysf_model_zoo/kinetics/x.pyth")
    mirror = cfg.origin.url
    gone = hub.cdn_url + "/pytorchvideo/model_zoo/kinetics/gone.pyth"
    cfg = cfg.replace(origin=Origin(gone, "ptv_pyth", "ptv", mirrors=(Mirror(mirror, "ptv_wrapper"),)))
    w = resolve_weights(cfg)
    assert (w.source, w.location) == ("origin", mirror)
    loaded = slowfast_zoo.create(cfg.name, width=8, checkpoint=w.path)
    assert_same_model(loaded, model, cfg)


def test_files_written_respect_the_umask(published, hub, caches, tmp_path):
    old = os.umask(0o022)
    try:
        hub_file = Path(pretrained_file(published[0])).resolve()
        cfg, _, _ = _origin_cfg(hub, tmp_path)
        converted = resolve_weights(cfg).path
    finally:
        os.umask(old)
    for path in (hub_file, converted, converted.with_name("model.safetensors.json")):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_verify_judges_staleness_like_resolution(hub, caches, tmp_path):
    cfg, _, _ = _origin_cfg(hub, tmp_path)
    resolve_weights(cfg)
    repinned = cfg.replace(origin=Origin(cfg.origin.url, "ptv_pyth", "ptv", "ab" * 32, 1))  # the manifest moved on
    assert [r.status for r in verify([repinned], zoo_cache=caches.zoo)] == ["stale"]
    assert [r.status for r in verify([repinned], zoo_cache=caches.zoo)] == ["missing"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores directory permissions")
def test_corrupt_file_in_a_read_only_cache_is_reported_not_used(published, caches):
    cfg = published[0]
    path = Path(pretrained_file(cfg))
    path.resolve().write_bytes(b"\0" * 10)
    folders = [p for p in caches.hf.rglob("*") if p.is_dir()] + [caches.hf]
    for p in folders:
        p.chmod(0o555)
    try:
        with pytest.raises(CorruptCacheError, match="cannot be deleted"):
            resolve_weights(cfg)
    finally:
        for p in folders:
            p.chmod(0o755)


def test_the_bytes_hashed_are_the_bytes_loaded(published, caches):
    """A co-user swapping the cached file between check and load: every load is the verified tensors or an error."""
    cfg = published[0]
    path = Path(pretrained_file(cfg)).resolve()
    good = path.read_bytes()
    ref = load(good)
    evil = save({k: torch.zeros_like(v) for k, v in ref.items()})
    stop = threading.Event()

    def swap() -> None:
        tmp = path.with_name("swap.tmp")
        while not stop.is_set():
            for data in (evil, good):
                tmp.write_bytes(data)
                os.replace(tmp, path)

    thread = threading.Thread(target=swap)
    thread.start()
    loads = errors = 0
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                _, sd = pretrained_state_dict(cfg)
            except (WeightsError, slowfast_zoo.CheckpointError):
                errors += 1
                continue
            loads += 1
            assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in ref), "not the verified tensors"
    finally:
        stop.set()
        thread.join()
    assert loads > 0


def test_damaged_authors_file_is_named_as_such(hub, caches):
    """SlowFast #98 / #163: C2D_NOPOOL_8x8_R50.pkl is a gzip stream, not a checkpoint; the origin fallback says the
    authors' file itself is damaged and where that is reported, and leaves nothing in the cache."""
    import gzip

    cfg = tiny_cfg("c2d_nopool_r50_8x8.k400_pysf")
    url = hub.serve_file("kinetics400/C2D_NOPOOL_8x8_R50.pkl", gzip.compress(b"not a checkpoint" * 64))
    cfg = cfg.replace(origin=Origin(url, "caffe2_pkl", "caffe2"))
    with pytest.raises(slowfast_zoo.CheckpointError) as e:
        resolve_weights(cfg)
    assert "#98" in str(e.value) and "#163" in str(e.value)
    assert_only_verified(caches.zoo, set())

"""The network surface against a hostile server: tokens that stay home, deadlines that hold, bodies that stop.

Two servers on 127.0.0.1 stand for the Hub and a host it redirects to. Hangs are probed with an injected clock that
the server advances as it misbehaves (a trickled byte is one second), and every attack is bounded on the server side
too (``Fault.budget``), so a client that never gives up fails the test instead of hanging it. Nothing here reads the
wall clock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import tracemalloc
from pathlib import Path

import pytest
from filelock import FileLock
from hub_server import (  # noqa: F401  (fixtures)
    HubServer,
    assert_only_verified,
    caches_fixture,
    hub_fixture,
    random_model,
    tiny_cfg,
    write_upstream,
)

import slowfast_zoo
from slowfast_zoo.factory import expected_state_dict
from slowfast_zoo.registry.pretrained import HubFile, Origin
from slowfast_zoo.version import __version__
from slowfast_zoo.weights import origin as origin_module
from slowfast_zoo.weights.cache import sha256_file
from slowfast_zoo.weights.origin import origin_record
from slowfast_zoo.weights.publish import push_to_hub
from slowfast_zoo.weights.sources import WeightsError, WeightsNotFoundError, WeightsUnavailableError, resolve_weights
from slowfast_zoo.weights.transfer import Deadline

SF = "slowfast_r50_8x8.k400_pysf"
SF_REPO = "slowfast-zoo/slowfast_r50_8x8.k400_pysf"  # the manifest's repo for SF
PTV = "slow_r50_8x8.k400_ptv"
TOKEN = "hf_test_secret_token"


def resolve(cfg, **kwargs):
    """``resolve_weights`` as ``create`` calls it: a converted origin file is checked against the factory's."""
    return resolve_weights(cfg, expected=expected_state_dict(cfg), **kwargs)


class Clock:
    """A monotonic clock that moves only when told to (by the test server, as it misbehaves)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> None:
        self.now += seconds


@pytest.fixture
def other():
    """A second server on another port: where a hostile Hub redirects to."""
    with HubServer() as server:
        yield server


@pytest.fixture
def pushed(hub, caches):
    """A tiny SlowFast on the test Hub, its config pinned to the commit (what the manifest would pin)."""
    cfg = tiny_cfg(SF)
    result = push_to_hub(random_model(cfg), SF_REPO, cfg=cfg, endpoint=hub.url)
    hub.requests.clear()
    pinned = cfg.replace(hub=HubFile(SF_REPO, result.revision, "model.safetensors", result.sha256, result.size))
    return pinned, hub.repos[SF_REPO].commits[result.revision]["model.safetensors"]


def _origin_cfg(hub, tmp_path, **origin):
    cfg = tiny_cfg(PTV)
    upstream = write_upstream(random_model(cfg, seed=3).state_dict(), "ptv_pyth", tmp_path / "SLOW_8x8_R50.pyth")
    url = hub.serve_file("pytorchvideo/model_zoo/kinetics/SLOW_8x8_R50.pyth", upstream.read_bytes())
    return cfg.replace(origin=Origin(url, "ptv_pyth", "ptv", **origin)), upstream


def _header(request, name: str) -> str | None:
    return next((v for k, v in request.headers.items() if k.lower() == name), None)


# --- secrets ----------------------------------------------------------------------------------------------------------
def test_the_token_does_not_follow_a_redirect_of_the_config_json_get(hub, other, caches, monkeypatch):
    cfg = tiny_cfg(SF)
    push_to_hub(random_model(cfg), "org/tiny", endpoint=hub.url)
    commit = hub.repos["org/tiny"].refs["main"]
    elsewhere = other.serve_file("stolen/config.json", hub.repos["org/tiny"].commits[commit]["config.json"])
    hub.fault("config.json", "redirect", location=elsewhere)
    hub.requests.clear()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    model = slowfast_zoo.create("hf-hub:org/tiny", pretrained=True)  # the redirected bytes are the verified blob
    assert model.pretrained_cfg.hub.revision == commit
    assert [_header(r, "authorization") for r in hub.requests_for("config.json")] == [f"Bearer {TOKEN}"] * 2
    assert other.requests_for("config.json", "GET"), "the redirect was not followed: the test proves nothing"
    for r in other.requests:
        assert _header(r, "authorization") is None and TOKEN not in json.dumps(r.headers), r


def test_the_token_does_not_follow_a_redirect_of_the_weights_get_after_head_200(pushed, hub, other, caches):
    cfg, data = pushed
    hub.fault("model.safetensors", "regular", methods=("HEAD",))  # HEAD 200 on the Hub itself: GET it there
    hub.fault("model.safetensors", "redirect", location=other.serve_file("stolen/model.safetensors", data))
    w = resolve(cfg, token=TOKEN)
    assert w.sha256 == cfg.hub.sha256
    assert [(r.method, _header(r, "authorization")) for r in hub.requests_for("model.safetensors")] == [
        ("HEAD", f"Bearer {TOKEN}"),
        ("GET", f"Bearer {TOKEN}"),
    ]
    assert other.requests_for("model.safetensors", "GET")
    for r in other.requests:
        assert _header(r, "authorization") is None and TOKEN not in json.dumps(r.headers), r


def test_a_redirect_to_another_scheme_is_refused(pushed, hub, caches, tmp_path):
    """urllib follows ``ftp://`` redirects; a file: or ftp: URL must never be where weights come from."""
    cfg, _ = pushed
    hub.fault("model.safetensors", "redirect", location="ftp://127.0.0.1/model.safetensors")
    with pytest.raises(WeightsError, match="only http"):
        resolve(cfg, token=TOKEN)
    assert_only_verified(caches.hf, set())


# --- attribution ------------------------------------------------------------------------------------------------------
def test_every_request_names_the_library_and_origin_requests_carry_no_token(hub, caches, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    cfg = tiny_cfg(SF)
    push_to_hub(random_model(cfg), "org/tiny", endpoint=hub.url)  # huggingface_hub's own requests: POSTs
    slowfast_zoo.create("hf-hub:org/tiny", pretrained=True)  # config.json HEAD + GET, weights HEAD + CDN GET
    origin_cfg, _ = _origin_cfg(hub, tmp_path)
    resolve(origin_cfg)  # the authors' file
    seen = {(r.server, r.method) for r in hub.requests}
    assert seen == {("hub", "POST"), ("hub", "HEAD"), ("hub", "GET"), ("cdn", "GET")}
    for r in hub.requests:
        agent = _header(r, "user-agent") or ""
        assert agent.startswith(f"slowfast-zoo/{__version__};") and "hf_hub/" in agent, r
    for r in hub.requests:
        assert (_header(r, "authorization") is not None) == (r.server == "hub"), r


# --- bounded in time --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_headers_trickled_a_byte_a_second_stop_at_the_deadline(pushed, hub, caches, method):
    cfg, _ = pushed
    clock = Clock()
    fault = hub.fault("model.safetensors", "trickle_headers", methods=(method,), hook=clock.advance, budget=3000)
    with pytest.raises(WeightsUnavailableError, match="deadline of 15 s"):
        resolve(cfg, timeout=5, deadline=Deadline(15, clock))
    # the client hung up before the server's budget of 3000 bytes (3000 simulated seconds, 200 deadlines) ran out
    assert fault.finished.wait(60) and fault.hung_up, f"the server gave up first, after {fault.sent} bytes"
    assert len(hub.requests_for("model.safetensors", method)) == 1  # a deadline is not retried
    assert_only_verified(caches.hf, set())


def test_one_deadline_for_all_attempts(pushed, hub, caches):
    """Each attempt costs six simulated seconds before its connection drops: a 10 s deadline allows two, not three."""
    cfg, _ = pushed
    clock = Clock()
    hub.fault("model.safetensors", "drop", hook=lambda: clock.advance(6))
    with pytest.raises(WeightsUnavailableError, match="deadline of 10 s"):
        resolve(cfg, deadline=Deadline(10, clock))
    assert len([r for r in hub.requests if r.server == "cdn" and r.method == "GET"]) == 2


def test_a_slow_body_stops_at_the_deadline(hub, caches, tmp_path):
    cfg, _ = _origin_cfg(hub, tmp_path)
    clock = Clock()
    fault = hub.fault("SLOW_8x8_R50.pyth", "trickle", delay=0.001, hook=clock.advance)  # 4 kB a simulated second
    with pytest.raises(WeightsUnavailableError, match="deadline of 10 s"):
        resolve(cfg, deadline=Deadline(10, clock))
    assert fault.finished.wait(60) and fault.hung_up
    assert_only_verified(caches.zoo, set())


def test_the_lock_wait_is_part_of_the_deadline(pushed, hub, caches, monkeypatch):
    """A process waiting for another's download gives up when its deadline is spent, not a deadline plus 4 timeouts."""
    cfg, _ = pushed
    monkeypatch.setenv("SLOWFAST_ZOO_TIMEOUT", "1")
    monkeypatch.setenv("SLOWFAST_ZOO_DEADLINE", "0.2")
    (caches.zoo / ".locks").mkdir(parents=True)  # filelock 3.12.0 (the floor) does not create the lock's folder
    lock = FileLock(str(caches.zoo / ".locks" / f"weights-{cfg.name}-{cfg.hub.sha256}.lock"))
    with lock, pytest.raises(WeightsError, match=r"gave up after 0 s .*SLOWFAST_ZOO_DEADLINE"):
        resolve(cfg)
    assert hub.requests == []
    clock = Clock()
    spent = Deadline(10, clock)
    clock.advance(10)
    with lock, pytest.raises(WeightsError, match="gave up after 0 s"):
        resolve(cfg, deadline=spent)
    with pytest.raises(WeightsUnavailableError, match="deadline of 10 s"):  # lock free, but no time left to use it
        resolve(cfg, deadline=spent)
    assert hub.requests == []


# --- bounded in size --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def memory_cap(limit: int):
    """The Python heap may grow by at most ``limit`` bytes inside the block (tracemalloc's peak, not wall time)."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"peak {peak} bytes, cap {limit}"


def _assert_stopped(fault) -> None:
    """The client hung up before the server's budget ran out. (What the server got rid of says little about what the
    client read: loopback receive buffers may hold 32 MiB here, so budgets are 128 MiB. The read stops one byte past
    the limit, which the error message states.)"""
    assert fault.finished.wait(60) and fault.hung_up, "the client read the whole endless body"


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned-size", "x-linked-size"])
def test_an_endless_hub_body_stops_at_the_size(pushed, hub, caches, pinned):
    cfg, data = pushed
    if not pinned:
        cfg = cfg.replace(hub=HubFile(SF_REPO, cfg.hub.revision, "model.safetensors", cfg.hub.sha256, None))
    fault = hub.fault("model.safetensors", "endless", budget=128 << 20)
    why = "the pinned size" if pinned else "X-Linked-Size"
    with memory_cap(16 << 20), pytest.raises(WeightsError, match=f"more than the {len(data)} bytes allowed .*{why}"):
        resolve(cfg)
    _assert_stopped(fault)
    assert len(hub.requests_for("model.safetensors", "GET")) == 1  # too big is not retried
    assert_only_verified(caches.hf, set())


def test_an_announced_size_other_than_the_pinned_one_is_refused_before_any_get(pushed, hub, caches):
    cfg, data = pushed
    hub.fault("model.safetensors", "headers", methods=("HEAD",), headers={"X-Linked-Size": str(len(data) * 1000)})
    with pytest.raises(WeightsError, match="nothing was downloaded"):
        resolve(cfg)
    assert not [r for r in hub.requests if r.server == "cdn"]


def test_an_endless_origin_body_stops_at_the_pinned_size(hub, caches, tmp_path):
    cfg, upstream = _origin_cfg(hub, tmp_path)
    size = upstream.stat().st_size
    cfg = cfg.replace(origin=Origin(cfg.origin.url, "ptv_pyth", "ptv", sha256_file(upstream), size))
    fault = hub.fault("SLOW_8x8_R50.pyth", "endless", budget=128 << 20)
    with pytest.raises(WeightsError, match=f"more than the {size} bytes allowed .*manifest pins"):
        resolve(cfg)
    _assert_stopped(fault)
    assert_only_verified(caches.zoo, set())


def test_an_endless_origin_body_stops_at_the_first_download_size(hub, caches, tmp_path):
    cfg, upstream = _origin_cfg(hub, tmp_path)
    first = resolve(cfg)
    first.path.unlink()
    size = upstream.stat().st_size
    fault = hub.fault("SLOW_8x8_R50.pyth", "endless", budget=128 << 20)
    with pytest.raises(WeightsError, match=f"more than the {size} bytes allowed .*first download"):
        resolve(cfg)
    _assert_stopped(fault)


def test_an_endless_unpinned_origin_body_stops_at_the_stated_maximum(hub, caches, tmp_path, monkeypatch):
    monkeypatch.setattr(origin_module, "MAX_UNPINNED_BYTES", 1 << 20)  # the real one is 2 GiB: too much for a test
    cfg, _ = _origin_cfg(hub, tmp_path)
    fault = hub.fault("SLOW_8x8_R50.pyth", "endless", budget=128 << 20)
    with memory_cap(16 << 20), pytest.raises(WeightsError, match=f"more than the {1 << 20} bytes allowed .*MAX_UNP"):
        resolve(cfg)
    _assert_stopped(fault)
    assert not origin_record(cfg.origin.url, caches.zoo).exists()


def test_an_endless_config_json_stops_at_its_limit(hub, caches):
    """Not new (the 16 MiB limit was there): the endless form of it, under a memory cap."""
    cfg = tiny_cfg(SF)
    push_to_hub(random_model(cfg), "org/tiny", endpoint=hub.url)
    fault = hub.fault("config.json", "endless", budget=128 << 20)
    with memory_cap(64 << 20), pytest.raises(WeightsError, match=r"limit for a config\.json"):
        slowfast_zoo.create("hf-hub:org/tiny", pretrained=True)
    _assert_stopped(fault)


# --- the origin pin record --------------------------------------------------------------------------------------------
BAD_RECORDS = {
    "unparsable": b'{"sha256": "ab',
    "a-json-list": b'["sha256", "size"]',
    "wrong-types": json.dumps({"sha256": 5, "size": "2 MB"}).encode(),
    "short-hash": json.dumps({"sha256": "ab" * 8, "size": 10}).encode(),
    "empty": b"",
    "not-utf8": b"\xff\xfe{}",
}


@pytest.mark.parametrize("kind", [*BAD_RECORDS, "fifo", "directory", "symlink"])
def test_a_bad_origin_record_is_an_error_that_says_how_to_reset(hub, caches, tmp_path, kind):
    """Only a missing record means a first download; a bad one must not let other bytes in unrecorded."""
    cfg, _ = _origin_cfg(hub, tmp_path)
    record = origin_record(cfg.origin.url, caches.zoo)
    record.parent.mkdir(parents=True)
    done = threading.Event()
    if kind == "fifo":
        os.mkfifo(record)

        def guard() -> None:  # a reader blocked on the FIFO (the old code) gets EOF instead of hanging the test
            if not done.wait(20):
                fd = os.open(record, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)

        threading.Thread(target=guard, daemon=True).start()
    elif kind == "directory":
        record.mkdir()
    elif kind == "symlink":
        (tmp_path / "elsewhere.json").write_text(json.dumps({"sha256": "ab" * 32, "size": 1}))
        record.symlink_to(tmp_path / "elsewhere.json")
    else:
        record.write_bytes(BAD_RECORDS[kind])
    try:
        with pytest.raises(WeightsError) as e:
            resolve(cfg)
    finally:
        done.set()
    msg = str(e.value)
    assert str(record) in msg and f"delete {record}" in msg and "allow_changed_origin=True" in msg, msg
    assert not [r for r in hub.requests if r.server == "cdn"]  # refused before any download
    assert not (caches.zoo / "converted" / cfg.name / "model.safetensors").exists()


def test_allow_changed_origin_replaces_a_bad_record(hub, caches, tmp_path):
    cfg, upstream = _origin_cfg(hub, tmp_path)
    record = origin_record(cfg.origin.url, caches.zoo)
    record.parent.mkdir(parents=True)
    record.write_text("[]")
    assert resolve(cfg, allow_changed_origin=True).source == "origin"
    fixed = json.loads(record.read_text())
    assert (fixed["sha256"], fixed["size"]) == (sha256_file(upstream), upstream.stat().st_size)


# --- a planted config.json ----------------------------------------------------------------------------------------
def test_a_planted_self_consistent_config_json_is_caught_online(hub, caches):
    """A writer of the cache replaces a pinned commit's config.json (blob named by its own git id) and the weights it
    now pins: online, one HEAD shows that blob is not the commit's, and the real files are fetched."""
    from safetensors.torch import save

    from slowfast_zoo.weights.cache import git_blob_sha1

    cfg = tiny_cfg(SF)
    real = random_model(cfg)
    result = push_to_hub(real, "org/tiny", endpoint=hub.url)
    spec = f"hf-hub:org/tiny@{result.revision}"
    slowfast_zoo.create(spec, pretrained=True)
    folder = caches.hf / "models--org--tiny"
    evil = save({k: v.zero_() if v.is_floating_point() else v for k, v in random_model(cfg).state_dict().items()})
    evil_sha = hashlib.sha256(evil).hexdigest()
    config = json.loads((folder / "snapshots" / result.revision / "config.json").read_text())
    config["pretrained_cfg"]["hub"]["sha256"] = evil_sha
    config["pretrained_cfg"]["hub"]["size"] = len(evil)
    planted = json.dumps(config).encode()
    (folder / "blobs" / git_blob_sha1(planted)).write_bytes(planted)
    (folder / "blobs" / evil_sha).write_bytes(evil)
    for name, blob in (("config.json", git_blob_sha1(planted)), ("model.safetensors", evil_sha)):
        link = folder / "snapshots" / result.revision / name
        link.unlink()
        link.symlink_to(Path("..", "..", "blobs", blob))
    hub.requests.clear()
    loaded = slowfast_zoo.create(spec, pretrained=True)
    assert loaded.pretrained_cfg.hub.sha256 == result.sha256
    assert all(v.equal(real.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert [r.method for r in hub.requests_for("config.json")] == ["HEAD", "GET"]


def test_a_cached_pinned_commit_survives_its_repo_going_away(hub, caches, caplog):
    """The confirming HEAD answers 404: the pinned commit's cached files are used (as offline), and said so."""
    cfg = tiny_cfg(SF)
    result = push_to_hub(random_model(cfg), "org/tiny", endpoint=hub.url)
    spec = f"hf-hub:org/tiny@{result.revision}"
    slowfast_zoo.create(spec, pretrained=True)
    del hub.repos["org/tiny"]
    with caplog.at_level("WARNING", logger="slowfast_zoo.weights"):
        assert slowfast_zoo.create(spec, pretrained=True).pretrained_cfg.hub.revision == result.revision
    assert "using the cached copy" in caplog.text
    with pytest.raises(WeightsNotFoundError):  # a branch is not pinned: not found
        slowfast_zoo.create("hf-hub:org/tiny", pretrained=True)

"""A Hugging Face Hub-compatible HTTP server on 127.0.0.1 for the tests: the real client talks to it over real HTTP.

It speaks the parts of the Hub protocol that ``huggingface_hub`` 2.4 uses for downloads and uploads
(``huggingface_hub/file_download.py`` and ``hf_api.py`` of that release):

- ``HEAD``/``GET /{repo}/resolve/{revision}/{path}``: ``X-Repo-Commit``, ``ETag`` (git blob sha1) for regular files;
  large files (LFS) answer ``302`` to a second server on another port (a different origin, like the real CDN) with
  ``X-Linked-Etag`` = sha256 and ``X-Linked-Size``; errors carry ``X-Error-Code`` (``RepoNotFound``,
  ``RevisionNotFound``, ``EntryNotFound``).
- ``GET /api/models/{repo}[/revision/{rev}]``, ``POST /api/repos/create`` (``409`` with ``url`` when it exists),
  ``POST /api/models/{repo}/preupload/{rev}`` (always ``regular`` mode), ``POST /api/validate-yaml`` and
  ``POST /api/models/{repo}/commit/{rev}`` (NDJSON, base64 file contents).
- Any other URL is also servable as a plain file (``serve_file``), for the authors' origin downloads.

Faults can be injected per file name (:meth:`HubServer.fault`): same-length corrupted bytes, a truncated body, a
connection dropped mid-file, an HTTP status, a redirect, headers or a body that never end, an answer held
until the test releases it. A fault's ``hook`` runs as it misbehaves (to move a test's clock), and its events say
what happened, so tests wait on events instead of the wall clock. Every request is logged in
:attr:`HubServer.requests`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Fault", "HubServer", "Request", "git_blob_sha1"]

LFS_SUFFIXES = (".safetensors", ".bin", ".pkl", ".pyth", ".pth", ".pt")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Fault:
    """Misbehaviour for requests whose path ends with ``target`` (a file name)."""

    target: str
    #: ``corrupt`` (same length, other bytes), ``truncate`` (a complete but shorter body), ``drop`` (close the
    #: connection half-way through the promised body), ``status`` (answer ``status``),
    #: ``headers`` (answer with ``headers`` replacing the real ones: a hostile mirror), ``trickle`` (send 4 kB every
    #: ``delay`` seconds), ``drop_chunked`` (a chunked body whose first chunk is cut short), ``redirect`` (302 to
    #: ``location``), ``regular`` (serve an LFS-named file as a regular one: HEAD 200 on the Hub itself),
    #: ``trickle_headers`` (the status line and headers a byte at a time, endlessly), ``endless`` (a body with no
    #: length that never ends), ``block`` (set ``entered``, then answer only once ``release`` is set)
    kind: str
    methods: tuple[str, ...] = ("GET",)
    status: int = 500
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    #: how many requests it applies to (None: all)
    times: int | None = None
    hits: int = 0
    #: called (in the server's thread) each time the fault fires, and after each byte ``trickle_headers`` sends
    hook: Any = None
    #: ``redirect``: where to (an absolute URL)
    location: str = ""
    #: ``trickle_headers`` / ``endless``: the most bytes sent before the server itself gives up (a guard, so a client
    #: that never stops cannot hang the test); ``block``: seconds to wait for ``release``
    budget: float = 64 << 20
    #: what happened: bytes sent, whether the client hung up first, and the events of ``block``
    sent: int = 0
    hung_up: bool = False
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    #: set when the server has stopped sending (``trickle``, ``trickle_headers``, ``endless``) or waiting (``block``)
    finished: threading.Event = field(default_factory=threading.Event)


@dataclass
class Request:
    server: str  # "hub" or "cdn"
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class _Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    counter: int = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class HubServer:
    """Start with :meth:`start` (or as a context manager); :attr:`url` is the endpoint to pass as ``endpoint=``."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 -> bytes, served by the CDN
        self.files: dict[str, bytes] = {}  # plain files at arbitrary paths (origin downloads)
        self.faults: list[Fault] = []
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._servers: list[_Server] = []

    # --- life cycle -------------------------------------------------------------------------------------------
    def start(self) -> HubServer:
        for role in ("hub", "cdn"):
            handler = type(f"{role}Handler", (_Handler,), {"hub": self, "role": role})
            server = _Server(("127.0.0.1", 0), handler)
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    # --- content ----------------------------------------------------------------------------------------------
    def create_repo(self, repo_id: str) -> bool:
        with self._lock:
            if repo_id in self.repos:
                return False
            self.repos[repo_id] = _Repo()
            return True

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main", delete: tuple[str, ...] = ()) -> str:
        """Add a commit on ``branch`` with these files changed; returns its 40-hex id."""
        with self._lock:
            repo = self.repos.setdefault(repo_id, _Repo())
            parent = repo.refs.get(branch)
            tree = dict(repo.commits[parent]) if parent else {}
            tree.update(files)
            for path in delete:
                tree.pop(path, None)
            repo.counter += 1
            digest = hashlib.sha1(f"{repo_id}\0{parent}\0{repo.counter}".encode())
            for path in sorted(tree):
                digest.update(path.encode() + b"\0" + hashlib.sha256(tree[path]).digest())
            oid = digest.hexdigest()
            repo.commits[oid] = tree
            repo.refs[branch] = oid
            for data in tree.values():
                self.blobs[hashlib.sha256(data).hexdigest()] = data
            return oid

    def serve_file(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path`` on the CDN server (like the authors' download site); returns its URL."""
        path = "/" + path.lstrip("/")
        self.files[path] = data
        return self.cdn_url + path

    def fault(self, target: str, kind: str, **kw: Any) -> Fault:
        f = Fault(target, kind, **kw)
        self.faults.append(f)
        return f

    def requests_for(self, suffix: str, method: str | None = None) -> list[Request]:
        return [r for r in self.requests if r.path.split("?")[0].endswith(suffix) and method in (None, r.method)]

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if (
                    method in f.methods
                    and path.split("?")[0].endswith(f.target)
                    and (f.times is None or f.hits < f.times)
                ):
                    f.hits += 1
                    return f
        return None


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    role: str
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # --- plumbing ---------------------------------------------------------------------------------------------
    def _record(self) -> None:
        self.hub.requests.append(Request(self.role, self.command, self.path, dict(self.headers)))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        fault = getattr(self, "_fault", None)
        if fault and fault.kind == "headers":
            headers.update(fault.headers)
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._json(status, {"error": message}, headers)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _hostile_stream(self, fault: Fault) -> None:
        """Headers that never end, a byte at a time, or a body that never ends; stop when the client hangs up."""
        try:
            self._hostile_pieces(fault)
        finally:
            fault.finished.set()

    def _hostile_pieces(self, fault: Fault) -> None:
        self.close_connection = True
        if fault.kind == "trickle_headers":
            head = b"HTTP/1.1 200 OK\r\nX-Slow: "
            pieces = (head[i : i + 1] if i < len(head) else b"a" for i in range(1 << 62))
        else:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
            pieces = (b"\0" * 65536 for _ in range(1 << 62))
        for piece in pieces:
            if fault.sent >= fault.budget:
                return
            try:
                self.wfile.write(piece)
                self.wfile.flush()
            except OSError:
                fault.hung_up = True
                return
            fault.sent += len(piece)
            if fault.kind == "trickle_headers":
                if fault.hook:
                    fault.hook()
                time.sleep(0.002)  # lets the client read byte by byte; the test's clock, not this, is what counts

    def _content(self, data: bytes, headers: dict[str, str], fault: Fault | None) -> None:
        """Send a file body, misbehaving as the fault says."""
        if fault and fault.kind == "corrupt" and self.command == "GET":
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        if fault and fault.kind == "truncate" and self.command == "GET":
            data = data[: len(data) // 2]
        if fault and fault.kind == "trickle" and self.command == "GET":
            self.send_response(200)
            for k, v in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(k, v)
            self.end_headers()
            for i in range(0, len(data), 4096):
                try:
                    self.wfile.write(data[i : i + 4096])
                    self.wfile.flush()
                except OSError:  # the client gave up
                    fault.hung_up = True
                    break
                if fault.hook:
                    fault.hook()
                time.sleep(fault.delay)
            fault.finished.set()
            return
        if fault and fault.kind == "drop_chunked" and self.command == "GET":  # a chunk cut short
            self.send_response(200)
            for k, v in {**headers, "Transfer-Encoding": "chunked"}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(b"%x\r\n" % len(data) + data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault and fault.kind == "drop" and self.command == "GET":
            self.send_response(200)
            for k, v in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(k, v)
            self.end_headers()
            with contextlib.suppress(OSError):  # the client may have given up already
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self._send(200, data, {**headers, "Content-Length": str(len(data))})

    # --- methods ----------------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._get()

    def do_GET(self) -> None:
        self._get()

    def _get(self) -> None:
        self._record()
        fault = self.hub._fault_for(self.command, self.path)
        self._fault = fault
        if fault and fault.hook:
            fault.hook()
        if fault and fault.kind == "block":
            fault.entered.set()
            fault.release.wait(fault.budget)
            fault.finished.set()
        elif fault and fault.kind == "status":
            self._json(fault.status, {"error": "injected fault"})
            return
        elif fault and fault.kind == "redirect":
            self._send(302, b"", {"Location": fault.location})
            return
        elif fault and fault.kind in ("trickle_headers", "endless"):
            self._hostile_stream(fault)
            return
        path = urllib.parse.urlsplit(self.path).path
        if self.role == "cdn":
            self._cdn(path, fault)
            return
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if len(parts) >= 5 and parts[2] == "resolve":
            self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), fault)
        elif len(parts) >= 4 and parts[:2] == ["api", "models"]:
            rev = parts[5] if len(parts) >= 6 and parts[4] == "revision" else "main"
            self._repo_info("/".join(parts[2:4]), rev)
        else:
            self._error(404, "EntryNotFound", f"no route {path}")

    def _lookup(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", f"Repository not found: {repo_id}")
            return None
        commit = repo.refs.get(revision, revision if revision in repo.commits else None)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return commit, repo.commits[commit]

    def _resolve(self, repo_id: str, revision: str, filename: str, fault: Fault | None) -> None:
        found = self._lookup(repo_id, revision)
        if found is None:
            return
        commit, tree = found
        if filename not in tree:
            self._error(404, "EntryNotFound", f"{filename} does not exist at {revision}", commit)
            return
        data = tree[filename]
        regular = fault is not None and fault.kind == "regular"
        if filename.endswith(LFS_SUFFIXES) and not regular:  # LFS: redirect to the CDN, metadata on the 302
            sha = hashlib.sha256(data).hexdigest()
            headers = {
                "Location": f"{self.hub.cdn_url}/lfs/{sha}/{filename}",
                "X-Repo-Commit": commit,
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{git_blob_sha1(data)}"',
            }
            self._send(302, b"", headers)
            return
        headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_sha1(data)}"', "Accept-Ranges": "none"}
        self._content(data, headers, fault)

    def _cdn(self, path: str, fault: Fault | None) -> None:
        if path in self.hub.files:
            self._content(self.hub.files[path], {"Content-Type": "application/octet-stream"}, fault)
            return
        parts = path.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "lfs" and parts[1] in self.hub.blobs:
            self._content(self.hub.blobs[parts[1]], {"Content-Type": "application/octet-stream"}, fault)
            return
        self._send(404, b"not found")

    def _repo_info(self, repo_id: str, revision: str) -> None:
        found = self._lookup(repo_id, revision)
        if found is None:
            return
        commit, tree = found
        siblings = [{"rfilename": p} for p in sorted(tree)]
        self._json(200, {"id": repo_id, "modelId": repo_id, "sha": commit, "siblings": siblings, "private": False})

    def do_POST(self) -> None:
        self._record()
        body = self._body()
        parts = [urllib.parse.unquote(p) for p in urllib.parse.urlsplit(self.path).path.strip("/").split("/")]
        if parts == ["api", "repos", "create"]:
            payload = json.loads(body)
            repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            url = f"{self.hub.url}/{repo_id}"
            if self.hub.create_repo(repo_id):
                self._json(200, {"url": url, "name": repo_id})
            else:
                self._json(409, {"error": "You already created this model repo", "url": url})
        elif parts == ["api", "validate-yaml"]:
            self._json(200, {"errors": [], "warnings": []})
        elif len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "preupload":
            files = json.loads(body)["files"]
            self._json(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        elif len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "commit":
            self._commit("/".join(parts[2:4]), "/".join(parts[5:]), body)
        else:
            self._error(404, "EntryNotFound", f"no route {self.path}")

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        if repo_id not in self.hub.repos:
            self._error(404, "RepoNotFound", f"Repository not found: {repo_id}")
            return
        files: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] == "deletedFile":
                deleted.append(item["value"]["path"])
            elif item["key"] != "header":
                self._json(400, {"error": f"unsupported commit operation {item['key']}"})
                return
        oid = self.hub.commit(repo_id, files, branch=revision, delete=tuple(deleted))
        self._json(
            200, {"commitUrl": f"{self.hub.url}/{repo_id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
        )


# --- upstream checkpoint files in the authors' exact layouts ---------------------------------------------------------
def write_upstream(sd: dict[str, Any], fmt: str, path: Any, *, temporal_pool: bool = False) -> Any:
    """Write a zoo state dict as the authors' file: ``caffe2_pkl``, ``pysf_pyth``, ``ptv_pyth`` or ``ptv_wrapper``.

    Caffe2: a protocol-2 pickle ``{'blobs': {name: ndarray}}`` with solver blobs; PySlowFast: ``torch.save`` of
    ``{'epoch', 'model_state', 'optimizer_state', 'cfg'}``; PyTorchVideo: ``{'model_state': ...}`` with ptv keys.
    """
    import pickle

    import numpy as np
    import torch

    from slowfast_zoo.weights.keys import from_zoo

    if fmt == "caffe2_pkl":
        blobs = {k: v.detach().cpu().numpy().copy() for k, v in from_zoo(sd, "caffe2").items()}
        blobs.update({k + "_momentum": np.zeros_like(v) for k, v in list(blobs.items())[:3]})
        blobs["lr"] = np.array([0.1], dtype=np.float32)
        blobs["model_iter"] = np.array([196000], dtype=np.int64)
        with open(path, "wb") as f:
            pickle.dump({"blobs": blobs}, f, protocol=2)
    elif fmt == "pysf_pyth":
        state = {k: v.detach().clone() for k, v in from_zoo(sd, "pysf").items()}
        torch.save(
            {"epoch": 196, "model_state": state, "optimizer_state": {}, "cfg": "MODEL:\n  ARCH: slowfast\n"}, path
        )
    elif fmt in ("ptv_pyth", "ptv_wrapper"):
        scheme = "ptv" if fmt == "ptv_pyth" else "ptv_wrapper"
        state = {k: v.detach().clone() for k, v in from_zoo(sd, scheme, temporal_pool=temporal_pool).items()}
        torch.save({"model_state": state}, path)
    else:
        raise ValueError(fmt)
    return path


# --- fixtures (import hub_fixture / caches_fixture into a test module) and helpers ----------------------------
import pytest  # noqa: E402


@pytest.fixture(name="hub")
def hub_fixture():
    """A fresh Hub-compatible server on 127.0.0.1 (and its CDN on another port)."""
    with HubServer() as server:
        yield server


@pytest.fixture(name="caches")
def caches_fixture(tmp_path, monkeypatch, hub):
    """Empty HF and zoo caches in tmp_path, and HF_ENDPOINT pointing at the test server (read at call time)."""
    from types import SimpleNamespace

    ns = SimpleNamespace(hf=tmp_path / "hf-cache", zoo=tmp_path / "zoo-cache")
    monkeypatch.setenv("HF_HUB_CACHE", str(ns.hf))
    monkeypatch.setenv("SLOWFAST_ZOO_CACHE", str(ns.zoo))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    return ns


def tiny_cfg(name: str, **changes: Any) -> Any:
    """The registered pretrained config of ``name`` with a width-8 network and no origin (unless given)."""
    from slowfast_zoo import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    changes.setdefault("origin", None)
    return cfg.replace(model=cfg.model.replace(width=8), **changes)


def random_model(cfg: Any, seed: int = 0) -> Any:
    """A zoo model for ``cfg`` with every tensor random (BatchNorm variances positive), in eval mode."""
    import torch

    from slowfast_zoo import ResNet3d

    torch.manual_seed(seed)
    model = ResNet3d(cfg.model)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if key.endswith("running_var"):
                t.copy_(torch.rand_like(t) + 0.5)
            elif key.endswith("num_batches_tracked"):
                t.zero_()
            elif t.is_floating_point():
                t.copy_(torch.randn_like(t) * 0.1)
    model.pretrained_cfg = cfg
    return model.eval()


def example_input(cfg: Any, seed: int = 1) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed)
    m = cfg.model
    clips = [torch.randn(1, 3, m.frames(p), 64, 64, generator=g) for p in range(m.num_pathways)]
    return clips if m.num_pathways == 2 else clips[0]


def cache_files(root: Any) -> list[Any]:
    """Every regular file under a cache folder (locks excluded), following no links."""
    from pathlib import Path

    root = Path(root)
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and ".locks" not in p.parts)


def assert_only_verified(root: Any, allowed_sha256: set[str]) -> None:
    """The cache holds no partial file and no blob other than the allowed (verified) ones."""
    import hashlib

    for p in cache_files(root):
        assert not p.name.endswith(".incomplete"), f"partial file left behind: {p}"
        if "blobs" in p.parts or p.suffix == ".safetensors":
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            assert digest in allowed_sha256, f"unverified file left in the cache: {p} ({digest})"


def assert_same_model(a: Any, b: Any, cfg: Any) -> None:
    """Bit-identical weights, and outputs equal within float tolerance.

    Outputs of two separately built models are not compared bit for bit: oneDNN picks convolution kernels by memory
    layout and alignment, so on some CPUs (an AMD EPYC with AVX-512 BF16 here) equal weights give outputs that
    differ in the last bit (8.6278e-03 vs 8.6277e-03).
    """
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), f"{key} differs"
    x = example_input(cfg)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=1e-5, atol=1e-6)


def pin_in_manifest(monkeypatch: Any, name: str, weights_file: Any) -> None:
    """Make the installed manifest pin ``weights_file`` for ``name`` (as it will once that model is published)."""
    import slowfast_zoo.weights.sources as sources
    from slowfast_zoo.weights.cache import sha256_file

    record = dict(sources.load_manifest()[name])
    record["hub"] = {**record["hub"], "revision": "a" * 40, "sha256": sha256_file(weights_file)}
    monkeypatch.setattr(sources, "load_manifest", lambda: {name: record})

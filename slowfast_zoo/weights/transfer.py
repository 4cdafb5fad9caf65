"""HTTP for the weights subsystem: one HEAD that validates what a Hub (or a hostile mirror) announces, streamed
downloads under a read timeout and an overall deadline, and writes into the Hugging Face cache layout.

Why not ``hf_hub_download``: it names the cached blob after the server's ``ETag`` and the snapshot folder after its
``X-Repo-Commit`` without checking either, and it makes its own HEAD request, so a server that answers the zoo's
check honestly and the library's request with ``ETag: "../../x"`` would make it write outside the cache. Here every
header is checked (64-hex sha256 for LFS files, 40-hex git ids) before it names anything on disk, and the layout
written (``blobs/<id>``, ``snapshots/<commit>/<file>`` -> relative link, ``refs/<name>``) is the one
``huggingface_hub.try_to_load_from_cache`` reads.

Every request is bounded: one :class:`Deadline` per download is read before each connect, send and receive (so
headers trickled a byte at a time are cut off as surely as a slow body), and a body stops at the size pinned or
announced for it (:data:`MAX_UNPINNED_BYTES` when nothing states one). Every request names the library in its user
agent; the token goes to the Hub endpoint only and is dropped by any redirect that changes scheme, host or port.
"""

# Over ~400 lines: the bounded socket, the redirect rule and the requests that use them are one HTTP layer.

from __future__ import annotations

import hashlib
import http.client
import io
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..version import __version__
from .cache import CHUNK, atomic_writer, deadline_seconds, is_write_error, write_error
from .errors import DeadlineExceeded, SourceFailed, WeightsError, WeightsNotFoundError
from .manifest import HEX40, HEX64

__all__ = [
    "MAX_UNPINNED_BYTES",
    "Deadline",
    "HeadInfo",
    "check_revision",
    "fetch",
    "head",
    "hub_headers",
    "link_into_hf_cache",
    "repo_folder",
    "same_origin",
    "stream",
]

log = logging.getLogger(__name__)

_REF_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(/|$)")


def check_revision(revision: str) -> str:
    """A 40-hex commit, or a branch/tag name Git accepts (``git check-ref-format``); anything else is refused."""
    if HEX40.fullmatch(revision):
        return revision
    if (
        not revision
        or len(revision) > 255
        or revision == "@"
        or revision.startswith(("/", ".", "-"))
        or revision.endswith(("/", "."))
        or _REF_BAD.search(revision)
    ):
        raise ValueError(
            f"invalid revision {revision!r}: expected a 40-hex commit or a branch/tag name "
            "(no '..', no leading '/', '.' or '-', no spaces or ~^:?*[\\)"
        )
    return revision


#: the most bytes a download whose size nothing pins (no manifest size, no ``X-Linked-Size``, no size recorded at a
#: first download) may have: an endless body stops here
MAX_UNPINNED_BYTES = 2 << 30
#: redirects followed by one GET (a HEAD follows none: its own headers are what is checked)
MAX_REDIRECTS = 5
LIBRARY_NAME = "slowfast-zoo"


class Deadline:
    """One time budget for a whole download: the lock wait, the HEAD, and every attempt's connect, headers and body.

    ``clock`` (``time.monotonic`` by default) is read before every socket operation, which then waits at most the
    time that is left.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock = seconds, clock
        self.end = clock() + seconds

    @classmethod
    def of(cls, deadline: float | Deadline | None) -> Deadline:
        """``deadline`` itself, or a new one of that many seconds (default ``$SLOWFAST_ZOO_DEADLINE``)."""
        return deadline if isinstance(deadline, Deadline) else cls(deadline_seconds(deadline))

    def remaining(self) -> float:
        return self.end - self.clock()

    def exceeded(self, what: str) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"{what}: the download deadline of {self.seconds:g} s has passed (connect, headers, body and lock wait "
            "count together; set SLOWFAST_ZOO_DEADLINE to allow more)"
        )

    def left(self, what: str) -> float:
        """Seconds left; raises :class:`DeadlineExceeded` when none are."""
        left = self.remaining()
        if left <= 0:
            raise self.exceeded(what)
        return left


class _Armed(io.RawIOBase):
    """A socket's reader that waits at most the timeout, and never past the deadline, before each receive."""

    def __init__(self, raw: io.RawIOBase, arm: Callable[[], None]) -> None:
        self.raw, self.arm = raw, arm

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int | None:
        self.arm()
        return self.raw.readinto(b)

    def close(self) -> None:
        self.raw.close()
        super().close()


class _BoundedSocket:
    """A connected socket whose every send and receive is bounded by the read timeout and the deadline."""

    def __init__(self, sock: socket.socket, timeout: float, deadline: Deadline) -> None:
        self.sock, self.timeout, self.deadline = sock, timeout, deadline

    def _arm(self) -> None:
        self.sock.settimeout(min(self.timeout, self.deadline.left("socket")))

    def sendall(self, data: bytes) -> None:
        self._arm()
        self.sock.sendall(data)

    def makefile(self, mode: str = "rb", *args: object, **kwargs: object) -> io.BufferedReader:
        return io.BufferedReader(_Armed(self.sock.makefile("rb", buffering=0), self._arm))

    def close(self) -> None:
        self.sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class _Bounded:
    """Connect within the deadline, then bound every socket operation (mixed into http.client's connections)."""

    budget: tuple[float, Deadline]
    sock: Any
    timeout: float | None

    def connect(self) -> None:
        timeout, deadline = self.budget
        self.timeout = min(timeout, deadline.left("connect"))
        super().connect()  # type: ignore[misc]
        self.sock = _BoundedSocket(self.sock, timeout, deadline)


class _HTTPConnection(_Bounded, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_Bounded, http.client.HTTPSConnection):
    pass


def _connection(cls: type, budget: tuple[float, Deadline]) -> Callable[..., http.client.HTTPConnection]:
    def make(*args: Any, **kwargs: Any) -> http.client.HTTPConnection:
        conn = cls(*args, **kwargs)
        conn.budget = budget
        return conn

    return make


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, budget: tuple[float, Deadline]) -> None:
        super().__init__()
        self.budget = budget

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_connection(_HTTPConnection, self.budget), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, budget: tuple[float, Deadline]) -> None:
        super().__init__()
        self.budget = budget

    def https_open(self, req: urllib.request.Request) -> Any:
        # HTTPSHandler keeps its SSL context in _context, an attribute typeshed does not declare
        context = self._context  # type: ignore[attr-defined]
        return self.do_open(_connection(_HTTPSConnection, self.budget), req, context=context)


def same_origin(a: str, b: str) -> bool:
    """Whether two URLs have the same scheme, host and port (huggingface_hub's rule for keeping credentials)."""
    pa, pb = urllib.parse.urlsplit(a), urllib.parse.urlsplit(b)
    default = {"http": 80, "https": 443}
    try:
        ports = (pa.port or default.get(pa.scheme), pb.port or default.get(pb.scheme))
    except ValueError:  # a port that is not a number
        return False
    return pa.scheme == pb.scheme and pa.hostname == pb.hostname and ports[0] == ports[1]


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow at most MAX_REDIRECTS http(s) redirects; credentials never go to another scheme, host or port."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise WeightsError(f"refusing the redirect of {req.full_url} to {newurl[:200]}: only http(s) is allowed")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and not same_origin(req.full_url, new.full_url):
            for name in [k for k in new.headers if k.lower() in ("authorization", "cookie")]:
                del new.headers[name]
        return new


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _opener(timeout: float, deadline: Deadline, *, follow: bool) -> urllib.request.OpenerDirector:
    budget = (timeout, deadline)
    redirects = _Redirects() if follow else _NoRedirect()
    return urllib.request.build_opener(_HTTPHandler(budget), _HTTPSHandler(budget), redirects)


@dataclass(frozen=True)
class HeadInfo:
    """What the Hub announced for one file, every field validated."""

    commit: str
    #: sha256 (LFS file) or git blob sha1 (regular file)
    etag: str
    lfs: bool
    size: int | None
    #: where to GET the bytes
    location: str


def hub_headers(token: str | bool | None) -> dict[str, str]:
    """The headers of a request to the Hub endpoint: the user agent that names the library (``slowfast-zoo`` and
    its version, as ``huggingface_hub`` builds it) and the token (``None``: the saved one, ``False``: none)."""
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers(token=token, library_name=LIBRARY_NAME, library_version=__version__)


def _not_found(code: str | None, what: str) -> WeightsError:
    text = {
        "RepoNotFound": "Hub repository not found (or private)",
        "RevisionNotFound": "revision does not exist",
        "EntryNotFound": "file does not exist",
    }.get(code or "", "not found")
    return WeightsNotFoundError(f"{text}: {what}")


def head(
    url: str, what: str, *, timeout: float, token: str | bool | None, deadline: float | Deadline | None = None
) -> HeadInfo:
    """One HEAD request, no retries, no redirects followed; the answer's headers are checked before use."""
    deadline = Deadline.of(deadline)
    request = urllib.request.Request(url, method="HEAD", headers=hub_headers(token))
    try:
        response = _opener(timeout, deadline, follow=False).open(request)
        status, headers = response.status, response.headers
        response.close()
    except urllib.error.HTTPError as e:
        status, headers = e.code, e.headers
        if status not in (301, 302, 303, 307, 308):
            if status in (401, 404) and headers.get("X-Error-Code"):
                raise _not_found(headers.get("X-Error-Code"), what) from None
            if status == 404:
                raise _not_found(None, what) from None
            raise SourceFailed(f"the Hub answered HTTP {status} for {what}") from None
    except (OSError, http.client.HTTPException, DeadlineExceeded) as e:
        if deadline.remaining() <= 0:
            raise deadline.exceeded(f"HEAD of {what}") from None
        raise SourceFailed(f"the Hub could not be reached for {what}: {type(e).__name__}: {e}") from None
    commit = headers.get("X-Repo-Commit") or ""
    if not HEX40.fullmatch(commit):
        raise WeightsError(f"refusing {what}: the server announced commit {commit[:80]!r}, not a 40-hex git id")
    linked = headers.get("X-Linked-Etag")
    etag = (linked or headers.get("ETag") or "").removeprefix("W/").strip('"')
    if not (HEX64 if linked else HEX40).fullmatch(etag):
        kind = "a 64-hex sha256 (LFS file)" if linked else "a 40-hex git blob id"
        raise WeightsError(f"refusing {what}: the server announced ETag {etag[:80]!r}, not {kind}")
    size_text = headers.get("X-Linked-Size") if linked else headers.get("Content-Length")
    size = int(size_text) if size_text and size_text.isdigit() else None
    location = urllib.parse.urljoin(url, headers.get("Location") or url)
    return HeadInfo(commit, etag, bool(linked), size, location)


# long: one except clause per way a transfer can fail, each turned into the error the caller acts on
def stream(
    url: str,
    out: BinaryIO,
    *,
    timeout: float,
    deadline: float | Deadline | None = None,
    headers: dict[str, str] | None = None,
    progress: str | None = None,
    limit: int = MAX_UNPINNED_BYTES,
    limit_why: str = "MAX_UNPINNED_BYTES, the most a file of no pinned size may have",
) -> tuple[str, int]:
    """GET ``url`` into ``out``; returns (sha256, size). Each socket operation waits at most ``timeout`` s and the
    whole transfer (connect, headers, body, redirects) at most until ``deadline``; more than ``limit`` bytes
    (``limit_why`` says where that number comes from) are refused. Redirects drop the credentials when the scheme,
    host or port changes. Network failures raise :class:`SourceFailed`, HTTP 404/410 :class:`WeightsNotFoundError`.
    """
    from huggingface_hub.utils import tqdm

    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise WeightsError(f"refusing to download {url}: only http(s) URLs are allowed")
    deadline = Deadline.of(deadline)
    h, received = hashlib.sha256(), 0
    request = urllib.request.Request(url, headers=headers if headers is not None else hub_headers(False))
    try:
        with _opener(timeout, deadline, follow=True).open(request) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if (total or 0) > limit:
                raise WeightsError(f"{url}: {total} bytes announced, more than the {limit} allowed ({limit_why})")
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=progress, disable=not progress
            ) as bar:
                while chunk := response.read1(min(CHUNK, limit + 1 - received)):
                    received += len(chunk)
                    if received > limit:
                        raise WeightsError(f"{url}: more than the {limit} bytes allowed ({limit_why}); stopped there")
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise SourceFailed(f"{url}: connection closed after {received} of {total} bytes")
    except urllib.error.HTTPError as e:
        if e.code in (404, 410):
            raise WeightsNotFoundError(f"{url}: HTTP {e.code}") from None
        raise SourceFailed(f"{url}: HTTP {e.code}") from None
    except (OSError, http.client.HTTPException, DeadlineExceeded) as e:  # URLError, timeouts, resets, BadStatusLine
        if isinstance(e, OSError) and is_write_error(e):
            raise
        if deadline.remaining() <= 0:
            raise deadline.exceeded(f"{url}: {received} bytes") from None
        raise SourceFailed(f"{url}: broken transfer after {received} bytes ({type(e).__name__}: {e})") from None
    return h.hexdigest(), received


def fetch(
    url: str,
    dest: Path,
    check: Callable[[str, int], None],
    *,
    attempts: int = 3,
    deadline: float | Deadline | None = None,
    **kwargs: Any,
) -> tuple[str, int]:
    """:func:`stream` into ``dest`` atomically, retrying broken transfers (each retry logged once) until one
    ``deadline`` for all attempts together.

    ``check(sha256, size)`` raises to refuse the bytes; then nothing is written.
    """
    deadline = Deadline.of(deadline)
    for attempt in range(1, attempts + 1):
        try:
            with atomic_writer(dest) as out:
                digest, size = stream(url, out, deadline=deadline, **kwargs)
                check(digest, size)
            return digest, size
        except DeadlineExceeded:
            raise
        except SourceFailed as e:
            if attempt == attempts:
                raise
            log.warning("retry %d of %d: %s", attempt, attempts - 1, e)
        except OSError as e:
            if is_write_error(e):
                raise write_error(dest.parent, e) from e
            raise
    raise AssertionError("unreachable")


def repo_folder(cache_dir: str | os.PathLike[str], repo_id: str) -> Path:
    """The Hugging Face cache folder of a model repo."""
    return Path(cache_dir, "models--" + repo_id.replace("/", "--"))


def link_into_hf_cache(folder: Path, blob_id: str, commit: str, filename: str, ref: str | None = None) -> Path:
    """Point ``snapshots/<commit>/<filename>`` at ``blobs/<blob_id>`` (relative link) and record ``refs/<ref>``."""
    pointer = folder / "snapshots" / commit / filename
    pointer.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(folder / "blobs" / blob_id, pointer.parent)
    tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}.link.incomplete")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, pointer)
    if ref is not None and ref != commit:
        with atomic_writer(folder / "refs" / ref) as f:
            f.write(commit.encode())
    return pointer

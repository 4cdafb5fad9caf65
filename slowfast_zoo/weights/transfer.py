"""HTTP for the weights subsystem: one HEAD that validates what a Hub (or a hostile mirror) announces, streamed
downloads under a read timeout and an overall deadline, and writes into the Hugging Face cache layout.

Why not ``hf_hub_download``: it names the cached blob after the server's ``ETag`` and the snapshot folder after its
``X-Repo-Commit`` without checking either, and it makes its own HEAD request, so a server that answers the zoo's
check honestly and the library's request with ``ETag: "../../x"`` would make it write outside the cache. Here every
header is checked (64-hex sha256 for LFS files, 40-hex git ids) before it names anything on disk, and the layout
written (``blobs/<id>``, ``snapshots/<commit>/<file>`` -> relative link, ``refs/<name>``) is the one
``huggingface_hub.try_to_load_from_cache`` reads.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .cache import CHUNK, atomic_writer, is_write_error, write_error
from .errors import DeadlineExceeded, SourceFailed, WeightsError, WeightsNotFoundError
from .manifest import HEX40, HEX64

__all__ = ["HeadInfo", "auth_header", "check_revision", "fetch", "head", "link_into_hf_cache", "repo_folder", "stream"]

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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


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


def auth_header(token: str | bool | None) -> dict[str, str]:
    """The Authorization header for the Hub endpoint (``None``: the saved token, ``False``: none)."""
    if token is False:
        return {}
    if not isinstance(token, str):
        from huggingface_hub import get_token

        token = get_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _not_found(code: str | None, what: str) -> WeightsError:
    text = {
        "RepoNotFound": "Hub repository not found (or private)",
        "RevisionNotFound": "revision does not exist",
        "EntryNotFound": "file does not exist",
    }.get(code or "", "not found")
    return WeightsNotFoundError(f"{text}: {what}")


def head(url: str, what: str, *, timeout: float, token: str | bool | None) -> HeadInfo:
    """One HEAD request, no retries, no redirects followed; the answer's headers are checked before use."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "slowfast_zoo", **auth_header(token)})
    try:
        response = _opener.open(request, timeout=timeout)
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
    except (OSError, http.client.HTTPException) as e:
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


def stream(
    url: str,
    out: BinaryIO,
    *,
    timeout: float,
    deadline: float,
    headers: dict[str, str] | None = None,
    progress: str | None = None,
    limit: int | None = None,
) -> tuple[str, int]:
    """GET ``url`` into ``out``; returns (sha256, size). Each read waits at most ``timeout`` s, the whole transfer
    at most ``deadline`` s (a server that trickles bytes is cut off). Network failures raise :class:`SourceFailed`,
    HTTP 404/410 :class:`WeightsNotFoundError`."""
    from huggingface_hub.utils import tqdm

    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise WeightsError(f"refusing to download {url}: only http(s) URLs are allowed")
    start = time.monotonic()
    h, received = hashlib.sha256(), 0
    request = urllib.request.Request(url, headers={"User-Agent": "slowfast_zoo", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if limit is not None and (total or 0) > limit:
                raise WeightsError(f"{url}: {total} bytes announced, more than the {limit} allowed")
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=progress, disable=not progress
            ) as bar:
                while chunk := response.read1(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if limit is not None and received > limit:
                        raise WeightsError(f"{url}: more than the {limit} bytes allowed")
                    if time.monotonic() - start > deadline:
                        raise DeadlineExceeded(
                            f"{url}: only {received} bytes after {deadline:g} s (the download deadline; "
                            "set SLOWFAST_ZOO_DEADLINE to allow more)"
                        )
        if total is not None and received != total:
            raise SourceFailed(f"{url}: connection closed after {received} of {total} bytes")
    except urllib.error.HTTPError as e:
        if e.code in (404, 410):
            raise WeightsNotFoundError(f"{url}: HTTP {e.code}") from None
        raise SourceFailed(f"{url}: HTTP {e.code}") from None
    except http.client.HTTPException as e:  # IncompleteRead, BadStatusLine: a broken transfer, not a bug
        raise SourceFailed(f"{url}: broken transfer after {received} bytes ({type(e).__name__})") from None
    except OSError as e:  # URLError, timeouts, resets
        if is_write_error(e):
            raise
        raise SourceFailed(f"{url}: {type(e).__name__}: {e}") from None
    return h.hexdigest(), received


def fetch(
    url: str, dest: Path, check: Callable[[str, int], None], *, attempts: int = 3, **kwargs: object
) -> tuple[str, int]:
    """:func:`stream` into ``dest`` atomically, retrying broken transfers (each retry logged once).

    ``check(sha256, size)`` raises to refuse the bytes; then nothing is written.
    """
    for attempt in range(1, attempts + 1):
        try:
            with atomic_writer(dest) as out:
                digest, size = stream(url, out, **kwargs)  # type: ignore[arg-type]
                check(digest, size)
            return digest, size
        except SourceFailed as e:
            if attempt == attempts or isinstance(e, DeadlineExceeded):
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

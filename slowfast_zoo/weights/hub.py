"""Files on the Hugging Face Hub: the pinned weight file of a manifest entry, and ``config.json`` of ``hf-hub:`` repos.

Both are verified before use: the weights against the sha256 the manifest (or a verified ``config.json``) pins,
``config.json`` against its git blob id, which is the ``ETag`` the Hub serves for a regular file and the name of
its blob in the cache. A cached copy that no longer hashes to its id is deleted (under the caller's lock) and never
read as a config. Online, one HEAD confirms that the cached ``config.json`` of a commit is the blob the Hub serves
for it (a co-user of the cache could plant a self-consistent one pinning other weights); offline, or with the Hub
unreachable, the cached copy is trusted.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Any

from . import cache as c
from .errors import (
    CorruptCacheError,
    HashMismatchError,
    SourceFailed,
    WeightsError,
    WeightsNotFoundError,
    WeightsUnavailableError,
)
from .manifest import HEX40, REPO_ID, HubFile
from .transfer import (
    MAX_UNPINNED_BYTES,
    Deadline,
    check_revision,
    fetch,
    head,
    hub_headers,
    link_into_hf_cache,
    repo_folder,
    same_origin,
    stream,
)

__all__ = [
    "HF_HUB_PREFIX",
    "check_hf_cache",
    "download_hub_file",
    "hub_partials",
    "hub_where",
    "parse_hf_hub_spec",
    "read_hf_hub_config",
]

log = logging.getLogger(__name__)

HF_HUB_PREFIX = "hf-hub:"
CONFIG_NAME = "config.json"
_CONFIG_LIMIT = 16 << 20


def hub_where(hub: HubFile) -> str:
    return f"{hub.repo_id}@{hub.revision}/{hub.filename}"


def _url(repo_id: str, filename: str, revision: str, endpoint: str) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)


def check_hf_cache(hub: HubFile, cache_dir: str, *, repair: bool) -> c.CacheCheck:
    """The cached Hub file at the pinned commit, hashed; a corrupt copy is deleted when ``repair`` is set."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(hub.repo_id, hub.filename, cache_dir=cache_dir, revision=hub.revision)
    if not isinstance(path, str) or not os.path.isfile(path):
        return c.CacheCheck("missing")
    actual = c.sha256_file(path)
    if actual == hub.sha256:
        return c.CacheCheck("ok", Path(path), actual)
    detail = f"cached {hub_where(hub)} has sha256 {actual}, expected {hub.sha256}"
    if repair:
        try:
            c.evict(path, cache_dir)
        except OSError as e:
            raise CorruptCacheError(
                f"{detail} and cannot be deleted ({e}); it was not used. Delete {path} or point HF_HUB_CACHE "
                "at a writable cache."
            ) from None
        log.warning("%s; deleted it", detail)
    return c.CacheCheck("corrupt", Path(path), actual, detail)


def hub_partials(hub: HubFile, cache_dir: str, *, remove: bool = False) -> list[Path]:
    """``*.incomplete`` files an interrupted download of this blob left behind (deleted with ``remove``)."""
    blobs = repo_folder(cache_dir, hub.repo_id) / "blobs"
    if remove:
        return c.remove_incomplete(blobs, cache_dir, prefix=str(hub.sha256))
    if not blobs.is_dir():
        return []
    return sorted(p for p in blobs.iterdir() if p.name.endswith(".incomplete") and str(hub.sha256) in p.name)


# long: each response header is checked in line, before it may name a file in the cache
def download_hub_file(
    name: str,
    hub: HubFile,
    cache_dir: str,
    endpoint: str,
    timeout: float,
    deadline: Deadline,
    token: str | bool | None,
) -> tuple[Path, str, str, str]:
    """Download the pinned file into the Hugging Face cache (caller holds the lock): (path, sha256, source, where)."""
    assert hub.revision is not None and hub.sha256 is not None
    url = _url(hub.repo_id, hub.filename, hub.revision, endpoint)
    where = f"{hub.repo_id} (revision {hub.revision}, file {hub.filename}) at {endpoint}"
    # one HEAD without retries first: a dead Hub is reported at once, a wrong commit or an announced sha256 that
    # differs is refused before any byte is fetched, and hostile header values never name a file
    info = head(url, where, timeout=timeout, token=token, deadline=deadline)
    if info.commit != hub.revision:
        raise WeightsNotFoundError(
            f"{endpoint} served commit {info.commit} for {hub_where(hub)}; expected the pinned {hub.revision}"
        )
    if info.lfs and info.etag != hub.sha256:
        raise HashMismatchError(
            source=hub.repo_id,
            revision=hub.revision,
            filename=hub.filename,
            expected=hub.sha256,
            actual=info.etag,
            detail=f"sha256 announced by {endpoint} before download; nothing was downloaded",
        )
    if hub.size is not None and info.size is not None and info.size != hub.size:
        raise WeightsError(
            f"{endpoint} announced {info.size} bytes for {hub_where(hub)}, the manifest pins {hub.size}; "
            "nothing was downloaded"
        )
    if hub.size is not None or info.size is not None:
        limit = hub.size if hub.size is not None else info.size
        why = "the pinned size" if hub.size is not None else "the size the Hub announced (X-Linked-Size)"
    else:
        limit, why = MAX_UNPINNED_BYTES, "MAX_UNPINNED_BYTES: the file's size is neither pinned nor announced"

    def check(digest: str, size: int) -> None:
        if info.size is not None and size != info.size:
            raise SourceFailed(f"got {size} of the {info.size} bytes announced")
        if digest != hub.sha256:
            raise HashMismatchError(
                source=hub.repo_id,
                revision=hub.revision,
                filename=hub.filename,
                expected=str(hub.sha256),
                actual=digest,
                detail=f"downloaded from {endpoint}",
            )

    folder = repo_folder(cache_dir, hub.repo_id)
    headers = hub_headers(token if same_origin(info.location, endpoint) else False)
    try:
        for stale in hub_partials(hub, cache_dir, remove=True):
            log.warning("%s: removed %s, left by an interrupted download", name, stale)
        blob = folder / "blobs" / hub.sha256
        kw: dict[str, Any] = {
            "timeout": timeout,
            "deadline": deadline,
            "headers": headers,
            "limit": limit,
            "limit_why": why,
        }
        try:
            fetch(info.location, blob, check, progress=hub.filename, **kw)
        except SourceFailed as e:
            raise type(e)(f"download of {where} failed: {e}") from None
        path = link_into_hf_cache(folder, hub.sha256, hub.revision, hub.filename)
    except OSError as e:
        if c.is_write_error(e):
            raise c.write_error(cache_dir, e) from e
        raise
    log.info("%s: weights downloaded from the Hugging Face Hub (%s, %s): %s", name, hub_where(hub), endpoint, path)
    return path, hub.sha256, "hub", f"{hub.repo_id}@{hub.revision}"


# --- hf-hub: repos written by push_to_hub ------------------------------------------------------------------------
def parse_hf_hub_spec(spec: str) -> tuple[str, str]:
    """``[hf-hub:]org/name[@revision]`` -> (repo_id, revision), revision defaulting to ``main`` and validated."""
    spec = spec.removeprefix(HF_HUB_PREFIX)
    repo_id, _, revision = spec.partition("@")
    if not REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise ValueError(f"not a Hub repo id: {repo_id!r} (expected hf-hub:org/name[@revision])")
    return repo_id, check_revision(revision or "main")


def _cached_config(folder: Path, commit: str, cache_dir: str) -> bytes | None:
    """The cached ``config.json`` at ``commit`` if its bytes hash to the git blob id it is stored under."""
    pointer = folder / "snapshots" / commit / CONFIG_NAME
    if not os.path.islink(pointer):
        return None
    blob_id = os.path.basename(os.readlink(pointer))
    try:
        data = pointer.read_bytes() if pointer.stat().st_size <= _CONFIG_LIMIT else b""
    except OSError:
        return None
    if HEX40.fullmatch(blob_id) and c.git_blob_sha1(data) == blob_id:
        return data
    log.warning("%s: cached config.json does not hash to its git blob id %s; deleting it", pointer, blob_id[:40])
    try:
        c.evict(pointer, cache_dir)
    except OSError as e:
        raise CorruptCacheError(f"{pointer}: corrupt cached config.json that cannot be deleted ({e})") from None
    return None


def _cached_ref(folder: Path, revision: str) -> str | None:
    try:
        commit = (folder / "refs" / revision).read_text().strip()
    except OSError:
        return None
    return commit if HEX40.fullmatch(commit) else None


def _download_config(repo_id: str, revision: str, folder: Path, endpoint: str, timeout: float, token: Any) -> str:
    """HEAD of ``config.json``; the cached copy is used only when its git blob id is the one the Hub announces for
    the commit, else GET, checked against that id and written into the cache. Returns the commit."""
    deadline = Deadline.of(None)
    where = f"{repo_id} (revision {revision}, file {CONFIG_NAME}) at {endpoint}"
    info = head(_url(repo_id, CONFIG_NAME, revision, endpoint), where, timeout=timeout, token=token, deadline=deadline)
    if HEX40.fullmatch(revision) and info.commit != revision:
        raise WeightsError(f"{endpoint} served commit {info.commit} for {repo_id}@{revision}")
    if info.lfs:
        raise WeightsError(f"{CONFIG_NAME} of {repo_id}@{info.commit} is stored in LFS; not a slowfast_zoo repo")
    pointer = folder / "snapshots" / info.commit / CONFIG_NAME
    if _cached_config(folder, info.commit, str(folder.parent)) is not None:
        if os.path.basename(os.readlink(pointer)) == info.etag:
            if revision != info.commit:
                c.atomic_write(folder / "refs" / revision, info.commit)
            return info.commit
        # consistent with itself but not the file of this commit: planted by a writer of the cache, or stale
        log.warning("%s: cached config.json is not the blob %s the Hub serves; replacing it", pointer, info.etag)
        c.evict(pointer, str(folder.parent))
    buf = io.BytesIO()
    url = _url(repo_id, CONFIG_NAME, info.commit, endpoint)
    why = "the limit for a config.json"
    stream(url, buf, timeout=timeout, deadline=deadline, headers=hub_headers(token), limit=_CONFIG_LIMIT, limit_why=why)
    data = buf.getvalue()
    if c.git_blob_sha1(data) != info.etag:
        raise WeightsError(
            f"{CONFIG_NAME} of {repo_id}@{info.commit}: git blob id {c.git_blob_sha1(data)}, "
            f"the server announced {info.etag}; nothing was kept"
        )
    c.atomic_write(folder / "blobs" / info.etag, data)
    link_into_hf_cache(folder, info.etag, info.commit, CONFIG_NAME, revision)
    return info.commit


def read_hf_hub_config(
    spec: str,
    *,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
    timeout: float | None = None,
    token: str | bool | None = None,
) -> tuple[dict[str, Any], str, str]:
    """Verified ``config.json`` of a repo written by ``push_to_hub``: (config, repo_id, commit)."""
    repo_id, revision = parse_hf_hub_spec(spec)
    cache = str(cache_dir) if cache_dir is not None else c.hf_cache_dir()
    folder = repo_folder(cache, repo_id)
    endpoint = c.endpoint_url(endpoint)
    commit = revision if HEX40.fullmatch(revision) else None
    data = None
    failure = "offline mode and it is not cached"
    if not c.is_offline(local_files_only):  # online, one HEAD confirms even a cached pinned commit's config.json
        try:
            commit = _download_config(repo_id, revision, folder, endpoint, c.timeout_seconds(timeout), token)
            data = _cached_config(folder, commit, cache)
        except SourceFailed as e:
            failure = str(e)
            log.warning("hf-hub:%s@%s: %s; trying the cache, as offline mode would", repo_id, revision, e)
        except WeightsNotFoundError as e:  # a pinned commit cached earlier stays usable when the repo goes away
            if commit is None or _cached_config(folder, commit, cache) is None:
                raise
            log.warning("hf-hub:%s@%s: %s; using the cached copy, as offline mode would", repo_id, revision, e)
        except OSError as e:
            if c.is_write_error(e):
                raise c.write_error(cache, e) from e
            raise
    if data is None and commit is None:  # a branch name: the commit it pointed at when last fetched
        commit = _cached_ref(folder, revision)
    if data is None and commit is not None:  # offline (or the Hub unreachable): the cache is trusted
        data = _cached_config(folder, commit, cache)
    if data is None or commit is None:
        how = f"Download it while online with `slowfast-zoo download hf-hub:{repo_id}@{revision}`."
        raise WeightsUnavailableError(f"hf-hub:{repo_id}@{revision}: {failure}. {how}")
    try:
        config = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise WeightsError(f"config.json of {repo_id}@{commit} is not valid JSON: {e}") from e
    if not isinstance(config, dict) or not isinstance(config.get("pretrained_cfg"), dict):
        raise WeightsError(f"{repo_id}@{commit}: config.json has no 'pretrained_cfg'; not a slowfast_zoo repo")
    return config, repo_id, commit

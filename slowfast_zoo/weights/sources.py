"""Pretrained weights: find, download, verify and cache them, and say where they came from.

Resolution order of ``create(name, pretrained=True)`` (an explicit ``checkpoint=`` path is handled by the factory):

1. the local Hugging Face cache at the manifest's pinned commit (no network request at all, also offline),
2. the zoo's own cache of weights converted from the authors' file (``$SLOWFAST_ZOO_CACHE/converted/<name>``),
3. ``hf_hub_download`` of the pinned commit,
4. when the Hub entry is unpublished or the Hub is unreachable (connection error, timeout, 5xx, broken transfer):
   the authors' original file, hashed against the manifest when its sha256 is known, converted to zoo keys,
   checked structurally against the architecture and cached as safetensors.

``huggingface_hub`` only checks byte counts, so every file is hashed here before it is used. A file whose sha256
differs from the manifest is deleted and a :class:`HashMismatchError` names repo, revision, file, expected and actual
hash. Nothing is ever written under its final name before it is complete (temporary file + atomic rename), and a
file lock serializes processes that fetch the same weights (e.g. the ranks of a DDP job).

Settings are read when a function is called, not at import: ``HF_ENDPOINT``, ``HF_HUB_CACHE`` (or ``HF_HOME``),
``HF_HUB_OFFLINE``, ``SLOWFAST_ZOO_CACHE``; every function also takes them as arguments.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..registry.pretrained import HubFile, PretrainedCfg, load_manifest

__all__ = [
    "CacheWriteError",
    "HashMismatchError",
    "ManifestIssue",
    "VerifyResult",
    "Weights",
    "WeightsError",
    "WeightsNotFoundError",
    "WeightsUnavailableError",
    "download",
    "hf_cache_dir",
    "hf_hub_pretrained",
    "load_hf_hub_cfg",
    "parse_hf_hub_spec",
    "pretrained_file",
    "resolve_weights",
    "sha256_file",
    "validate_manifest",
    "verify",
    "verify_manifest",
    "zoo_cache_dir",
]

log = logging.getLogger(__name__)

ENV_CACHE = "SLOWFAST_ZOO_CACHE"
HF_HUB_PREFIX = "hf-hub:"
DEFAULT_TIMEOUT = 10.0
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
_TRUE = {"1", "ON", "YES", "TRUE"}


# --- errors ----------------------------------------------------------------------------------------------------
class WeightsError(RuntimeError):
    """Pretrained weights could not be provided."""


class HashMismatchError(WeightsError):
    """A file's sha256 is not the one the manifest (or the repo's config) pins; the file was deleted."""

    def __init__(
        self, *, source: str, revision: str | None, filename: str, expected: str, actual: str, detail: str = ""
    ) -> None:
        self.source, self.revision, self.filename = source, revision, filename
        self.expected, self.actual = expected, actual
        where = f"{source}@{revision}" if revision else source
        super().__init__(
            f"sha256 mismatch for {filename} from {where}: expected {expected}, got {actual}"
            + (f" ({detail})" if detail else "")
            + ". The file was deleted; nothing unverified was kept."
        )


class WeightsNotFoundError(WeightsError):
    """The repo, revision or file does not exist on the Hub (HTTP 404), or the origin URL is gone."""


class WeightsUnavailableError(WeightsError):
    """No source could provide the weights (offline with nothing cached, or every source unreachable)."""


class CacheWriteError(WeightsError):
    """A cache directory cannot be written (read-only, permissions, disk full)."""


class _SourceFailed(Exception):
    """A source failed in a way that lets the next source be tried (network, timeout, 5xx, broken transfer)."""


# --- settings, read at call time -------------------------------------------------------------------------------
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").upper() in _TRUE


def zoo_cache_dir() -> Path:
    """The zoo's own cache (converted origin weights, locks): ``$SLOWFAST_ZOO_CACHE`` or ``~/.cache/slowfast_zoo``."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base, "slowfast_zoo").expanduser()


def hf_cache_dir() -> str:
    """The Hugging Face hub cache as the environment says now (``HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.path.expanduser(os.environ[var])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _offline(local_files_only: bool | None) -> bool:
    if local_files_only is not None:
        return local_files_only
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def _timeout(timeout: float | None) -> float:
    if timeout is not None:
        return timeout
    return float(os.environ.get("SLOWFAST_ZOO_TIMEOUT") or DEFAULT_TIMEOUT)


# --- files -------------------------------------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _evict(path: str | os.PathLike[str]) -> None:
    """Delete a cached file: the snapshot link and the blob it points to."""
    p = Path(path)
    target = p.resolve() if p.is_symlink() else None
    with contextlib.suppress(FileNotFoundError):
        p.unlink()
    if target is not None:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()


def _is_write_error(e: BaseException) -> bool:
    return isinstance(e, PermissionError) or (
        isinstance(e, OSError)
        and e.errno in (errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.ENOTDIR)
    )


def _write_error(where: str | os.PathLike[str], e: BaseException) -> CacheWriteError:
    return CacheWriteError(
        f"cannot write to the cache at {where}: {e}. Free some space or make it writable, or point "
        f"HF_HUB_CACHE (Hub downloads) / {ENV_CACHE} (converted weights) at another directory, "
        f"or pass checkpoint=<file> to create()."
    )


@contextlib.contextmanager
def _lock(name: str, zoo_cache: Path, timeout: float = 3600.0) -> Iterator[None]:
    """An inter-process lock for one set of weights; without a writable zoo cache, no lock (logged)."""
    from filelock import FileLock, Timeout

    safe = re.sub(r"[^A-Za-z0-9._-]+", "--", name)
    path = zoo_cache / ".locks" / f"{safe}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock: Any = FileLock(str(path), timeout=timeout)
        lock.acquire()
    except Timeout:
        raise WeightsError(f"timed out after {timeout:.0f} s waiting for another process ({path})") from None
    except OSError as e:
        log.debug("no lock for %s (%s): %s", name, path, e)
        yield
        return
    try:
        yield
    finally:
        lock.release()


@dataclass(frozen=True)
class Weights:
    """A verified local weight file and where it came from."""

    name: str
    path: Path
    sha256: str
    #: ``hf-cache``, ``hub``, ``zoo-cache`` or ``origin``
    source: str
    #: repo@revision or URL
    location: str

    def __str__(self) -> str:
        return str(self.path)


# --- Hub ---------------------------------------------------------------------------------------------------------
def _hub_where(hub: HubFile) -> str:
    return f"{hub.repo_id}@{hub.revision}/{hub.filename}"


def _from_hf_cache(name: str, hub: HubFile, cache_dir: str) -> Weights | None:
    """The cached Hub file at the pinned commit, hashed; a corrupt copy is deleted (and None returned)."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(hub.repo_id, hub.filename, cache_dir=cache_dir, revision=hub.revision)
    if not isinstance(path, str) or not os.path.isfile(path):
        return None
    actual = sha256_file(path)
    if actual != hub.sha256:
        log.warning("%s: cached %s has sha256 %s, expected %s; deleting it", name, _hub_where(hub), actual, hub.sha256)
        _evict(path)
        return None
    log.info("%s: weights from the Hugging Face cache (%s): %s", name, _hub_where(hub), path)
    return Weights(name, Path(path), actual, "hf-cache", f"{hub.repo_id}@{hub.revision}")


def _hub_error(e: BaseException, hub: HubFile, endpoint: str) -> Exception:
    """Map a huggingface_hub / httpx2 error onto the zoo's errors (or :class:`_SourceFailed` to try the next source)."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{hub.repo_id} (revision {hub.revision}, file {hub.filename}) at {endpoint}"
    if isinstance(e, RepositoryNotFoundError):
        return WeightsNotFoundError(f"Hub repository not found (or private): {where}")
    if isinstance(e, RevisionNotFoundError):
        return WeightsNotFoundError(f"revision {hub.revision} does not exist in {hub.repo_id} at {endpoint}")
    if isinstance(e, RemoteEntryNotFoundError):
        return WeightsNotFoundError(f"file {hub.filename} does not exist in {hub.repo_id}@{hub.revision} at {endpoint}")
    if _is_write_error(e):
        return e  # reported by the caller with the cache path
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if e.response is not None else "?"
        return _SourceFailed(f"the Hub answered HTTP {status} for {where}")
    if isinstance(e, LocalEntryNotFoundError):
        return _SourceFailed(f"the Hub could not be reached for {where}: {e}")
    return _SourceFailed(f"download of {where} failed: {type(e).__name__}: {e}")


def _download_hub(
    name: str, hub: HubFile, *, cache_dir: str, endpoint: str, timeout: float, token: str | bool | None
) -> Weights:
    import httpx2
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    url = hf_hub_url(hub.repo_id, hub.filename, revision=hub.revision, endpoint=endpoint)
    # one HEAD without retries first: a dead or failing Hub is reported at once (hf_hub_download would retry for
    # about 23 s), a wrong commit or a file whose announced sha256 differs is refused before any byte is fetched
    try:
        meta = get_hf_file_metadata(url, timeout=timeout, token=token, endpoint=endpoint)
    except (OSError, httpx2.HTTPError) as e:
        raise _hub_error(e, hub, endpoint) from e
    if meta.commit_hash and meta.commit_hash != hub.revision:
        raise WeightsNotFoundError(
            f"{endpoint} served commit {meta.commit_hash} for {_hub_where(hub)}; expected the pinned {hub.revision}"
        )
    if meta.etag and _HEX64.fullmatch(meta.etag) and meta.etag != hub.sha256:
        raise HashMismatchError(
            source=hub.repo_id,
            revision=hub.revision,
            filename=hub.filename,
            expected=str(hub.sha256),
            actual=meta.etag,
            detail=f"sha256 announced by {endpoint} before download; nothing was downloaded",
        )
    try:
        path = hf_hub_download(
            hub.repo_id,
            hub.filename,
            revision=hub.revision,
            cache_dir=cache_dir,
            endpoint=endpoint,
            etag_timeout=timeout,
            token=token,
        )
    except (OSError, httpx2.HTTPError) as e:
        mapped = _hub_error(e, hub, endpoint)
        if mapped is e:
            raise _write_error(cache_dir, e) from e
        raise mapped from e
    actual = sha256_file(path)
    if actual != hub.sha256:
        _evict(path)
        raise HashMismatchError(
            source=hub.repo_id,
            revision=hub.revision,
            filename=hub.filename,
            expected=str(hub.sha256),
            actual=actual,
            detail=f"downloaded from {endpoint}",
        )
    log.info("%s: weights downloaded from the Hugging Face Hub (%s, %s): %s", name, _hub_where(hub), endpoint, path)
    return Weights(name, Path(path), actual, "hub", f"{hub.repo_id}@{hub.revision}")


# --- origin (the authors' file), converted --------------------------------------------------------------------
def _converted_paths(name: str, zoo_cache: Path) -> tuple[Path, Path]:
    folder = zoo_cache / "converted" / name
    return folder / "model.safetensors", folder / "model.safetensors.json"


def _origin_applies(cfg: PretrainedCfg) -> bool:
    """The authors' file stands for these weights only when the config is the manifest's own record of them."""
    if cfg.origin is None or not cfg.tag:
        return False
    record = load_manifest().get(cfg.name)
    if record is None or not record.get("origin"):
        return False
    # a repo written by push_to_hub elsewhere (e.g. fine-tuned weights) keeps the tag and origin of its ancestor
    return (record.get("hub") or {}).get("repo_id") == (cfg.hub.repo_id if cfg.hub else None)


def _from_zoo_cache(cfg: PretrainedCfg, zoo_cache: Path) -> Weights | None:
    path, meta_path = _converted_paths(cfg.name, zoo_cache)
    if not path.is_file() or not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = {}
    expected = meta.get("sha256")
    actual = sha256_file(path)
    assert cfg.origin is not None
    stale = cfg.origin.sha256 is not None and meta.get("origin_sha256") != cfg.origin.sha256
    if actual != expected or stale:
        why = "stale (the manifest pins another origin sha256)" if stale else f"sha256 {actual}, recorded {expected}"
        log.warning("%s: converted weights in the zoo cache are %s; deleting them", cfg.name, why)
        for p in (path, meta_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        return None
    log.info("%s: weights from the zoo cache (converted from %s): %s", cfg.name, meta.get("origin_url"), path)
    return Weights(cfg.name, path, actual, "zoo-cache", str(meta.get("origin_url")))


def _download_url(url: str, dest_dir: Path, *, timeout: float, expected_sha256: str | None, label: str) -> Path:
    """Stream a URL into a new temporary file in ``dest_dir`` with a progress bar; returns it once complete.

    Raises :class:`HashMismatchError` (file deleted) when ``expected_sha256`` is given and differs.
    """
    from huggingface_hub.utils import tqdm

    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise WeightsError(f"refusing to download {url}: only http(s) URLs are allowed")
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=".download-", suffix=".incomplete")
    except OSError as e:
        raise _write_error(dest_dir, e) from e
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    received = 0
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": "slowfast_zoo"})
            try:
                response = urllib.request.urlopen(request, timeout=timeout)
            except urllib.error.HTTPError as e:
                if e.code in (404, 410):
                    raise WeightsNotFoundError(f"{url}: HTTP {e.code}") from e
                raise _SourceFailed(f"{url}: HTTP {e.code}") from e
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label) as bar:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            if total is not None and received != total:
                raise _SourceFailed(f"{url}: connection closed after {received} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
    except (WeightsError, _SourceFailed):
        tmp.unlink(missing_ok=True)
        raise
    except OSError as e:  # URLError, timeouts, resets and truncated reads are OSErrors too
        tmp.unlink(missing_ok=True)
        if _is_write_error(e):
            raise _write_error(dest_dir, e) from e
        raise _SourceFailed(f"{url}: {type(e).__name__}: {e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    actual = h.hexdigest()
    if expected_sha256 and actual != expected_sha256:
        tmp.unlink(missing_ok=True)
        raise HashMismatchError(
            source=url,
            revision=None,
            filename=Path(urllib.parse.urlsplit(url).path).name,
            expected=expected_sha256,
            actual=actual,
        )
    return tmp


def _download_origin(cfg: PretrainedCfg, *, zoo_cache: Path, timeout: float) -> Weights:
    from .publish import convert

    assert cfg.origin is not None
    origin = cfg.origin
    path, meta_path = _converted_paths(cfg.name, zoo_cache)
    raw = _download_url(
        origin.url, path.parent, timeout=timeout, expected_sha256=origin.sha256, label=Path(origin.url).name
    )
    try:
        raw_size = raw.stat().st_size
        if origin.size is not None and raw_size != origin.size:
            raise HashMismatchError(
                source=origin.url,
                revision=None,
                filename=Path(origin.url).name,
                expected=str(origin.sha256),
                actual=sha256_file(raw),
                detail=f"size {raw_size}, manifest says {origin.size}",
            )
        if origin.sha256 is None:
            log.warning(
                "%s: the manifest has no sha256 for %s; its bytes could only be checked structurally "
                "(sha256 %s, %d bytes)",
                cfg.name,
                origin.url,
                sha256_file(raw),
                raw_size,
            )
        result = convert(raw, cfg, path)  # structural check + atomic write
    except OSError as e:
        raise _write_error(path.parent, e) from e
    finally:
        raw.unlink(missing_ok=True)
    meta = {
        "name": cfg.name,
        "sha256": result.sha256,
        "size": result.size,
        "origin_url": origin.url,
        "origin_sha256": result.source_sha256,
        "origin_size": result.source_size,
        "origin_verified": origin.sha256 is not None,
        "key_scheme": result.key_scheme,
    }
    _atomic_write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True))
    if cfg.hub is not None and cfg.hub.sha256 and cfg.hub.sha256 != result.sha256:
        log.warning(
            "%s: converted file sha256 %s differs from the Hub file %s", cfg.name, result.sha256, cfg.hub.sha256
        )
    log.info(
        "%s: weights converted from the authors' file %s (%s keys): %s", cfg.name, origin.url, result.key_scheme, path
    )
    return Weights(cfg.name, path, result.sha256, "origin", origin.url)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".incomplete")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- resolution ---------------------------------------------------------------------------------------------------
def _how_to_get(cfg: PretrainedCfg) -> str:
    return (
        f"Download them while online with `slowfast-zoo download {cfg.name}` "
        "(or slowfast_zoo.weights.sources.download), "
        f"or pass checkpoint=<file> to create() with a local copy"
        + (f" of {cfg.origin.url}" if cfg.origin else "")
        + "."
    )


def resolve_weights(
    cfg: PretrainedCfg,
    *,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    zoo_cache: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
    timeout: float | None = None,
    token: str | bool | None = None,
) -> Weights:
    """Find or fetch the verified weight file of a pretrained config (see the module docstring for the order).

    Args:
        cfg: a pretrained config with a manifest record (or from :func:`load_hf_hub_cfg`).
        endpoint: Hub endpoint (default ``$HF_ENDPOINT``, else huggingface.co).
        cache_dir: Hugging Face cache (default ``$HF_HUB_CACHE``).
        zoo_cache: the zoo's cache (default ``$SLOWFAST_ZOO_CACHE``).
        local_files_only: no network at all (default: ``HF_HUB_OFFLINE``).
        timeout: seconds to wait for a server to answer (default ``$SLOWFAST_ZOO_TIMEOUT`` or 10).
        token: Hugging Face token (``None``: the saved one, if any).

    Raises:
        HashMismatchError: a downloaded file is not the pinned one (it was deleted).
        WeightsNotFoundError: the pinned repo, revision or file does not exist (HTTP 404).
        WeightsUnavailableError: offline with nothing cached, or no source reachable.
        CacheWriteError: the cache cannot be written.
    """
    name = cfg.name
    hub = cfg.hub if cfg.hub is not None and cfg.hub.published else None
    origin_ok = _origin_applies(cfg)
    if hub is None and not origin_ok:
        raise WeightsUnavailableError(
            f"{name} has no published weights: the manifest pins no Hub revision/sha256"
            + (" and no origin file" if cfg.origin is None else "")
        )
    cache = str(cache_dir) if cache_dir is not None else hf_cache_dir()
    zoo = Path(zoo_cache) if zoo_cache is not None else zoo_cache_dir()
    endpoint = _endpoint(endpoint)
    timeout = _timeout(timeout)

    def local() -> Weights | None:
        found = _from_hf_cache(name, hub, cache) if hub else None
        if found is None and origin_ok:
            found = _from_zoo_cache(cfg, zoo)
        return found

    found = local()
    if found:
        return found
    if _offline(local_files_only):
        where = f" (looked in {cache}" + (f" for {_hub_where(hub)}" if hub else "") + f" and {zoo / 'converted'})"
        raise WeightsUnavailableError(f"{name}: offline mode and the weights are not cached{where}. {_how_to_get(cfg)}")

    failures: list[str] = []
    with _lock(f"weights-{name}-{hub.sha256 if hub else 'origin'}", zoo):
        found = local()  # another process may have fetched them while this one waited for the lock
        if found:
            return found
        if hub:
            try:
                return _download_hub(name, hub, cache_dir=cache, endpoint=endpoint, timeout=timeout, token=token)
            except _SourceFailed as e:
                failures.append(str(e))
                log.warning("%s: %s", name, e)
        elif cfg.hub is not None:
            failures.append(f"{cfg.hub.repo_id} is not published yet (the manifest's revision/sha256 are null)")
        if origin_ok:
            log.info("%s: trying the authors' file %s", name, cfg.origin.url)  # type: ignore[union-attr]
            try:
                return _download_origin(cfg, zoo_cache=zoo, timeout=timeout)
            except _SourceFailed as e:
                failures.append(str(e))
    raise WeightsUnavailableError(
        f"{name}: no source could provide the weights: " + "; ".join(failures) + f". {_how_to_get(cfg)}"
    )


def pretrained_file(cfg: PretrainedCfg, **kwargs: Any) -> str:
    """The path of the verified weight file of ``cfg`` (what ``create(pretrained=True)`` loads); see
    :func:`resolve_weights` for the arguments and errors."""
    return str(resolve_weights(cfg, **kwargs).path)


# --- hf-hub: repos written by push_to_hub -------------------------------------------------------------------------
def parse_hf_hub_spec(spec: str) -> tuple[str, str]:
    """``[hf-hub:]org/name[@revision]`` -> (repo_id, revision), revision defaulting to ``main``."""
    if spec.startswith(HF_HUB_PREFIX):
        spec = spec[len(HF_HUB_PREFIX) :]
    repo_id, _, revision = spec.partition("@")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo_id):
        raise ValueError(f"not a Hub repo id: {repo_id!r} (expected hf-hub:org/name[@revision])")
    return repo_id, revision or "main"


def read_hf_hub_config(
    spec: str,
    *,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
    timeout: float | None = None,
    token: str | bool | None = None,
) -> tuple[dict[str, Any], str, str]:
    """``config.json`` of a repo written by :func:`slowfast_zoo.publish.push_to_hub`: (config, repo_id, commit)."""
    import httpx2
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    repo_id, revision = parse_hf_hub_spec(spec)
    cache = str(cache_dir) if cache_dir is not None else hf_cache_dir()
    endpoint = _endpoint(endpoint)
    path: Any = None
    if _HEX40.fullmatch(revision):
        path = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache, revision=revision)
    if not isinstance(path, str):
        offline = _offline(local_files_only)
        try:
            path = hf_hub_download(
                repo_id,
                "config.json",
                revision=revision,
                cache_dir=cache,
                endpoint=endpoint,
                etag_timeout=_timeout(timeout),
                token=token,
                local_files_only=offline,
            )
        except (OSError, httpx2.HTTPError) as e:
            hub = HubFile(repo_id=repo_id, revision=revision, filename="config.json")
            mapped = _hub_error(e, hub, endpoint)
            if mapped is e:
                raise _write_error(cache, e) from e
            if isinstance(mapped, _SourceFailed):
                how = f"Download it while online with `slowfast-zoo download hf-hub:{repo_id}@{revision}`."
                state = "offline mode and it is not cached" if offline else str(mapped)
                raise WeightsUnavailableError(f"hf-hub:{repo_id}@{revision}: {state}. {how}") from e
            raise mapped from e
    commit = Path(path).parent.name
    if not _HEX40.fullmatch(commit):
        raise WeightsError(f"unexpected cache layout for {path}: cannot tell the commit")
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as e:
        raise WeightsError(f"config.json of {repo_id}@{commit} is not valid JSON: {e}") from e
    if not isinstance(config, dict) or "pretrained_cfg" not in config:
        raise WeightsError(f"{repo_id}@{commit}: config.json has no 'pretrained_cfg'; not a slowfast_zoo repo")
    return config, repo_id, commit


def load_hf_hub_cfg(spec: str, **kwargs: Any) -> PretrainedCfg:
    """The pretrained config of a ``hf-hub:org/name[@revision]`` repo, its weights pinned to the resolved commit
    and to the sha256 recorded in its ``config.json`` (so :func:`pretrained_file` verifies them)."""
    from ..registry.pretrained import label_names

    config, repo_id, commit = read_hf_hub_config(spec, **kwargs)
    cfg = PretrainedCfg.from_dict(config["pretrained_cfg"])
    recorded = cfg.hub
    if recorded is None or not recorded.sha256:
        raise WeightsError(f"{repo_id}@{commit}: config.json records no sha256 for the weights; cannot verify them")
    hub = HubFile(
        repo_id=repo_id, revision=commit, filename=recorded.filename, sha256=recorded.sha256, size=recorded.size
    )
    labels = cfg.labels
    if isinstance(labels, str):
        try:
            label_names(labels)
        except ValueError:  # a label set this installation does not ship: config.json lists the names
            labels = tuple(config["label_names"]) if config.get("label_names") else None
    return cfg.replace(hub=hub, labels=labels)


def hf_hub_pretrained(spec: str, **kwargs: Any) -> tuple[PretrainedCfg, str]:
    """(config, verified local weight path) of a ``hf-hub:`` repo."""
    cfg = load_hf_hub_cfg(spec, **kwargs)
    return cfg, pretrained_file(cfg, **kwargs)


# --- CLI-facing operations ----------------------------------------------------------------------------------------
def _cfg_of(name: str, **kwargs: Any) -> PretrainedCfg:
    if name.startswith(HF_HUB_PREFIX):
        return load_hf_hub_cfg(name, **kwargs)
    from ..registry.registry import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if not cfg.has_weights:
        raise WeightsUnavailableError(f"{cfg.name} has no pretrained weights (see slowfast-zoo list --pretrained)")
    return cfg


def download(names: Iterable[str] | None = None, *, all: bool = False, **kwargs: Any) -> list[Weights]:
    """Fetch and verify the weights of ``names`` (``arch.tag``, aliases or ``hf-hub:org/name[@rev]``), or of every
    pretrained model with ``all=True``. Returns one :class:`Weights` (path, sha256, source) per name; the first
    failure raises. ``kwargs`` go to :func:`resolve_weights`."""
    from ..registry.registry import list_pretrained

    todo = list(list_pretrained()) if all else list(names or [])
    if not todo:
        raise ValueError("name at least one model, or pass all=True")
    cfg_kwargs = {k: v for k, v in kwargs.items() if k != "zoo_cache"}
    return [resolve_weights(_cfg_of(n, **cfg_kwargs), **kwargs) for n in todo]


@dataclass(frozen=True)
class VerifyResult:
    """One cached file re-hashed by :func:`verify`."""

    name: str
    #: ``ok``, ``missing`` (not cached), ``corrupt`` (hash differs: deleted) or ``unpublished`` (nothing to check)
    status: str
    path: str | None = None
    expected: str | None = None
    actual: str | None = None
    where: str = ""

    def __str__(self) -> str:
        text = f"{self.name}: {self.status}"
        if self.path:
            text += f" {self.path}"
        if self.status == "corrupt":
            text += f" (expected {self.expected}, got {self.actual}; deleted)"
        return text


def verify(
    names: Iterable[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    zoo_cache: str | os.PathLike[str] | None = None,
) -> list[VerifyResult]:
    """Re-hash what the caches hold for ``names`` (default: every pretrained model), without network.

    Files whose sha256 differs from the manifest (Hub files) or from the record written at conversion
    (converted origin files) are deleted and reported as ``corrupt``.
    """
    from ..registry.registry import get_pretrained_cfg, list_pretrained

    cache = str(cache_dir) if cache_dir is not None else hf_cache_dir()
    zoo = Path(zoo_cache) if zoo_cache is not None else zoo_cache_dir()
    results = []
    for name in names or list_pretrained():
        cfg = get_pretrained_cfg(name)
        checked = False
        if cfg.hub is not None and cfg.hub.published:
            checked = True
            from huggingface_hub import try_to_load_from_cache

            hub = cfg.hub
            path = try_to_load_from_cache(hub.repo_id, hub.filename, cache_dir=cache, revision=hub.revision)
            if isinstance(path, str) and os.path.isfile(path):
                actual = sha256_file(path)
                ok = actual == hub.sha256
                if not ok:
                    _evict(path)
                results.append(
                    VerifyResult(cfg.name, "ok" if ok else "corrupt", path, hub.sha256, actual, _hub_where(hub))
                )
            else:
                results.append(VerifyResult(cfg.name, "missing", None, hub.sha256, None, _hub_where(hub)))
        path, meta_path = _converted_paths(cfg.name, zoo)
        if path.is_file():
            checked = True
            try:
                expected = json.loads(meta_path.read_text()).get("sha256")
            except (OSError, ValueError):
                expected = None
            actual = sha256_file(path)
            ok = actual == expected
            if not ok:
                for p in (path, meta_path):
                    p.unlink(missing_ok=True)
            results.append(
                VerifyResult(
                    cfg.name,
                    "ok" if ok else "corrupt",
                    str(path),
                    expected,
                    actual,
                    "converted from " + (cfg.origin.url if cfg.origin else "?"),
                )
            )
        if not checked:
            results.append(VerifyResult(cfg.name, "unpublished" if cfg.origin is None else "missing"))
    return results


# --- the manifest -------------------------------------------------------------------------------------------------
ORIGIN_FORMATS = {"caffe2_pkl": ("caffe2",), "pysf_pyth": ("pysf",), "ptv_pyth": ("ptv", "ptv_wrapper")}
REQUIRED_KEYS = ("hub", "origin", "metrics", "params", "gflops", "license", "citation")


@dataclass(frozen=True)
class ManifestIssue:
    """A manifest field that is wrong (``error``) or not known yet (``null``)."""

    name: str
    field: str
    level: str
    message: str

    def __str__(self) -> str:
        return f"{self.name}: {self.field}: {self.message}"


def _check_hex(value: Any, n: int) -> bool:
    return isinstance(value, str) and re.fullmatch(f"[0-9a-f]{{{n}}}", value) is not None


def validate_manifest(data: Mapping[str, Any]) -> list[ManifestIssue]:
    """Check a parsed ``weights_manifest.json``: schema errors (``error``) and fields still ``null`` (``null``)."""
    issues: list[ManifestIssue] = []

    def err(name: str, fld: str, msg: str) -> None:
        issues.append(ManifestIssue(name, fld, "error", msg))

    def null(name: str, fld: str, msg: str) -> None:
        issues.append(ManifestIssue(name, fld, "null", msg))

    if data.get("schema_version") != 1:
        err("<manifest>", "schema_version", f"expected 1, got {data.get('schema_version')!r}")
    models = data.get("models")
    if not isinstance(models, Mapping) or not models:
        err("<manifest>", "models", "missing or empty")
        return issues
    for name, rec in models.items():
        if not re.fullmatch(r"[a-z0-9_]+\.[a-z0-9_]+", name):
            err(name, "<name>", "expected arch.tag")
        if not isinstance(rec, Mapping):
            err(name, "<entry>", "not an object")
            continue
        for key in REQUIRED_KEYS:
            if key not in rec:
                err(name, key, "required key missing (use null when unknown)")
        hub = rec.get("hub")
        if not isinstance(hub, Mapping):
            err(name, "hub", "must be an object")
        else:
            repo = hub.get("repo_id")
            if not (isinstance(repo, str) and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo)):
                err(name, "hub.repo_id", f"not an org/name repo id: {repo!r}")
            if hub.get("filename") != "model.safetensors":
                err(name, "hub.filename", f"expected model.safetensors, got {hub.get('filename')!r}")
            pinned = {k: hub.get(k) for k in ("revision", "sha256", "size")}
            for key, n in (("revision", 40), ("sha256", 64)):
                v = pinned[key]
                if v is not None and not _check_hex(v, n):
                    err(name, f"hub.{key}", f"expected {n} lowercase hex digits (a commit, never a branch), got {v!r}")
            if pinned["size"] is not None and not (isinstance(pinned["size"], int) and pinned["size"] > 0):
                err(name, "hub.size", f"expected a positive integer, got {pinned['size']!r}")
            known = [k for k, v in pinned.items() if v is not None]
            if known and len(known) < 3:
                err(name, "hub", f"revision, sha256 and size are set together once published; only {known} are")
            if not known:
                null(name, "hub.revision/sha256/size", f"not published yet ({repo}); run slowfast-zoo publish")
            for key in set(hub) - {"repo_id", "revision", "filename", "sha256", "size"}:
                err(name, f"hub.{key}", "unknown key")
        origin = rec.get("origin")
        if origin is not None:
            if not isinstance(origin, Mapping):
                err(name, "origin", "must be an object or null")
                continue
            url = origin.get("url")
            if not (isinstance(url, str) and url.startswith("https://")):
                err(name, "origin.url", f"expected an https URL, got {url!r}")
            fmt = origin.get("format")
            if fmt not in ORIGIN_FORMATS:
                err(name, "origin.format", f"expected one of {sorted(ORIGIN_FORMATS)}, got {fmt!r}")
            elif origin.get("key_scheme") not in ORIGIN_FORMATS[fmt]:
                err(name, "origin.key_scheme", f"{origin.get('key_scheme')!r} does not fit format {fmt}")
            sha, size = origin.get("sha256"), origin.get("size")
            if sha is not None and not _check_hex(sha, 64):
                err(name, "origin.sha256", f"expected 64 lowercase hex digits, got {sha!r}")
            if size is not None and not (isinstance(size, int) and size > 0):
                err(name, "origin.size", f"expected a positive integer, got {size!r}")
            if sha is None:
                null(name, "origin.sha256", f"unknown: {url} has not been hashed yet")
            if size is None:
                null(name, "origin.size", f"unknown: {url} has not been downloaded yet")
            for key in set(origin) - {"url", "format", "key_scheme", "sha256", "size"}:
                err(name, f"origin.{key}", "unknown key")
        metrics = rec.get("metrics")
        if not isinstance(metrics, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) for k, v in metrics.items()
        ):
            err(name, "metrics", "expected an object of numbers")
        if rec.get("params") is not None and not (isinstance(rec["params"], int) and rec["params"] > 0):
            err(name, "params", f"expected a positive integer or null, got {rec['params']!r}")
        for key in ("gflops", "gflops_published"):
            if rec.get(key) is not None and not isinstance(rec[key], (int, float)):
                err(name, key, f"expected a number or null, got {rec[key]!r}")
        for key in ("params", "gflops"):
            if key in rec and rec[key] is None:
                null(name, key, "not computed yet")
        for key in ("license", "citation"):
            if not (isinstance(rec.get(key), str) and rec[key]):
                err(name, key, "required text")
    return issues


def verify_manifest(path: str | os.PathLike[str] | None = None) -> list[ManifestIssue]:
    """Check ``weights_manifest.json`` (the packaged one, or ``path``) against the schema and the registry.

    Returns every issue: ``error`` ones are bugs, ``null`` ones are fields that are honestly unknown until
    publication (Hub revision/sha256/size) or until the authors' file is hashed (origin sha256/size).
    """
    from ..registry import variants  # noqa: F401  (registers every model)
    from ..registry.registry import get_pretrained_cfg, list_pretrained

    if path is None:
        from importlib import resources

        data = json.loads(resources.files("slowfast_zoo").joinpath("weights_manifest.json").read_text("utf-8"))
    else:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    issues = validate_manifest(data)
    models = data.get("models") or {}
    registered = set(list_pretrained())
    for name in sorted(registered - set(models)):
        issues.append(ManifestIssue(name, "<entry>", "error", "registered tag without a manifest entry"))
    for name in sorted(set(models) - registered):
        issues.append(ManifestIssue(name, "<entry>", "error", "manifest entry without a registered tag"))
    for name in sorted(registered & set(models)):
        cfg = get_pretrained_cfg(name)
        labels = cfg.label_names
        if labels is not None and len(labels) != cfg.num_classes:
            issues.append(
                ManifestIssue(name, "labels", "error", f"{len(labels)} label names for {cfg.num_classes} classes")
            )
    return issues

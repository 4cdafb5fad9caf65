"""The authors' files (and their mirrors), converted once and kept in the zoo cache.

The authors publish no checksums, so until a maintainer pins an origin file's sha256 in the manifest, the first
download of each URL records the file's sha256 and size in the zoo cache (``origins/``) and prints them for the
manifest; a later download of the same URL whose bytes differ is refused unless the user allows it
(``allow_changed_origin=True`` or ``SLOWFAST_ZOO_ALLOW_CHANGED_ORIGIN=1``). Only a missing record means a first
download; a record that cannot be read or is not well-formed is an error saying how to reset it, and its size bounds
the next download as a pinned size would. The converted file vouches for itself
through a sidecar ``model.safetensors.json`` in the same folder: that protects against accidental corruption and
partial writes, not against someone who can write the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from . import cache as c
from .convert import convert
from .errors import CorruptCacheError, HashMismatchError, SourceFailed, WeightsError, WeightsNotFoundError
from .formats import CheckpointError, damaged_upstream_note
from .manifest import HEX64, Mirror
from .transfer import MAX_UNPINNED_BYTES, Deadline, fetch

__all__ = [
    "check_zoo_cache",
    "converted_paths",
    "download_origin",
    "origin_partials",
    "origin_record",
    "read_origin_record",
]

log = logging.getLogger(__name__)


def converted_paths(name: str, zoo_cache: Path) -> tuple[Path, Path]:
    folder = zoo_cache / "converted" / name
    return folder / "model.safetensors", folder / "model.safetensors.json"


def origin_partials(name: str, zoo_cache: Path, *, remove: bool = False) -> list[Path]:
    """``*.incomplete`` files an interrupted download or conversion left behind (deleted with ``remove``)."""
    folder = zoo_cache / "converted" / name
    if remove:
        return c.remove_incomplete(folder, zoo_cache)
    return sorted(p for p in folder.iterdir() if p.name.endswith(".incomplete")) if folder.is_dir() else []


def check_zoo_cache(cfg: Any, zoo_cache: Path, *, repair: bool) -> c.CacheCheck:
    """The converted file of ``cfg`` if it matches its sidecar and the manifest's origin; else deleted (``repair``)."""
    path, meta_path = converted_paths(cfg.name, zoo_cache)
    if not path.is_file() or not meta_path.is_file():
        return c.CacheCheck("missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = {}
    with open(path, "rb") as f:
        head = f.read(16)
    actual = c.sha256_file(path)
    stale = cfg.origin.sha256 is not None and meta.get("origin_sha256") != cfg.origin.sha256
    if actual == meta.get("sha256") and not stale and c.looks_like_safetensors(head):
        log.info("%s: weights from the zoo cache (converted from %s): %s", cfg.name, meta.get("origin_url"), path)
        return c.CacheCheck("ok", path, actual, str(meta.get("origin_url")))
    if stale:
        status, why = "stale", "the manifest pins another origin file"
    elif not c.looks_like_safetensors(head):
        status, why = "corrupt", f"not a safetensors file (starts with {head[:8]!r})"
    else:
        status, why = "corrupt", f"sha256 {actual}, recorded {meta.get('sha256')}"
    if repair:
        try:
            c.evict(path, zoo_cache)
            c.evict(meta_path, zoo_cache)
        except OSError as e:
            raise CorruptCacheError(f"{path}: {why}, and it cannot be deleted ({e}); it was not used") from None
        log.warning("%s: converted weights in the zoo cache: %s; deleted them", cfg.name, why)
    return c.CacheCheck(status, path, actual, why)


def origin_record(url: str, zoo_cache: Path) -> Path:
    """Where the sha256 and size of the first download of ``url`` are kept."""
    return zoo_cache / "origins" / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".json")


_RECORD_LIMIT = 64 << 10


def read_origin_record(url: str, zoo_cache: Path) -> dict[str, Any] | None:
    """The record of the first download of ``url``, or None when there is none (only then is a download the first).

    A record that cannot be read, is not a regular file, or is not ``{"sha256": <64 hex>, "size": <int>, ...}``
    raises a :class:`WeightsError` that names it and says how to reset it.
    """
    path = origin_record(url, zoo_cache)
    how = (
        f"delete {path} to trust the next download as a first one, or pass allow_changed_origin=True (or set "
        f"{c.ENV_ALLOW_CHANGED}=1) to accept the file now served and record it afresh"
    )
    try:  # no link followed, no wait on a FIFO, a bounded read
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise WeightsError(f"{path}: the record of the first download of {url} cannot be read ({e}); {how}") from None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        data = os.read(fd, _RECORD_LIMIT + 1) if regular else b""
    finally:
        os.close(fd)
    problem = None if regular else "not a regular file"
    record: Any = None
    if problem is None and len(data) > _RECORD_LIMIT:
        problem = f"larger than {_RECORD_LIMIT} bytes"
    elif problem is None:
        try:
            record = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            problem = f"not valid JSON ({e})"
    if problem is None and not (
        isinstance(record, dict)
        and isinstance(record.get("sha256"), str)
        and HEX64.fullmatch(record["sha256"])
        and type(record.get("size")) is int
        and record["size"] >= 0
    ):
        problem = f'not {{"sha256": <64 hex>, "size": <bytes>, ...}} but {str(record)[:80]}'
    if problem is not None:
        raise WeightsError(f"{path}: the record of the first download of {url} is {problem}; {how}")
    return record


def _checker(file: Mirror, first: dict[str, Any] | None, allow_changed: bool) -> Any:
    def check(digest: str, size: int) -> None:
        name = file.url.rsplit("/", 1)[-1]
        if file.sha256 is not None and (digest != file.sha256 or (file.size is not None and size != file.size)):
            detail = f"size {size}, manifest says {file.size}" if digest == file.sha256 else ""
            raise HashMismatchError(
                source=file.url, revision=None, filename=name, expected=file.sha256, actual=digest, detail=detail
            )
        if file.sha256 is not None or first is None:
            return
        if (first["sha256"], first["size"]) != (digest, size) and not allow_changed:
            raise HashMismatchError(
                source=file.url,
                revision=None,
                filename=name,
                expected=first["sha256"],
                actual=digest,
                detail=f"the first download of this URL ({first.get('date')}, {first['size']} bytes) differs; "
                f"the authors' file changed under the same URL. Pass allow_changed_origin=True or set "
                f"{c.ENV_ALLOW_CHANGED}=1 to accept the new one",
            )

    return check


def _first_record(file: Mirror, zoo_cache: Path, allow_changed: bool) -> dict[str, Any] | None:
    """The first-download record that binds ``file`` (None for a pinned file, or with nothing recorded)."""
    if file.sha256 is not None:
        return None
    try:
        return read_origin_record(file.url, zoo_cache)
    except WeightsError as e:
        if not allow_changed:
            raise
        log.warning("%s; it will be replaced, as allow_changed_origin says", e)
        return None


def _size_limit(file: Mirror, first: dict[str, Any] | None, allow_changed: bool) -> tuple[int, str]:
    """The most bytes a download of ``file`` may have, and where that number comes from."""
    if file.size is not None:
        return file.size, "the size the manifest pins"
    if first is not None and not allow_changed:
        return first["size"], "the size of the first download"
    return MAX_UNPINNED_BYTES, "MAX_UNPINNED_BYTES, the most an origin file without a pinned size may have"


def _record_first_download(cfg: Any, file: Mirror, zoo_cache: Path, digest: str, size: int) -> None:
    record = origin_record(file.url, zoo_cache)
    entry = {"url": file.url, "sha256": digest, "size": size, "date": time.strftime("%Y-%m-%d", time.gmtime())}
    c.atomic_write(record, json.dumps(entry, indent=2, sort_keys=True) + "\n")
    log.warning(
        "%s: first download of %s: sha256 %s, %d bytes (recorded in %s; later downloads must match). "
        'For weights_manifest.json: "sha256": "%s", "size": %d',
        cfg.name,
        file.url,
        digest,
        size,
        record,
        digest,
        size,
    )


def download_origin(
    cfg: Any,
    expected: Mapping[str, torch.Tensor],
    zoo_cache: Path,
    *,
    timeout: float,
    deadline: Deadline,
    allow_changed: bool,
) -> tuple[Path, str, str, str]:
    """Fetch the authors' file (or the first mirror that answers), convert and cache it (caller holds the lock).

    Returns (path, sha256, source, url). A mirror is tried only when the file before it is gone or unreachable,
    never when its bytes were refused.
    """
    path, meta_path = converted_paths(cfg.name, zoo_cache)
    for stale in origin_partials(cfg.name, zoo_cache, remove=True):
        log.warning("%s: removed %s, left by an interrupted download", cfg.name, stale)
    failures: list[str] = []
    gone = 0  # URLs that answered 404/410
    for file in cfg.origin.files:
        raw = path.parent / ("upstream-" + file.url.rsplit("/", 1)[-1].replace("\\", "_"))
        first = _first_record(file, zoo_cache, allow_changed)
        limit, why = _size_limit(file, first, allow_changed)
        try:
            check = _checker(file, first, allow_changed)
            kw: dict[str, Any] = {"timeout": timeout, "deadline": deadline, "limit": limit, "limit_why": why}
            digest, size = fetch(file.url, raw, check, progress=raw.name[9:], **kw)
        except (SourceFailed, WeightsNotFoundError) as e:
            failures.append(str(e))
            gone += isinstance(e, WeightsNotFoundError)
            log.warning("%s: %s", cfg.name, e)
            continue
        try:
            result = convert(raw, cfg, path, expected=expected)  # structural check + atomic write
            if file.sha256 is None and (allow_changed or first is None):
                _record_first_download(cfg, file, zoo_cache, digest, size)
        except CheckpointError as e:  # the authors' own file may be the damaged one: say so, with where to read
            note = damaged_upstream_note(file.url)
            if note is None:
                raise
            raise CheckpointError(f"{e}; {note}") from e
        except OSError as e:
            raise c.write_error(path.parent, e) from e
        finally:
            raw.unlink(missing_ok=True)
        meta = {
            "name": cfg.name,
            "sha256": result.sha256,
            "size": result.size,
            "origin_url": file.url,
            "origin_sha256": result.source_sha256,
            "origin_size": result.source_size,
            "origin_verified": file.sha256 is not None,
            "key_scheme": result.key_scheme,
        }
        c.atomic_write(meta_path, json.dumps(meta, indent=2, sort_keys=True))
        if cfg.hub is not None and cfg.hub.sha256 and cfg.hub.sha256 != result.sha256:
            log.warning("%s: converted sha256 %s differs from the Hub file %s", cfg.name, result.sha256, cfg.hub.sha256)
        log.info(
            "%s: weights converted from the authors' file %s (%s keys): %s", cfg.name, file.url, result.key_scheme, path
        )
        return path, result.sha256, "origin", file.url
    if gone == len(failures):
        raise WeightsNotFoundError(f"{cfg.name}: every origin URL is gone: " + "; ".join(failures))
    raise SourceFailed("; ".join(failures))

"""Pretrained weights: find, download, verify and cache them, and say where they came from.

Resolution order of :func:`resolve_weights` (an explicit ``checkpoint=`` path is handled by the factory):

1. the local Hugging Face cache at the manifest's pinned commit (no network request at all, also offline),
2. the zoo's own cache of weights converted from the authors' file (``$SLOWFAST_ZOO_CACHE/converted/<name>``),
3. the pinned commit on the Hub (``$HF_ENDPOINT``), written into the Hugging Face cache layout,
4. when the Hub entry is unpublished or the Hub is unreachable: the authors' original file, then its mirrors,
   hashed against the manifest (or against the sha256 recorded at its first download), converted to zoo keys,
   checked against the expected ``{key: tensor}`` structure and cached as safetensors.

Every file is hashed before use; a file whose sha256 differs is deleted and a :class:`HashMismatchError` names
repo, revision, file, expected and actual hash. :func:`load_verified` reads a file once, hashes that buffer and
deserializes the same buffer, so the bytes checked are the bytes loaded; :func:`pretrained_state_dict` reads a
warm Hugging Face cache file that way without hashing it beforehand (one pass over the bytes). Settings are read
at call time:
``HF_ENDPOINT``, ``HF_HUB_CACHE`` (or ``HF_HOME``), ``HF_HUB_OFFLINE``, ``SLOWFAST_ZOO_CACHE``,
``SLOWFAST_ZOO_TIMEOUT``, ``SLOWFAST_ZOO_DEADLINE``, ``SLOWFAST_ZOO_LOCK_TIMEOUT``,
``SLOWFAST_ZOO_ALLOW_CHANGED_ORIGIN``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import cache as c
from .errors import (
    CacheWriteError,
    CorruptCacheError,
    HashMismatchError,
    SourceFailed,
    WeightsError,
    WeightsNotFoundError,
    WeightsUnavailableError,
)
from .hub import HF_HUB_PREFIX, check_hf_cache, download_hub_file, hub_partials, hub_where
from .manifest import WeightsCfg, load_manifest
from .origin import check_zoo_cache, converted_paths, download_origin, origin_partials, origin_record
from .transfer import Deadline

if TYPE_CHECKING:
    import torch

__all__ = [
    "HF_HUB_PREFIX",
    "CacheWriteError",
    "CorruptCacheError",
    "HashMismatchError",
    "VerifyResult",
    "Weights",
    "WeightsError",
    "WeightsNotFoundError",
    "WeightsUnavailableError",
    "load_verified",
    "pretrained_state_dict",
    "resolve_weights",
    "trusted_sha256s",
    "verify",
]

log = logging.getLogger(__name__)


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


def _origin_applies(cfg: WeightsCfg) -> bool:
    """The authors' file stands for these weights only when the config is the manifest's own record of them."""
    if cfg.origin is None or not cfg.tag:
        return False
    record = load_manifest().get(cfg.name)
    if record is None or not record.get("origin"):
        return False
    # a repo written by push_to_hub elsewhere (e.g. fine-tuned weights) keeps the tag and origin of its ancestor
    return (record.get("hub") or {}).get("repo_id") == (cfg.hub.repo_id if cfg.hub else None)


def _how_to_get(cfg: WeightsCfg) -> str:
    return (
        f"Download them while online with `slowfast-zoo download {cfg.name}`, "
        "or give a local weights file (--checkpoint FILE; create(..., checkpoint=FILE) in Python)"
        + (f" with a local copy of {cfg.origin.url}" if cfg.origin else "")
        + "."
    )


# long: the resolution order written out once, source after source, so it reads as the README states it
def resolve_weights(
    cfg: WeightsCfg,
    *,
    expected: Mapping[str, torch.Tensor] | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    zoo_cache: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
    timeout: float | None = None,
    deadline: float | Deadline | None = None,
    token: str | bool | None = None,
    allow_changed_origin: bool | None = None,
) -> Weights:
    """Find or fetch the verified weight file of a pretrained config (see the module docstring for the order).

    Args:
        cfg: a :class:`~slowfast_zoo.PretrainedCfg` (its ``name``, ``tag``, ``hub`` and ``origin`` are used).
        expected: the ``{key: tensor}`` (meta tensors do) a converted origin file must match
            (``slowfast_zoo.factory.expected_state_dict(cfg)``); required when ``cfg`` has an origin file.
        endpoint, cache_dir, zoo_cache: Hub endpoint, Hugging Face cache and zoo cache (defaults from the environment).
        local_files_only: no network at all (default: ``HF_HUB_OFFLINE``).
        timeout: seconds to wait for a server to answer (default ``$SLOWFAST_ZOO_TIMEOUT`` or 10).
        deadline: seconds the whole call may take once it needs the network (default ``$SLOWFAST_ZOO_DEADLINE`` or
            1800): waiting for another process's download, the HEAD, every attempt and the origin fallback together.
        token: Hugging Face token (``None``: the saved one, if any; sent to the endpoint only).
        allow_changed_origin: accept an origin file whose bytes differ from its first download (default
            ``$SLOWFAST_ZOO_ALLOW_CHANGED_ORIGIN``).

    Raises:
        HashMismatchError: a downloaded file is not the pinned one (it was deleted).
        WeightsNotFoundError: the pinned repo, revision or file does not exist (HTTP 404).
        WeightsUnavailableError: offline with nothing cached, or no source reachable.
        CacheWriteError: the cache cannot be written; CorruptCacheError: a corrupt file cannot be deleted.
    """
    hub = cfg.hub if cfg.hub is not None and cfg.hub.published else None
    origin_ok = _origin_applies(cfg)
    if origin_ok and expected is None:
        raise TypeError(f"{cfg.name}: pass expected= (expected_state_dict(cfg)) to check a converted origin file")
    if hub is None and not origin_ok:
        raise WeightsUnavailableError(
            f"{cfg.name} has no published weights: the manifest pins no Hub revision/sha256"
            + (" and no origin file" if cfg.origin is None else "")
        )
    cache = str(cache_dir) if cache_dir is not None else c.hf_cache_dir()
    zoo = Path(zoo_cache) if zoo_cache is not None else c.zoo_cache_dir()
    timeout = c.timeout_seconds(timeout)

    def local(repair: bool) -> Weights | None:
        if hub:
            found = check_hf_cache(hub, cache, repair=repair)
            if found.ok and found.path is not None and hub.sha256 is not None:  # a published file's, found whole
                log.info("%s: weights from the Hugging Face cache (%s): %s", cfg.name, hub_where(hub), found.path)
                return Weights(cfg.name, found.path, hub.sha256, "hf-cache", f"{hub.repo_id}@{hub.revision}")
        if origin_ok:
            found = check_zoo_cache(cfg, zoo, repair=repair)
            if found.ok and found.path is not None and found.sha256 is not None:
                return Weights(cfg.name, found.path, found.sha256, "zoo-cache", found.detail)
        return None

    found = local(repair=False)  # no lock and nothing deleted: a bad copy is handled under the lock below
    if found:
        return found
    failures: list[str] = []
    deadline = Deadline.of(deadline)  # one budget from here on, the lock wait included
    with c.lock(f"weights-{cfg.name}-{hub.sha256 if hub else 'origin'}", zoo, c.lock_timeout(deadline.remaining())):
        found = local(repair=True)  # evicts bad copies and stale partial files; another process may have fetched
        if found:
            return found
        if c.is_offline(local_files_only):
            where = f" (looked in {cache}" + (f" for {hub_where(hub)}" if hub else "") + f" and {zoo / 'converted'})"
            raise WeightsUnavailableError(
                f"{cfg.name}: offline mode and the weights are not cached{where}. {_how_to_get(cfg)}"
            )
        if hub:
            try:
                args = (cfg.name, hub, cache, c.endpoint_url(endpoint), timeout, deadline, token)
                return Weights(cfg.name, *download_hub_file(*args))
            except SourceFailed as e:
                failures.append(str(e))
                log.warning("%s: %s", cfg.name, e)
        elif cfg.hub is not None:
            failures.append(f"{cfg.hub.repo_id} is not published yet (the manifest's revision/sha256 are null)")
        if origin_ok and cfg.origin is not None and expected is not None:  # both checked on entry
            log.info("%s: trying the authors' file %s", cfg.name, cfg.origin.url)
            try:
                allow = allow_changed_origin if allow_changed_origin is not None else c.env_true(c.ENV_ALLOW_CHANGED)
                got = download_origin(cfg, expected, zoo, timeout=timeout, deadline=deadline, allow_changed=allow)
                return Weights(cfg.name, *got)
            except SourceFailed as e:
                failures.append(str(e))
    raise WeightsUnavailableError(
        f"{cfg.name}: no source could provide the weights: " + "; ".join(failures) + f". {_how_to_get(cfg)}"
    )


def load_verified(weights: Weights) -> dict[str, torch.Tensor]:
    """Read a resolved safetensors file once, check that buffer's sha256, and deserialize that same buffer.

    A file that changed since it was resolved, or that is not safetensors (e.g. a pickle under a ``.safetensors``
    name), raises :class:`~slowfast_zoo.CheckpointError` and is never deserialized by another reader.
    """
    data, actual = c.read_hashed(weights.path)
    return _safetensors(weights.path, data, actual, weights.sha256)


def _safetensors(path: Path, data: bytes, actual: str, expected: str) -> dict[str, torch.Tensor]:
    from .formats import CheckpointError, read_checkpoint

    if actual != expected:
        raise CheckpointError(
            f"{path}: sha256 {actual} when loaded, {expected} when verified; the file changed "
            "in between (another process writing the cache?), nothing was loaded"
        )
    if not c.looks_like_safetensors(data[:16]):
        raise CheckpointError(f"{path}: not a safetensors file (starts with {data[:8]!r}); refusing it")
    return read_checkpoint(path, data).tensors


def _warm(cfg: WeightsCfg, kwargs: Mapping[str, Any]) -> tuple[Path, bytes, str, str, str] | None:
    """The file a warm cache holds for ``cfg``, read once: (path, bytes, their sha256, source, where), if those
    bytes are the ones the cache vouches for (the manifest's sha256, or the converted file's sidecar record)."""
    hub = cfg.hub if cfg.hub is not None and cfg.hub.published else None
    if hub is not None:
        from huggingface_hub import try_to_load_from_cache

        cache = str(kwargs["cache_dir"]) if kwargs.get("cache_dir") is not None else c.hf_cache_dir()
        found = try_to_load_from_cache(hub.repo_id, hub.filename, cache_dir=cache, revision=hub.revision)
        if isinstance(found, str):
            with contextlib.suppress(OSError, ValueError):
                data, actual = c.read_hashed(found)
                if actual == hub.sha256:
                    return Path(found), data, actual, "hf-cache", f"{hub.repo_id}@{hub.revision}"
    if cfg.origin is not None and _origin_applies(cfg):  # what check_zoo_cache accepts, from the bytes in hand
        zoo = Path(kwargs["zoo_cache"]) if kwargs.get("zoo_cache") is not None else c.zoo_cache_dir()
        path, meta_path = converted_paths(cfg.name, zoo)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            meta = json.loads(meta_path.read_text())
            fresh = cfg.origin.sha256 is None or meta.get("origin_sha256") == cfg.origin.sha256
            data, actual = c.read_hashed(path)
            if fresh and actual == meta.get("sha256"):
                return path, data, actual, "zoo-cache", str(meta.get("origin_url"))
    return None


def pretrained_state_dict(cfg: WeightsCfg, **kwargs: Any) -> tuple[Weights, dict[str, torch.Tensor]]:
    """The verified weights of ``cfg`` and their tensors, deserialized from the very bytes that were hashed.

    A warm cache file (the Hugging Face cache at the pinned commit, or the zoo's converted file) is read once,
    hashed and deserialized: one pass over its bytes. Anything else (missing, corrupt, stale, to download) goes
    through :func:`resolve_weights`, which repairs the cache, and is then re-hashed as it is read.
    """
    warm = _warm(cfg, kwargs)
    if warm is not None:
        path, data, actual, source, where = warm
        cache = "Hugging Face cache" if source == "hf-cache" else "zoo cache, converted from"
        log.info("%s: weights from the %s %s: %s", cfg.name, cache, where, path)
        return Weights(cfg.name, path, actual, source, where), _safetensors(path, data, actual, actual)
    weights = resolve_weights(cfg, **kwargs)
    return weights, load_verified(weights)


def trusted_sha256s(cfg: WeightsCfg, zoo_cache: str | os.PathLike[str] | None = None) -> set[str]:
    """The sha256s that stand for the published weights of ``cfg.name``: pinned by the manifest inside the installed
    package (Hub file, authors' file), or recorded by this zoo's own first download and conversion of the
    authors' file. Never what a folder or repo says about itself."""
    record = load_manifest().get(cfg.name) or {}
    found = {(record.get(k) or {}).get("sha256") for k in ("hub", "origin")}
    origin = record.get("origin") or {}
    zoo = Path(zoo_cache) if zoo_cache is not None else c.zoo_cache_dir()
    urls = [origin.get("url")] + [m.get("url") for m in origin.get("mirrors") or ()]
    for url in filter(None, urls):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            found.add(json.loads(origin_record(url, zoo).read_text()).get("sha256"))
    if origin:  # the zoo's own conversion of that file, of the origin file the manifest pins
        with contextlib.suppress(OSError, ValueError, AttributeError):
            meta = json.loads(converted_paths(cfg.name, zoo)[1].read_text())
            if meta.get("origin_url") in urls and meta.get("origin_sha256") in {origin.get("sha256"), *found} - {None}:
                found.add(meta.get("sha256"))
    return {s for s in found if isinstance(s, str) and len(s) == 64}


@dataclass(frozen=True)
class VerifyResult:
    """One cached file checked by :func:`verify`."""

    name: str
    #: ``ok``, ``missing`` (not cached), ``corrupt`` (hash differs: deleted), ``stale`` (the manifest pins another
    #: origin file: deleted), ``partial`` (a left-over ``*.incomplete`` file) or ``unpublished`` (nothing to check)
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
        if self.status == "stale":
            text += f" ({self.where}; deleted)"
        if self.status == "partial":
            text += " (left by an interrupted download; the next download removes it)"
        return text


def verify(
    cfgs: Iterable[Any],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    zoo_cache: str | os.PathLike[str] | None = None,
) -> list[VerifyResult]:
    """Re-hash what the caches hold for these pretrained configs, without network, judging them as resolution does.

    Files whose sha256 differs from the manifest (Hub files) or from the record written at conversion
    (converted origin files) are deleted and reported ``corrupt``; converted files of another origin file than
    the manifest pins are deleted and reported ``stale``; ``*.incomplete`` leftovers are reported ``partial``.
    """
    cache = str(cache_dir) if cache_dir is not None else c.hf_cache_dir()
    zoo = Path(zoo_cache) if zoo_cache is not None else c.zoo_cache_dir()
    results = []
    for cfg in cfgs:
        checked = []
        hub = cfg.hub if cfg.hub is not None and cfg.hub.published else None
        if hub is not None:
            checked.append(_verify_hub(cfg.name, hub, cache))
            checked += [VerifyResult(cfg.name, "partial", str(p)) for p in hub_partials(hub, cache)]
        path, _ = converted_paths(cfg.name, zoo)
        if path.is_file():
            checked.append(_verify_converted(cfg, zoo))
        checked += [VerifyResult(cfg.name, "partial", str(p)) for p in origin_partials(cfg.name, zoo)]
        results += checked or [VerifyResult(cfg.name, "unpublished" if cfg.origin is None else "missing")]
    return results


def _verify_hub(name: str, hub: Any, cache: str) -> VerifyResult:
    where = hub_where(hub)
    try:
        found = check_hf_cache(hub, cache, repair=True)
    except CorruptCacheError as e:
        return VerifyResult(name, "corrupt", None, hub.sha256, None, str(e))
    path = str(found.path) if found.path else None
    return VerifyResult(name, found.status, path, hub.sha256, found.sha256, where)


def _verify_converted(cfg: WeightsCfg, zoo: Path) -> VerifyResult:
    path, meta_path = converted_paths(cfg.name, zoo)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = {}
    where = "converted from " + str(meta.get("origin_url") or (cfg.origin.url if cfg.origin else "?"))
    try:
        found = check_zoo_cache(cfg, zoo, repair=True)
    except CorruptCacheError as e:
        return VerifyResult(cfg.name, "corrupt", str(path), meta.get("sha256"), None, str(e))
    if found.status == "missing":  # a converted file without its sidecar cannot vouch for itself
        return VerifyResult(cfg.name, "corrupt", str(path), None, c.sha256_file(path), "no sidecar record")
    detail = where if found.ok else found.detail
    return VerifyResult(cfg.name, found.status, str(path), meta.get("sha256"), found.sha256, detail)

"""``weights_manifest.json``: its record types, its one reader and its schema.

The manifest shipped inside the installed package is the trust anchor of the weights subsystem: per ``arch.tag`` the
Hub repo, the 40-hex commit, file, sha256 and size, and the authors' URL (plus mirrors that serve the same tensors),
format and key scheme.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

__all__ = [
    "HEX40",
    "HEX64",
    "ORIGIN_FORMATS",
    "HubFile",
    "ManifestIssue",
    "Mirror",
    "Origin",
    "load_manifest",
    "merge_entries",
    "read_manifest",
    "validate_manifest",
    "verify_manifest",
]

MANIFEST = "weights_manifest.json"
HEX40 = re.compile(r"[0-9a-f]{40}")
HEX64 = re.compile(r"[0-9a-f]{64}")
#: a Hub repo id ``org/name``: each part starts with a letter or digit, then at most 95 of ``A-Za-z0-9_.-``
#: (huggingface_hub's ``validate_repo_id`` allows 96 characters per part)
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}")
ORIGIN_FORMATS = {"caffe2_pkl": ("caffe2",), "pysf_pyth": ("pysf",), "ptv_pyth": ("ptv", "ptv_wrapper")}
REQUIRED_KEYS = ("hub", "origin", "metrics", "params", "gflops", "license", "citation")
_ORIGIN_KEYS = {"url", "format", "key_scheme", "sha256", "size", "mirrors"}
_MIRROR_KEYS = {"url", "key_scheme", "sha256", "size"}


@dataclass(frozen=True)
class Mirror:
    """Another URL serving the same tensors as an origin file (same format; keys may be wrapped differently)."""

    url: str
    key_scheme: str
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class Origin:
    """The authors' original file and how to read it."""

    url: str
    #: ``caffe2_pkl``, ``pysf_pyth`` (PySlowFast torch.save) or ``ptv_pyth`` (PyTorchVideo)
    format: str
    #: key scheme of its state dict, see :mod:`slowfast_zoo.weights.keys`
    key_scheme: str
    sha256: str | None = None
    size: int | None = None
    #: re-hosted copies tried in order when ``url`` is gone or unreachable
    mirrors: tuple[Mirror, ...] = field(default=())

    def __post_init__(self) -> None:
        mirrors = tuple(m if isinstance(m, Mirror) else Mirror(**m) for m in self.mirrors)
        object.__setattr__(self, "mirrors", mirrors)

    @property
    def files(self) -> tuple[Mirror, ...]:
        """The primary file, then its mirrors, as the URLs to try in order."""
        return (Mirror(self.url, self.key_scheme, self.sha256, self.size), *self.mirrors)


@dataclass(frozen=True)
class HubFile:
    """The converted safetensors file on the Hugging Face Hub, pinned to a commit."""

    repo_id: str
    revision: str | None = None
    filename: str = "model.safetensors"
    sha256: str | None = None
    size: int | None = None

    @property
    def published(self) -> bool:
        return bool(self.revision and self.sha256)


class WeightsCfg(Protocol):
    """What the weights subsystem reads of a pretrained config (:class:`slowfast_zoo.PretrainedCfg` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def tag(self) -> str | None: ...

    @property
    def origin(self) -> Origin | None: ...

    @property
    def hub(self) -> HubFile | None: ...


def read_manifest(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The parsed manifest: the packaged one, or the file at ``path``."""
    if path is None:
        return json.loads(resources.files("slowfast_zoo").joinpath(MANIFEST).read_text(encoding="utf-8"))
    return json.loads(Path(path).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class LoadedWeights:
    """The file a model's tensors were loaded from (set by ``create``; None means random initialization)."""

    #: the local file that was read
    file: str
    #: sha256 of that file
    sha256: str
    #: ``pretrained`` (the registry's verified weights) or ``checkpoint`` (a file the caller passed)
    source: str
    #: Hub repo@revision or URL the file came from, when known
    location: str | None = None
    #: sha256 over the tensors as loaded (names, dtypes, shapes, bytes): later training or edits are detectable
    tensors_sha256: str | None = None


@dataclass(frozen=True)
class Parent:
    """The model that fine-tuned or otherwise changed weights derive from."""

    #: its name (``arch.tag``, an ``hf-hub:`` repo or a bare arch)
    name: str
    #: sha256 of the file its weights were loaded from
    sha256: str | None = None
    #: Hub repo@revision or URL of that file
    location: str | None = None
    #: what was done to it, in order (e.g. ``classifier re-initialized for 3 classes``)
    changes: tuple[str, ...] = ()


@cache
def load_manifest() -> Mapping[str, Mapping[str, Any]]:
    """The weight records of the packaged ``weights_manifest.json``, by ``arch.tag``."""
    return MappingProxyType(read_manifest()["models"])


@dataclass(frozen=True)
class ManifestIssue:
    """A manifest field that is wrong (``error``) or not known yet (``null``)."""

    name: str
    field: str
    level: str
    message: str

    def __str__(self) -> str:
        return f"{self.name}: {self.field}: {self.message}"


def _hex(value: Any, n: int) -> bool:
    return isinstance(value, str) and {40: HEX40, 64: HEX64}[n].fullmatch(value) is not None


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class _Issues(list):
    def err(self, name: str, fld: str, msg: str) -> None:
        self.append(ManifestIssue(name, fld, "error", msg))

    def null(self, name: str, fld: str, msg: str) -> None:
        self.append(ManifestIssue(name, fld, "null", msg))


def _check_hub(issues: _Issues, name: str, hub: Any) -> None:
    if not isinstance(hub, Mapping):
        issues.err(name, "hub", "must be an object")
        return
    repo = hub.get("repo_id")
    if not (isinstance(repo, str) and REPO_ID.fullmatch(repo)):
        issues.err(name, "hub.repo_id", f"not an org/name repo id: {repo!r}")
    if hub.get("filename") != "model.safetensors":
        issues.err(name, "hub.filename", f"expected model.safetensors, got {hub.get('filename')!r}")
    pinned = {k: hub.get(k) for k in ("revision", "sha256", "size")}
    for key, n in (("revision", 40), ("sha256", 64)):
        v = pinned[key]
        if v is not None and not _hex(v, n):
            issues.err(name, f"hub.{key}", f"expected {n} lowercase hex digits (a commit, never a branch), got {v!r}")
    if pinned["size"] is not None and not _positive_int(pinned["size"]):
        issues.err(name, "hub.size", f"expected a positive integer, got {pinned['size']!r}")
    known = [k for k, v in pinned.items() if v is not None]
    if known and len(known) < 3:
        issues.err(name, "hub", f"revision, sha256 and size are set together once published; only {known} are")
    if not known:
        issues.null(name, "hub.revision/sha256/size", f"not published yet ({repo}); run slowfast-zoo publish")
    for key in set(hub) - {"repo_id", "revision", "filename", "sha256", "size"}:
        issues.err(name, f"hub.{key}", "unknown key")


def _check_file(issues: _Issues, name: str, where: str, rec: Mapping[str, Any], schemes: tuple[str, ...]) -> None:
    url = rec.get("url")
    if not (isinstance(url, str) and url.startswith("https://")):
        issues.err(name, f"{where}.url", f"expected an https URL, got {url!r}")
    if rec.get("key_scheme") not in schemes:
        issues.err(name, f"{where}.key_scheme", f"{rec.get('key_scheme')!r} does not fit format (one of {schemes})")
    sha, size = rec.get("sha256"), rec.get("size")
    if sha is not None and not _hex(sha, 64):
        issues.err(name, f"{where}.sha256", f"expected 64 lowercase hex digits, got {sha!r}")
    if size is not None and not _positive_int(size):
        issues.err(name, f"{where}.size", f"expected a positive integer, got {size!r}")
    if sha is None:
        issues.null(name, f"{where}.sha256", f"unknown: {url} has not been hashed yet")
    if size is None:
        issues.null(name, f"{where}.size", f"unknown: {url} has not been downloaded yet")


def _check_origin(issues: _Issues, name: str, origin: Any) -> None:
    if not isinstance(origin, Mapping):
        issues.err(name, "origin", "must be an object or null")
        return
    fmt = origin.get("format")
    if not isinstance(fmt, str) or fmt not in ORIGIN_FORMATS:
        issues.err(name, "origin.format", f"expected one of {sorted(ORIGIN_FORMATS)}, got {fmt!r}")
    schemes = ORIGIN_FORMATS.get(fmt, ()) if isinstance(fmt, str) else ()
    _check_file(issues, name, "origin", origin, schemes)
    for key in set(origin) - _ORIGIN_KEYS:
        issues.err(name, f"origin.{key}", "unknown key")
    mirrors = origin.get("mirrors", [])
    if not isinstance(mirrors, list):
        issues.err(name, "origin.mirrors", "expected a list of {url, key_scheme, sha256, size}")
        return
    for i, mirror in enumerate(mirrors):
        if not isinstance(mirror, Mapping):
            issues.err(name, f"origin.mirrors[{i}]", "not an object")
            continue
        _check_file(issues, name, f"origin.mirrors[{i}]", mirror, schemes)
        for key in set(mirror) - _MIRROR_KEYS:
            issues.err(name, f"origin.mirrors[{i}].{key}", "unknown key")


def _check_record(issues: _Issues, name: str, rec: Mapping[str, Any]) -> None:
    for key in REQUIRED_KEYS:
        if key not in rec:
            issues.err(name, key, "required key missing (use null when unknown)")
    _check_hub(issues, name, rec.get("hub"))
    if rec.get("origin") is not None:
        _check_origin(issues, name, rec["origin"])
    metrics = rec.get("metrics")
    if not isinstance(metrics, Mapping) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) for k, v in metrics.items()
    ):
        issues.err(name, "metrics", "expected an object of numbers")
    if rec.get("params") is not None and not _positive_int(rec["params"]):
        issues.err(name, "params", f"expected a positive integer or null, got {rec['params']!r}")
    for key in ("gflops", "gflops_published"):
        if rec.get(key) is not None and not isinstance(rec[key], (int, float)):
            issues.err(name, key, f"expected a number or null, got {rec[key]!r}")
    for key in ("params", "gflops"):
        if key in rec and rec[key] is None:
            issues.null(name, key, "not computed yet")
    for key in ("license", "citation"):
        if not (isinstance(rec.get(key), str) and rec[key]):
            issues.err(name, key, "required text")


def validate_manifest(data: Mapping[str, Any]) -> list[ManifestIssue]:
    """Check a parsed ``weights_manifest.json``: schema errors (``error``) and fields still ``null`` (``null``)."""
    issues = _Issues()
    if data.get("schema_version") != 1:
        issues.err("<manifest>", "schema_version", f"expected 1, got {data.get('schema_version')!r}")
    models = data.get("models")
    if not isinstance(models, Mapping) or not models:
        issues.err("<manifest>", "models", "missing or empty")
        return list(issues)
    for name, rec in models.items():
        if not re.fullmatch(r"[a-z0-9_]+\.[a-z0-9_]+", name):
            issues.err(name, "<name>", "expected arch.tag")
        if not isinstance(rec, Mapping):
            issues.err(name, "<entry>", "not an object")
            continue
        _check_record(issues, name, rec)
    return list(issues)


def verify_manifest(
    path: str | os.PathLike[str] | None = None, registered: Mapping[str, Any] | None = None
) -> list[ManifestIssue]:
    """Check ``weights_manifest.json`` (the packaged one, or ``path``) against the schema and the registered tags.

    ``registered`` maps each pretrained ``arch.tag`` to its pretrained config (``num_classes``, ``label_names``);
    the caller passes it (e.g. ``{n: get_pretrained_cfg(n) for n in list_pretrained()}``), so this module needs no
    registry. Returns every issue: ``error`` ones are bugs, ``null`` ones are fields that are honestly unknown until
    publication (Hub revision/sha256/size) or until the authors' file is hashed (origin sha256/size).
    """
    data = read_manifest(path)
    issues = validate_manifest(data)
    if registered is None:
        return issues
    models = data.get("models") or {}
    for name in sorted(set(registered) - set(models)):
        issues.append(ManifestIssue(name, "<entry>", "error", "registered tag without a manifest entry"))
    for name in sorted(set(models) - set(registered)):
        issues.append(ManifestIssue(name, "<entry>", "error", "manifest entry without a registered tag"))
    for name in sorted(set(registered) & set(models)):
        cfg = registered[name]
        labels = cfg.label_names
        if labels is not None and len(labels) != cfg.num_classes:
            issues.append(
                ManifestIssue(name, "labels", "error", f"{len(labels)} label names for {cfg.num_classes} classes")
            )
    return issues


def merge_entries(path: str | os.PathLike[str], entries: Mapping[str, Mapping[str, Any]]) -> list[ManifestIssue]:
    """Write published fields (``PublishResult.manifest_entry()`` per ``arch.tag``) into a manifest file.

    ``hub`` and ``origin`` fields are updated one by one, everything else is kept; the file is rewritten atomically
    only when the result passes :func:`validate_manifest` (its ``error`` issues are raised as ``ValueError``).
    Returns the remaining ``null`` issues.
    """
    from .cache import atomic_write

    data = read_manifest(path)
    for name, entry in entries.items():
        record = data["models"].get(name)
        if record is None:
            raise ValueError(f"{path}: no entry {name!r} to update")
        for key, fields in entry.items():
            if not isinstance(record.get(key), dict):
                raise ValueError(f"{path}: {name}.{key} is not an object to update")
            record[key].update(fields)
    issues = validate_manifest(data)
    errors = [str(i) for i in issues if i.level == "error"]
    if errors:
        raise ValueError(f"{path}: the update would break the manifest: " + "; ".join(errors[:5]))
    atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return issues

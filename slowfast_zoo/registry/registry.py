"""The one registry: architecture names -> :class:`ResNet3dConfig`, ``arch.tag`` names -> :class:`PretrainedCfg`."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..errors import SlowFastZooError
from ..models.resnet3d import ResNet3dConfig
from .pretrained import HubFile, Origin, PretrainedCfg, load_manifest

__all__ = [
    "UnknownModelError",
    "get_pretrained_cfg",
    "is_model",
    "list_models",
    "list_pretrained",
    "register_alias",
    "register_arch",
    "resolve_name",
]

_ARCHS: dict[str, PretrainedCfg] = {}  # arch -> its config without weights
_PRETRAINED: dict[str, PretrainedCfg] = {}  # arch.tag -> config with weights record
_DEFAULT_TAG: dict[str, str] = {}
_ALIASES: dict[str, str] = {}


class UnknownModelError(SlowFastZooError, KeyError):
    """No registered model has this name."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_arch(
    arch: str, model: ResNet3dConfig, tags: Mapping[str, Mapping[str, Any]] | None = None, **data: Any
) -> None:
    """Register an architecture and its pretrained tags (the first tag is the default).

    ``data`` are :class:`PretrainedCfg` fields shared by all tags; each tag's mapping overrides them, with
    ``model`` (a dict of :class:`ResNet3dConfig` fields) changing the architecture (e.g. ``num_classes``).
    The weight record of each tag (origin, hub file, metrics) comes from ``weights_manifest.json``.
    """
    if arch in _ARCHS:
        raise ValueError(f"architecture {arch!r} is already registered")
    _ARCHS[arch] = PretrainedCfg(arch=arch, tag=None, model=model, **data)
    manifest = load_manifest()
    for i, (tag, fields) in enumerate((tags or {}).items()):
        name = f"{arch}.{tag}"
        fields = dict(fields)
        tag_model = model.replace(**fields.pop("model", {}))
        record = manifest.get(name)
        if record is None:
            raise ValueError(f"{name} has no entry in weights_manifest.json")
        _PRETRAINED[name] = PretrainedCfg(
            arch=arch, tag=tag, model=tag_model, **{**data, **fields}, **_record_fields(record)
        )
        if i == 0:
            _DEFAULT_TAG[arch] = tag


def _record_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    return dict(
        origin=Origin(**record["origin"]) if record.get("origin") else None,
        hub=HubFile(**record["hub"]) if record.get("hub") else None,
        metrics=MappingProxyType(dict(record.get("metrics") or {})),
        params=record.get("params"),
        gflops=record.get("gflops"),
        license=record.get("license"),
        citation=record.get("citation"),
        notes=record.get("notes", ""),
    )


def register_alias(alias: str, target: str) -> None:
    """Make ``alias`` resolve to ``target`` (an arch or ``arch.tag``)."""
    _ALIASES[alias] = target


def _sort_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Architecture names matching a wildcard pattern; with ``pretrained=True``, the ``arch.tag`` names with weights."""
    names = _PRETRAINED if pretrained else _ARCHS
    return sorted((n for n in names if fnmatch.fnmatchcase(n, pattern)), key=_sort_key)


def list_pretrained(pattern: str = "*") -> list[str]:
    """Every ``arch.tag`` with weights matching a wildcard pattern."""
    return list_models(pattern, pretrained=True)


def resolve_name(name: str) -> str:
    """The full ``arch.tag`` (or bare arch without weights) a name refers to, following aliases and default tags."""
    name = _ALIASES.get(name, name)
    if name in _PRETRAINED:
        return name
    if name in _ARCHS:
        return f"{name}.{_DEFAULT_TAG[name]}" if name in _DEFAULT_TAG else name
    known = list(_ARCHS) + list(_PRETRAINED) + list(_ALIASES)
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see slowfast_zoo.list_models()"
    raise UnknownModelError(f"unknown model {name!r}{hint}")


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered architecture, ``arch.tag`` or alias."""
    try:
        resolve_name(name)
    except UnknownModelError:
        return False
    return True


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The immutable pretrained config of a name (a bare arch gives its default tag, or no weights if it has none)."""
    full = resolve_name(name)
    return _PRETRAINED.get(full) or _ARCHS[full]

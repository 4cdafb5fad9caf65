"""Schema of a ``config.json`` (``hf-hub:`` repos, ``local-dir:`` folders): every field checked before building.

A config from outside is hostile until checked. The schema is the dataclasses themselves: each field of
:class:`PretrainedCfg` (and of the records inside it, the architecture config included) is checked against its type
annotation, read with ``dataclasses.fields`` and ``typing.get_type_hints``: a ``Literal`` admits its values, a
``tuple[int, int]`` a list of two integers, ``X | None`` null or an ``X``, a nested dataclass an object of its fields.
A field added to a dataclass is therefore checked with no edit here. What types cannot say is kept below: numeric
ranges (:data:`BOUNDS`, so that building the network cannot allocate without limit), lengths that depend on other
fields, patterns (repo ids, hashes, file names) and the label set; :func:`check_param_count` then counts the
parameters of a ``meta``-device build against :data:`MAX_PARAMS`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from ..weights.manifest import HEX64, REPO_ID
from .family import DEFAULT_FAMILY, get_family, list_families
from .family import config_error as _fail
from .pretrained import PretrainedCfg, label_set_names

__all__ = ["BOUNDS", "MAX_PARAMS", "check_param_count", "validate_config", "validate_pretrained_cfg"]

#: networks above this many parameters are refused unless the caller raises the limit (the largest zoo model has 60M)
MAX_PARAMS = 2_000_000_000

#: ranges of numbers (of each item of a list), by dotted field path below ``pretrained_cfg``; ``(lo, hi, lo_open)``
BOUNDS: dict[str, tuple[float, float, bool]] = {
    # the architecture: what a crafted config could inflate
    "model.layers": (1, 64, False),
    "model.alpha": (1, 32, False),
    "model.stem_kernel_t": (1, 15, False),
    "model.block_kernel_t": (1, 15, False),
    "model.nonlocal_blocks": (0, 63, False),
    "model.nonlocal_pool": (1, 8, False),
    "model.width": (1, 1024, False),
    "model.beta_inv": (1, 64, False),
    "model.fusion_kernel_t": (1, 15, False),
    "model.fusion_channel_ratio": (1, 16, False),
    "model.temporal_pool": (1, 8, False),
    "model.num_classes": (0, 1_000_000, False),
    "model.num_frames": (1, 1024, False),
    "model.crop_size": (1, 4096, False),
    "model.in_chans": (1, 16, False),
    "model.fast_downsample": (1, 8, False),
    "model.spatial_strides": (1, 2, False),
    "model.spatial_dilations": (1, 8, False),
    "model.dropout": (0.0, 0.99, False),
    "model.drop_path_rate": (0.0, 0.99, False),
    "model.bn_eps": (0.0, 1.0, True),
    "model.bn_momentum": (0.0, 1.0, False),
    # the protocol
    "sampling_rate": (1, 64, False),
    "target_fps": (0.0, 1000.0, True),
    "test_clips": (1, 1000, False),
    "train_crop_size": (1, 4096, False),
    "train_short_side": (1, 4096, False),
    "test_short_side": (1, 4096, False),
    "test_crop_size": (1, 4096, False),
    "mean": (-1e3, 1e3, False),
    "std": (0.0, 1e3, True),
    "person_score_threshold": (0.0, 1.0, False),
    "metrics": (-1e6, 1e6, False),
    "params": (0, 10**13, False),
    "gflops": (0.0, 1e9, False),
    "origin.size": (0, 1 << 40, False),
    "origin.mirrors.size": (0, 1 << 40, False),
    "hub.size": (0, 1 << 40, False),
}
#: ranges of fields without an entry in :data:`BOUNDS`
_INT_RANGE = (-(10**15), 10**15, False)
_FLOAT_RANGE = (-1e12, 1e12, False)
#: longest string of a field (default 10,000 characters), list (1,000 items) and object (100 entries)
_MAX_CHARS = {"arch": 128, "dataset": 128, "labels": 256, "label_names": 256, "metrics": 64, "hub.revision": 255}
_MAX_CHARS |= {"origin.url": 2048, "origin.format": 64, "origin.key_scheme": 64}
_MAX_ITEMS, _MAX_ENTRIES = 1000, 100
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


def _path_key(field: str) -> str:
    """``pretrained_cfg.model.layers[2]`` -> ``model.layers``: the key of :data:`BOUNDS` and :data:`_MAX_CHARS`."""
    return re.sub(r"\[\d+\]", "", field).removeprefix("pretrained_cfg.")


def _number(field: str, value: Any, kind: type, key: str) -> None:
    lo, hi, lo_open = BOUNDS.get(key, _INT_RANGE if kind is int else _FLOAT_RANGE)
    ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not lo <= value <= hi or (lo_open and value == lo):
        kind_name = "an integer" if kind is int else "a finite number"
        raise _fail(field, f"{kind_name} in {'(' if lo_open else '['}{lo}, {hi}]", value)


def _check(field: str, value: Any, tp: Any, key: str | None = None) -> None:
    """Check ``value`` (parsed JSON) against the type annotation ``tp``; raises ValueError naming ``field``.

    ``key`` names the entry of :data:`BOUNDS` and :data:`_MAX_CHARS` (default: ``field`` without list indices).
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    key = key or _path_key(field)
    if origin is Literal:
        if isinstance(value, (list, dict)) or value not in args or type(value) not in {type(a) for a in args}:
            raise _fail(field, f"one of {list(args)}", value)
    elif origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _check(field, value, option, key)
            except ValueError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else _fail(field, " or ".join(map(_describe, options)), value)
    elif tp is bool:
        if not isinstance(value, bool):
            raise _fail(field, "true or false", value)
    elif tp in (int, float):
        _number(field, value, tp, key)
    elif tp is str:
        limit = _MAX_CHARS.get(key, 10_000)
        if not isinstance(value, str) or len(value) > limit:
            raise _fail(field, f"a string of at most {limit} characters", value)
    elif origin is tuple:
        variadic = len(args) == 2 and args[1] is Ellipsis
        if not isinstance(value, list) or (len(value) > _MAX_ITEMS if variadic else len(value) != len(args)):
            raise _fail(field, f"a list of {f'at most {_MAX_ITEMS}' if variadic else len(args)} items", value)
        for i, item in enumerate(value):
            _check(f"{field}[{i}]", item, args[0] if variadic else args[i], key)
    elif origin in (Mapping, dict):
        if not isinstance(value, Mapping) or len(value) > _MAX_ENTRIES:
            raise _fail(field, f"an object of at most {_MAX_ENTRIES} entries", value)
        for name, item in value.items():
            _check(field, name, args[0], key)  # the keys: bounded strings
            _check(f"{field}.{name}", item, args[1], key)
    elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
        _check_record(field, value, tp)
    else:  # a type this schema does not know yet: refuse rather than let it through unchecked
        raise TypeError(f"config field {field!r}: no rule for the type {tp!r}")


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return "a list"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _check_record(field: str, value: Any, cls: type, types: Mapping[str, Any] | None = None) -> None:
    """An object holding fields of the dataclass ``cls`` (the required ones at least), each checked by its type
    (``types`` replaces the annotation of some fields: the ``model`` of a :class:`PretrainedCfg` is its family's)."""
    if not isinstance(value, Mapping):
        raise _fail(field, "an object", value)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ValueError(f"config field {field!r}: unknown field(s) {unknown}")
    hints = {**typing.get_type_hints(cls), **(types or {})}
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in value:
            if required:
                raise ValueError(f"config field '{field}.{name}': missing")
            continue
        _check(f"{field}.{name}", value[name], hints[name])


# --- what types cannot say -----------------------------------------------------------------------------------------
def _num_classes(d: Mapping[str, Any]) -> int:
    """The classifier size a ``pretrained_cfg`` object says (its family config's default when it says none)."""
    if "num_classes" in d["model"]:
        return d["model"]["num_classes"]
    cls = get_family(d.get("family", DEFAULT_FAMILY)).config_cls
    default = next(f.default for f in dataclasses.fields(cls) if f.name == "num_classes")
    assert isinstance(default, int)  # a required num_classes missing from the object was refused by _check_record
    return default


def _check_names_and_files(d: Mapping[str, Any], label_names: Any, p: str = "pretrained_cfg.") -> None:
    if not _NAME.fullmatch(d["arch"]):
        raise _fail(p + "arch", "an architecture name", d["arch"])
    num_classes = _num_classes(d)
    labels = d.get("labels")
    if isinstance(labels, str):
        if not _NAME.fullmatch(labels) or ".." in labels:
            raise _fail(p + "labels", "the name of a label set shipped with slowfast_zoo, or a list of names", labels)
        if labels not in label_set_names() and label_names is None:
            raise _fail(p + "labels", f"one of {sorted(label_set_names())} (or label_names listing the names)", labels)
    elif labels is not None and len(labels) != num_classes:
        raise _fail(p + "labels", f"a list of {num_classes} names (num_classes)", labels)
    for i, index in enumerate(d.get("evaluated_classes") or ()):
        if not 0 <= index < num_classes:
            raise _fail(f"{p}evaluated_classes[{i}]", f"a class index in [0, {num_classes - 1}]", index)
    origin, hub = d.get("origin"), d.get("hub")
    if origin is not None and not origin["url"].startswith(("https://", "http://")):
        raise _fail(p + "origin.url", "an http(s) URL", origin["url"])
    if hub is not None:
        if hub["repo_id"] != "" and not REPO_ID.fullmatch(hub["repo_id"]):
            raise _fail(p + "hub.repo_id", "an 'org/name' repo id", hub["repo_id"])
        filename = hub.get("filename", "model.safetensors")
        if not _NAME.fullmatch(filename) or ".." in filename:
            raise _fail(p + "hub.filename", "a plain file name (no folders, no '..')", filename)
    records = [("origin", origin), ("hub", hub), ("weights", d.get("weights")), ("parent", d.get("parent"))]
    records += [(f"origin.mirrors[{i}]", m) for i, m in enumerate((origin or {}).get("mirrors") or ())]
    for section, record in records:
        for name in ("sha256", "tensors_sha256"):
            sha = (record or {}).get(name)
            if sha is not None and not HEX64.fullmatch(sha):
                raise _fail(f"{p}{section}.{name}", "64 lowercase hex digits or null", sha)


def validate_pretrained_cfg(d: Mapping[str, Any], label_names: Any = None) -> None:
    """Check the ``pretrained_cfg`` object of a config.json; raises ValueError naming the first bad field."""
    if not isinstance(d, Mapping):
        raise _fail("pretrained_cfg", "an object", d)
    # the family (default: the zoo's own ResNet3d) says which dataclass the architecture object must hold
    _check("pretrained_cfg.family", d.get("family", DEFAULT_FAMILY), Literal[tuple(list_families())])
    family = get_family(d.get("family", DEFAULT_FAMILY))
    fields = {k: v for k, v in d.items() if k != "family"}
    _check_record("pretrained_cfg", fields, PretrainedCfg, {"model": family.config_cls})
    if family.check is not None:
        family.check(d["model"])
    _check_names_and_files(d, label_names)


def _plain_json(field: str, value: Any, depth: int = 0) -> None:
    """The config.json's own fields beside ``pretrained_cfg`` (library, version, ...): small JSON values only."""
    if isinstance(value, list) and depth < 4 and len(value) <= _MAX_ITEMS:
        for i, v in enumerate(value):
            _plain_json(f"{field}[{i}]", v, depth + 1)
    elif isinstance(value, (float, str)):
        _check(field, value, type(value))
    elif value is not None and not isinstance(value, (bool, int)):
        raise _fail(field, "a number, string, or a short list of them", value)


def validate_config(config: Any) -> dict[str, Any]:
    """A validated copy of a parsed ``config.json``; raises ValueError naming the first field that is not as expected.

    Checks types and ranges (e.g. ``num_classes`` an integer, widths and depths bounded, mean/std finite with
    std > 0), that a label list has ``num_classes`` names, and that a label-set name is one shipped with the package.
    """
    if not isinstance(config, Mapping) or not isinstance(config.get("pretrained_cfg"), Mapping):
        raise _fail("pretrained_cfg", "an object (config.json of a slowfast_zoo model)", config)
    d = config["pretrained_cfg"]
    names = config.get("label_names")
    validate_pretrained_cfg(d, names)
    num_classes = _num_classes(d)
    if config.get("num_classes") is not None and config["num_classes"] != num_classes:
        raise _fail("num_classes", f"{num_classes} (pretrained_cfg.model.num_classes)", config["num_classes"])
    if names is not None:
        if not isinstance(names, list) or len(names) != num_classes:
            raise _fail("label_names", f"a list of {num_classes} names (num_classes)", names)
        for i, name in enumerate(names):
            _check(f"label_names[{i}]", name, str)
    for name in set(config) - {"pretrained_cfg", "label_names", "num_classes"}:
        _plain_json(name, config[name])
    return json.loads(json.dumps(config))


def check_param_count(model: Any, max_params: int | None = MAX_PARAMS, *, field: str = "model") -> int:
    """Count a (``meta``-device) module's parameters; above ``max_params`` a ValueError names ``field``."""
    n = sum(p.numel() for p in model.parameters())
    if max_params is not None and n > max_params:
        raise ValueError(
            f"config field {field!r}: the network would have {n:,} parameters, above the limit of {max_params:,}; "
            f"pass max_params= to build it anyway"
        )
    return n

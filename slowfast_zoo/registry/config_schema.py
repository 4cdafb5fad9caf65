"""Schema of a ``config.json`` (``hf-hub:`` repos, ``local-dir:`` folders): every field checked before building.

A config from outside is hostile until checked: :func:`validate_config` is a pure function of the parsed JSON that
returns a validated copy or raises a :class:`ValueError` naming the field. Types and ranges are bounded so that
building the network cannot allocate without limit; :func:`check_param_count` then counts the parameters of a
``meta``-device build against :data:`MAX_PARAMS`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ..models.resnet3d import ResNet3dConfig
from ..weights.manifest import LoadedWeights, Mirror, Parent
from .pretrained import HubFile, Origin, PretrainedCfg, label_set_names

__all__ = ["MAX_PARAMS", "check_param_count", "validate_config", "validate_pretrained_cfg"]

#: networks above this many parameters are refused unless the caller raises the limit (the largest zoo model has 60M)
MAX_PARAMS = 2_000_000_000

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}")
_CROPS = ("left", "top", "center", "centre", "right", "bottom", "full")


def _fail(field: str, expected: str, value: Any) -> ValueError:
    shown = repr(value)
    return ValueError(
        f"config field {field!r}: expected {expected}, got {shown[:80]}{'...' if len(shown) > 80 else ''}"
    )


def _int(field: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(field, f"an integer in [{lo}, {hi}]", value)
    return value


def _float(field: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > hi or value < lo or (lo_open and value == lo):
        raise _fail(field, f"a finite number in {'(' if lo_open else '['}{lo}, {hi}]", value)
    return float(value)


def _choice(field: str, value: Any, choices: tuple[Any, ...]) -> Any:
    if value not in choices or isinstance(value, (list, dict)):
        raise _fail(field, f"one of {list(choices)}", value)
    return value


def _str(field: str, value: Any, max_len: int = 10_000, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise _fail(field, f"a string of at most {max_len} characters", value)
    return value


def _list(field: str, value: Any, length: int | tuple[int, int]) -> list[Any]:
    lo, hi = (length, length) if isinstance(length, int) else length
    if not isinstance(value, list) or not lo <= len(value) <= hi:
        raise _fail(field, f"a list of {lo if lo == hi else f'{lo} to {hi}'} items", value)
    return value


def _ints(field: str, value: Any, length: int | tuple[int, int], lo: int, hi: int) -> list[int]:
    return [_int(f"{field}[{i}]", v, lo, hi) for i, v in enumerate(_list(field, value, length))]


def _plain_json(field: str, value: Any, depth: int = 0) -> None:
    """Fields without a rule of their own (added by later versions): small JSON scalars and lists only."""
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        _float(field, value, -1e12, 1e12)
    elif isinstance(value, str):
        _str(field, value)
    elif isinstance(value, list) and depth < 4 and len(value) <= 1000:
        for i, v in enumerate(value):
            _plain_json(f"{field}[{i}]", v, depth + 1)
    else:
        raise _fail(field, "a number, string, or a short list of them", value)


def _known_fields(cls: type, d: Mapping[str, Any], prefix: str) -> None:
    if not isinstance(d, Mapping):
        raise _fail(prefix.rstrip("."), "an object", d)
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"config field {prefix.rstrip('.')!r}: unknown field(s) {unknown}")


def _validate_model(m: Mapping[str, Any], p: str = "pretrained_cfg.model.") -> None:
    _known_fields(ResNet3dConfig, m, p)
    layers = _ints(p + "layers", m.get("layers", [3, 4, 6, 3]), 4, 1, 64)
    alpha = m.get("alpha")
    pathways = 1 if alpha is None else 2
    if alpha is not None:
        _int(p + "alpha", alpha, 1, 32)
    if "stem_kernel_t" in m:
        _ints(p + "stem_kernel_t", m["stem_kernel_t"], pathways, 1, 15)
    if "block_kernel_t" in m:
        for i, stages in enumerate(_list(p + "block_kernel_t", m["block_kernel_t"], pathways)):
            for s, blocks in enumerate(_list(f"{p}block_kernel_t[{i}]", stages, 4)):
                _ints(f"{p}block_kernel_t[{i}][{s}]", blocks, layers[s], 1, 15)
    if "nonlocal_blocks" in m:
        for s, blocks in enumerate(_list(p + "nonlocal_blocks", m["nonlocal_blocks"], 4)):
            _ints(f"{p}nonlocal_blocks[{s}]", blocks, (0, layers[s]), 0, layers[s] - 1)
    if "nonlocal_pool" in m:
        for s, pool in enumerate(_list(p + "nonlocal_pool", m["nonlocal_pool"], 4)):
            _ints(f"{p}nonlocal_pool[{s}]", pool, 3, 1, 8)
    ranges = dict(width=(1, 1024), beta_inv=(1, 64), fusion_kernel_t=(1, 15), fusion_channel_ratio=(1, 16))
    ranges.update(temporal_pool=(1, 8), num_classes=(0, 1_000_000), num_frames=(1, 1024), crop_size=(1, 4096))
    ranges.update(in_chans=(1, 16))
    for name, (lo, hi) in ranges.items():
        if name in m:
            _int(p + name, m[name], lo, hi)
    for name, lo, hi in (("spatial_strides", 1, 2), ("spatial_dilations", 1, 8)):
        if name in m:
            _ints(p + name, m[name], 4, lo, hi)
    for name, choices in (("nonlocal_mode", ("softmax", "dot_product")), ("head_pool", ("adaptive", "fixed"))):
        if name in m:
            _choice(p + name, m[name], choices)
    for name in ("roi_head", "roi_aligned"):
        if name in m:
            _choice(p + name, m[name], (True, False))
    if "dropout" in m:
        _float(p + "dropout", m["dropout"], 0.0, 0.99)
    if "bn_eps" in m:
        _float(p + "bn_eps", m["bn_eps"], 0.0, 1.0, lo_open=True)
    if "bn_momentum" in m:
        _float(p + "bn_momentum", m["bn_momentum"], 0.0, 1.0)
    ruled = set(ranges) | {"layers", "alpha", "stem_kernel_t", "block_kernel_t", "nonlocal_blocks", "nonlocal_pool"}
    ruled |= {"spatial_strides", "spatial_dilations", "nonlocal_mode", "head_pool", "roi_head", "roi_aligned"}
    for name in set(m) - ruled - {"dropout", "bn_eps", "bn_momentum"}:
        _plain_json(p + name, m[name])


def _validate_labels(labels: Any, num_classes: int, names: Any, p: str) -> None:
    if isinstance(labels, str):
        if not _NAME.fullmatch(labels) or ".." in labels:
            raise _fail(p + "labels", "the name of a label set shipped with slowfast_zoo, or a list of names", labels)
        if labels not in label_set_names() and names is None:
            raise _fail(p + "labels", f"one of {sorted(label_set_names())} (or label_names listing the names)", labels)
    elif labels is not None:
        for i, name in enumerate(_list(p + "labels", labels, num_classes)):
            _str(f"{p}labels[{i}]", name, 256)


def _validate_files(d: Mapping[str, Any], p: str) -> None:
    origin, hub = d.get("origin"), d.get("hub")
    if origin is not None:
        _known_fields(Origin, origin, p + "origin.")
        url = _str(p + "origin.url", origin.get("url"), 2048)
        if not str(url).startswith(("https://", "http://")):
            raise _fail(p + "origin.url", "an http(s) URL", url)
        for name in ("format", "key_scheme"):
            _str(f"{p}origin.{name}", origin.get(name), 64)
        for i, mirror in enumerate(_list(p + "origin.mirrors", origin.get("mirrors") or [], (0, 16))):
            _record(f"{p}origin.mirrors[{i}].", Mirror, mirror)
    if hub is not None:
        _known_fields(HubFile, hub, p + "hub.")
        if hub.get("repo_id") != "" and not _REPO.fullmatch(str(hub.get("repo_id"))):
            raise _fail(p + "hub.repo_id", "an 'org/name' repo id", hub.get("repo_id"))
        filename = hub.get("filename", "model.safetensors")
        if not isinstance(filename, str) or not _NAME.fullmatch(filename) or ".." in filename:
            raise _fail(p + "hub.filename", "a plain file name (no folders, no '..')", filename)
        _str(p + "hub.revision", hub.get("revision"), 255, optional=True)
    for section, record in (("origin", origin), ("hub", hub)):
        if record is not None:
            sha = record.get("sha256")
            if sha is not None and (not isinstance(sha, str) or not _HEX64.fullmatch(sha)):
                raise _fail(f"{p}{section}.sha256", "64 lowercase hex digits or null", sha)
            if record.get("size") is not None:
                _int(f"{p}{section}.size", record["size"], 0, 1 << 40)


def _record(p: str, cls: type, d: Any) -> None:
    """A nested record (mirror, loaded weights, parent): its own fields only, each bounded plain JSON."""
    _known_fields(cls, d, p)
    for name, value in d.items():
        _plain_json(p + name, value)
    for name in ("sha256", "tensors_sha256"):
        sha = d.get(name)
        if sha is not None and (not isinstance(sha, str) or not _HEX64.fullmatch(sha)):
            raise _fail(p + name, "64 lowercase hex digits or null", sha)


def validate_pretrained_cfg(d: Mapping[str, Any], label_names: Any = None) -> None:
    """Check the ``pretrained_cfg`` object of a config.json; raises ValueError naming the first bad field."""
    p = "pretrained_cfg."
    _known_fields(PretrainedCfg, d, p)
    if "model" not in d:
        raise ValueError("config field 'pretrained_cfg.model': missing")
    _validate_model(d["model"])
    num_classes = d["model"].get("num_classes", 400)
    _str(p + "arch", d.get("arch"), 128)
    if not _NAME.fullmatch(str(d.get("arch"))):
        raise _fail(p + "arch", "an architecture name", d.get("arch"))
    for name in ("tag", "license", "citation"):
        _str(p + name, d.get(name), 10_000, optional=True)
    _str(p + "dataset", d.get("dataset", ""), 128)
    _str(p + "notes", d.get("notes", ""))
    _validate_labels(d.get("labels"), num_classes, label_names, p)
    if d.get("evaluated_classes") is not None:
        _ints(p + "evaluated_classes", d["evaluated_classes"], (0, num_classes), 0, max(num_classes - 1, 0))
    _validate_protocol(d, p)
    metrics = d.get("metrics") or {}
    if not isinstance(metrics, Mapping) or len(metrics) > 100:
        raise _fail(p + "metrics", "an object of at most 100 numbers", metrics)
    for k, v in metrics.items():
        _float(f"{p}metrics.{_str(p + 'metrics', k, 64)}", v, -1e6, 1e6)
    if d.get("params") is not None:
        _int(p + "params", d["params"], 0, 10**13)
    if d.get("gflops") is not None:
        _float(p + "gflops", d["gflops"], 0.0, 1e9)
    _validate_files(d, p)
    for name, cls in (("weights", LoadedWeights), ("parent", Parent)):
        if d.get(name) is not None:
            _record(f"{p}{name}.", cls, d[name])


def _validate_protocol(d: Mapping[str, Any], p: str) -> None:
    for name, (lo, hi) in dict(sampling_rate=(1, 64), test_clips=(1, 1000), train_crop_size=(1, 4096)).items():
        if name in d:
            _int(p + name, d[name], lo, hi)
    for name in ("test_short_side", "test_crop_size"):
        if name in d:
            _int(p + name, d[name], 1, 4096)
    if "train_short_side" in d:
        _ints(p + "train_short_side", d["train_short_side"], 2, 1, 4096)
    if "target_fps" in d:
        _float(p + "target_fps", d["target_fps"], 0.0, 1000.0, lo_open=True)
    for name in ("mean", "std"):
        if name in d:
            for i, v in enumerate(_list(p + name, d[name], 3)):
                _float(f"{p}{name}[{i}]", v, 0.0 if name == "std" else -1e3, 1e3, lo_open=name == "std")
    if "test_crops" in d:
        for i, c in enumerate(_list(p + "test_crops", d["test_crops"], (1, 10))):
            _choice(f"{p}test_crops[{i}]", c, _CROPS)
    choices = dict(
        frame_sampling=("uniform", "segment"),
        interpolation=("bilinear", "bicubic", "nearest"),
        channel_order=("RGB",),  # every authors' checkpoint sees RGB: see PretrainedCfg.channel_order
        activation=("softmax", "sigmoid"),
        ensemble=("mean", "max"),
        test_head_pool=("fixed", "adaptive"),
    )
    for name, options in choices.items():
        if name in d:
            _choice(p + name, d[name], options)
    ruled = set(choices) | {"mean", "std", "test_crops", "target_fps", "train_short_side", "test_short_side"}
    ruled |= {"test_crop_size", "sampling_rate", "test_clips", "train_crop_size", "arch", "tag", "license"}
    ruled |= {"citation", "dataset", "notes", "labels", "evaluated_classes", "metrics", "params", "gflops"}
    for name in (
        set(d) - ruled - {"model", "origin", "hub", "weights", "parent"}
    ):  # fields added later: bounded plain JSON
        _plain_json(p + name, d[name])


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
    num_classes = d["model"].get("num_classes", 400)
    if config.get("num_classes") is not None and config["num_classes"] != num_classes:
        raise _fail("num_classes", f"{num_classes} (pretrained_cfg.model.num_classes)", config["num_classes"])
    if names is not None:
        for i, name in enumerate(_list("label_names", names, num_classes)):
            _str(f"label_names[{i}]", name, 256)
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

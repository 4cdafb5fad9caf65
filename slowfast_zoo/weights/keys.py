"""Key schemes of the authors' checkpoints and their mapping onto the zoo's canonical state-dict keys.

Schemes (detected from the keys themselves):
- ``caffe2``: blob names of PySlowFast's Caffe2 ``.pkl`` files (``res2_0_branch2a_w``, ``t_pool1_subsample_w``, ...)
- ``pysf``: PySlowFast module names (``s1.pathway0_stem.conv.weight``, ``s2.pathway1_res0.branch2.a_bn.bias``, ...)
- ``ptv``: PyTorchVideo hub modules (``blocks.0.multipathway_blocks.0.conv.weight``, ``blocks.6.proj.weight``, ...);
  ``ptv_wrapper`` is the same behind PySlowFast's ``model.`` prefix (the ``pysf_model_zoo`` mirror)
- ``zoo``: this package (``stem.0.conv.weight``, ``res2.1.0.a.bn.bias``, ``fuse.0.conv.weight``, ``head.proj.weight``)

Each pair of neighbouring schemes has one table of rename rules (``PYSF_ZOO``, ``CAFFE2_PYSF``, ``PTV_PYSF``), read
left to right to convert to the zoo and right to left to write the authors' layouts, so a rule and its inverse cannot
drift apart. Every mapping is a bijection on names; tensors are never touched. Converting to ``zoo`` goes through
``pysf``. Names a scheme does not know raise :class:`KeyMappingError` listing them, and so do two names that map
onto one: nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import SlowFastZooError

__all__ = [
    "SCHEMES",
    "KeyMappingError",
    "detect_scheme",
    "from_zoo",
    "is_solver_blob",
    "to_zoo",
]

V = TypeVar("V")
SCHEMES = ("zoo", "pysf", "caffe2", "ptv", "ptv_wrapper")


class KeyMappingError(SlowFastZooError, KeyError):
    """A state dict holds names that its key scheme cannot map."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def _map_keys(sd: Mapping[str, V], fn: Callable[[str], str | None], scheme: str) -> dict[str, V]:
    out: dict[str, V] = {}
    source: dict[str, str] = {}
    unknown, clashes = [], []
    for key, value in sd.items():
        new = fn(key)
        if new is None:
            unknown.append(key)
        elif new in source:  # two tensors for one name: keeping either would be a silent guess
            clashes.append(f"{source[new]!r} and {key!r} both map to {new!r}")
        else:
            out[new], source[new] = value, key
    if unknown:
        shown = ", ".join(sorted(unknown)[:20]) + (" ..." if len(unknown) > 20 else "")
        raise KeyMappingError(f"{len(unknown)} key(s) are not part of the {scheme!r} key scheme: {shown}")
    if clashes:
        shown = "; ".join(clashes[:10]) + (" ..." if len(clashes) > 10 else "")
        raise KeyMappingError(f"{len(clashes)} name clash(es) in the {scheme!r} key scheme: {shown}")
    return out


# --- one table of rules per pair of schemes, applied in either direction -------------------------------------------
#: what each named field matches, in the scheme nearer the zoo (the "canonical" value of the field)
_FIELDS = {
    "p": r"[01]",
    "stage": r"[2-5]",  # res2..res5
    "f": r"[0-3]",  # the zoo's fusion index
    "fs": r"[1-4]",  # PySlowFast's fusion index (s1_fuse after the stem .. s4_fuse after res4)
    "block": r"\d+",
    "abc": r"[abc]",
    "stat": r"weight|bias|running_mean|running_var|num_batches_tracked",
    "wb": r"weight|bias",
    "nl": r"theta|phi|g|out",
    "cb": r"conv|bn",
    "rest": r".+",
}
_BN = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
Ctx = Mapping[str, Any]


@dataclass(frozen=True)
class _Codec:
    """How one side spells a field: its regex, text -> canonical value, and canonical value -> text.

    ``render`` gets ``None`` when the other side has no such field (a value derived from the state dict, or a
    spelling of the name itself); either function returns ``None`` when it cannot map the value.
    """

    regex: str
    parse: Callable[[str, Ctx, dict[str, str]], str | None]
    render: Callable[[str | None, Ctx, dict[str, str]], str | None]


def _lookup(table: Mapping[str, str]) -> _Codec:
    inverse = {v: k for k, v in table.items()}
    return _Codec(
        "|".join(map(re.escape, sorted(table, key=len, reverse=True))),
        lambda t, ctx, v: table.get(t),
        lambda c, ctx, v: inverse.get(c) if c is not None else None,
    )


def _offset(delta: int) -> _Codec:
    """This side's index is the canonical one plus ``delta``."""
    return _Codec(
        r"\d", lambda t, ctx, v: str(int(t) - delta), lambda c, ctx, v: None if c is None else str(int(c) + delta)
    )


def _from_ctx(key: str) -> _Codec:
    """A number only this side spells, derived from the state dict on the way out and ignored on the way in."""

    def render(c: str | None, ctx: Ctx, values: dict[str, str]) -> str | None:
        value = ctx.get(key)
        value = value(values) if callable(value) else value
        return None if value is None else str(value)

    return _Codec(r"\d+", lambda t, ctx, v: t, render)


def _ptv_stage(ctx: Ctx, values: dict[str, str]) -> str | None:
    return None if ctx.get("ptv_block") is None else str(ctx["ptv_block"](int(values["stage"])))


_CODECS: dict[str, _Codec] = {
    "plus1": _offset(1),
    "minus1": _offset(-1),
    "t": _lookup({"": "0", "t_": "1"}),  # Caffe2 prefixes fast-pathway blobs with t_
    "c2bn": _lookup(_BN),  # Caffe2 BatchNorm blobs: _s, _b, _rm, _riv
    "c2wb": _lookup({"w": "weight", "b": "bias"}),
    "nlnorm": _Codec(r"bn|norm", lambda t, ctx, v: t, lambda c, ctx, v: "bn"),  # PySlowFast renamed bn to norm
    "last": _from_ctx("last"),  # Caffe2 names a fusion after the last fast block of its stage
    "head": _from_ctx("head_block"),  # PyTorchVideo's head block index
    "ptvstage": _Codec(
        r"\d",
        lambda t, ctx, v: None if int(t) not in ctx.get("stage_of", {}) else str(ctx["stage_of"][int(t)]),
        lambda c, ctx, v: _ptv_stage(ctx, v),
    ),
}


class _Template:
    """A key pattern with ``{field}`` or ``{field|codec}`` placeholders."""

    def __init__(self, text: str) -> None:
        self.parts: list[tuple[str, str | None] | str] = []
        regex = ""
        for literal, name, codec in re.findall(r"([^{]*)(?:\{(\w+)(?:\|(\w+))?\})?", text):
            regex += re.escape(literal)
            if literal:
                self.parts.append(literal)
            if name:
                pattern = _CODECS[codec].regex if codec else _FIELDS[name]
                regex += f"(?P<{name}>{pattern})"
                self.parts.append((name, codec or None))
        self.regex = re.compile(regex)

    def parse(self, key: str, ctx: Ctx) -> dict[str, str] | None:
        m = self.regex.fullmatch(key)
        if m is None:
            return None
        values: dict[str, str] = {}
        for part in self.parts:
            if isinstance(part, tuple):
                name, codec = part
                value = _CODECS[codec].parse(m[name], ctx, values) if codec else m[name]
                if value is None or (name in _FIELDS and not re.fullmatch(_FIELDS[name], value)):
                    return None
                values[name] = value
        return values

    def render(self, values: dict[str, str], ctx: Ctx, fixed: Mapping[str, str]) -> str | None:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            name, codec = part
            value = values.get(name, fixed.get(name))
            text = _CODECS[codec].render(value, ctx, values) if codec else value
            if text is None:
                return None
            out.append(text)
        return "".join(out)


class _Table:
    """Rename rules between two schemes: ``(left, right)`` templates, first match wins in either direction.

    ``fixed`` gives fields the other side does not spell (a single pathway's index); ``when`` limits a rule to
    state dicts of one kind when writing the left scheme (e.g. two pathways, a detection head).
    """

    def __init__(self, rules: list[tuple[str, str] | tuple[str, str, dict[str, Any]]]) -> None:
        self.rules = []
        for left, right, *options in rules:
            opts = options[0] if options else {}
            self.rules.append((_Template(left), _Template(right), opts.get("fixed", {}), opts.get("when")))

    def forward(self, key: str, ctx: Ctx | None = None) -> str | None:
        """Left scheme -> right scheme."""
        return self._apply(key, ctx or {}, reverse=False)

    def backward(self, key: str, ctx: Ctx | None = None) -> str | None:
        """Right scheme -> left scheme."""
        return self._apply(key, ctx or {}, reverse=True)

    def _apply(self, key: str, ctx: Ctx, *, reverse: bool) -> str | None:
        for left, right, fixed, when in self.rules:
            source, target = (right, left) if reverse else (left, right)
            if reverse and when is not None and not when(ctx):
                continue
            values = source.parse(key, ctx)
            if values is not None:
                return target.render(values, ctx, fixed)
        return None


# --- pysf <-> zoo ---------------------------------------------------------------------------------------------------
PYSF_ZOO = _Table(
    [
        ("s1.pathway{p}_stem.{cb}.{rest}", "stem.{p}.{cb}.{rest}"),
        ("s{f|plus1}_fuse.conv_f2s.weight", "fuse.{f}.conv.weight"),
        ("s{f|plus1}_fuse.bn.{stat}", "fuse.{f}.bn.{stat}"),
        ("s{stage}.pathway{p}_res{block}.branch2.{abc}.weight", "res{stage}.{p}.{block}.{abc}.conv.weight"),
        ("s{stage}.pathway{p}_res{block}.branch2.{abc}_bn.{stat}", "res{stage}.{p}.{block}.{abc}.bn.{stat}"),
        ("s{stage}.pathway{p}_res{block}.branch1.weight", "res{stage}.{p}.{block}.shortcut.conv.weight"),
        ("s{stage}.pathway{p}_res{block}.branch1_bn.{stat}", "res{stage}.{p}.{block}.shortcut.bn.{stat}"),
        ("s{stage}.pathway0_nonlocal{block}.conv_{nl}.{wb}", "res{stage}.0.{block}.nl.{nl}.{wb}"),
        ("s{stage}.pathway0_nonlocal{block}.{n|nlnorm}.{stat}", "res{stage}.0.{block}.nl.bn.{stat}"),
        ("head.projection.{wb}", "head.proj.{wb}"),
    ]
)

# --- caffe2 <-> pysf ------------------------------------------------------------------------------------------------
CAFFE2_PYSF = _Table(
    [
        ("{p|t}conv1_w", "s1.pathway{p}_stem.conv.weight"),
        ("{p|t}res_conv1_bn_{stat|c2bn}", "s1.pathway{p}_stem.bn.{stat}"),
        ("t_pool1_subsample_w", "s1_fuse.conv_f2s.weight"),
        ("t_pool1_subsample_bn_{stat|c2bn}", "s1_fuse.bn.{stat}"),
        ("t_res{stage}_{n|last}_branch2c_bn_subsample_w", "s{stage}_fuse.conv_f2s.weight"),
        ("t_res{stage}_{n|last}_branch2c_bn_subsample_bn_{stat|c2bn}", "s{stage}_fuse.bn.{stat}"),
        ("{p|t}res{stage}_{block}_branch2{abc}_w", "s{stage}.pathway{p}_res{block}.branch2.{abc}.weight"),
        (
            "{p|t}res{stage}_{block}_branch2{abc}_bn_{stat|c2bn}",
            "s{stage}.pathway{p}_res{block}.branch2.{abc}_bn.{stat}",
        ),
        ("{p|t}res{stage}_{block}_branch1_w", "s{stage}.pathway{p}_res{block}.branch1.weight"),
        ("{p|t}res{stage}_{block}_branch1_bn_{stat|c2bn}", "s{stage}.pathway{p}_res{block}.branch1_bn.{stat}"),
        ("nonlocal_conv{stage}_{block}_{nl}_{wb|c2wb}", "s{stage}.pathway0_nonlocal{block}.conv_{nl}.{wb}"),
        ("nonlocal_conv{stage}_{block}_bn_{stat|c2bn}", "s{stage}.pathway0_nonlocal{block}.{n|nlnorm}.{stat}"),
        ("pred_{wb|c2wb}", "head.projection.{wb}"),
    ]
)

# --- ptv <-> pysf ---------------------------------------------------------------------------------------------------
PTV_RES_PYSF = _Table(
    [
        ("branch1_conv.weight", "branch1.weight"),
        ("branch1_norm.{stat}", "branch1_bn.{stat}"),
        ("branch2.conv_{abc}.weight", "branch2.{abc}.weight"),
        ("branch2.norm_{abc}.{stat}", "branch2.{abc}_bn.{stat}"),
    ]
)
_CODECS["ptvres"] = _Codec(
    r".+", lambda t, ctx, v: PTV_RES_PYSF.forward(t, ctx), lambda c, ctx, v: PTV_RES_PYSF.backward(str(c), ctx)
)
_TWO = {"when": lambda ctx: ctx.get("two", True)}
_ONE = {"when": lambda ctx: not ctx.get("two", True), "fixed": {"p": "0"}}
PTV_PYSF = _Table(
    [
        ("blocks.0.multipathway_blocks.{p}.conv.weight", "s1.pathway{p}_stem.conv.weight", _TWO),
        ("blocks.0.multipathway_blocks.{p}.norm.{stat}", "s1.pathway{p}_stem.bn.{stat}", _TWO),
        ("blocks.0.conv.weight", "s1.pathway{p}_stem.conv.weight", _ONE),
        ("blocks.0.norm.{stat}", "s1.pathway{p}_stem.bn.{stat}", _ONE),
        ("blocks.{fs|minus1}.multipathway_fusion.conv_fast_to_slow.weight", "s{fs}_fuse.conv_f2s.weight"),
        ("blocks.{fs|minus1}.multipathway_fusion.norm.{stat}", "s{fs}_fuse.bn.{stat}"),
        (
            "blocks.{stage|minus1}.multipathway_blocks.{p}.res_blocks.{block}.{rest|ptvres}",
            "s{stage}.pathway{p}_res{block}.{rest}",
            _TWO,
        ),
        ("blocks.{stage|ptvstage}.res_blocks.{block}.{rest|ptvres}", "s{stage}.pathway{p}_res{block}.{rest}", _ONE),
        ("blocks.{n|head}.proj.{wb}", "head.projection.{wb}", {"when": lambda ctx: not ctx.get("detection")}),
        ("detection_head.proj.{wb}", "head.projection.{wb}", {"when": lambda ctx: ctx.get("detection")}),
    ]
)


def _caffe2_ctx(pysf: Mapping[str, object]) -> dict[str, Any]:
    """The fuse blobs after res2..res4 are named after the last fast block of that stage."""
    last: dict[str, int] = {}
    for key in pysf:
        m = re.fullmatch(r"s(\d)\.pathway1_res(\d+)\..*", key)
        if m:
            last[m[1]] = max(last.get(m[1], 0), int(m[2]))
    return {"last": lambda values: last.get(values["stage"])}


def _ptv_read_ctx(sd: Mapping[str, object]) -> dict[str, Any]:
    """Single-pathway nets number their stages by position in ``blocks`` (I3D/C2D have a pool block at 2)."""
    stage_blocks = sorted({int(m[1]) for k in sd if (m := re.fullmatch(r"blocks\.(\d)\.res_blocks\..*", k))})
    return {"stage_of": {b: s + 2 for s, b in enumerate(stage_blocks)}}


def _ptv_write_ctx(pysf: Mapping[str, object], temporal_pool: bool, detection: bool) -> dict[str, Any]:
    two = any(k.startswith("s1.pathway1_") for k in pysf)

    def block(stage: int) -> int:
        return stage - 1 if not temporal_pool or stage == 2 else stage

    return {"two": two, "detection": detection, "head_block": 6 if two or temporal_pool else 5, "ptv_block": block}


def is_solver_blob(name: str) -> bool:
    """Optimizer state a Caffe2 checkpoint carries beside the weights (momentum buffers, lr, iteration)."""
    return name.endswith("_momentum") or name in ("lr", "model_iter")


def _strip_wrapper(key: str) -> str | None:
    if key.startswith("model."):
        return key[len("model.") :]
    return key if key.startswith("detection_head.") else None


# --- public entry points -------------------------------------------------------------------------------------
def detect_scheme(keys: object) -> str:
    """Name the key scheme of a state dict (or its keys); raises if it is none of :data:`SCHEMES`."""
    keys = set(keys)  # type: ignore[call-overload]
    probes = [
        ("zoo", "stem.0.conv.weight"),
        ("pysf", "s1.pathway0_stem.conv.weight"),
        ("caffe2", "conv1_w"),
        ("ptv_wrapper", "model.blocks.0.conv.weight"),
        ("ptv_wrapper", "model.blocks.0.multipathway_blocks.0.conv.weight"),
        ("ptv", "blocks.0.conv.weight"),
        ("ptv", "blocks.0.multipathway_blocks.0.conv.weight"),
    ]
    for scheme, probe in probes:
        if probe in keys:
            return scheme
    shown = ", ".join(sorted(keys)[:5]) or "(no keys)"
    raise KeyMappingError(
        f"unrecognised checkpoint layout: expected the stem weight of one of {SCHEMES} "
        f"(e.g. 'stem.0.conv.weight', 's1.pathway0_stem.conv.weight', 'conv1_w', 'blocks.0.conv.weight'); "
        f"found keys like {shown}"
    )


def to_zoo(sd: Mapping[str, V], scheme: str | None = None) -> dict[str, V]:
    """Rename a state dict of any known scheme to zoo keys (Caffe2 solver blobs must be removed beforehand)."""
    scheme = scheme or detect_scheme(sd)
    if scheme == "zoo":
        return _map_keys(sd, lambda k: k if PYSF_ZOO.backward(k) else None, scheme)
    if scheme == "ptv_wrapper":  # also PyTorchVideo's detectors: backbone under model., head under detection_head.
        sd = _map_keys(sd, _strip_wrapper, scheme)
        scheme = "ptv"
    if scheme == "ptv":
        ctx = _ptv_read_ctx(sd)
        sd = _map_keys(sd, lambda k: PTV_PYSF.forward(k, ctx), scheme)
    elif scheme == "caffe2":
        sd = _map_keys(sd, CAFFE2_PYSF.forward, scheme)
    elif scheme != "pysf":
        raise ValueError(f"unknown key scheme {scheme!r}; known: {SCHEMES}")
    return _map_keys(sd, PYSF_ZOO.forward, scheme)


def from_zoo(sd: Mapping[str, V], scheme: str, *, temporal_pool: bool = False, detection: bool = False) -> dict[str, V]:
    """Rename zoo keys to an upstream scheme (to write files in the authors' layouts).

    ``temporal_pool`` says whether the network pools in time after res2 (I3D, C2D), which shifts PyTorchVideo's
    block indices; ``detection`` names the head as PyTorchVideo's detectors do (``detection_head.proj``, with the
    backbone under ``model.``: use scheme ``ptv_wrapper``).
    """
    if scheme == "zoo":
        return dict(sd)
    pysf = _map_keys(sd, PYSF_ZOO.backward, "zoo")
    if scheme == "pysf":
        return pysf
    if scheme == "caffe2":  # Caffe2 files carry no batch counters
        pysf = {k: v for k, v in pysf.items() if not k.endswith("num_batches_tracked")}
        ctx = _caffe2_ctx(pysf)
        return _map_keys(pysf, lambda k: CAFFE2_PYSF.backward(k, ctx), "pysf")
    if scheme in ("ptv", "ptv_wrapper"):
        ctx = _ptv_write_ctx(pysf, temporal_pool, detection)
        ptv = _map_keys(pysf, lambda k: PTV_PYSF.backward(k, ctx), "pysf")
        wrap = scheme == "ptv_wrapper"
        return {("model." if wrap and not k.startswith("detection_head.") else "") + k: v for k, v in ptv.items()}
    raise ValueError(f"unknown key scheme {scheme!r}; known: {SCHEMES}")

"""State-dict key names of the authors' checkpoints and the zoo's, as ordered rename rules per direction.

Schemes (detected from the keys themselves):
- ``caffe2``: blob names of PySlowFast's Caffe2 ``.pkl`` files (``res2_0_branch2a_w``, ``t_pool1_subsample_w``, ...)
- ``pysf``: PySlowFast module names (``s1.pathway0_stem.conv.weight``, ``s2.pathway1_res0.branch2.a_bn.bias``, ...)
- ``ptv``: PyTorchVideo hub modules (``blocks.0.multipathway_blocks.0.conv.weight``, ``blocks.6.proj.weight``, ...);
  ``ptv_wrapper`` is the same behind PySlowFast's ``model.`` prefix (the ``pysf_model_zoo`` mirror)
- ``zoo``: this package (``stem.slow.conv.weight``, ``res2.fast.0.a.bn.bias``, ``lateral.res2.conv.weight``,
  ``head.proj.weight``): stage, pathway, block, layer, as PySlowFast orders them

Each direction has its own table of ``(regex, replacement)`` rules; the first rule whose regex matches the whole key
renames it (``re.Match.expand``). The tables are written out per direction, not derived from one another, so the
tests check each against names the authors' code wrote. Tensors are never touched. Names no rule matches raise
:class:`KeyMappingError` listing them, and so do two names that map onto one: nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from ..errors import SlowFastZooError

__all__ = ["SCHEMES", "KeyMappingError", "detect_scheme", "from_zoo", "is_solver_blob", "to_zoo"]

V = TypeVar("V")
SCHEMES = ("zoo", "pysf", "caffe2", "ptv", "ptv_wrapper")
Rule = tuple[str, str]  # (regex matching a whole key, replacement with \g<name> groups)


class KeyMappingError(SlowFastZooError, KeyError):
    """A state dict holds names that its key scheme cannot map."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


# groups shared by the rules: stage, block, bottleneck layer, parameter or buffer name
S, B, L = r"(?P<s>[2-5])", r"(?P<b>\d+)", r"(?P<l>[abc])"
X = r"(?P<x>weight|bias|running_mean|running_var|num_batches_tracked)"
WB = r"(?P<x>weight|bias)"
NL = r"(?P<n>theta|phi|g|out)"
#: each pathway's index in PySlowFast (``pathway0``) and PyTorchVideo, and its blob prefix in Caffe2
PYSF_PATHWAY = {"slow": "0", "fast": "1"}
CAFFE2_PREFIX = {"slow": "", "fast": "t_"}
#: Caffe2 BatchNorm blob suffixes (scale, bias, running mean, running inverse-variance: the running variance)
CAFFE2_BN = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}

# --- PySlowFast (slowfast/models/video_model_builder.py, resnet_helper.py, stem_helper.py) ----------------------------
PYSF_TO_ZOO: list[Rule] = [
    *[
        rule
        for pw, p in PYSF_PATHWAY.items()
        for rule in (
            (rf"s1\.pathway{p}_stem\.conv\.weight", f"stem.{pw}.conv.weight"),
            (rf"s1\.pathway{p}_stem\.bn\.{X}", rf"stem.{pw}.bn.\g<x>"),
            (rf"s{S}\.pathway{p}_res{B}\.branch2\.{L}\.weight", rf"res\g<s>.{pw}.\g<b>.\g<l>.conv.weight"),
            (rf"s{S}\.pathway{p}_res{B}\.branch2\.{L}_bn\.{X}", rf"res\g<s>.{pw}.\g<b>.\g<l>.bn.\g<x>"),
            (rf"s{S}\.pathway{p}_res{B}\.branch1\.weight", rf"res\g<s>.{pw}.\g<b>.shortcut.conv.weight"),
            (rf"s{S}\.pathway{p}_res{B}\.branch1_bn\.{X}", rf"res\g<s>.{pw}.\g<b>.shortcut.bn.\g<x>"),
        )
    ],
    (rf"s{S}\.pathway0_nonlocal{B}\.conv_{NL}\.{WB}", r"res\g<s>.slow.\g<b>.nl.\g<n>.\g<x>"),
    (rf"s{S}\.pathway0_nonlocal{B}\.(?:bn|norm)\.{X}", r"res\g<s>.slow.\g<b>.nl.bn.\g<x>"),  # later PySlowFast: norm
    (r"s1_fuse\.conv_f2s\.weight", "lateral.stem.conv.weight"),
    (rf"s1_fuse\.bn\.{X}", r"lateral.stem.bn.\g<x>"),
    (r"s(?P<s>[234])_fuse\.conv_f2s\.weight", r"lateral.res\g<s>.conv.weight"),
    (rf"s(?P<s>[234])_fuse\.bn\.{X}", r"lateral.res\g<s>.bn.\g<x>"),
    (rf"head\.projection\.{WB}", r"head.proj.\g<x>"),
]

ZOO_TO_PYSF: list[Rule] = [
    *[
        rule
        for pw, p in PYSF_PATHWAY.items()
        for rule in (
            (rf"stem\.{pw}\.conv\.weight", f"s1.pathway{p}_stem.conv.weight"),
            (rf"stem\.{pw}\.bn\.{X}", rf"s1.pathway{p}_stem.bn.\g<x>"),
            (rf"res{S}\.{pw}\.{B}\.{L}\.conv\.weight", rf"s\g<s>.pathway{p}_res\g<b>.branch2.\g<l>.weight"),
            (rf"res{S}\.{pw}\.{B}\.{L}\.bn\.{X}", rf"s\g<s>.pathway{p}_res\g<b>.branch2.\g<l>_bn.\g<x>"),
            (rf"res{S}\.{pw}\.{B}\.shortcut\.conv\.weight", rf"s\g<s>.pathway{p}_res\g<b>.branch1.weight"),
            (rf"res{S}\.{pw}\.{B}\.shortcut\.bn\.{X}", rf"s\g<s>.pathway{p}_res\g<b>.branch1_bn.\g<x>"),
        )
    ],
    (rf"res{S}\.slow\.{B}\.nl\.{NL}\.{WB}", r"s\g<s>.pathway0_nonlocal\g<b>.conv_\g<n>.\g<x>"),
    (rf"res{S}\.slow\.{B}\.nl\.bn\.{X}", r"s\g<s>.pathway0_nonlocal\g<b>.bn.\g<x>"),
    (r"lateral\.stem\.conv\.weight", "s1_fuse.conv_f2s.weight"),
    (rf"lateral\.stem\.bn\.{X}", r"s1_fuse.bn.\g<x>"),
    (r"lateral\.res(?P<s>[234])\.conv\.weight", r"s\g<s>_fuse.conv_f2s.weight"),
    (rf"lateral\.res(?P<s>[234])\.bn\.{X}", r"s\g<s>_fuse.bn.\g<x>"),
    (rf"head\.proj\.{WB}", r"head.projection.\g<x>"),
]


# --- Caffe2 blobs (the Detectron-style names of PySlowFast's Caffe2 model zoo files) ---------------------------------
def _caffe2_bn(blob: str, zoo: str) -> list[Rule]:
    """The four BatchNorm blobs ``<blob>_bn_{s,b,rm,riv}`` <-> ``<zoo>.bn.<name>``, as (caffe2 -> zoo) pairs."""
    return [(rf"{blob}_bn_{c2}", rf"{zoo}.bn.{name}") for c2, name in CAFFE2_BN.items()]


CAFFE2_TO_ZOO: list[Rule] = [
    *[
        rule
        for pw, t in CAFFE2_PREFIX.items()
        for rule in (
            (rf"{t}conv1_w", f"stem.{pw}.conv.weight"),
            *_caffe2_bn(rf"{t}res_conv1", f"stem.{pw}"),
            (rf"{t}res{S}_{B}_branch2{L}_w", rf"res\g<s>.{pw}.\g<b>.\g<l>.conv.weight"),
            *_caffe2_bn(rf"{t}res{S}_{B}_branch2{L}", rf"res\g<s>.{pw}.\g<b>.\g<l>"),
            (rf"{t}res{S}_{B}_branch1_w", rf"res\g<s>.{pw}.\g<b>.shortcut.conv.weight"),
            *_caffe2_bn(rf"{t}res{S}_{B}_branch1", rf"res\g<s>.{pw}.\g<b>.shortcut"),
        )
    ],
    (rf"nonlocal_conv{S}_{B}_{NL}_w", r"res\g<s>.slow.\g<b>.nl.\g<n>.weight"),
    (rf"nonlocal_conv{S}_{B}_{NL}_b", r"res\g<s>.slow.\g<b>.nl.\g<n>.bias"),
    *_caffe2_bn(rf"nonlocal_conv{S}_{B}", r"res\g<s>.slow.\g<b>.nl"),
    (r"t_pool1_subsample_w", "lateral.stem.conv.weight"),
    *_caffe2_bn("t_pool1_subsample", "lateral.stem"),
    # the laterals after res2..res4 are named after the last Fast block of the stage, whatever its number
    (r"t_res(?P<s>[234])_\d+_branch2c_bn_subsample_w", r"lateral.res\g<s>.conv.weight"),
    *_caffe2_bn(r"t_res(?P<s>[234])_\d+_branch2c_bn_subsample", r"lateral.res\g<s>"),
    (r"pred_w", "head.proj.weight"),
    (r"pred_b", "head.proj.bias"),
]


def _zoo_bn(zoo: str, blob: str) -> list[Rule]:
    """The four BatchNorm tensors ``<zoo>.bn.<name>`` -> ``<blob>_bn_{s,b,rm,riv}``, as (zoo -> caffe2) pairs."""
    return [(rf"{zoo}\.bn\.{name}", rf"{blob}_bn_{c2}") for c2, name in CAFFE2_BN.items()]


def zoo_to_caffe2(last_fast_block: Mapping[int, int]) -> list[Rule]:
    """Rules writing Caffe2 blob names; ``last_fast_block[stage]`` numbers the lateral after res2..res4."""
    rules: list[Rule] = []
    for pw, t in CAFFE2_PREFIX.items():
        rules += [
            (rf"stem\.{pw}\.conv\.weight", f"{t}conv1_w"),
            *_zoo_bn(rf"stem\.{pw}", f"{t}res_conv1"),
            (rf"res{S}\.{pw}\.{B}\.{L}\.conv\.weight", rf"{t}res\g<s>_\g<b>_branch2\g<l>_w"),
            *_zoo_bn(rf"res{S}\.{pw}\.{B}\.{L}", rf"{t}res\g<s>_\g<b>_branch2\g<l>"),
            (rf"res{S}\.{pw}\.{B}\.shortcut\.conv\.weight", rf"{t}res\g<s>_\g<b>_branch1_w"),
            *_zoo_bn(rf"res{S}\.{pw}\.{B}\.shortcut", rf"{t}res\g<s>_\g<b>_branch1"),
        ]
    rules += [
        (rf"res{S}\.slow\.{B}\.nl\.{NL}\.weight", r"nonlocal_conv\g<s>_\g<b>_\g<n>_w"),
        (rf"res{S}\.slow\.{B}\.nl\.{NL}\.bias", r"nonlocal_conv\g<s>_\g<b>_\g<n>_b"),
        *_zoo_bn(rf"res{S}\.slow\.{B}\.nl", r"nonlocal_conv\g<s>_\g<b>"),
        (r"lateral\.stem\.conv\.weight", "t_pool1_subsample_w"),
        *_zoo_bn(r"lateral\.stem", "t_pool1_subsample"),
    ]
    for stage, last in last_fast_block.items():
        blob = f"t_res{stage}_{last}_branch2c_bn_subsample"
        rules += [(rf"lateral\.res{stage}\.conv\.weight", f"{blob}_w"), *_zoo_bn(rf"lateral\.res{stage}", blob)]
    return [*rules, (r"head\.proj\.weight", "pred_w"), (r"head\.proj\.bias", "pred_b")]


# --- PyTorchVideo (pytorchvideo/models/resnet.py, slowfast.py, head.py; create_res_block's names) ---------------------
def ptv_stage_blocks(temporal_pool: bool) -> dict[int, int]:
    """Index in ``blocks`` of res2..res5: I3D/C2D put a parameter-free temporal pool at ``blocks.2``."""
    return {stage: stage if temporal_pool and stage > 2 else stage - 1 for stage in (2, 3, 4, 5)}


def _ptv_pathways(two: bool) -> dict[str, str]:
    """The ``blocks.<i>.`` infix of each pathway: ``multipathway_blocks.<p>.`` in SlowFast, nothing in one pathway."""
    return {pw: f"multipathway_blocks.{p}." for pw, p in PYSF_PATHWAY.items()} if two else {"slow": ""}


#: a bottleneck's layers: (zoo name, PyTorchVideo name) of the conv and BatchNorm
_PTV_RES = [(f"{layer}.conv", f"branch2.conv_{layer}", f"{layer}.bn", f"branch2.norm_{layer}") for layer in "abc"] + [
    ("shortcut.conv", "branch1_conv", "shortcut.bn", "branch1_norm")
]


def ptv_to_zoo(two: bool, temporal_pool: bool) -> list[Rule]:
    """Rules reading PyTorchVideo names of a one- or two-pathway network, with or without the temporal pool."""
    rules: list[Rule] = []
    for pw, infix in _ptv_pathways(two).items():
        i = re.escape(infix)
        rules += [(rf"blocks\.0\.{i}conv\.weight", f"stem.{pw}.conv.weight")]
        rules += [(rf"blocks\.0\.{i}norm\.{X}", rf"stem.{pw}.bn.\g<x>")]
        for stage, block in ptv_stage_blocks(temporal_pool).items():
            for conv, ptv_conv, bn, ptv_bn in _PTV_RES:
                res = rf"blocks\.{block}\.{i}res_blocks\.{B}\."
                rules += [(rf"{res}{re.escape(ptv_conv)}\.weight", rf"res{stage}.{pw}.\g<b>.{conv}.weight")]
                rules += [(rf"{res}{re.escape(ptv_bn)}\.{X}", rf"res{stage}.{pw}.\g<b>.{bn}.\g<x>")]
    if two:
        for block, after in enumerate(("stem", "res2", "res3", "res4")):
            rules += [
                (rf"blocks\.{block}\.multipathway_fusion\.conv_fast_to_slow\.weight", f"lateral.{after}.conv.weight")
            ]
            rules += [(rf"blocks\.{block}\.multipathway_fusion\.norm\.{X}", rf"lateral.{after}.bn.\g<x>")]
    # the head is the last block, whatever its index; a detector's is detection_head
    return [
        *rules,
        (rf"blocks\.\d+\.proj\.{WB}", r"head.proj.\g<x>"),
        (rf"detection_head\.proj\.{WB}", r"head.proj.\g<x>"),
    ]


def zoo_to_ptv(two: bool, temporal_pool: bool, detection: bool) -> list[Rule]:
    """Rules writing PyTorchVideo names (the head at ``blocks.6``, or ``blocks.5`` for an unpooled single pathway)."""
    rules: list[Rule] = []
    for pw, infix in _ptv_pathways(two).items():
        rules += [(rf"stem\.{pw}\.conv\.weight", f"blocks.0.{infix}conv.weight")]
        rules += [(rf"stem\.{pw}\.bn\.{X}", rf"blocks.0.{infix}norm.\g<x>")]
        for stage, block in ptv_stage_blocks(temporal_pool).items():
            for conv, ptv_conv, bn, ptv_bn in _PTV_RES:
                res = f"blocks.{block}.{infix}res_blocks.\\g<b>."
                rules += [(rf"res{stage}\.{pw}\.{B}\.{re.escape(conv)}\.weight", rf"{res}{ptv_conv}.weight")]
                rules += [(rf"res{stage}\.{pw}\.{B}\.{re.escape(bn)}\.{X}", rf"{res}{ptv_bn}.\g<x>")]
    if two:
        for block, after in enumerate(("stem", "res2", "res3", "res4")):
            rules += [
                (rf"lateral\.{after}\.conv\.weight", f"blocks.{block}.multipathway_fusion.conv_fast_to_slow.weight")
            ]
            rules += [(rf"lateral\.{after}\.bn\.{X}", rf"blocks.{block}.multipathway_fusion.norm.\g<x>")]
    head = "detection_head" if detection else f"blocks.{6 if two or temporal_pool else 5}"
    return [*rules, (rf"head\.proj\.{WB}", rf"{head}.proj.\g<x>")]


# --- applying the rules -------------------------------------------------------------------------------------------
def _renamer(rules: Iterable[Rule]) -> Callable[[str], str | None]:
    """``key -> new key`` by the first rule whose regex matches all of it; None when none does."""
    compiled = [(re.compile(pattern), repl) for pattern, repl in rules]

    def rename(key: str) -> str | None:
        for pattern, repl in compiled:
            m = pattern.fullmatch(key)
            if m:
                return m.expand(repl)
        return None

    return rename


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


def is_solver_blob(name: str) -> bool:
    """Optimizer state a Caffe2 checkpoint carries beside the weights (momentum buffers, lr, iteration)."""
    return name.endswith("_momentum") or name in ("lr", "model_iter")


def _strip_wrapper(key: str) -> str | None:
    if key.startswith("model."):
        return key[len("model.") :]
    return key if key.startswith("detection_head.") else None


def detect_scheme(keys: Iterable[str]) -> str:
    """Name the key scheme of a state dict (or its keys); raises if it is none of :data:`SCHEMES`."""
    keys = set(keys)
    probes = [
        ("zoo", "stem.slow.conv.weight"),
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
        f"(e.g. 'stem.slow.conv.weight', 's1.pathway0_stem.conv.weight', 'conv1_w', 'blocks.0.conv.weight'); "
        f"found keys like {shown}"
    )


def to_zoo(sd: Mapping[str, V], scheme: str | None = None) -> dict[str, V]:
    """Rename a state dict of any known scheme to zoo keys (Caffe2 solver blobs must be removed beforehand)."""
    scheme = scheme or detect_scheme(sd)
    if scheme == "zoo":  # a zoo key is one the PySlowFast writer knows
        known = _renamer(ZOO_TO_PYSF)
        return _map_keys(sd, lambda k: k if known(k) else None, scheme)
    if scheme == "ptv_wrapper":  # also PyTorchVideo's detectors: backbone under model., head under detection_head.
        sd = _map_keys(sd, _strip_wrapper, scheme)
        scheme = "ptv"
    if scheme == "ptv":
        two = any(k.startswith("blocks.0.multipathway_blocks.") for k in sd)
        pooled = any(re.match(r"blocks\.5\.(multipathway_blocks\.\d\.)?res_blocks\.", k) for k in sd)
        rules = ptv_to_zoo(two, pooled)
    elif scheme in ("pysf", "caffe2"):
        rules = PYSF_TO_ZOO if scheme == "pysf" else CAFFE2_TO_ZOO
    else:
        raise ValueError(f"unknown key scheme {scheme!r}; known: {SCHEMES}")
    return _map_keys(sd, _renamer(rules), scheme)


def from_zoo(sd: Mapping[str, V], scheme: str, *, temporal_pool: bool = False, detection: bool = False) -> dict[str, V]:
    """Rename zoo keys to an upstream scheme (to write files in the authors' layouts).

    ``temporal_pool`` says whether the network pools in time after res2 (I3D, C2D), which shifts PyTorchVideo's
    block indices; ``detection`` names the head as PyTorchVideo's detectors do (``detection_head.proj``, with the
    backbone under ``model.``: use scheme ``ptv_wrapper``).
    """
    if scheme == "zoo":
        return dict(sd)
    if scheme == "pysf":
        return _map_keys(sd, _renamer(ZOO_TO_PYSF), "zoo")
    if scheme == "caffe2":  # Caffe2 files carry no batch counters
        sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
        last: dict[int, int] = {}
        for key in sd:
            if m := re.match(r"res([234])\.fast\.(\d+)\.", key):
                last[int(m[1])] = max(last.get(int(m[1]), 0), int(m[2]))
        return _map_keys(sd, _renamer(zoo_to_caffe2(last)), "zoo")
    if scheme in ("ptv", "ptv_wrapper"):
        two = any(k.startswith("stem.fast.") for k in sd)
        ptv = _map_keys(sd, _renamer(zoo_to_ptv(two, temporal_pool, detection)), "zoo")
        wrap = scheme == "ptv_wrapper"
        return {("model." if wrap and not k.startswith("detection_head.") else "") + k: v for k, v in ptv.items()}
    raise ValueError(f"unknown key scheme {scheme!r}; known: {SCHEMES}")

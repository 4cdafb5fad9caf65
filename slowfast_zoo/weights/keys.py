"""Key schemes of the authors' checkpoints and their mapping onto the zoo's canonical state-dict keys.

Schemes (detected from the keys themselves):
- ``caffe2``: blob names of PySlowFast's Caffe2 ``.pkl`` files (``res2_0_branch2a_w``, ``t_pool1_subsample_w``, ...)
- ``pysf``: PySlowFast module names (``s1.pathway0_stem.conv.weight``, ``s2.pathway1_res0.branch2.a_bn.bias``, ...)
- ``ptv``: PyTorchVideo hub modules (``blocks.0.multipathway_blocks.0.conv.weight``, ``blocks.6.proj.weight``, ...);
  ``ptv_wrapper`` is the same behind PySlowFast's ``model.`` prefix (the ``pysf_model_zoo`` mirror)
- ``zoo``: this package (``stem.0.conv.weight``, ``res2.1.0.a.bn.bias``, ``fuse.0.conv.weight``, ``head.proj.weight``)

Every mapping is a bijection on names; tensors are never touched. Converting to ``zoo`` goes through ``pysf``.
Names a scheme does not know raise :class:`KeyMappingError` listing them: nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TypeVar

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
_BN = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_BN_INV = {v: k for k, v in _BN.items()}


class KeyMappingError(KeyError):
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


def _rules(pairs: list[tuple[str, str | Callable[[re.Match[str]], str | None]]]) -> Callable[[str], str | None]:
    """First full-match wins; the replacement is a ``re`` template or a function of the match."""
    compiled = [(re.compile(p), r) for p, r in pairs]

    def apply(key: str) -> str | None:
        for pattern, repl in compiled:
            m = pattern.fullmatch(key)
            if m:
                return (repl(m) if callable(repl) else m.expand(repl)) or None
        return None

    return apply


_BN_STAT = r"(weight|bias|running_mean|running_var|num_batches_tracked)"

# --- pysf <-> zoo --------------------------------------------------------------------------------------------
_pysf_to_zoo = _rules(
    [
        (r"s1\.pathway([01])_stem\.(conv|bn)\.(.+)", r"stem.\1.\2.\3"),
        (r"s([1-4])_fuse\.conv_f2s\.weight", lambda m: f"fuse.{int(m[1]) - 1}.conv.weight"),
        (rf"s([1-4])_fuse\.bn\.{_BN_STAT}", lambda m: f"fuse.{int(m[1]) - 1}.bn.{m[2]}"),
        (r"s([2-5])\.pathway([01])_res(\d+)\.branch2\.([abc])\.weight", r"res\1.\2.\3.\4.conv.weight"),
        (rf"s([2-5])\.pathway([01])_res(\d+)\.branch2\.([abc])_bn\.{_BN_STAT}", r"res\1.\2.\3.\4.bn.\5"),
        (r"s([2-5])\.pathway([01])_res(\d+)\.branch1\.weight", r"res\1.\2.\3.shortcut.conv.weight"),
        (rf"s([2-5])\.pathway([01])_res(\d+)\.branch1_bn\.{_BN_STAT}", r"res\1.\2.\3.shortcut.bn.\4"),
        (r"s([2-5])\.pathway0_nonlocal(\d+)\.conv_(theta|phi|g|out)\.(weight|bias)", r"res\1.0.\2.nl.\3.\4"),
        (rf"s([2-5])\.pathway0_nonlocal(\d+)\.(?:bn|norm)\.{_BN_STAT}", r"res\1.0.\2.nl.bn.\3"),
        (r"head\.projection\.(weight|bias)", r"head.proj.\1"),
    ]
)
_zoo_to_pysf = _rules(
    [
        (r"stem\.(\d)\.(conv|bn)\.(.+)", r"s1.pathway\1_stem.\2.\3"),
        (r"fuse\.(\d)\.conv\.weight", lambda m: f"s{int(m[1]) + 1}_fuse.conv_f2s.weight"),
        (rf"fuse\.(\d)\.bn\.{_BN_STAT}", lambda m: f"s{int(m[1]) + 1}_fuse.bn.{m[2]}"),
        (r"res(\d)\.(\d)\.(\d+)\.([abc])\.conv\.weight", r"s\1.pathway\2_res\3.branch2.\4.weight"),
        (rf"res(\d)\.(\d)\.(\d+)\.([abc])\.bn\.{_BN_STAT}", r"s\1.pathway\2_res\3.branch2.\4_bn.\5"),
        (r"res(\d)\.(\d)\.(\d+)\.shortcut\.conv\.weight", r"s\1.pathway\2_res\3.branch1.weight"),
        (rf"res(\d)\.(\d)\.(\d+)\.shortcut\.bn\.{_BN_STAT}", r"s\1.pathway\2_res\3.branch1_bn.\4"),
        (r"res(\d)\.0\.(\d+)\.nl\.(theta|phi|g|out)\.(weight|bias)", r"s\1.pathway0_nonlocal\2.conv_\3.\4"),
        (rf"res(\d)\.0\.(\d+)\.nl\.bn\.{_BN_STAT}", r"s\1.pathway0_nonlocal\2.bn.\3"),
        (r"head\.proj\.(weight|bias)", r"head.projection.\1"),
    ]
)

# --- caffe2 <-> pysf -----------------------------------------------------------------------------------------
_BLOB_BN = r"(s|b|rm|riv)"


def _path(prefix: str | None) -> int:
    return 1 if prefix else 0


_caffe2_to_pysf = _rules(
    [
        (r"(t_)?conv1_w", lambda m: f"s1.pathway{_path(m[1])}_stem.conv.weight"),
        (rf"(t_)?res_conv1_bn_{_BLOB_BN}", lambda m: f"s1.pathway{_path(m[1])}_stem.bn.{_BN[m[2]]}"),
        (r"t_pool1_subsample_w", lambda m: "s1_fuse.conv_f2s.weight"),
        (rf"t_pool1_subsample_bn_{_BLOB_BN}", lambda m: f"s1_fuse.bn.{_BN[m[1]]}"),
        (r"t_res(\d)_\d+_branch2c_bn_subsample_w", lambda m: f"s{m[1]}_fuse.conv_f2s.weight"),
        (rf"t_res(\d)_\d+_branch2c_bn_subsample_bn_{_BLOB_BN}", lambda m: f"s{m[1]}_fuse.bn.{_BN[m[2]]}"),
        (
            r"(t_)?res(\d)_(\d+)_branch2([abc])_w",
            lambda m: f"s{m[2]}.pathway{_path(m[1])}_res{m[3]}.branch2.{m[4]}.weight",
        ),
        (
            rf"(t_)?res(\d)_(\d+)_branch2([abc])_bn_{_BLOB_BN}",
            lambda m: f"s{m[2]}.pathway{_path(m[1])}_res{m[3]}.branch2.{m[4]}_bn.{_BN[m[5]]}",
        ),
        (r"(t_)?res(\d)_(\d+)_branch1_w", lambda m: f"s{m[2]}.pathway{_path(m[1])}_res{m[3]}.branch1.weight"),
        (
            rf"(t_)?res(\d)_(\d+)_branch1_bn_{_BLOB_BN}",
            lambda m: f"s{m[2]}.pathway{_path(m[1])}_res{m[3]}.branch1_bn.{_BN[m[4]]}",
        ),
        (
            r"nonlocal_conv(\d)_(\d+)_(theta|phi|g|out)_(w|b)",
            lambda m: f"s{m[1]}.pathway0_nonlocal{m[2]}.conv_{m[3]}.{'weight' if m[4] == 'w' else 'bias'}",
        ),
        (rf"nonlocal_conv(\d)_(\d+)_bn_{_BLOB_BN}", lambda m: f"s{m[1]}.pathway0_nonlocal{m[2]}.bn.{_BN[m[3]]}"),
        (r"pred_(w|b)", lambda m: f"head.projection.{'weight' if m[1] == 'w' else 'bias'}"),
    ]
)


def _pysf_to_caffe2_fn(sd: Mapping[str, object]) -> Callable[[str], str | None]:
    # the fuse blobs after res2..res4 are named after the last fast block of that stage
    last: dict[str, int] = {}
    for key in sd:
        m = re.fullmatch(r"s(\d)\.pathway1_res(\d+)\..*", key)
        if m:
            last[m[1]] = max(last.get(m[1], 0), int(m[2]))

    def t(p: str) -> str:
        return "t_" if p == "1" else ""

    return _rules(
        [
            (r"s1\.pathway(\d)_stem\.conv\.weight", lambda m: f"{t(m[1])}conv1_w"),
            (r"s1\.pathway(\d)_stem\.bn\.(\w+)", lambda m: f"{t(m[1])}res_conv1_bn_{_BN_INV[m[2]]}"),
            (r"s1_fuse\.conv_f2s\.weight", lambda m: "t_pool1_subsample_w"),
            (r"s1_fuse\.bn\.(\w+)", lambda m: f"t_pool1_subsample_bn_{_BN_INV[m[1]]}"),
            (r"s(\d)_fuse\.conv_f2s\.weight", lambda m: f"t_res{m[1]}_{last[m[1]]}_branch2c_bn_subsample_w"),
            (r"s(\d)_fuse\.bn\.(\w+)", lambda m: f"t_res{m[1]}_{last[m[1]]}_branch2c_bn_subsample_bn_{_BN_INV[m[2]]}"),
            (
                r"s(\d)\.pathway(\d)_res(\d+)\.branch2\.([abc])\.weight",
                lambda m: f"{t(m[2])}res{m[1]}_{m[3]}_branch2{m[4]}_w",
            ),
            (
                r"s(\d)\.pathway(\d)_res(\d+)\.branch2\.([abc])_bn\.(\w+)",
                lambda m: f"{t(m[2])}res{m[1]}_{m[3]}_branch2{m[4]}_bn_{_BN_INV[m[5]]}",
            ),
            (r"s(\d)\.pathway(\d)_res(\d+)\.branch1\.weight", lambda m: f"{t(m[2])}res{m[1]}_{m[3]}_branch1_w"),
            (
                r"s(\d)\.pathway(\d)_res(\d+)\.branch1_bn\.(\w+)",
                lambda m: f"{t(m[2])}res{m[1]}_{m[3]}_branch1_bn_{_BN_INV[m[4]]}",
            ),
            (
                r"s(\d)\.pathway0_nonlocal(\d+)\.conv_(\w+)\.(weight|bias)",
                lambda m: f"nonlocal_conv{m[1]}_{m[2]}_{m[3]}_{m[4][0]}",
            ),
            (r"s(\d)\.pathway0_nonlocal(\d+)\.bn\.(\w+)", lambda m: f"nonlocal_conv{m[1]}_{m[2]}_bn_{_BN_INV[m[3]]}"),
            (r"head\.projection\.(weight|bias)", lambda m: f"pred_{m[1][0]}"),
        ]
    )


def is_solver_blob(name: str) -> bool:
    """Optimizer state a Caffe2 checkpoint carries beside the weights (momentum buffers, lr, iteration)."""
    return name.endswith("_momentum") or name in ("lr", "model_iter")


# --- ptv <-> pysf --------------------------------------------------------------------------------------------
_RES = [
    (r"branch1_conv\.weight", "branch1.weight"),
    (rf"branch1_norm\.{_BN_STAT}", r"branch1_bn.\1"),
    (r"branch2\.conv_([abc])\.weight", r"branch2.\1.weight"),
    (rf"branch2\.norm_([abc])\.{_BN_STAT}", r"branch2.\1_bn.\2"),
]
_ptv_res = _rules(_RES)


def _ptv_to_pysf_fn(sd: Mapping[str, object]) -> Callable[[str], str | None]:
    # single-pathway nets number their stages by position in ``blocks`` (I3D/C2D have a pool block at 2)
    stage_blocks = sorted({int(m[1]) for k in sd if (m := re.fullmatch(r"blocks\.(\d)\.res_blocks\..*", k))})
    stage_of = {b: s + 2 for s, b in enumerate(stage_blocks)}

    def res(prefix: str, rest: str) -> str | None:
        mapped = _ptv_res(rest)
        return None if mapped is None else f"{prefix}.{mapped}"

    return _rules(
        [
            (r"blocks\.0\.multipathway_blocks\.(\d)\.conv\.weight", r"s1.pathway\1_stem.conv.weight"),
            (rf"blocks\.0\.multipathway_blocks\.(\d)\.norm\.{_BN_STAT}", r"s1.pathway\1_stem.bn.\2"),
            (r"blocks\.0\.conv\.weight", "s1.pathway0_stem.conv.weight"),
            (rf"blocks\.0\.norm\.{_BN_STAT}", r"s1.pathway0_stem.bn.\1"),
            (
                r"blocks\.(\d)\.multipathway_fusion\.conv_fast_to_slow\.weight",
                lambda m: f"s{int(m[1]) + 1}_fuse.conv_f2s.weight",
            ),
            (rf"blocks\.(\d)\.multipathway_fusion\.norm\.{_BN_STAT}", lambda m: f"s{int(m[1]) + 1}_fuse.bn.{m[2]}"),
            (
                r"blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.(.+)",
                lambda m: res(f"s{int(m[1]) + 1}.pathway{m[2]}_res{m[3]}", m[4]),
            ),
            (
                r"blocks\.(\d)\.res_blocks\.(\d+)\.(.+)",
                lambda m: res(f"s{stage_of[int(m[1])]}.pathway0_res{m[2]}", m[3]),
            ),
            (r"blocks\.\d\.proj\.(weight|bias)", r"head.projection.\1"),
            (r"detection_head\.proj\.(weight|bias)", r"head.projection.\1"),
        ]
    )


def _pysf_to_ptv_fn(sd: Mapping[str, object], temporal_pool: bool, detection: bool) -> Callable[[str], str | None]:
    two = any(k.startswith("s1.pathway1_") for k in sd)
    head = "detection_head" if detection else f"blocks.{6 if two or temporal_pool else 5}"
    inv = {"branch1.weight": "branch1_conv.weight"}

    def res(rest: str) -> str | None:
        if rest in inv:
            return inv[rest]
        m = re.fullmatch(r"branch1_bn\.(\w+)", rest)
        if m:
            return f"branch1_norm.{m[1]}"
        m = re.fullmatch(r"branch2\.([abc])\.weight", rest)
        if m:
            return f"branch2.conv_{m[1]}.weight"
        m = re.fullmatch(r"branch2\.([abc])_bn\.(\w+)", rest)
        return f"branch2.norm_{m[1]}.{m[2]}" if m else None

    def block(stage: int) -> int:
        return stage - 1 if two or not temporal_pool or stage == 2 else stage

    def stage_key(m: re.Match[str]) -> str | None:
        rest = res(m[4])
        if rest is None:
            return None
        if two:
            return f"blocks.{block(int(m[1]))}.multipathway_blocks.{m[2]}.res_blocks.{m[3]}.{rest}"
        return f"blocks.{block(int(m[1]))}.res_blocks.{m[3]}.{rest}"

    stem = "blocks.0.multipathway_blocks.{}." if two else "blocks.0."
    return _rules(
        [
            (r"s1\.pathway(\d)_stem\.conv\.weight", lambda m: stem.format(m[1]) + "conv.weight"),
            (r"s1\.pathway(\d)_stem\.bn\.(\w+)", lambda m: stem.format(m[1]) + f"norm.{m[2]}"),
            (
                r"s(\d)_fuse\.conv_f2s\.weight",
                lambda m: f"blocks.{int(m[1]) - 1}.multipathway_fusion.conv_fast_to_slow.weight",
            ),
            (r"s(\d)_fuse\.bn\.(\w+)", lambda m: f"blocks.{int(m[1]) - 1}.multipathway_fusion.norm.{m[2]}"),
            (r"s(\d)\.pathway(\d)_res(\d+)\.(.+)", stage_key),
            (r"head\.projection\.(weight|bias)", lambda m: f"{head}.proj.{m[1]}"),
        ]
    )


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
        return _map_keys(sd, lambda k: k if _zoo_to_pysf(k) else None, scheme)
    if scheme == "ptv_wrapper":  # also PyTorchVideo's detectors: backbone under model., head under detection_head.
        sd = _map_keys(sd, _strip_wrapper, scheme)
        scheme = "ptv"
    if scheme == "ptv":
        sd = _map_keys(sd, _ptv_to_pysf_fn(sd), scheme)
    elif scheme == "caffe2":
        sd = _map_keys(sd, _caffe2_to_pysf, scheme)
    elif scheme != "pysf":
        raise ValueError(f"unknown key scheme {scheme!r}; known: {SCHEMES}")
    return _map_keys(sd, _pysf_to_zoo, scheme)


def from_zoo(sd: Mapping[str, V], scheme: str, *, temporal_pool: bool = False, detection: bool = False) -> dict[str, V]:
    """Rename zoo keys to an upstream scheme (to write files in the authors' layouts).

    ``temporal_pool`` says whether the network pools in time after res2 (I3D, C2D), which shifts PyTorchVideo's
    block indices; ``detection`` names the head as PyTorchVideo's detectors do (``detection_head.proj``, with the
    backbone under ``model.``: use scheme ``ptv_wrapper``).
    """
    if scheme == "zoo":
        return dict(sd)
    pysf = _map_keys(sd, _zoo_to_pysf, "zoo")
    if scheme == "pysf":
        return pysf
    if scheme == "caffe2":  # Caffe2 files carry no batch counters
        pysf = {k: v for k, v in pysf.items() if not k.endswith("num_batches_tracked")}
        return _map_keys(pysf, _pysf_to_caffe2_fn(pysf), "pysf")
    if scheme in ("ptv", "ptv_wrapper"):
        ptv = _map_keys(pysf, _pysf_to_ptv_fn(pysf, temporal_pool, detection), "pysf")
        wrap = scheme == "ptv_wrapper"
        return {("model." if wrap and not k.startswith("detection_head.") else "") + k: v for k, v in ptv.items()}
    raise ValueError(f"unknown key scheme {scheme!r}; known: {SCHEMES}")

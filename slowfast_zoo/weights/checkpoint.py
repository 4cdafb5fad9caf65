"""Load a checkpoint into a zoo model strictly: every key used, every shape and dtype checked before any copy.

Reading files is :mod:`slowfast_zoo.weights.formats`; renaming keys is :mod:`slowfast_zoo.weights.keys`. The
structural check compares a state dict with an expected ``{key: shape}`` (the model's own ``state_dict()``), so
nothing here knows a module's internals; the classifier's key prefix comes in as a parameter.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .formats import CheckpointError, RawCheckpoint, read_checkpoint, read_state_dict
from .keys import KeyMappingError, detect_scheme, to_zoo

__all__ = [
    "CheckpointError",
    "LoadReport",
    "check_state_dict",
    "fill_batch_counters",
    "load_checkpoint",
    "load_state_dict_strict",
    "read_state_dict",
    "renamed_to_model",
]

log = logging.getLogger(__name__)

#: the classifier's key prefix in zoo state dicts (the architecture config's ``classifier``)
DEFAULT_CLASSIFIER = "head.proj"


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` read and did."""

    source: str
    file_format: str
    key_scheme: str
    num_tensors: int
    #: Caffe2 solver blobs (momentum, lr, iteration) that were ignored
    skipped: list[str] = field(default_factory=list)
    #: BatchNorm counters absent from the file (Caffe2) and set to zero
    filled: list[str] = field(default_factory=list)
    #: the classifier was re-initialized because the model's num_classes differs from the file's
    head_reset: bool = False


def _shape(value: torch.Tensor | torch.Size | tuple[int, ...]) -> tuple[int, ...]:
    return tuple(value.shape if isinstance(value, torch.Tensor) else value)


def _listed(title: str, keys: list[str]) -> str:
    return f"{len(keys)} key(s) {title}: " + ", ".join(keys[:12]) + (" ..." if len(keys) > 12 else "")


def check_state_dict(
    sd: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor | torch.Size | tuple[int, ...]],
    *,
    reset_head: bool = False,
    classifier: str = DEFAULT_CLASSIFIER,
) -> tuple[list[str], bool]:
    """Compare names, shapes and dtype kinds (float/integer) with ``expected``; touches no tensor data.

    ``expected`` maps each key to a shape, or to a tensor (e.g. a model's ``state_dict()``, on any device,
    ``meta`` included), whose dtype kind is then checked too. With ``reset_head=True`` the classifier (keys under
    ``classifier + "."``) may differ. Returns the classifier keys of ``sd`` to drop and whether the head differs.
    Raises :class:`CheckpointError` listing every missing, unexpected and mismatched key.
    """
    head = classifier + "."
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(sd) if _shape(sd[k]) != _shape(expected[k]))
    tensors = {k: t for k in set(expected) & set(sd) if isinstance(t := expected[k], torch.Tensor)}
    kinds = sorted(k for k, t in tensors.items() if sd[k].is_floating_point() != t.is_floating_point())
    head_reset = False
    if reset_head:
        in_head = {k for k in missing + unexpected + mismatched if k.startswith(head)}
        if in_head:
            head_reset = True
            missing, unexpected, mismatched = (
                [k for k in keys if k not in in_head] for keys in (missing, unexpected, mismatched)
            )
    if missing or unexpected or mismatched or kinds:
        lines = [
            _listed(t, keys)
            for t, keys in (("missing from the checkpoint", missing), ("not in the model", unexpected))
            if keys
        ]
        if mismatched:
            shown = [f"{k}: checkpoint {_shape(sd[k])} vs model {_shape(expected[k])}" for k in mismatched[:12]]
            lines.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(shown))
            if all(k.startswith(head) for k in mismatched):
                lines.append("only the classifier differs: pass num_classes=N to create() to re-initialize it")
        if kinds:
            shown = [f"{k}: checkpoint {sd[k].dtype} vs model {tensors[k].dtype}" for k in kinds[:12]]
            lines.append(f"{len(kinds)} dtype mismatch(es) (floating point vs integer): " + "; ".join(shown))
        raise CheckpointError("checkpoint does not fit the model:\n  " + "\n  ".join(lines))
    return sorted(k for k in sd if head_reset and k.startswith(head)), head_reset


def renamed_to_model(
    sd: Mapping[str, torch.Tensor], expected: Mapping[str, object]
) -> tuple[dict[str, torch.Tensor], str]:
    """A file's tensors under the model's own keys, and the file's key scheme: as they are (``zoo``) when every key
    is one of the model's, whatever its family; else renamed from an upstream layout of the authors' ResNet3d
    checkpoints (:mod:`~slowfast_zoo.weights.keys`; :class:`~slowfast_zoo.weights.keys.KeyMappingError` if none)."""
    if sd and set(sd) <= set(expected):
        return dict(sd), "zoo"
    scheme = detect_scheme(sd)
    return to_zoo(sd, scheme), scheme


def fill_batch_counters(sd: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> list[str]:
    """Add the BatchNorm batch counters ``expected`` has and ``sd`` lacks (Caffe2 files have none), as zeros.

    A counter is filled only beside its BatchNorm's weight, so a file missing whole layers still fails the check.
    Returns the keys filled.
    """
    filled = []
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in sd and key.rsplit(".", 1)[0] + ".weight" in sd:
            sd[key] = torch.zeros((), dtype=value.dtype)
            filled.append(key)
    return filled


def load_state_dict_strict(
    model: nn.Module,
    sd: dict[str, torch.Tensor],
    *,
    reset_head: bool = False,
    assign: bool = False,
    classifier: str = DEFAULT_CLASSIFIER,
) -> bool:
    """Load zoo-keyed tensors: every key used, every shape equal, else a :class:`CheckpointError` listing them.

    With ``reset_head=True`` a classifier whose shape differs (another ``num_classes``) is left freshly
    initialized instead; the return value says whether that happened. ``assign=True`` lets tensors that already
    have the parameters' device and dtype become the parameters (for tensors nobody else holds, e.g. read from a file).
    Floating-point tensors are cast to the parameters' dtype only after the check.
    """
    own = model.state_dict()
    drop, head_reset = check_state_dict(sd, own, reset_head=reset_head, classifier=classifier)
    sd = {k: v for k, v in sd.items() if k not in drop}
    if head_reset:
        sd.update({k: v for k, v in own.items() if k.startswith(classifier + ".")})
    sd = {k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in sd.items()}
    assign = assign and all(sd[k].device == v.device and sd[k].dtype == v.dtype for k, v in own.items())
    model.load_state_dict(sd, strict=True, assign=assign)
    return head_reset


def load_checkpoint(
    model: nn.Module,
    checkpoint: str | os.PathLike[str] | dict[str, torch.Tensor] | RawCheckpoint,
    *,
    reset_head: bool = False,
    classifier: str = DEFAULT_CLASSIFIER,
) -> LoadReport:
    """Load a checkpoint of any supported format and key scheme into a zoo model, strictly.

    ``reset_head=True`` allows the classifier (keys under ``classifier``) alone to differ in shape (it then keeps
    its fresh initialization). A :class:`~slowfast_zoo.weights.formats.RawCheckpoint` is a file already read (e.g.
    by :func:`~slowfast_zoo.weights.formats.read_verified`, from the very bytes that were hashed).
    """
    from_file = not isinstance(checkpoint, dict)
    if isinstance(checkpoint, dict):
        sd, fmt, skipped, source = dict(checkpoint), "state_dict", [], "<state dict>"
    else:
        raw = checkpoint if isinstance(checkpoint, RawCheckpoint) else read_checkpoint(checkpoint)
        sd, fmt, skipped, source = raw.tensors, raw.format, raw.skipped, raw.source
    own = model.state_dict()
    try:
        zoo_sd, scheme = renamed_to_model(sd, own)
    except KeyMappingError as e:
        raise CheckpointError(f"{source}: {e}") from None
    filled = fill_batch_counters(zoo_sd, own)
    try:
        # tensors read from a file belong to nobody else: they become the parameters, no second copy (for zip and
        # safetensors files they are copy-on-write maps of the file, paged in when used)
        head_reset = load_state_dict_strict(
            model, zoo_sd, reset_head=reset_head, assign=from_file, classifier=classifier
        )
    except CheckpointError as e:
        raise CheckpointError(f"{source} ({fmt}, {scheme} keys): {e}") from None
    report = LoadReport(source, fmt, scheme, len(sd), skipped, filled, head_reset)
    log.info(
        "loaded %s (%s, %s keys, %d tensors)%s",
        source,
        fmt,
        scheme,
        len(sd),
        " - classifier re-initialized" if head_reset else "",
    )
    return report

"""Read checkpoint files of every supported format safely and load them strictly into a zoo model.

Formats are detected from the bytes, not the file name:
- safetensors (the zoo's own files),
- PyTorch zip or legacy files (PySlowFast ``.pyth``, PyTorchVideo ``.pyth``, the multigrid ``.pkl``), read with
  ``torch.load(weights_only=True)``,
- Caffe2 pickles (``{'blobs': {name: ndarray}}``), read by an unpickler that can build numpy arrays and plain
  containers and nothing else.
No code from a file is ever executed.
"""

from __future__ import annotations

import codecs
import collections
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .keys import KeyMappingError, detect_scheme, is_solver_blob, to_zoo

__all__ = ["CheckpointError", "LoadReport", "load_checkpoint", "load_state_dict_strict", "read_state_dict"]

log = logging.getLogger(__name__)

_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class CheckpointError(ValueError):
    """A checkpoint file cannot be read, or does not fit the model it is loaded into."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray  # numpy >= 2; released Caffe2 files name numpy.core.multiarray

    allowed = {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar}
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        for name, obj in allowed.items():
            table[(module, name)] = obj
    table[("collections", "OrderedDict")] = collections.OrderedDict
    table[("_codecs", "encode")] = codecs.encode  # how Python 3 writes protocol-2 bytes; only turns str into bytes
    return table


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds numpy arrays, dtypes and plain containers; any other global is refused before it is imported."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays and plain containers are allowed"
            ) from None


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


def _is_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n < 100_000_000 and head[8:9] == b"{"


def _read_raw(path: Path) -> tuple[Any, str]:
    """The deserialized top-level object of a file and the name of its format."""
    with open(path, "rb") as f:
        head = f.read(16)
    if _is_safetensors(head):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), "safetensors"
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({e})") from e
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: truncated or corrupt PyTorch zip checkpoint (no zip directory)")
        return _torch_load(path), "torch"
    if head[:1] == b"\x80":  # a pickle: legacy torch.save (starts with its magic number) or a Caffe2 blob dict
        with open(path, "rb") as f:
            try:
                first = _RestrictedUnpickler(f, encoding="latin1").load()
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
                raise CheckpointError(f"{path}: not a readable checkpoint pickle ({e})") from e
        if first == _TORCH_LEGACY_MAGIC:
            return _torch_load(path), "torch"
        if isinstance(first, dict) and "blobs" in first:
            return first, "caffe2"
        raise CheckpointError(f"{path}: a pickle, but neither a Caffe2 {{'blobs': ...}} dict nor a PyTorch checkpoint")
    raise CheckpointError(
        f"{path}: unknown checkpoint format (expected safetensors, a PyTorch .pyth/.pth or a Caffe2 .pkl; "
        f"file starts with {head[:8]!r})"
    )


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused by torch.load(weights_only=True): {str(e).splitlines()[0]}") from e
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt PyTorch checkpoint ({e})") from e


def _to_tensor(name: str, value: Any, path: Path) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
        return torch.from_numpy(np.ascontiguousarray(value))
    raise CheckpointError(f"{path}: entry {name!r} is {type(value).__name__}, not a tensor/array")


def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Read any supported checkpoint into a flat ``{name: tensor}`` in its original key scheme.

    Returns the state dict, the file format (``safetensors``, ``torch``, ``caffe2``) and the Caffe2 solver blobs
    that were dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    obj, fmt = _read_raw(path)
    skipped: list[str] = []
    if fmt == "caffe2":
        blobs = obj["blobs"]
        if not isinstance(blobs, dict):
            raise CheckpointError(f"{path}: 'blobs' is {type(blobs).__name__}, expected a dict of arrays")
        skipped = sorted(k for k in blobs if is_solver_blob(k))
        obj = {k: v for k, v in blobs.items() if not is_solver_blob(k)}
    elif fmt == "torch" and isinstance(obj, dict):
        for key in ("model_state", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: no state dict found (expected 'model_state' or a dict of tensors)")
    sd = {str(k): _to_tensor(str(k), v, path) for k, v in obj.items()}
    if all(k.startswith("module.") for k in sd):  # saved from a DistributedDataParallel wrapper
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd, fmt, skipped


def load_state_dict_strict(
    model: nn.Module, sd: dict[str, torch.Tensor], *, reset_head: bool = False, assign: bool = False
) -> bool:
    """Load zoo-keyed tensors: every key used, every shape equal, else a :class:`CheckpointError` listing them.

    With ``reset_head=True`` a classifier whose shape differs (another ``num_classes``) is left freshly
    initialized instead; the return value says whether that happened. ``assign=True`` lets tensors that already
    have the parameters' device and dtype become the parameters (for tensors nobody else holds, e.g. read from a file).
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    mismatched = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    head_reset = False
    if reset_head:
        in_head = [k for k in missing + unexpected + mismatched if k.startswith("head.proj.")]
        if in_head:
            head_reset = True
            missing, unexpected, mismatched = (
                [k for k in keys if k not in in_head] for keys in (missing, unexpected, mismatched)
            )
            sd = {k: v for k, v in sd.items() if not k.startswith("head.proj.")}
            sd.update({k: v for k, v in own.items() if k.startswith("head.proj.")})
    if missing or unexpected or mismatched:
        lines = []
        for title, keys in (("missing from the checkpoint", missing), ("not in the model", unexpected)):
            if keys:
                lines.append(
                    f"{len(keys)} key(s) {title}: " + ", ".join(keys[:12]) + (" ..." if len(keys) > 12 else "")
                )
        if mismatched:
            shown = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched[:12]]
            lines.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(shown))
            if all(k.startswith("head.proj.") for k in mismatched):
                lines.append("only the classifier differs: pass num_classes=N to create() to re-initialize it")
        raise CheckpointError("checkpoint does not fit the model:\n  " + "\n  ".join(lines))
    assign = assign and all(sd[k].device == v.device and sd[k].dtype == v.dtype for k, v in own.items())
    model.load_state_dict(sd, strict=True, assign=assign)
    return head_reset


def load_checkpoint(
    model: nn.Module,
    checkpoint: str | os.PathLike[str] | dict[str, torch.Tensor],
    *,
    reset_head: bool = False,
) -> LoadReport:
    """Load a checkpoint of any supported format and key scheme into a zoo model, strictly.

    ``reset_head=True`` allows the classifier alone to differ in shape (it then keeps its fresh initialization).
    """
    from_file = not isinstance(checkpoint, dict)
    if from_file:
        sd, fmt, skipped = read_state_dict(checkpoint)
        source = str(checkpoint)
    else:
        sd, fmt, skipped, source = dict(checkpoint), "state_dict", [], "<state dict>"
    try:
        scheme = detect_scheme(sd)
        zoo_sd = to_zoo(sd, scheme)
    except KeyMappingError as e:
        raise CheckpointError(f"{source}: {e}") from None
    own = model.state_dict()
    filled = []
    for key, value in own.items():  # files converted from Caffe2 have no BatchNorm batch counters
        if key.endswith("num_batches_tracked") and key not in zoo_sd and key.rsplit(".", 1)[0] + ".weight" in zoo_sd:
            zoo_sd[key] = torch.zeros_like(value, device="cpu")
            filled.append(key)
    zoo_sd = {k: v.to(own[k].dtype) if k in own and v.is_floating_point() else v for k, v in zoo_sd.items()}
    try:
        # tensors read from a file belong to nobody else: they become the parameters, no second copy
        head_reset = load_state_dict_strict(model, zoo_sd, reset_head=reset_head, assign=from_file)
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

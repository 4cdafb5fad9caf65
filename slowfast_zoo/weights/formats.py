"""Checkpoint file formats, detected from the bytes (never the file name) and read without running code.

- ``safetensors`` (the zoo's own files): read through ``safe_open``, one tensor at a time;
- PyTorch zip (``torch.save`` since 1.6) and legacy ``torch.save`` files (PySlowFast and PyTorchVideo ``.pyth``,
  the multigrid and AVA v2.2 ``.pkl``): ``torch.load(weights_only=True)``, memory-mapped for zip files;
- Caffe2 pickles ``{'blobs': {name: ndarray}}`` (any pickle protocol): an unpickler that builds numpy arrays from
  bytes present in the file and plain containers, and nothing else.

Memory stays bounded by the file's size: length fields of a pickle are checked against the bytes that follow before
anything is allocated, and an array or tensor whose shape declares more bytes than its storage holds (zero, negative
or overlapping strides) is refused before it is expanded. Every failure to read a file is a :class:`CheckpointError`
naming the file and the reason.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SlowFastZooError
from .keys import is_solver_blob
from .pickles import Buffer, RefusedPickle, check_legacy_storages, restricted_load

__all__ = [
    "KNOWN_DAMAGED",
    "CheckpointError",
    "RawCheckpoint",
    "damaged_upstream_note",
    "read_checkpoint",
    "read_state_dict",
    "sniff_format",
]

#: the first object of a legacy ``torch.save`` stream (torch/serialization.py MAGIC_NUMBER)
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: how a legacy ``torch.save`` file starts: PROTO 2, LONG1 of 10 bytes holding the magic number
_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + TORCH_LEGACY_MAGIC.to_bytes(10, "little")
#: the format name reported for each container
REPORTED = {"safetensors": "safetensors", "torch_zip": "torch", "torch_legacy": "torch", "caffe2": "caffe2"}
#: first byte of a protocol 0/1 pickle of a dict: MARK (``(dp0``), EMPTY_DICT, GLOBAL (``collections.OrderedDict``)
_OLD_PICKLE_STARTS = b"(}c"

#: the authors' files reported damaged upstream, by their published file name
KNOWN_DAMAGED = {
    "C2D_NOPOOL_8x8_R50.pkl": (
        "the authors' published file itself is reported damaged: it is not a checkpoint but a gzip/tar stream "
        "(`invalid load key '\\x1f'`), and the maintainers called it corrupted; see SlowFast issues #98 and #163 "
        "(https://github.com/facebookresearch/SlowFast/issues/98, https://github.com/facebookresearch/SlowFast/issues/163)"
    ),
}


class CheckpointError(SlowFastZooError, ValueError):
    """A checkpoint file cannot be read, or does not fit the model it is loaded into."""


def damaged_upstream_note(name: str | os.PathLike[str]) -> str | None:
    """What is known upstream about a published file (by name or URL) that is not a checkpoint, or None."""
    return KNOWN_DAMAGED.get(Path(str(name).rsplit("/", 1)[-1]).name)


@dataclass
class RawCheckpoint:
    """A file's flat ``{name: tensor}`` in its own key scheme, and how it was read."""

    tensors: dict[str, torch.Tensor]
    #: ``safetensors``, ``torch`` or ``caffe2``
    format: str
    #: ``safetensors``, ``torch_zip``, ``torch_legacy`` or ``caffe2``
    container: str
    #: Caffe2 solver blobs (momentum, lr, iteration) that were dropped
    skipped: list[str] = field(default_factory=list)


# --- sniffing ----------------------------------------------------------------------------------------------------
def _is_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n < 100_000_000 and head[8:9] == b"{"


def sniff_format(path: str | os.PathLike[str]) -> str:
    """The container of a file: ``safetensors``, ``torch_zip``, ``torch_legacy`` or ``caffe2``."""
    with open(path, "rb") as f:
        return _sniff(Path(path), f.read(16))


def _sniff(path: Path, head: bytes) -> str:
    if _is_safetensors(head):
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "torch_zip"
    if head.startswith(_LEGACY_HEAD):
        return "torch_legacy"
    if head[:1] == b"\x80" or (head[:1] and head[:1] in _OLD_PICKLE_STARTS):
        return "caffe2"
    kind = "a gzip stream (an archive, not a checkpoint); " if head.startswith(b"\x1f\x8b") else ""
    raise CheckpointError(
        f"{path}: unknown checkpoint format ({kind}expected safetensors, a PyTorch .pyth/.pth or a Caffe2 .pkl; "
        f"file starts with {head[:8]!r})"
    )


def _with_reason(path: Path, what: str, fn: Any) -> Any:
    """Run a reader; any failure on the file's bytes becomes a CheckpointError naming the file and the reason."""
    try:
        return fn()
    except CheckpointError:
        raise
    # the bytes are hostile: whatever a reader raises on them (LookupError, AttributeError, SafetensorError,
    # MemoryError, RecursionError, zipfile.BadZipFile, ...) is a bad file, not a bug to propagate
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        kind = "" if isinstance(e, RefusedPickle) else f"{type(e).__name__}: "
        raise CheckpointError(f"{path}: {what} ({kind}{first})") from e


def _array_tensor(name: str, value: Any) -> torch.Tensor:
    """A Caffe2 blob as a tensor sharing its memory, refused unless its bytes are really in the file."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiub" or value.dtype.fields is not None:
        kind = f"{value.dtype} array" if isinstance(value, np.ndarray) else type(value).__name__
        raise CheckpointError(f"entry {name!r} is {kind}, not a tensor/array")
    base = value
    while isinstance(base.base, np.ndarray):
        base = base.base
    backing = base.nbytes if base.base is None else memoryview(base.base).nbytes
    if value.nbytes > backing or any(s <= 0 for s, n in zip(value.strides, value.shape) if n > 1):
        raise CheckpointError(
            f"entry {name!r}: shape {value.shape} declares {value.nbytes} bytes over a buffer of {backing} bytes "
            f"(strides {value.strides})"
        )
    return torch.from_numpy(np.ascontiguousarray(value))  # contiguous: no copy; otherwise at most its own bytes


# --- torch files and safetensors ----------------------------------------------------------------------------------
def _check_extent(name: str, t: Any) -> torch.Tensor:
    """A tensor whose shape declares more bytes than its storage holds (an ``expand``ed view) is refused."""
    if not isinstance(t, torch.Tensor):
        raise CheckpointError(f"entry {name!r} is {type(t).__name__}, not a tensor/array")
    size = t.element_size()
    declared = t.numel() * size
    storage = t.untyped_storage().nbytes()
    if t.numel() and (declared > storage or any(s < 0 for s in t.stride())):
        raise CheckpointError(
            f"entry {name!r}: shape {tuple(t.shape)} with strides {t.stride()} declares {declared} bytes "
            f"over a storage of {storage} bytes"
        )
    return t


def _torch_load(path: Path, container: str, buf: Buffer, data: bytes | None, stream: Any) -> Any:
    if container == "torch_legacy":  # legacy files cannot be mapped: torch reads their storages into memory
        check_legacy_storages(buf, stream)
    # from a path, zip files are mapped: the tensors are copy-on-write views of the file, nothing is read twice
    source = io.BytesIO(data) if data is not None else path
    try:
        return torch.load(source, map_location="cpu", weights_only=True, mmap=data is None and container == "torch_zip")
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        why = next((line for line in lines if "GLOBAL" in line.upper().split()), lines[0] if lines else "")
        raise CheckpointError(f"{path}: refused by torch.load(weights_only=True): {why}") from e


def _read_safetensors(path: Path, data: bytes | None) -> dict[str, torch.Tensor]:
    if data is not None:
        from safetensors.torch import load

        return load(bytes(data))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)


def _state_of(obj: Any) -> Any:
    if isinstance(obj, dict):
        for key in ("model_state", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                return obj[key]
    return obj


def read_checkpoint(path: str | os.PathLike[str], data: bytes | None = None) -> RawCheckpoint:
    """Read any supported checkpoint into a flat ``{name: tensor}`` in its original key scheme.

    With ``data`` (the file's bytes, e.g. the very bytes whose sha256 was just checked) nothing is read from
    ``path``, which only names the file in messages.
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        if data is not None:
            return _read(path, data, data)
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return _read(path, b"", None)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                return _read(path, m, None, f)
    except CheckpointError as e:
        note = damaged_upstream_note(path)
        if note:
            raise CheckpointError(f"{e}\n  {note}") from e
        raise


def _read(path: Path, buf: Buffer, data: bytes | None, stream: Any = None) -> RawCheckpoint:
    container = _sniff(path, bytes(buf[:16]))
    if container == "safetensors":
        obj = _with_reason(path, "corrupt or truncated safetensors file", lambda: _read_safetensors(path, data))
        return _finish(path, obj, container, [])
    if container != "caffe2":
        return _read_torch(path, container, buf, data, stream)
    obj = _with_reason(path, "not a readable checkpoint pickle", lambda: restricted_load(buf, stream))
    if obj == TORCH_LEGACY_MAGIC:  # a legacy torch.save written with another pickle protocol
        return _read_torch(path, "torch_legacy", buf, data, stream)
    blobs = obj.get("blobs") if isinstance(obj, dict) else None
    if blobs is None:
        raise CheckpointError(f"{path}: a pickle, but neither a Caffe2 {{'blobs': ...}} dict nor a PyTorch checkpoint")
    if not isinstance(blobs, dict):
        raise CheckpointError(f"{path}: 'blobs' is {type(blobs).__name__}, expected a dict of arrays")
    skipped = sorted(str(k) for k in blobs if is_solver_blob(str(k)))
    return _finish(path, {k: v for k, v in blobs.items() if not is_solver_blob(str(k))}, container, skipped)


def _read_torch(path: Path, container: str, buf: Buffer, data: bytes | None, stream: Any = None) -> RawCheckpoint:
    if container == "torch_zip" and not zipfile.is_zipfile(io.BytesIO(data) if data is not None else path):
        raise CheckpointError(f"{path}: truncated or corrupt PyTorch zip checkpoint (no zip directory)")
    what = "truncated or corrupt PyTorch checkpoint"
    obj = _with_reason(path, what, lambda: _state_of(_torch_load(path, container, buf, data, stream)))
    return _finish(path, obj, container, [])


def _finish(path: Path, obj: Any, container: str, skipped: list[str]) -> RawCheckpoint:
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: no state dict found (expected 'model_state' or a dict of tensors)")
    convert = _array_tensor if container == "caffe2" else _check_extent
    try:
        sd = {str(k): convert(str(k), v) for k, v in obj.items()}
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if all(k.startswith("module.") for k in sd):  # saved from a DistributedDataParallel wrapper
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return RawCheckpoint(sd, REPORTED[container], container, skipped)


def read_state_dict(
    path: str | os.PathLike[str], data: bytes | None = None
) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Read any supported checkpoint into a flat ``{name: tensor}`` in its original key scheme.

    Returns the state dict, the file format (``safetensors``, ``torch``, ``caffe2``) and the Caffe2 solver blobs
    that were dropped. ``data``: see :func:`read_checkpoint`.
    """
    raw = read_checkpoint(path, data)
    return raw.tensors, raw.format, raw.skipped

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

import codecs
import collections
import math
import mmap
import os
import pickle
import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .keys import is_solver_blob

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


class CheckpointError(ValueError):
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
    #: whether the tensors are private copies (False: views of a memory-mapped file, copy before keeping them)
    owned: bool = True


# --- sniffing ----------------------------------------------------------------------------------------------------
def _is_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n < 100_000_000 and head[8:9] == b"{"


def sniff_format(path: str | os.PathLike[str]) -> str:
    """The container of a file: ``safetensors``, ``torch_zip``, ``torch_legacy`` or ``caffe2``."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
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
        kind = "" if isinstance(e, _Refused) else f"{type(e).__name__}: "
        raise CheckpointError(f"{path}: {what} ({kind}{first})") from e


# --- pickles -----------------------------------------------------------------------------------------------------
def _scan_pickle(buf: mmap.mmap, start: int = 0) -> int:
    """Walk one pickle's opcodes; refuse any length field larger than the bytes left. Returns where it ends.

    Python's unpickler allocates a length-prefixed string before reading it, so 15 bytes could ask for 64 GiB.
    """
    pos, end = start, len(buf)
    while pos < end:
        code = pickletools.code2op.get(chr(buf[pos]))
        if code is None:
            raise pickle.UnpicklingError(f"invalid pickle opcode {buf[pos]:#04x} at byte {pos}")
        pos += 1
        arg = code.arg
        if arg is None:
            pass
        elif arg.n >= 0:
            pos += arg.n
        elif arg.n == pickletools.UP_TO_NEWLINE:
            for _ in range(2 if arg.name.endswith("_pair") else 1):
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    raise pickle.UnpicklingError(f"unterminated {code.name} argument at byte {pos}")
                pos = nl + 1
        else:
            width = {-2: 1, -3: 4, -4: 4, -5: 8}[arg.n]
            n = int.from_bytes(buf[pos : pos + width], "little", signed=arg.n == -3)
            pos += width
            if n < 0 or n > end - pos:
                raise pickle.UnpicklingError(
                    f"{code.name} at byte {pos - width - 1} declares {n} bytes, but the file has {end - pos} left"
                )
            pos += n
        if code.name == "STOP":
            return pos
    raise pickle.UnpicklingError("truncated pickle (no STOP opcode)")


class _Refused(pickle.UnpicklingError):
    pass


def _checked_ndarray(shape: Any, dtype: Any = None, buffer: Any = None, offset: int = 0, strides: Any = None) -> Any:
    """``numpy.ndarray(...)`` over bytes from the file, refused when its shape declares more bytes than they hold."""
    if buffer is None:
        raise _Refused("refusing numpy.ndarray without a buffer: its data would not come from the file")
    dims = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    dt = np.dtype(dtype)
    declared = math.prod(int(n) for n in dims) * dt.itemsize
    available = memoryview(buffer).nbytes - int(offset)
    if declared > available or any(int(s) <= 0 for s in (strides or ())):
        raise _Refused(
            f"refusing an array of shape {dims} that declares {declared} bytes over a buffer of {available} bytes "
            f"(strides {strides}: zero, negative or overlapping strides would expand it)"
        )
    return np.ndarray(dims, dt, buffer, int(offset), strides)


def _restricted_globals() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray  # numpy >= 2; released Caffe2 files name numpy.core.multiarray

    def reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:  # what ndarray.__reduce__ writes, nothing else
        if subtype not in (_checked_ndarray, np.ndarray) or tuple(shape) != (0,):
            raise _Refused(f"refusing _reconstruct({subtype!r}, {shape!r}): not an ndarray's own pickle")
        return multiarray._reconstruct(np.ndarray, (0,), dtype)

    def latin1(text: Any, encoding: str = "latin1") -> bytes:  # how Python 3 writes protocol-2 bytes
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise _Refused(f"refusing _codecs.encode(..., {encoding!r}): only latin1 text becomes bytes")
        return codecs.encode(text, "latin1")

    def frombuffer(buffer: Any, dtype: Any, shape: Any, order: str) -> Any:  # protocol 5 (out-of-band capable)
        if not isinstance(buffer, (bytes, bytearray)) or order not in ("C", "F"):
            raise _Refused("refusing numpy _frombuffer over anything but bytes from the file")
        return np.frombuffer(buffer, np.dtype(dtype)).reshape(tuple(shape), order=order)  # same byte count

    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _checked_ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(module, "_frombuffer")] = frombuffer
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = reconstruct
        table[(module, "scalar")] = multiarray.scalar
    table[("collections", "OrderedDict")] = collections.OrderedDict
    table[("_codecs", "encode")] = latin1
    return table


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds numpy arrays, dtypes and plain containers; any other global is refused before it is imported."""

    _allowed = _restricted_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Refused(
                f"refusing to load global {module}.{name}: only numpy arrays and plain containers are allowed"
            ) from None


def _unpickle(path: Path) -> Any:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise EOFError("empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            _scan_pickle(m)  # every length field fits the file: what the unpickler allocates is bounded by it
        return _RestrictedUnpickler(f, encoding="latin1").load()


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


#: bytes per element of the storage classes a legacy ``torch.save`` names
_STORAGE_BYTES = {
    **dict.fromkeys(("ByteStorage", "CharStorage", "BoolStorage", "QUInt8Storage", "QInt8Storage"), 1),
    **dict.fromkeys(("ShortStorage", "HalfStorage", "BFloat16Storage"), 2),
    **dict.fromkeys(("IntStorage", "FloatStorage", "QInt32Storage"), 4),
    **dict.fromkeys(("LongStorage", "DoubleStorage", "ComplexFloatStorage"), 8),
    "ComplexDoubleStorage": 16,
}


class _Global:
    """A global named by a pickle, never imported: calling it builds nothing."""

    def __init__(self, module: str, name: str) -> None:
        self.name = f"{module}.{name}"

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()


class _Inert(dict):  # type: ignore[type-arg]
    """What a census call returns: accepts items, appends and state, and holds nothing."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class _StorageCensus(pickle.Unpickler):
    """Reads a legacy ``torch.save`` pickle only to list the storages it declares; imports and runs nothing."""

    def __init__(self, f: Any) -> None:
        super().__init__(f, encoding="latin1")
        self.storages: dict[str, int] = {}

    def find_class(self, module: str, name: str) -> Any:
        return _Global(module, name)

    def persistent_load(self, pid: Any) -> None:
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            kind = pid[1].name.rsplit(".", 1)[-1] if isinstance(pid[1], _Global) else str(pid[1])
            self.storages[str(pid[2])] = int(pid[4]) * _STORAGE_BYTES.get(kind, 16)
        return None


def _check_legacy_storages(path: Path) -> None:
    """Refuse a legacy file whose pickle declares more storage bytes than the file holds (torch allocates first)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        pos = 0
        for _ in range(3):  # magic number, protocol version, system info
            pos = _scan_pickle(m, pos)
        _scan_pickle(m, pos)
        f.seek(pos)
        census = _StorageCensus(f)
        census.load()
        declared, size = sum(census.storages.values()), len(m)
    if declared > size:
        raise CheckpointError(
            f"{path}: its pickle declares {len(census.storages)} storage(s) of {declared} bytes in all, "
            f"but the file holds {size} bytes: truncated or crafted"
        )


def _torch_load(path: Path, container: str) -> Any:
    mm = container == "torch_zip"  # legacy files cannot be mapped: torch reads their storages into memory
    if not mm:
        _check_legacy_storages(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mm)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused by torch.load(weights_only=True): {str(e).splitlines()[0]}") from e


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)


def _state_of(obj: Any) -> Any:
    if isinstance(obj, dict):
        for key in ("model_state", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                return obj[key]
    return obj


def read_checkpoint(path: str | os.PathLike[str]) -> RawCheckpoint:
    """Read any supported checkpoint into a flat ``{name: tensor}`` in its original key scheme."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return _read(path)
    except CheckpointError as e:
        note = damaged_upstream_note(path)
        if note:
            raise CheckpointError(f"{e}\n  {note}") from e
        raise


def _read(path: Path) -> RawCheckpoint:
    container = sniff_format(path)
    skipped: list[str] = []
    if container == "safetensors":
        obj = _with_reason(path, "corrupt or truncated safetensors file", lambda: _read_safetensors(path))
    elif container == "caffe2":
        obj = _with_reason(path, "not a readable checkpoint pickle", lambda: _unpickle(path))
        if obj == TORCH_LEGACY_MAGIC:  # a legacy torch.save written with another pickle protocol
            return _read_torch(path, "torch_legacy")
        blobs = obj.get("blobs") if isinstance(obj, dict) else None
        if blobs is None:
            raise CheckpointError(
                f"{path}: a pickle, but neither a Caffe2 {{'blobs': ...}} dict nor a PyTorch checkpoint"
            )
        if not isinstance(blobs, dict):
            raise CheckpointError(f"{path}: 'blobs' is {type(blobs).__name__}, expected a dict of arrays")
        skipped = sorted(str(k) for k in blobs if is_solver_blob(str(k)))
        obj = {k: v for k, v in blobs.items() if not is_solver_blob(str(k))}
    else:
        return _read_torch(path, container)
    return _finish(path, obj, container, skipped)


def _read_torch(path: Path, container: str) -> RawCheckpoint:
    if container == "torch_zip" and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: truncated or corrupt PyTorch zip checkpoint (no zip directory)")
    what = "truncated or corrupt PyTorch checkpoint"
    return _finish(path, _with_reason(path, what, lambda: _state_of(_torch_load(path, container))), container, [])


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
    return RawCheckpoint(sd, REPORTED[container], container, skipped, owned=container != "torch_zip")


def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Read any supported checkpoint into a flat ``{name: tensor}`` in its original key scheme.

    Returns the state dict, the file format (``safetensors``, ``torch``, ``caffe2``) and the Caffe2 solver blobs
    that were dropped.
    """
    raw = read_checkpoint(path)
    return raw.tensors, raw.format, raw.skipped

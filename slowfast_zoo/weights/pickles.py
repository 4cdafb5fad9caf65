"""Pickles from outside, read safely: length fields checked before allocating, globals restricted, nothing run.

Used by :mod:`slowfast_zoo.weights.formats` for Caffe2 ``.pkl`` files and to bound legacy ``torch.save`` files
before ``torch.load`` reads them. Everything here raises :class:`RefusedPickle` (an ``UnpicklingError``).
"""

from __future__ import annotations

import codecs
import collections
import io
import math
import mmap
import pickle
import pickletools
from typing import Any, Literal

import numpy as np

from ..errors import SlowFastZooError

__all__ = ["Buffer", "RefusedPickle", "check_legacy_storages", "restricted_load", "scan_pickle"]

#: what the readers work on: a file's bytes, or a read-only map of it
Buffer = bytes | mmap.mmap


# --- opcode scan and restricted unpickler ---------------------------------------------------------------------------
_OPCODES = {op.code: op for op in pickletools.opcodes}  # pickletools.code2op, which typeshed does not declare


def scan_pickle(buf: Buffer, start: int = 0) -> int:
    """Walk one pickle's opcodes; refuse any length field larger than the bytes left. Returns where it ends.

    Python's unpickler allocates a length-prefixed string before reading it, so 15 bytes could ask for 64 GiB.
    """
    pos, end = start, len(buf)
    while pos < end:
        code = _OPCODES.get(chr(buf[pos]))
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


class RefusedPickle(SlowFastZooError, pickle.UnpicklingError):
    """A pickle asks for something a checkpoint never needs (a global, an allocation beyond its bytes)."""


def _checked_ndarray(shape: Any, dtype: Any = None, buffer: Any = None, offset: int = 0, strides: Any = None) -> Any:
    """``numpy.ndarray(...)`` over bytes from the file, refused when its shape declares more bytes than they hold."""
    if buffer is None:
        raise RefusedPickle("refusing numpy.ndarray without a buffer: its data would not come from the file")
    dims = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    dt = np.dtype(dtype)
    declared = math.prod(int(n) for n in dims) * dt.itemsize
    available = memoryview(buffer).nbytes - int(offset)
    if declared > available or any(int(s) <= 0 for s in (strides or ())):
        raise RefusedPickle(
            f"refusing an array of shape {dims} that declares {declared} bytes over a buffer of {available} bytes "
            f"(strides {strides}: zero, negative or overlapping strides would expand it)"
        )
    return np.ndarray(dims, dt, buffer, int(offset), strides)


def _restricted_globals() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray  # numpy >= 2; released Caffe2 files name numpy.core.multiarray

    def reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:  # what ndarray.__reduce__ writes, nothing else
        if subtype not in (_checked_ndarray, np.ndarray) or tuple(shape) != (0,):
            raise RefusedPickle(f"refusing _reconstruct({subtype!r}, {shape!r}): not an ndarray's own pickle")
        return multiarray._reconstruct(np.ndarray, (0,), dtype)

    def latin1(text: Any, encoding: str = "latin1") -> bytes:  # how Python 3 writes protocol-2 bytes
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise RefusedPickle(f"refusing _codecs.encode(..., {encoding!r}): only latin1 text becomes bytes")
        return codecs.encode(text, "latin1")

    def frombuffer(buffer: Any, dtype: Any, shape: Any, order: str) -> Any:  # protocol 5 (out-of-band capable)
        if not isinstance(buffer, (bytes, bytearray)) or order not in ("C", "F"):
            raise RefusedPickle("refusing numpy _frombuffer over anything but bytes from the file")
        layout: Literal["C", "F"] = "C" if order == "C" else "F"
        return np.frombuffer(buffer, np.dtype(dtype)).reshape(tuple(shape), order=layout)  # same byte count

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
            raise RefusedPickle(
                f"refusing to load global {module}.{name}: only numpy arrays and plain containers are allowed"
            ) from None


def _stream(buf: Buffer, stream: Any = None) -> Any:
    """A file object over the same bytes as ``buf``, at its start (bytes are wrapped without a copy).

    Reading a map would count every page of the file in the process's memory; the open file it maps does not.
    """
    if stream is None:
        stream = buf if isinstance(buf, mmap.mmap) else io.BytesIO(buf)
    stream.seek(0)
    return stream


def restricted_load(buf: Buffer, stream: Any = None) -> Any:
    """The first object of a pickle held in ``buf`` (bytes or an mmap), built by a restricted unpickler.

    ``stream``: the open file ``buf`` maps, to read from instead of the map.

    :func:`scan_pickle` runs first, so what the unpickler allocates is bounded by ``len(buf)``.
    """
    if len(buf) == 0:
        raise EOFError("empty file")
    scan_pickle(buf)
    return _RestrictedUnpickler(_stream(buf, stream), encoding="latin1").load()


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


def check_legacy_storages(buf: Buffer, stream: Any = None) -> None:
    """Refuse a legacy ``torch.save`` stream whose pickle declares more storage bytes than ``buf`` holds
    (torch allocates each declared storage before reading it)."""
    pos = 0
    for _ in range(3):  # magic number, protocol version, system info
        pos = scan_pickle(buf, pos)
    scan_pickle(buf, pos)
    f = _stream(buf, stream)
    f.seek(pos)
    census = _StorageCensus(f)
    census.load()
    declared = sum(census.storages.values())
    if declared > len(buf):
        raise RefusedPickle(
            f"its pickle declares {len(census.storages)} storage(s) of {declared} bytes in all, "
            f"but the file holds {len(buf)} bytes: truncated or crafted"
        )

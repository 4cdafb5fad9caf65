"""Crafted files: tiny ones that ask for gigabytes fail fast under a memory cap, and every failure on a file's
bytes is a CheckpointError naming the file and the reason."""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from capped import run_capped

import slowfast_zoo
from slowfast_zoo import CheckpointError
from slowfast_zoo.weights.checkpoint import read_state_dict

STEM = "s1.pathway0_stem.conv.weight"  # a key every loader recognises, so the file gets past key detection


class _StrideZero:
    """Pickles as ``numpy.ndarray((n,), float32, 4 bytes, 0, (0,))``: n floats viewing one (a stride-0 array)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self):
        return (np.ndarray, ((self.n,), np.dtype("f4"), b"\0" * 4, 0, (0,)))


def _caffe2_stride0(n: int) -> bytes:
    return pickletools.optimize(pickle.dumps({"blobs": {"conv1_w": _StrideZero(n)}}, protocol=2))


def _torch_expand(dtype: torch.dtype, *, legacy: bool) -> bytes:
    buf = io.BytesIO()
    torch.save(
        {"model_state": {STEM: torch.zeros(1, dtype=dtype).expand(2**28)}},
        buf,
        _use_new_zipfile_serialization=not legacy,
    )
    return buf.getvalue()


def _legacy_declaring(nbytes_as_floats: int) -> bytes:
    """A legacy torch.save file whose pickle declares a FloatStorage of that many elements; it holds one float."""
    data = bytearray(_torch_expand(torch.float32, legacy=True))
    tag = b"X\x03\x00\x00\x00cpuq\x08K\x01"  # location 'cpu', then the storage's element count (BININT1 1)
    at = data.index(tag) + len(tag) - 2
    data[at : at + 2] = b"J" + struct.pack("<i", nbytes_as_floats)
    return bytes(data)


HOSTILE = {
    # name: (bytes, what the reason must say)
    "caffe2_stride0_2GiB.pkl": (lambda: _caffe2_stride0(2**29), "declares 2147483648 bytes over a buffer of 4 bytes"),
    "caffe2_stride0_4GiB.pkl": (lambda: _caffe2_stride0(2**30), "declares 4294967296 bytes over a buffer of 4 bytes"),
    "caffe2_stride0_4TiB.pkl": (lambda: _caffe2_stride0(2**40), "declares 4398046511104 bytes over a buffer of 4"),
    # a 15-byte pickle whose BINBYTES8 length makes Python's unpickler allocate 64 GiB before reading
    "pickle_bytes8_64GiB.pkl": (
        lambda: b"\x80\x04\x8e" + struct.pack("<Q", 2**36) + b"abc.",
        "BINBYTES8 at byte 2 declares 68719476736 bytes, but the file has 4 left",
    ),
    "torch_zip_expand_f32.pt": (lambda: _torch_expand(torch.float32, legacy=False), "declares 1073741824 bytes"),
    "torch_zip_expand_f64.pt": (lambda: _torch_expand(torch.float64, legacy=False), "declares 2147483648 bytes"),
    "torch_legacy_expand.pt": (lambda: _torch_expand(torch.float32, legacy=True), "declares 1073741824 bytes"),
    "torch_legacy_storage_4GiB.pt": (lambda: _legacy_declaring(2**30), "declares 1 storage\\(s\\) of 4294967296 bytes"),
}

_CAPPED = r"""
out = []
for path in sys.argv[1:]:
    for entry in ("read_state_dict", "create"):
        start = time.perf_counter()
        try:
            if entry == "read_state_dict":
                read_state_dict(path)
            else:
                slowfast_zoo.create("slow_r50_8x8", width=8, num_classes=10, checkpoint=path)
            error, message = None, ""
        except BaseException as e:
            error, message = type(e).__name__, str(e)
        out.append(dict(path=path, entry=entry, error=error, message=message, seconds=time.perf_counter() - start))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def capped_results(tmp_path_factory) -> dict[tuple[str, str], dict]:
    """Every hostile file through read_state_dict and create(checkpoint=), in one subprocess under RLIMIT_AS."""
    folder = tmp_path_factory.mktemp("hostile")
    paths = []
    for name, (make, _) in HOSTILE.items():
        (folder / name).write_bytes(make())
        paths.append(str(folder / name))
    # 768 MiB more address space than the imports take: less than any file asks
    imports = "from slowfast_zoo.weights.checkpoint import read_state_dict"
    results = run_capped(_CAPPED, paths, headroom_mib=768, imports=imports)
    return {(Path(r["path"]).name, r["entry"]): r for r in results}


def test_hostile_files_are_tiny() -> None:
    sizes = {name: len(make()) for name, (make, _) in HOSTILE.items()}
    assert max(sizes.values()) < 2000, sizes


@pytest.mark.parametrize("entry", ["read_state_dict", "create"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_fails_fast_under_a_memory_cap(capped_results, name: str, entry: str) -> None:
    result = capped_results[(name, entry)]
    assert result["error"] == "CheckpointError", result
    assert name in result["message"]
    assert __import__("re").search(HOSTILE[name][1], result["message"]), result["message"]
    assert result["seconds"] < 5.0, result


def _crafted() -> dict[str, bytes]:
    """Files that make a reader raise something other than CheckpointError unless it is wrapped."""
    files = {
        # _codecs.encode with an unknown codec: LookupError
        "lookup.pkl": b"\x80\x02}X\x05\x00\x00\x00blobs}X\x07\x00\x00\x00conv1_wc_codecs\nencode\n"
        b"X\x01\x00\x00\x00xX\x08\x00\x00\x00no-codec\x86Rss.",
        # BUILD on an int: AttributeError
        "attribute.pkl": b"\x80\x02}X\x05\x00\x00\x00blobs}X\x07\x00\x00\x00conv1_wK\x01}bss.",
        # ends inside the dict: EOFError / truncated
        "eof.pkl": b"\x80\x02}X\x05\x00\x00\x00blobs}",
        # a memo slot never written
        "memo.pkl": b"\x80\x02h\x05.",
        # protocol 0 text with an invalid escape: UnicodeDecodeError
        "unicode.pkl": b"(dp0\nVblobs\np1\n(dp2\nVconv1_w\np3\nV\\xZZ\np4\nss.",
        # a dtype numpy does not know: TypeError
        "dtype.pkl": b"\x80\x02}X\x05\x00\x00\x00blobs}X\x07\x00\x00\x00conv1_w"
        b"cnumpy\ndtype\nX\x03\x00\x00\x00zz9\x85Rss.",
    }
    for name, header in {
        "shape.safetensors": {"w": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 4]}},
        "dtype.safetensors": {"w": {"dtype": "XX", "shape": [1], "data_offsets": [0, 4]}},
    }.items():
        raw = json.dumps(header).encode()
        files[name] = struct.pack("<Q", len(raw)) + raw + b"\0" * 4
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/other.txt", "not a checkpoint")
    files["zip_without_data.pt"] = buf.getvalue()
    return files


@pytest.mark.parametrize("name", sorted(_crafted()))
def test_every_failure_on_crafted_bytes_is_a_checkpoint_error(tmp_path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(_crafted()[name])
    with pytest.raises(CheckpointError, match=rf"^{path}: "):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match=rf"^{path}: "):
        slowfast_zoo.create("slow_r50_8x8", width=8, num_classes=10, checkpoint=path)

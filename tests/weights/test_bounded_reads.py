"""Reads bounded by the file's size: compressed zip members (torch checkpoints, npz feature shards), npy headers that
declare more than their bytes, and configs that are too large or nested too deep. The bombs run in a subprocess
under a memory cap; each must fail with a clear error naming the file."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from capped import run_capped

import slowfast_zoo
from slowfast_zoo import CheckpointError
from slowfast_zoo.weights.formats import read_config, read_npz

INFLATED = 768 << 20  # what each bomb inflates to: more than the cap below allows


def _deflate(members: dict[str, bytes | int]) -> bytes:
    """A zip whose members are deflated; an int is that many zero bytes, streamed (never held in memory)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, data in members.items():
            with z.open(name, "w", force_zip64=True) as f:
                if isinstance(data, int):
                    chunk = bytes(1 << 20)
                    for _ in range(data >> 20):
                        f.write(chunk)
                else:
                    f.write(data)
    return buf.getvalue()


def _torch_zip_bomb() -> bytes:
    """A torch.save zip whose data.pkl is deflated and inflates to INFLATED bytes (a pickle then zeros)."""
    buf = io.BytesIO()
    torch.save({"s1.pathway0_stem.conv.weight": torch.zeros(1)}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        members: dict[str, bytes | int] = {i.filename: z.read(i) for i in z.infolist()}
    pkl = next(n for n in members if n.endswith("data.pkl"))
    members[pkl] = INFLATED
    return _deflate(members)


def _deflate_npy(header: bytes) -> bytes:
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z,
        z.open("embeddings.npy", "w", force_zip64=True) as f,
    ):
        f.write(header)
        chunk = bytes(1 << 20)
        for _ in range(INFLATED >> 20):
            f.write(chunk)
    return buf.getvalue()


_CAPPED = r"""
zip_bomb, npz_dir, local_dir = sys.argv[1:]
calls = {
    "torch_zip": lambda: slowfast_zoo.create("slow_r50_8x8", width=8, num_classes=10, checkpoint=zip_bomb),
    "npz": lambda: load_features(npz_dir),
    "config": lambda: slowfast_zoo.create("local-dir:" + local_dir),
}
out = {}
for name, call in calls.items():
    try:
        call()
        out[name] = (None, "")
    except BaseException as e:
        out[name] = (type(e).__name__, str(e))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def capped(tmp_path_factory) -> dict[str, tuple[str | None, str]]:
    folder = tmp_path_factory.mktemp("bombs")
    zip_bomb = folder / "bomb.pt"
    zip_bomb.write_bytes(_torch_zip_bomb())
    npz_dir = folder / "features"
    npz_dir.mkdir()
    (npz_dir / "features-00000-of-00001.npz").write_bytes(_deflate_npy(_npy_header(INFLATED // 4)))
    local = folder / "local"
    local.mkdir()
    (local / "model.safetensors").write_bytes(b"\0" * 16)
    with open(local / "config.json", "wb") as f:  # 1.5 GiB, sparse: it takes no disk
        f.truncate(3 << 29)
    assert max(p.stat().st_size for p in (zip_bomb, *npz_dir.iterdir())) < 4 << 20
    # 384 MiB more address space than the imports take: half of what a bomb asks
    imports = "from slowfast_zoo.tasks.features import load_features"
    out = run_capped(_CAPPED, [str(zip_bomb), str(npz_dir), str(local)], headroom_mib=384, imports=imports)
    return {"paths": {"torch_zip": str(zip_bomb), "npz": str(npz_dir), "config": str(local / "config.json")}, **out}


def _npy_header(n: int) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
    return header.getvalue()


@pytest.mark.parametrize(
    "name, error, reason",
    [
        ("torch_zip", "CheckpointError", "compressed member"),
        ("npz", "CheckpointError", "compressed member"),
        ("config", "ValueError", "more than the 16777216 bytes allowed"),
    ],
)
def test_bombs_fail_clearly_under_a_memory_cap(capped, name: str, error: str, reason: str) -> None:
    kind, message = capped[name]
    assert kind == error and reason in message, (kind, message[:500])
    assert Path(capped["paths"][name]).name in message or "features-00000-of-00001.npz" in message


def test_a_deflated_torch_checkpoint_is_refused(tmp_path) -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    path = tmp_path / "deflated.pt"
    path.write_bytes(_deflate(members))
    with pytest.raises(CheckpointError, match=rf"^{path}: PyTorch zip checkpoint with compressed member"):
        slowfast_zoo.create("slow_r50_8x8", width=8, num_classes=10, checkpoint=path)


def test_read_npz_reads_what_np_savez_writes(tmp_path) -> None:
    arrays = {"embeddings": np.arange(12, dtype=np.float32).reshape(3, 4), "paths": np.array(["a", "bé"])}
    arrays["metadata"] = np.array(json.dumps({"k": 1}))
    arrays["fortran"] = np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3))
    np.savez(tmp_path / "x.npz", **arrays)
    back = read_npz(tmp_path / "x.npz")
    assert back.keys() == arrays.keys()
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: np.savez_compressed(p, a=np.zeros(10)), "compressed member"),
        (lambda p: np.savez(p, a=np.array([{"x": 1}], dtype=object)), "Python objects"),
        (lambda p: p.write_bytes(b"PK\x03\x04" + bytes(10)), "truncated or corrupt"),
    ],
)
def test_read_npz_refuses_what_np_load_would_inflate_or_unpickle(tmp_path, make, reason) -> None:
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(CheckpointError, match=rf"^{path}: " + (f".*{reason}" if reason else "")):
        read_npz(path)


def test_read_npz_refuses_a_header_declaring_more_than_its_bytes(tmp_path) -> None:
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as z:  # stored, as np.savez writes, but the header asks for 4 GiB
        z.writestr("embeddings.npy", _npy_header(1 << 30) + bytes(16))
    with pytest.raises(CheckpointError, match=r"declares 4294967296 bytes, but the member holds 16"):
        read_npz(path)


def test_a_deeply_nested_config_is_a_clear_error(tmp_path) -> None:
    folder = tmp_path / "deep"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=rf"^{folder / 'config.json'}: not a slowfast_zoo config \(JSON nested"):
        slowfast_zoo.create(f"local-dir:{folder}")
    shallow_enough_to_parse = {"pretrained_cfg": {"metrics": [[[]]]}}
    for _ in range(40):
        shallow_enough_to_parse = {"x": shallow_enough_to_parse}
    (folder / "config.json").write_text(json.dumps(shallow_enough_to_parse))
    with pytest.raises(ValueError, match=r"nested more than 32 levels"):
        read_config(folder / "config.json")


def test_a_fifo_config_is_refused_not_waited_on(tmp_path) -> None:
    # opening a FIFO with no writer blocks in open() itself, before any check can run: the file is opened
    # non-blocking, then refused as not a regular file (the read runs in a thread so that a regression fails here)
    import os
    import threading

    folder = tmp_path / "fifo"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    os.mkfifo(folder / "config.json")
    outcome: list[BaseException | None] = []
    done = threading.Event()

    def load() -> None:
        try:
            read_config(folder / "config.json")
            outcome.append(None)
        except BaseException as e:  # handed to the test thread
            outcome.append(e)
        done.set()

    threading.Thread(target=load, daemon=True).start()
    assert done.wait(60), "read_config blocked on a FIFO"
    assert isinstance(outcome[0], ValueError) and "not a regular file" in str(outcome[0])

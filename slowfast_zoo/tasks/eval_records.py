"""The files of a resumable evaluation: per-video JSON lines appended atomically, shard numbers, the final JSON."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..weights.cache import atomic_writer

__all__ = ["append_record", "float32_list", "parse_shard", "parts_dir", "read_records", "write_json_atomic"]

log = logging.getLogger(__name__)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"I/N"`` (0-based), else ``RANK``/``WORLD_SIZE`` from the environment (torchrun), else ``(0, 1)``."""
    if text:
        try:
            i, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard expects I/N (e.g. 0/4), got {text!r}") from None
    else:
        i, n = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: need 0 <= I < N")
    return i, n


def parts_dir(out: Path) -> Path:
    """``<out>.parts``: the folder of the per-shard record files."""
    return out.with_name(out.name + ".parts")


def read_records(path: Path, header: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Records of a shard file; a half-written last line (a killed run) is cut off; another run's file is refused."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("%s: dropping a half-written last record (interrupted run)", path)
        with open(path, "r+b") as f:
            f.truncate(end)
    out: dict[int, dict[str, Any]] = {}
    for lineno, line in enumerate(data[:end].splitlines(), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not a JSON record ({e}); delete the file to start over") from None
        if lineno == 1:
            if rec.get("header") != header:
                raise ValueError(
                    f"{path} was written by another evaluation ({rec.get('header')}); use another --out or delete it"
                )
            continue
        out[int(rec["i"])] = rec
    return out


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One whole line in one write, flushed to disk: a crash loses at most this record."""
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON all or nothing (the cache's fsync'ed temp-file-and-rename writer)."""
    with atomic_writer(path) as f:
        f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def float32_list(values: Iterable[float]) -> list[float]:
    """Scores as decimals of 9 significant digits, enough to give back the same float32 values."""
    return [float(f"{v:.9g}") for v in np.asarray(list(values), dtype=np.float32).tolist()]

"""The files of a resumable evaluation: per-video JSON lines appended atomically, shard numbers, the final JSON."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..weights.cache import atomic_writer, open_output

__all__ = [
    "append_record",
    "float32_list",
    "parse_shard",
    "parts_dir",
    "read_header",
    "read_records",
    "write_json_atomic",
]

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
    """Records of a shard file; a half-written last line (a killed run) is cut off; another run's file is refused.

    The file is opened once without following links and cut through that descriptor: a planted link is refused.
    """
    try:
        fd = open_output(path, os.O_RDWR)
    except FileNotFoundError:
        return {}
    with os.fdopen(fd, "r+b") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            log.warning("%s: dropping a half-written last record (interrupted run)", path)
            f.truncate(end)
    out: dict[int, dict[str, Any]] = {}
    for lineno, line in enumerate(data[:end].splitlines(), 1):
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"{path}:{lineno}: not a JSON record ({e}); delete the file to start over") from None
        if lineno == 1:
            if not isinstance(rec, dict) or rec.get("header") != header:
                theirs = rec.get("header") if isinstance(rec, dict) else rec
                raise ValueError(f"{path} was written by another evaluation ({theirs}); use another --out or delete it")
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("i"), int):
            raise ValueError(f"{path}:{lineno}: not a record of this evaluation; delete the file to start over")
        out[rec["i"]] = rec
    return out


def read_header(path: Path) -> dict[str, Any]:
    """The header (first line) of a shard file, read without following a link."""
    with os.fdopen(open_output(path, os.O_RDONLY), "rb") as f:
        first = f.readline(1 << 20)
    try:
        header = json.loads(first)["header"]
    except (json.JSONDecodeError, RecursionError, KeyError, TypeError):
        raise ValueError(f"{path}: no evaluation header on its first line; delete the file to start over") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: no evaluation header on its first line; delete the file to start over")
    return header


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One whole line in one write, flushed to disk: a crash loses at most this record. A link is refused."""
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
    fd = open_output(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
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

"""Annotation files read row by row with the ``csv`` module: one malformed row is skipped with its reason.

A file that cannot be used at all (missing, a folder, a FIFO, not JSON) raises :class:`AnnotationError` naming it;
a row that cannot be decoded, is longer than :data:`MAX_LINE_BYTES` or is not valid CSV is appended to the caller's
``skipped`` list as ``("file:line", reason)`` and the rest of the file is still read.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO, TypeVar

from ..errors import AnnotationError

__all__ = ["MAX_JSON_BYTES", "MAX_LINE_BYTES", "csv_rows", "load_json", "open_regular"]

#: a longer row is skipped (an annotation row is well under 1 KiB; a quoted field may span lines)
MAX_LINE_BYTES = 1 << 16
#: the largest JSON annotation file read (SSv2's validation list is about 3 MiB)
MAX_JSON_BYTES = 256 << 20


@contextlib.contextmanager
def open_regular(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a regular file for reading; a FIFO, device or folder is refused instead of hanging or failing later."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise AnnotationError(f"{path}: cannot open ({e.strerror or e})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise AnnotationError(f"{path}: not a regular file (expected an annotation file)")
    with os.fdopen(fd, "rb") as f:
        yield f


def csv_rows(path: str | os.PathLike[str], skipped: list[tuple[str, str]]) -> Iterator[tuple[str, list[str]]]:
    """``("file:line", fields)`` for each non-blank CSV row; unreadable rows go to ``skipped`` with the reason."""
    with open_regular(path) as f:
        lineno = 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            lineno += 1
            where = f"{path}:{lineno}"
            while raw.count(b'"') % 2 and len(raw) <= MAX_LINE_BYTES and (more := f.readline(MAX_LINE_BYTES + 1)):
                raw += more  # a quoted field that goes on over the next line
                lineno += 1
            if len(raw) > MAX_LINE_BYTES:
                while raw and not raw.endswith(b"\n"):  # drop the rest of the overlong line
                    raw = f.readline(MAX_LINE_BYTES + 1)
                skipped.append((where, f"row longer than {MAX_LINE_BYTES} bytes"))
                continue
            try:
                fields = next(csv.reader([raw.decode("utf-8-sig" if lineno == 1 else "utf-8")], strict=True), [])
            except (UnicodeDecodeError, csv.Error) as e:
                skipped.append((where, f"not a UTF-8 CSV row ({e})"))
                continue
            if any(x.strip() for x in fields):
                yield where, fields


_T = TypeVar("_T")


def load_json(path: str | os.PathLike[str], kind: type[_T]) -> _T:
    """A JSON annotation file holding a ``kind`` (list or dict): size and nesting bounded, errors name the file."""
    with open_regular(path) as f:
        data = f.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise AnnotationError(f"{path}: larger than {MAX_JSON_BYTES >> 20} MiB (expected an annotation JSON)")
    try:
        obj = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AnnotationError(f"{path}: not UTF-8 JSON ({e})") from None
    except RecursionError:
        raise AnnotationError(f"{path}: JSON nested too deeply") from None
    if not isinstance(obj, kind):
        raise AnnotationError(f"{path}: expected a JSON {kind.__name__}, got {type(obj).__name__}")
    return obj

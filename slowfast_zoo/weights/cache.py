"""Cache folders, settings read at call time, hashing, the one atomic writer, safe eviction and bounded locks.

Every file the zoo writes goes through :func:`atomic_writer`: a temporary ``*.incomplete`` file in the
destination folder, fsync'ed, given the permissions the umask allows (not mkstemp's 0600, so teammates on a
shared machine can read a shared cache), then renamed into place (a rename replaces a planted link, never writes
through it). A file appended to or truncated in place (evaluation records) is opened with :func:`open_output`:
``O_NOFOLLOW``, then an ``fstat`` regular-file check, and written through that one descriptor. Eviction never
follows a link out of the cache: links are unlinked themselves and only regular files whose real path lies under
the cache root are deleted.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from ..errors import UnsafeOutputError
from .errors import CacheWriteError, WeightsError

__all__ = [
    "ENV_ALLOW_CHANGED",
    "ENV_CACHE",
    "CacheCheck",
    "atomic_write",
    "atomic_writer",
    "deadline_seconds",
    "endpoint_url",
    "env_true",
    "evict",
    "git_blob_sha1",
    "hf_cache_dir",
    "is_offline",
    "is_write_error",
    "lock",
    "lock_timeout",
    "looks_like_safetensors",
    "open_output",
    "output_dir",
    "read_hashed",
    "read_regular",
    "remove_incomplete",
    "sha256_file",
    "timeout_seconds",
    "write_error",
    "zoo_cache_dir",
]

log = logging.getLogger(__name__)

ENV_CACHE = "SLOWFAST_ZOO_CACHE"
#: accept an origin file whose bytes differ from the first download of the same URL
ENV_ALLOW_CHANGED = "SLOWFAST_ZOO_ALLOW_CHANGED_ORIGIN"
DEFAULT_TIMEOUT = 10.0
#: an overall limit for one download: a server that trickles bytes cannot hold a download (and its lock) forever
DEFAULT_DEADLINE = 1800.0
CHUNK = 1 << 20
_TRUE = {"1", "ON", "YES", "TRUE"}


# --- settings, read at call time ---------------------------------------------------------------------------------
def env_true(name: str) -> bool:
    """Whether an environment variable says yes (1, on, yes, true)."""
    return os.environ.get(name, "").upper() in _TRUE


def _env_seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected a number of seconds") from None
    if not value > 0:
        raise ValueError(f"{name}={text!r}: expected a positive number of seconds")
    return value


def zoo_cache_dir() -> Path:
    """The zoo's own cache (converted origin weights, locks): ``$SLOWFAST_ZOO_CACHE`` or ``~/.cache/slowfast_zoo``."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base, "slowfast_zoo").expanduser()


def hf_cache_dir() -> str:
    """The Hugging Face hub cache as the environment says now (``HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.path.expanduser(os.environ[var])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def endpoint_url(endpoint: str | None = None) -> str:
    """The Hub endpoint: ``endpoint``, else ``$HF_ENDPOINT``, else huggingface.co."""
    from huggingface_hub import constants

    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def is_offline(local_files_only: bool | None = None) -> bool:
    """``local_files_only`` if given, else ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``."""
    if local_files_only is not None:
        return local_files_only
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or env_true("HF_HUB_OFFLINE") or env_true("TRANSFORMERS_OFFLINE")


def timeout_seconds(timeout: float | None = None) -> float:
    """Seconds to wait for a server to answer: ``timeout``, else ``$SLOWFAST_ZOO_TIMEOUT``, else 10."""
    return timeout if timeout is not None else _env_seconds("SLOWFAST_ZOO_TIMEOUT", DEFAULT_TIMEOUT)


def deadline_seconds(deadline: float | None = None) -> float:
    """Seconds one download may take in all: ``deadline``, else ``$SLOWFAST_ZOO_DEADLINE``, else 1800."""
    return deadline if deadline is not None else _env_seconds("SLOWFAST_ZOO_DEADLINE", DEFAULT_DEADLINE)


def lock_timeout(remaining: float) -> float:
    """Seconds to wait for another process's download: what is left of the deadline, or less with
    ``$SLOWFAST_ZOO_LOCK_TIMEOUT``."""
    return max(0.0, min(remaining, _env_seconds("SLOWFAST_ZOO_LOCK_TIMEOUT", remaining)))


# --- hashing -----------------------------------------------------------------------------------------------------
def tensors_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes (sorted by name): equal iff the tensors are equal."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach()
        if t.device.type != "cpu":
            t = t.cpu()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def read_regular(path: str | os.PathLike[str], *, limit: int | None = None) -> bytes:
    """A regular file's bytes; a FIFO or device is refused (``ValueError``), and so is a file over ``limit`` bytes,
    before anything is read."""
    import stat

    # O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever, before it can be refused
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path}: not a regular file")
        if limit is not None and st.st_size > limit:
            raise ValueError(f"{path}: {st.st_size} bytes, more than the {limit} bytes allowed for it")
        data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:  # grew after the fstat
        raise ValueError(f"{path}: more than the {limit} bytes allowed for it")
    return data


def read_hashed(path: str | os.PathLike[str]) -> tuple[bytes, str]:
    """A regular file's bytes, read once, and the sha256 of exactly those bytes (what is parsed next is what was
    hashed: a file swapped or rewritten meanwhile cannot be loaded under the first one's hash)."""
    data = read_regular(path)
    return data, hashlib.sha256(data).hexdigest()


def git_blob_sha1(data: bytes) -> str:
    """Git's blob id of ``data`` (what the Hub serves as the ETag of a regular, non-LFS file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def looks_like_safetensors(head: bytes) -> bool:
    """Whether the first bytes of a file are a safetensors header (8-byte length, then a JSON object)."""
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n < 100_000_000 and head[8:9] == b"{"


@dataclass(frozen=True)
class CacheCheck:
    """What a cache holds for one file: ``ok`` (verified), ``missing`` or ``corrupt`` (deleted when repairing)."""

    status: str
    path: Path | None = None
    #: the sha256 of the bytes found (None when missing)
    sha256: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# --- writing -----------------------------------------------------------------------------------------------------
def is_write_error(e: BaseException) -> bool:
    """Whether an error means the destination cannot be written (permissions, read-only, disk full)."""
    return isinstance(e, PermissionError) or (
        isinstance(e, OSError)
        and e.errno in (errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.ENOTDIR)
    )


def write_error(where: str | os.PathLike[str], e: BaseException) -> CacheWriteError:
    """A :class:`CacheWriteError` that names the folder and what to do."""
    return CacheWriteError(
        f"cannot write to the cache at {where}: {e}. Free some space or make it writable, or point "
        f"HF_HUB_CACHE (Hub downloads) / {ENV_CACHE} (converted weights) at another directory, "
        f"or give a weights file (create(..., checkpoint=FILE); --checkpoint FILE on the command line)."
    )


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Write ``path`` all or nothing: a temporary file in the same folder, fsync'ed, renamed into place.

    An exception inside the block removes the temporary file and leaves ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".incomplete")
    try:
        os.fchmod(fd, _umask_mode())  # mkstemp makes 0600; a shared cache must be readable as the umask says
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def open_output(path: str | os.PathLike[str], flags: int) -> int:
    """A descriptor of the regular file ``path`` opened with ``flags`` (plus ``O_NOFOLLOW``): never through a link.

    A link, FIFO, device or folder at ``path`` raises :class:`UnsafeOutputError` before a byte is read or written;
    read, write, append and truncate through the returned descriptor (the caller closes it).
    """
    extra = os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)  # O_NONBLOCK: a FIFO cannot block the open
    try:
        fd = os.open(path, flags | extra, 0o666)  # the kernel applies the umask
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK, errno.ENXIO, errno.EISDIR):
            raise UnsafeOutputError(f"{path}: a link or not a regular file (refused as an output)") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeOutputError(f"{path}: not a regular file (refused as an output)")
    return fd


def output_dir(path: str | os.PathLike[str]) -> Path:
    """Create the output folder ``path`` (and parents); a link or a file planted at its name is refused."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise UnsafeOutputError(f"{path}: a link or not a folder; the zoo writes only into its own folders")
    return path


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> tuple[str, int]:
    """Write bytes (or UTF-8 text) atomically; returns (sha256, size)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_writer(path) as f:
        f.write(raw)
    return hashlib.sha256(raw).hexdigest(), len(raw)


# --- deleting, only inside the cache -----------------------------------------------------------------------------
def _inside(path: str, root: str | os.PathLike[str]) -> bool:
    real_root = os.path.realpath(root)
    return os.path.commonpath([os.path.realpath(path), real_root]) == real_root


def _remove(path: str, root: str | os.PathLike[str]) -> None:
    """Unlink a link itself, or a regular file whose real path lies under ``root``; anything else is left alone."""
    if os.path.islink(path):
        if _inside(os.path.dirname(path), root):
            os.unlink(path)
        return
    if os.path.isfile(path) and _inside(path, root):
        os.unlink(path)


def evict(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> None:
    """Delete a cached file: the snapshot link and the blob it names, never anything outside ``root``.

    Raises ``OSError`` (e.g. ``PermissionError`` in a read-only cache) when a file inside the cache cannot go.
    """
    p = os.fspath(path)
    blob = None
    if os.path.islink(p):  # one level only: a blob that is itself a link is unlinked, not followed
        blob = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
    with contextlib.suppress(FileNotFoundError):
        _remove(p, root)
    if blob is not None:
        with contextlib.suppress(FileNotFoundError):
            _remove(blob, root)


def remove_incomplete(folder: str | os.PathLike[str], root: str | os.PathLike[str], prefix: str = "") -> list[Path]:
    """Delete the ``*.incomplete`` files (left by a killed download) in ``folder`` whose names start with ``prefix``.

    Call it under the lock of the download that would write them. Returns what was deleted.
    """
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if entry.name.endswith(".incomplete") and entry.name.lstrip(".").startswith(prefix):
                with contextlib.suppress(FileNotFoundError):
                    _remove(entry.path, root)
                    removed.append(Path(entry.path))
    return removed


# --- locks -------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def lock(name: str, zoo_cache: Path, timeout: float) -> Iterator[None]:
    """An inter-process lock for one set of weights, waited for at most ``timeout`` s (the wait is logged).

    Without a writable zoo cache there is no lock (logged at debug level).
    """
    from filelock import FileLock, Timeout

    safe = re.sub(r"[^A-Za-z0-9._-]+", "--", name)
    path = zoo_cache / ".locks" / f"{safe}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        held = FileLock(str(path), mode=_umask_mode())
        try:
            held.acquire(timeout=0)
        except Timeout:
            log.warning(
                "waiting up to %.0f s for another process that is fetching the same weights (%s)", timeout, path
            )
            start = time.monotonic()
            held.acquire(timeout=timeout)
            log.warning("got %s after %.1f s", path, time.monotonic() - start)
    except Timeout:
        raise WeightsError(
            f"gave up after {timeout:.0f} s waiting for another process that holds {path}: the wait counts against "
            "SLOWFAST_ZOO_DEADLINE (and SLOWFAST_ZOO_LOCK_TIMEOUT, if set); set them to wait longer, or delete the "
            "file if no process is running"
        ) from None
    except OSError as e:
        log.debug("no lock for %s (%s): %s", name, path, e)
        yield
        return
    try:
        yield
    finally:
        held.release()

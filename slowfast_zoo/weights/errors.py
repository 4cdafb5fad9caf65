"""The errors of the weights subsystem: every failure to provide verified weights is a :class:`WeightsError`."""

from __future__ import annotations

from ..errors import SlowFastZooError

__all__ = [
    "CacheWriteError",
    "CorruptCacheError",
    "DeadlineExceeded",
    "HashMismatchError",
    "SourceFailed",
    "WeightsError",
    "WeightsNotFoundError",
    "WeightsUnavailableError",
]


class WeightsError(SlowFastZooError, RuntimeError):
    """Pretrained weights could not be provided."""


class HashMismatchError(WeightsError):
    """A file's sha256 is not the one the manifest (or the repo's config) pins; the file was deleted."""

    def __init__(
        self, *, source: str, revision: str | None, filename: str, expected: str, actual: str, detail: str = ""
    ) -> None:
        self.source, self.revision, self.filename = source, revision, filename
        self.expected, self.actual = expected, actual
        where = f"{source}@{revision}" if revision else source
        super().__init__(
            f"sha256 mismatch for {filename} from {where}: expected {expected}, got {actual}"
            + (f" ({detail})" if detail else "")
            + ". The file was deleted; nothing unverified was kept."
        )


class WeightsNotFoundError(WeightsError):
    """The repo, revision or file does not exist on the Hub (HTTP 404), or the origin URL is gone."""


class WeightsUnavailableError(WeightsError):
    """No source could provide the weights (offline with nothing cached, or every source unreachable)."""


class CacheWriteError(WeightsError):
    """A cache directory cannot be written (read-only, permissions, disk full)."""


class CorruptCacheError(CacheWriteError):
    """A cached file is corrupt and cannot be deleted (read-only cache); it was not used."""


class SourceFailed(SlowFastZooError):
    """A source failed in a way that lets the next source be tried (network, timeout, 5xx, broken transfer)."""


class DeadlineExceeded(SourceFailed):
    """A download ran past its overall deadline: the next source may be tried, this one is not retried."""

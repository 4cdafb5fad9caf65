"""The root of the package's own errors, importable from every subpackage (it imports nothing of the package).

Catch :class:`SlowFastZooError` to handle every failure the zoo reports on purpose; each subpackage raises a typed
subclass (``WeightsError``, ``VideoError``, ``CheckpointError``, ``UnknownModelError``, :class:`AnnotationError`,
:class:`UnsafeOutputError`, ...). Anything else that escapes the package is a bug. The subclasses also derive from
the built-in class callers caught before (``ValueError``, ``RuntimeError``, ``KeyError``), so old ``except``
clauses keep working.
"""

from __future__ import annotations

__all__ = ["AnnotationError", "DeviceUnavailableError", "FeatureShardError", "SlowFastZooError", "UnsafeOutputError"]


class SlowFastZooError(Exception):
    """An error the zoo raises on purpose: its message says what was expected and where."""


class AnnotationError(SlowFastZooError, ValueError):
    """An annotation, label-map or feature-shard file cannot be used at all (a single bad row is skipped instead)."""


class UnsafeOutputError(SlowFastZooError, OSError):
    """An output path is a link, a folder, a FIFO or another non-regular file: the zoo writes only regular files."""


class FeatureShardError(SlowFastZooError, ValueError):
    """A feature shard's metadata is missing or malformed (not a shard the zoo wrote, or a damaged one)."""


class DeviceUnavailableError(SlowFastZooError, RuntimeError):
    """The device asked for (e.g. ``cuda``) does not exist on this machine."""

"""Convert an upstream checkpoint to a zoo-keyed safetensors file, checked against an expected structure.

The expected ``{key: tensor}`` (shapes and dtypes; meta tensors do) comes from the caller (the factory builds it on
the meta device: ``slowfast_zoo.factory.expected_state_dict(cfg)``), so this package never builds a network. The
upstream file is read once; its sha256 is that of the very bytes converted. The output is deterministic: the same
input always gives the same bytes, whether converted by ``publish`` or by the origin fallback of
``create(pretrained=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .cache import atomic_write
from .formats import RawCheckpoint, read_verified
from .manifest import WeightsCfg

__all__ = ["ConvertResult", "convert", "convert_read", "write_safetensors", "zoo_state_dict"]


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert` wrote."""

    path: Path
    sha256: str
    size: int
    #: the upstream file's sha256 and size
    source_sha256: str
    source_size: int
    #: ``safetensors``, ``torch`` or ``caffe2``
    file_format: str
    key_scheme: str
    num_tensors: int
    #: whether the upstream file is the one the manifest pins (None: the manifest does not know its sha256)
    source_matches_manifest: bool | None = None

    def __str__(self) -> str:
        return f"{self.path}  sha256 {self.sha256}  ({self.size} bytes, from {self.file_format}/{self.key_scheme})"


def zoo_state_dict(
    raw: RawCheckpoint, cfg: WeightsCfg, own: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], str, int]:
    """A file's tensors renamed to the zoo's keys, checked against ``own`` (the expected structure) and finite.

    Returns the tensors (sorted, in ``own``'s dtypes), the key scheme and the number of tensors in the file.
    """
    from .checkpoint import CheckpointError, check_state_dict, fill_batch_counters, renamed_to_model
    from .keys import KeyMappingError

    path, sd = raw.source, raw.tensors
    try:
        zoo, scheme = renamed_to_model(sd, own)
    except KeyMappingError as e:
        raise CheckpointError(f"{path}: {e}") from None
    fill_batch_counters(zoo, own)
    try:
        check_state_dict(zoo, own)
    except CheckpointError as e:
        raise CheckpointError(f"{path} ({raw.format}, {scheme} keys) does not fit {cfg.name}: {e}") from None
    out = {}
    for key in sorted(own):
        value = zoo[key].to(own[key].dtype).contiguous().clone()
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: {key} holds NaN or infinite values")
        out[key] = value
    return out, scheme, len(sd)


def write_safetensors(sd: Mapping[str, torch.Tensor], path: Path) -> tuple[str, int]:
    """Write atomically (see :func:`~slowfast_zoo.weights.cache.atomic_writer`); returns (sha256, size).

    Deterministic for equal tensors: keys sorted, one metadata entry only (safetensors writes a map of several in an
    unspecified order).
    """
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sorted(sd.items())}
    return atomic_write(path, save(tensors, metadata={"format": "pt"}))


def convert(
    upstream_file: str | os.PathLike[str],
    model: WeightsCfg,
    out_path: str | os.PathLike[str],
    *,
    expected: Mapping[str, torch.Tensor],
) -> ConvertResult:
    """Convert an upstream checkpoint of a pretrained config (``model``) to a zoo ``.safetensors`` file.

    The file is read once: its sha256 is computed over the buffer that is then deserialized. Its format and key
    scheme are detected from those bytes (Caffe2 pickles are read by a restricted unpickler, PyTorch files with
    ``torch.load(weights_only=True)``); the result must fit ``expected`` (e.g.
    ``slowfast_zoo.factory.expected_state_dict(cfg)``) exactly, every key, shape and dtype kind, and hold finite
    values, else :class:`~slowfast_zoo.CheckpointError`. Returns the output's path, sha256 and size, and the
    upstream file's sha256 and size.
    """
    if isinstance(model, str):
        raise TypeError(f"pass a pretrained config, e.g. slowfast_zoo.get_pretrained_cfg({model!r})")
    if expected is None:
        raise TypeError("convert() needs expected=, the {key: tensor} the file must fit (expected_state_dict(cfg))")
    return convert_read(read_verified(upstream_file), model, out_path, expected=expected)


def convert_read(
    raw: RawCheckpoint, model: WeightsCfg, out_path: str | os.PathLike[str], *, expected: Mapping[str, torch.Tensor]
) -> ConvertResult:
    """:func:`convert` of a file already read and hashed (:func:`~slowfast_zoo.weights.formats.read_verified`)."""
    assert raw.sha256 is not None and raw.size is not None
    sd, scheme, n = zoo_state_dict(raw, model, expected)
    digest, size = write_safetensors(sd, Path(out_path))
    pinned = model.origin.sha256 if model.origin is not None else None
    matches = None if pinned is None else pinned == raw.sha256
    return ConvertResult(Path(out_path), digest, size, raw.sha256, raw.size, raw.format, scheme, n, matches)

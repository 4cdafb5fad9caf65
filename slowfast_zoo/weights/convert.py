"""Convert an upstream checkpoint to a zoo-keyed safetensors file, checked against an expected structure.

The expected ``{key: tensor}`` (shapes and dtypes; meta tensors do) comes from the caller, so this package never
builds a network: :mod:`slowfast_zoo.factory` installs a provider that builds one on the meta device from a
pretrained config, and any caller may pass ``expected=`` itself. The output is deterministic: the same input always
gives the same bytes, whether converted by ``publish`` or by the origin fallback of ``create(pretrained=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .cache import atomic_write, sha256_file
from .errors import WeightsError

__all__ = ["ConvertResult", "convert", "expected_structure", "set_structure_provider", "write_safetensors"]

StructureProvider = Callable[[Any], Mapping[str, torch.Tensor]]
_provider: list[StructureProvider] = []


def set_structure_provider(provider: StructureProvider) -> None:
    """Install the function that gives the expected ``{key: tensor}`` of a pretrained config (the factory's)."""
    _provider[:] = [provider]


def expected_structure(cfg: Any, expected: Mapping[str, torch.Tensor] | None = None) -> Mapping[str, torch.Tensor]:
    """``expected`` if given, else what the installed provider builds for ``cfg``."""
    if expected is not None:
        return expected
    if not _provider:
        raise WeightsError(
            f"{getattr(cfg, 'name', cfg)}: no expected structure to check a converted file against; pass "
            "expected=<state dict> (e.g. slowfast_zoo.create(name, device='meta').state_dict())"
        )
    return _provider[0](cfg)


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


def _problems(zoo: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> list[str]:
    missing = sorted(set(own) - set(zoo))
    unexpected = sorted(set(zoo) - set(own))
    mismatched = [
        f"{k}: {tuple(zoo[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(zoo))
        if zoo[k].shape != own[k].shape
    ]
    problems = []
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if keys:
            problems.append(f"{len(keys)} {title}: " + ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else ""))
    return problems


def zoo_state_dict(
    path: Path, cfg: Any, own: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], str, str, int]:
    """Read an upstream file, rename its keys to the zoo's and check them against ``own`` (the expected structure)."""
    from .checkpoint import CheckpointError, read_state_dict
    from .keys import KeyMappingError, detect_scheme, to_zoo

    sd, fmt, _ = read_state_dict(path)
    try:
        scheme = detect_scheme(sd)
        zoo = to_zoo(sd, scheme)
    except KeyMappingError as e:
        raise CheckpointError(f"{path}: {e}") from None
    for key, value in own.items():  # Caffe2 files have no BatchNorm batch counters
        if key.endswith("num_batches_tracked") and key not in zoo and key.rsplit(".", 1)[0] + ".weight" in zoo:
            zoo[key] = torch.zeros((), dtype=value.dtype)
    problems = _problems(zoo, own)
    if problems:
        raise CheckpointError(f"{path} ({fmt}, {scheme} keys) does not fit {cfg.name}: " + "; ".join(problems))
    out = {}
    for key in sorted(own):
        value = zoo[key].to(own[key].dtype).contiguous().clone()
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: {key} holds NaN or infinite values")
        out[key] = value
    return out, fmt, scheme, len(sd)


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
    model: Any,
    out_path: str | os.PathLike[str],
    *,
    expected: Mapping[str, torch.Tensor] | None = None,
) -> ConvertResult:
    """Convert an upstream checkpoint of a pretrained config (``model``) to a zoo ``.safetensors`` file.

    The file's format and key scheme are detected from its bytes (Caffe2 pickles are read by a restricted
    unpickler, PyTorch files with ``torch.load(weights_only=True)``); the result must fit ``expected`` (default:
    the structure the factory builds for ``model``) exactly, every key and every shape, and hold finite values,
    else :class:`~slowfast_zoo.CheckpointError`. Returns the output's path, sha256 and size, and the upstream
    file's sha256.
    """
    if isinstance(model, str):
        raise TypeError(f"pass a pretrained config, e.g. slowfast_zoo.get_pretrained_cfg({model!r})")
    src = Path(upstream_file)
    source_sha = sha256_file(src)
    sd, fmt, scheme, n = zoo_state_dict(src, model, expected_structure(model, expected))
    digest, size = write_safetensors(sd, Path(out_path))
    pinned = model.origin.sha256 if model.origin is not None else None
    matches = None if pinned is None else pinned == source_sha
    return ConvertResult(Path(out_path), digest, size, source_sha, src.stat().st_size, fmt, scheme, n, matches)

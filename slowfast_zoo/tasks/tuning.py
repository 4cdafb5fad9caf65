"""The batch size (views per forward pass) and the fast path's memory format measured for a model on this device
(:func:`~.autotune.tune`), kept in the zoo's cache so that ``predict``, ``evaluate`` and ``features`` use them.

A result is kept per model signature (:func:`model_signature`): the architecture and its input size, how it
computes (fp32, bf16 autocast or bf16 weights; BatchNorm folded or not), the device (CUDA card, or CPU model and
torch's thread count) and the torch version, so a new card, CPU or torch measures anew. Without a stored result the
tasks keep their fixed rule (:func:`~.runner.default_batch`); an explicit ``batch_size`` always wins.

``tuning.json`` in the zoo's cache (``$SLOWFAST_ZOO_CACHE``) is read as hostile: a file that is not a regular file,
is larger than :data:`MAX_FILE_BYTES` or is not the expected JSON is ignored with a warning, and so is an entry with
a value of the wrong type or out of range (the fixed rule applies). It is only ever replaced whole (written beside
it, then renamed, under the cache's lock), so a reader never sees half a file.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..weights.cache import atomic_write, lock, read_regular, zoo_cache_dir

Precision = Literal["fp32", "bf16"]

__all__ = [
    "MAX_BATCH",
    "MAX_FILE_BYTES",
    "Tuning",
    "device_name",
    "model_signature",
    "setting",
    "store_tunings",
    "stored_tuning",
    "tuned_batch",
    "tuned_channels_last",
    "tuning_file",
]

log = logging.getLogger(__name__)

#: the tuning file is refused above this size (it holds a few hundred bytes per model and device)
MAX_FILE_BYTES = 1 << 20
#: the largest batch size a stored entry may name
MAX_BATCH = 1024
_VERSION = 1


@dataclass(frozen=True)
class Tuning:
    """One measurement's result for one model signature on one device."""

    signature: str
    batch_size: int
    #: the fast path's convolution weights channels-last (``None``: not measured, the model was not the fast path)
    channels_last: bool | None
    #: seconds per view for each setting tried (``"b6"``, ``"b6 channels_last"``; ``None``: out of memory)
    seconds_per_view: dict[str, float | None] = field(default_factory=dict)


def setting(batch: int, channels_last: bool | None) -> str:
    """The name a measured setting has in :attr:`Tuning.seconds_per_view`."""
    return f"b{batch}" + ("" if channels_last is None else " channels_last" if channels_last else " contiguous")


# ---- signatures --------------------------------------------------------------------------------------------------
def device_name(device: torch.device | str) -> str:
    """What a measurement on ``device`` depends on: the CUDA card, or the CPU model and torch's thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return f"cuda {torch.cuda.get_device_name(index)} sm{major}{minor}"
    if device.type == "cpu":
        return f"cpu {_cpu_model()} x{torch.get_num_threads()}"
    return device.type


@functools.cache
def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def model_signature(model: nn.Module, precision: Precision = "fp32") -> str:
    """The model, as far as its speed goes: architecture, size and input size, how it computes (dtype, autocast,
    BatchNorm folded), the device and the torch version."""
    folded = not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return _signature(model, next(model.parameters()).dtype, precision, folded)


def _signature(model: nn.Module, dtype: torch.dtype, precision: Precision, folded: bool) -> str:
    cfg: Any = model.pretrained_cfg
    # the layers' weights (a model at another width differs; folding BatchNorm into them changes no count)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)))
    if dtype == torch.bfloat16:
        compute = "bf16-weights"
    elif dtype == torch.float32:
        compute = "bf16-autocast" if precision == "bf16" else "fp32"
    else:
        compute = str(dtype).removeprefix("torch.")
    torch_version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    return (
        f"{cfg.arch} {weights} weights {cfg.num_frames}x{cfg.test_crop_size} {compute}{' folded' if folded else ''}"
        f" | {device_name(next(model.parameters()).device)} | torch {torch_version}"
    )


# ---- the stored results ------------------------------------------------------------------------------------------
def tuning_file() -> Path:
    """Where results are kept: ``tuning.json`` in the zoo's cache."""
    return zoo_cache_dir() / "tuning.json"


def _read_all(path: Path) -> dict[str, Tuning]:
    """Every valid entry of the tuning file (a missing file has none; an unreadable one is ignored, with a warning)."""
    try:
        data = json.loads(read_regular(path, limit=MAX_FILE_BYTES))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:  # not a regular file, too large, not UTF-8 JSON
        log.warning("%s: ignored, it is not a tuning file (%s); the fixed batch rule applies", path, e)
        return {}
    if not isinstance(data, dict) or data.get("version") != _VERSION or not isinstance(data.get("entries"), dict):
        log.warning("%s: ignored, expected {'version': %d, 'entries': {...}}", path, _VERSION)
        return {}
    out = {}
    for signature, entry in data["entries"].items():
        tuning = _entry(signature, entry)
        if tuning is None:
            log.warning(
                "%s: entry %r ignored: expected a batch_size in 1..%d, a channels_last of true, false or null, and "
                "seconds_per_view of times >= 0 or null", path, str(signature)[:200], MAX_BATCH,
            )  # fmt: skip
        else:
            out[signature] = tuning
    return out


def _entry(signature: Any, entry: Any) -> Tuning | None:
    """A stored entry, if every value has the expected type and range."""
    if not isinstance(signature, str) or not isinstance(entry, dict):
        return None
    batch, cl, times = entry.get("batch_size"), entry.get("channels_last"), entry.get("seconds_per_view", {})
    if type(batch) is not int or not 1 <= batch <= MAX_BATCH or not (cl is None or isinstance(cl, bool)):
        return None
    if not isinstance(times, dict) or not all(isinstance(k, str) and _seconds(v) for k, v in times.items()):
        return None
    return Tuning(signature, batch, cl, {k: None if v is None else float(v) for k, v in times.items()})


def _seconds(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < math.inf)


def stored_tuning(signature: str) -> Tuning | None:
    """The stored result for a model signature (:func:`model_signature`), or None."""
    return _read_all(tuning_file()).get(signature)


def store_tunings(tunings: Sequence[Tuning]) -> Path:
    """Add (or replace) results in the tuning file, whole, under the cache's lock."""
    path = tuning_file()
    with lock("tuning", zoo_cache_dir(), timeout=60.0):
        entries = _read_all(path)
        entries.update({t.signature: t for t in tunings})
        body = {s: {k: v for k, v in asdict(t).items() if k != "signature"} for s, t in sorted(entries.items())}
        atomic_write(path, json.dumps({"version": _VERSION, "entries": body}, indent=1, allow_nan=False) + "\n")
    return path


# ---- what the tasks use ------------------------------------------------------------------------------------------
def tuned_batch(model: nn.Module, precision: Precision = "fp32") -> int | None:
    """The stored batch size (views per forward pass) for this model on its device, or None."""
    tuning = stored_tuning(model_signature(model, precision))
    return None if tuning is None else tuning.batch_size


def tuned_channels_last(model: nn.Module, dtype: torch.dtype | None) -> bool:
    """Whether the fast path of ``model`` (BatchNorm folded, weights in ``dtype``, None: as they are) stores its
    convolution weights channels-last: the stored measurement, else yes (oneDNN's and cuDNN's fast layout)."""
    tuning = stored_tuning(_signature(model, dtype or next(model.parameters()).dtype, "fp32", True))
    return True if tuning is None or tuning.channels_last is None else tuning.channels_last

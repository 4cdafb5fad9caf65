"""Functions the decode-worker tests hand to worker processes (importable by name in a spawned child)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import torch

from slowfast_zoo.tasks.evaluate import _decode_views as _evaluate_decode
from slowfast_zoo.tasks.features import _decode_rows as _features_decode


def square(x: int) -> int:
    """``x * x``; item ``i`` waits ``(5 - i % 5) / 100`` s, so later items finish first."""
    time.sleep((5 - x % 5) / 100)
    return x * x


def pid_and_threads(x: int) -> tuple[int, int, int]:
    """``(x, the worker's pid, its torch threads)``."""
    return x, os.getpid(), torch.get_num_threads()


def fail_on_two(x: int) -> int:
    if x == 2:
        raise ValueError(f"item {x} is bad")
    return x


def die_on_one(x: int) -> int:
    """Item 1 kills its own process (SIGKILL: no clean-up, as the kernel's OOM killer does)."""
    if x == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def tensor_of(x: int) -> torch.Tensor:
    return torch.full((3, 4, 8, 8), float(x))


def _die_for(name: str) -> None:
    if os.path.basename(name) == os.environ.get("SFZ_TEST_DIE_ON", "\0"):
        os.kill(os.getpid(), signal.SIGKILL)


def evaluate_decode_or_die(job: Any, cfg: Any, device: torch.device, decoder: str = "auto") -> Any:
    """evaluate's own decoder, except that the video named by ``$SFZ_TEST_DIE_ON`` kills the worker process."""
    _die_for(str(job.payload.path))
    return _evaluate_decode(job, cfg, device, decoder)


def features_decode_or_die(path: str, cfg: Any, device: torch.device, settings: Any) -> Any:
    """features' own decoder, except that the video named by ``$SFZ_TEST_DIE_ON`` kills the worker process."""
    _die_for(path)
    return _features_decode(path, cfg, device, settings)
